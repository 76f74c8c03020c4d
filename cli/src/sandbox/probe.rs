//! Servers and probes on real sockets inside the lab's pod namespaces.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use super::lab::{in_netns, LabError};

/// TCP listeners that answer every connection with a byte, until dropped.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn new() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Listens on `addr:port` inside `netns`.
    pub fn listen(&mut self, netns: &str, addr: Ipv4Addr, port: u16) -> Result<(), LabError> {
        let listener = in_netns(netns, move || bind(addr, port))?
            .map_err(|e| LabError::Program(format!("listen on {addr}:{port} in {netns}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| LabError::Program(e.to_string()))?;
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"k");
                    }
                    Err(_) => std::thread::sleep(Duration::from_micros(500)),
                }
            }
        }));
        Ok(())
    }
}

impl Default for Servers {
    fn default() -> Self {
        Servers::new()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A listener with a deep accept queue: probes arrive in bursts, and a queue overflow would
/// look like a dropped packet.
fn bind(addr: Ipv4Addr, port: u16) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(SockProtocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((addr, port)).into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Whether a TCP connection from inside `netns` to `dst:port` is established within `timeout`
/// (a dropped SYN times out; nothing else in the lab refuses).
pub fn tcp_connects(netns: &str, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<bool, LabError> {
    in_netns(netns, move || {
        TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout).is_ok()
    })
}
