//! `netfence-agent`: the node agent. Watchers feed one writer thread, the only code that
//! touches netfilter; an HTTP endpoint serves the probes and the metrics (see ARCHITECTURE.md).

#![forbid(unsafe_code)]

mod cluster;
mod config;
mod error;
mod http;
mod metrics;
mod watch;
mod writer;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::signal::unix::{signal, SignalKind};

use config::{Config, LogFormat};
use error::AgentError;

use cluster::Kind;
use metrics::Metrics;

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: container runtimes and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client(config: &Config) -> Result<kube::Client, AgentError> {
    let bad = AgentError::ClusterConfig;
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| bad(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| bad(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| bad(format!("no in-cluster service account and no kubeconfig: {e}")))?,
    };
    kube::Client::try_from(kube_config).map_err(|e| bad(format!("API client: {e}")))
}

async fn run(config: Config, node: String) -> Result<(), AgentError> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| AgentError::Metrics {
            addr: config.metrics_addr,
            source,
        })?;
    let client = client(&config).await?;
    let (tx, rx) = std::sync::mpsc::channel();
    let writer_metrics = Arc::clone(&metrics);
    let coalesce = config.coalesce();
    let writer_node = node.clone();
    std::thread::Builder::new()
        .name("writer".to_string())
        .spawn(move || writer::run(&writer_node, rx, coalesce, writer_metrics))
        .map_err(|source| AgentError::Start {
            what: "the writer",
            source,
        })?;
    tokio::spawn(http::run(listener, Arc::clone(&metrics)));
    for kind in Kind::ALL {
        tokio::spawn(watch::watch(
            client.clone(),
            kind,
            tx.clone(),
            Arc::clone(&metrics),
            config.max_backoff(),
            fastrand::u64(..),
        ));
    }
    tracing::info!(node, metrics = %config.metrics_addr, coalesce_ms = config.coalesce_ms, "started");
    let handler = |source| AgentError::Start {
        what: "the signal handlers",
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(handler)?;
    let mut int = signal(SignalKind::interrupt()).map_err(handler)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping; table inet netfence stays in place (netfence-agent --uninstall removes it)");
    Ok(())
}

fn uninstall() -> Result<(), AgentError> {
    nft_netlink::delete_table()?;
    tracing::info!("table inet netfence removed");
    Ok(())
}

/// Logs why the agent stops and turns it into the exit code of its kind.
fn fail(error: &AgentError) -> ExitCode {
    tracing::error!(exit_code = error.exit_code(), "{error}");
    ExitCode::from(error.exit_code())
}

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(reason) = config.validate() {
        let error = AgentError::Usage(reason);
        eprintln!("netfence-agent: error: {error}");
        return ExitCode::from(error.exit_code());
    }
    init_logs(config.log_format);
    if config.uninstall {
        return uninstall().map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS);
    }
    let node = config.node_name.clone().unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            return fail(&AgentError::Start {
                what: "the runtime",
                source,
            })
        }
    };
    match runtime.block_on(run(config, node)) {
        Ok(()) => {
            // The writer thread may be inside a wait; the rules stay as they are.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}
