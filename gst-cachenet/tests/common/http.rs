//! The wire side of the tests' fake edges: one HTTP/1.1 request read from a connection, and a
//! 200 answer that closes it. What a fake edge answers is the test's own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The request line and the body of the next request on `c`; None when the peer went away.
pub fn read_request(c: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut r = BufReader::new(c.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((line, body))
}

/// A 200 with `body`, closing the connection.
pub fn write_ok(c: &mut TcpStream, body: &[u8]) {
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(body);
}
