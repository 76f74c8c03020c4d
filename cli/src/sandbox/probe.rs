//! Servers and probes on real sockets inside the lab's namespaces.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use policy_compiler::Protocol;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use netfence_netns::in_netns;

use super::lab::LabError;

/// Listeners that answer every TCP connection and every UDP datagram, until dropped.
#[derive(Debug)]
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A listener with a deep accept queue: probes arrive in bursts, and a queue overflow would
/// look like a dropped packet.
fn bind_tcp(addr: IpAddr, port: u16) -> std::io::Result<TcpListener> {
    let address = SocketAddr::from((addr, port));
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn unsupported(protocol: Protocol) -> LabError {
    LabError::Program(format!(
        "{protocol} probes are not supported: this kernel has no {protocol} sockets (TCP and UDP are)"
    ))
}

impl Servers {
    pub fn new() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Listens on `addr:port` inside `netns`.
    pub fn listen(
        &mut self,
        netns: &str,
        addr: impl Into<IpAddr>,
        protocol: Protocol,
        port: u16,
    ) -> Result<(), LabError> {
        let addr: IpAddr = addr.into();
        let stop = Arc::clone(&self.stop);
        let failed = |e: std::io::Error| {
            LabError::Program(format!("listen on {protocol} {addr}:{port} in {netns}: {e}"))
        };
        match protocol {
            Protocol::Tcp => {
                let listener = in_netns(netns, move || bind_tcp(addr, port))?.map_err(failed)?;
                listener.set_nonblocking(true).map_err(failed)?;
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
            }
            Protocol::Udp => {
                let socket = in_netns(netns, move || UdpSocket::bind((addr, port)))?.map_err(failed)?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(failed)?;
                self.threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            let _ = socket.send_to(&buf[..n], peer);
                        }
                    }
                }));
            }
            Protocol::Sctp => return Err(unsupported(protocol)),
        }
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

/// Whether a flow from inside `netns` to `dst:port` gets through within `timeout`: a TCP
/// connection is established, or a UDP datagram is answered. A dropped packet times out; every
/// probed port has a listener, so nothing else refuses.
pub fn connects(
    netns: &str,
    dst: impl Into<IpAddr>,
    protocol: Protocol,
    port: u16,
    timeout: Duration,
) -> Result<bool, LabError> {
    let dst: IpAddr = dst.into();
    let connected = match protocol {
        Protocol::Tcp => in_netns(netns, move || {
            TcpStream::connect_timeout(&SocketAddr::from((dst, port)), timeout).is_ok()
        }),
        Protocol::Udp => in_netns(netns, move || {
            let exchange = || -> std::io::Result<bool> {
                let any: IpAddr = if dst.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                let socket = UdpSocket::bind((any, 0))?;
                socket.set_read_timeout(Some(timeout))?;
                socket.send_to(b"probe", (dst, port))?;
                let mut buf = [0u8; 16];
                Ok(socket
                    .recv_from(&mut buf)
                    .is_ok_and(|(n, from)| &buf[..n] == b"probe" && from == SocketAddr::from((dst, port))))
            };
            exchange().unwrap_or(false)
        }),
        Protocol::Sctp => return Err(unsupported(protocol)),
    };
    Ok(connected?)
}

/// A TCP probe (the common case in tests).
pub fn tcp_connects(netns: &str, dst: Ipv4Addr, port: u16, timeout: Duration) -> Result<bool, LabError> {
    connects(netns, dst, Protocol::Tcp, port, timeout)
}
