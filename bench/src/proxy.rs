//! A TCP proxy that emulates a link: one-way delay (RTT / 2 each direction) and a bandwidth cap.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Link {
    pub name: String,
    pub rtt_ms: f64,
    pub mbps: f64,
}

impl Link {
    /// `ethernet` 0.5 ms / 1 Gbit/s, `wifi` 4 ms / 100 Mbit/s, `lte` 40 ms / 20 Mbit/s.
    pub fn named(name: &str) -> Option<Link> {
        let (rtt_ms, mbps) = match name {
            "ethernet" => (0.5, 1000.0),
            "wifi" => (4.0, 100.0),
            "lte" => (40.0, 20.0),
            _ => return None,
        };
        Some(Link {
            name: name.into(),
            rtt_ms,
            mbps,
        })
    }

    fn one_way(&self) -> Duration {
        Duration::from_secs_f64(self.rtt_ms / 2000.0)
    }

    fn transmit(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 8.0 / (self.mbps * 1e6))
    }
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Copy `src` to `dst`, each chunk delayed by the one-way delay and paced by the bandwidth.
fn pipe(mut src: TcpStream, mut dst: TcpStream, link: Link) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut free_at = Instant::now();
    for (arrived, chunk) in rx {
        let start = (arrived + link.one_way()).max(free_at);
        sleep_until(start);
        free_at = start + link.transmit(chunk.len());
        sleep_until(free_at);
        if dst.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
    let _ = reader.join();
}

impl Proxy {
    /// Listen on 127.0.0.1:0 and forward to `upstream` through `link`.
    pub fn start(upstream: SocketAddr, link: Link) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                            (Ok(c), Ok(s)) => (c, s),
                            _ => continue,
                        };
                        let (l1, l2) = (link.clone(), link.clone());
                        std::thread::spawn(move || pipe(client, server, l1));
                        std::thread::spawn(move || pipe(s2, c2, l2));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Proxy { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
