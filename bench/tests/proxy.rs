//! The link emulation: delay and rate within tolerance, bounded in time.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cachenet_bench::proxy::{Link, Proxy};

fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(4) {
            let mut c = c.unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn round_trip(proxy: &Proxy, bytes: usize) -> Duration {
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data = vec![7u8; bytes];
    let t = Instant::now();
    let writer = {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&data).unwrap())
    };
    let mut got = vec![0u8; bytes];
    c.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got.iter().all(|b| *b == 7));
    t.elapsed()
}

#[test]
fn delay_matches_the_rtt() {
    let link = Link {
        name: "test".into(),
        rtt_ms: 60.0,
        mbps: 1000.0,
    };
    let p = Proxy::start(echo_server(), link).unwrap();
    let rtt = round_trip(&p, 16);
    assert!(rtt >= Duration::from_millis(58), "{rtt:?}");
    assert!(rtt < Duration::from_millis(300), "{rtt:?}");
}

#[test]
fn bandwidth_is_capped() {
    // 8 Mbit/s = 1 MB/s: 200 kB each way takes about 0.2 s (pipelined) plus the RTT.
    let link = Link {
        name: "test".into(),
        rtt_ms: 2.0,
        mbps: 8.0,
    };
    let p = Proxy::start(echo_server(), link).unwrap();
    let t = round_trip(&p, 200_000);
    assert!(t >= Duration::from_millis(190), "{t:?}");
    assert!(t < Duration::from_millis(1500), "{t:?}");
}

#[test]
fn named_profiles() {
    let w = Link::named("wifi").unwrap();
    assert_eq!((w.rtt_ms, w.mbps), (4.0, 100.0));
    assert_eq!(Link::named("lte").unwrap().rtt_ms, 40.0);
    assert_eq!(Link::named("ethernet").unwrap().mbps, 1000.0);
    assert!(Link::named("carrier-pigeon").is_none());
}
