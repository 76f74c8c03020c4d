//! The probes' and Prometheus's HTTP endpoint: `/healthz`, `/readyz` and `/metrics`.
//!
//! A few GET paths answered with a status line, a length and a body: no framework needed. A
//! request line longer than 8 KiB, or one that does not arrive within 5 s, closes the
//! connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Status and body for one path.
pub fn answer(path: &str, metrics: &Metrics) -> (u16, String) {
    match path.split('?').next().unwrap_or("") {
        "/healthz" => (200, "ok\n".to_string()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (200, "ready\n".to_string()),
        "/readyz" if metrics.synced.load(Ordering::Relaxed) => {
            (503, "synced, the table is not verified yet\n".to_string())
        }
        "/readyz" => (503, "waiting for every watch to list\n".to_string()),
        "/metrics" => (200, metrics.render()),
        _ => (404, "not found\n".to_string()),
    }
}

async fn serve(mut stream: TcpStream, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 {
            return Ok(());
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut words = text.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => answer(path, &metrics),
        _ => (405, "only GET\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let content_type = if body.starts_with("# HELP") {
        "text/plain; version=0.0.4"
    } else {
        "text/plain"
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Accepts connections until the process ends.
pub async fn run(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, metrics).await {
                        tracing::debug!(error = %e, "metrics connection");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_sync_and_verification() {
        let m = Metrics::default();
        assert_eq!(answer("/healthz", &m).0, 200);
        assert_eq!(
            answer("/readyz", &m),
            (503, "waiting for every watch to list\n".to_string())
        );
        m.synced.store(true, Ordering::Relaxed);
        assert_eq!(answer("/readyz", &m).0, 503);
        m.ready.store(true, Ordering::Relaxed);
        assert_eq!(answer("/readyz?verbose", &m).0, 200);
        assert!(answer("/metrics", &m).1.contains("netfence_ready 1\n"));
        assert_eq!(answer("/other", &m).0, 404);
    }
}
