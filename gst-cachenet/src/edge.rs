//! HTTP client for `cachenet-edge`. Every call is bounded by the configured timeout, so the
//! streaming thread never waits unbounded on the network.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use cachenet_core::manifest::{Manifest, is_safe_name};
use cachenet_core::proto;
use prost::Message;

use crate::secret::Secret;

const MAX_SMALL_BODY: u64 = 4 << 20;

/// Validate an `edge-url` property value: `http[s]://host[:port][/prefix]`. Returns the URL
/// without a trailing slash and its host.
pub fn parse_edge_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("edge-url {url:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(format!("edge-url {url:?} has no valid host"));
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !host.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return Err(format!("edge-url {url:?} has an invalid port"));
            }
            name
        }
        _ => host,
    };
    Ok((url.trim_end_matches('/').to_string(), name.to_string()))
}

/// Whether `host` (from an edge-url) is this machine.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The certificates of a PEM file (a private CA for the edge's certificate).
fn load_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca-file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("ca-file {}: {e}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "ca-file {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// A failed edge call. `refused` marks a 401 or 403: the edge does not accept the `token`
/// property, a settings error that retrying cannot fix (everything else is treated as an
/// outage and retried with back-off). `elsewhere`: another edge may answer (no connection, a
/// timeout, a 502/503/504), so a client with several edges fails over on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError {
    pub message: String,
    pub refused: bool,
    pub elsewhere: bool,
}

impl From<String> for EdgeError {
    fn from(message: String) -> EdgeError {
        EdgeError {
            message,
            refused: false,
            elsewhere: false,
        }
    }
}

impl From<&str> for EdgeError {
    fn from(message: &str) -> EdgeError {
        EdgeError::from(message.to_string())
    }
}

impl From<EdgeError> for String {
    fn from(e: EdgeError) -> String {
        e.message
    }
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn status_error(base: &str, status: u16, body: &[u8]) -> EdgeError {
    // The edge's message is shown as data (debug-quoted): it comes from the network.
    let message = match proto::Error::decode(body) {
        Ok(e) if !e.code.is_empty() => {
            format!(
                "edge {base} answered {status} {:?}: {:?}",
                e.code, e.message
            )
        }
        _ => format!("edge {base} answered HTTP {status}"),
    };
    EdgeError {
        message,
        refused: status == 401 || status == 403,
        elsewhere: matches!(status, 502..=504),
    }
}

/// Bytes sent and received by one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub up: u64,
    pub down: u64,
}

/// How often the preferred edge is probed (`/health/ready`) while the camera uses another.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// One edge of the `edge-url` list.
#[derive(Debug)]
struct Endpoint {
    /// The URL without a trailing slash, and its host (for the clear-text warning).
    base: String,
    host: String,
    /// `base`, shared with the element's stats.
    name: Arc<str>,
}

/// A change of edge, for the element to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeEvent {
    /// A failover (the first of a streak) or an edge skipped for its manifest.
    Warning(String),
    /// Back on the preferred edge.
    Returned(String),
}

/// Which edge a camera uses, shared by the clones of one client (the element's workers).
#[derive(Debug, Default)]
struct Choice {
    /// Index into the preference order (0: the preferred edge).
    current: usize,
    /// Per edge: None until its manifest was compared with the set's, then whether it is the
    /// same (an edge serving another manifest is skipped).
    same_manifest: Vec<Option<bool>>,
    /// The sha256 of the manifest the element runs.
    reference: Option<String>,
    failovers: u64,
    returns: u64,
    /// What the element posts (taken by [`EdgeClient::take_events`]).
    events: Vec<EdgeEvent>,
    /// Whether this streak away from the preferred edge was warned about.
    warned: bool,
}

#[derive(Debug)]
struct Edges {
    /// In the camera's preference order (rendezvous hashing of its camera id).
    list: Vec<Endpoint>,
    choice: Mutex<Choice>,
    /// Dropped with the last client: stops the prober.
    _stop: Option<mpsc::Sender<()>>,
}

/// A client of one or more edges serving the same model set. With several, the camera prefers
/// one by rendezvous hashing of its camera id (so its submodels stay warm there and cameras
/// spread over the edges), fails over to the next in its order on a refused connection, a
/// timeout or a 502/503/504, and returns to the preferred one once it answers
/// `/health/ready` again (probed every [`PROBE_INTERVAL`] while away, on a thread of its own).
#[derive(Debug, Clone)]
pub struct EdgeClient {
    edges: Arc<Edges>,
    set: String,
    token: Option<Secret>,
    agent: ureq::Agent,
    timeout: Duration,
}

/// This machine's host name (the default camera id's first part).
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The rendezvous weight of `base` for `camera`: the highest weight is the camera's edge.
fn weight(camera: &str, base: &str) -> u64 {
    let h = cachenet_core::sha256_hex(format!("{camera}\n{base}").as_bytes());
    u64::from_str_radix(&h[..16], 16).expect("hex")
}

/// `urls` in `camera`'s preference order.
pub fn preference_order(camera: &str, urls: &[String]) -> Vec<String> {
    let mut v: Vec<(u64, &String)> = urls.iter().map(|u| (weight(camera, u), u)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.into_iter().map(|(_, u)| u.clone()).collect()
}

impl EdgeClient {
    /// A client for `urls` (an `edge-url` value: one URL or a comma-separated list). `https://`
    /// URLs are verified against Mozilla's root certificates, or against the certificates of
    /// `ca_file` (a private CA) when one is given. `camera`: the camera id that orders the list.
    pub fn new(
        urls: &str,
        set: &str,
        token: Option<Secret>,
        timeout: Duration,
        ca_file: Option<&Path>,
        camera: &str,
    ) -> Result<EdgeClient, String> {
        let mut parsed = Vec::new();
        for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let (base, _) = parse_edge_url(u)?;
            if parsed.contains(&base) {
                return Err(format!("edge-url lists {base} twice"));
            }
            parsed.push(base);
        }
        if parsed.is_empty() {
            return Err(format!("edge-url {urls:?} names no edge"));
        }
        if !is_safe_name(set) {
            return Err(format!("model-set {set:?} must be letters, digits, - _ ."));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&load_ca_file(path)?));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls.build())
            .build()
            .into();
        let list: Vec<Endpoint> = preference_order(camera, &parsed)
            .into_iter()
            .map(|base| {
                let (base, host) = parse_edge_url(&base).expect("parsed above");
                Endpoint {
                    name: Arc::from(base.as_str()),
                    base,
                    host,
                }
            })
            .collect();
        let n = list.len();
        let (stop, stopped) = mpsc::channel::<()>();
        let edges = Arc::new(Edges {
            list,
            choice: Mutex::new(Choice {
                same_manifest: vec![None; n],
                ..Choice::default()
            }),
            _stop: (n > 1).then_some(stop),
        });
        if n > 1 {
            let prober = Prober {
                edges: Arc::downgrade(&edges),
                stopped,
                agent: agent.clone(),
                set: set.to_string(),
                token: token.clone(),
                timeout: timeout.min(Duration::from_secs(2)),
            };
            std::thread::Builder::new()
                .name("cachenet-edge-probe".into())
                .spawn(move || prober.run())
                .map_err(|e| format!("cannot start the edge prober: {e}"))?;
        }
        Ok(EdgeClient {
            edges,
            set: set.to_string(),
            token,
            agent,
            timeout,
        })
    }

    /// Warnings when the token would cross the network in clear: `http://` to another host.
    pub fn clear_text_warning(&self) -> Option<String> {
        let clear: Vec<&str> = self
            .edges
            .list
            .iter()
            .filter(|e| e.base.starts_with("http://") && !is_loopback(&e.host))
            .map(|e| e.base.as_str())
            .collect();
        (self.token.is_some() && !clear.is_empty()).then(|| {
            format!(
                "the token goes to {} unencrypted: use an https:// edge-url (and ca-file for a \
                 private CA)",
                clear.join(", ")
            )
        })
    }

    /// The edges in this camera's preference order.
    pub fn edges(&self) -> Vec<String> {
        self.edges.list.iter().map(|e| e.base.clone()).collect()
    }

    /// The edge in use now, and the failovers to another edge and returns to the preferred one
    /// so far (one lock: the element asks on every frame).
    pub fn status(&self) -> (Arc<str>, u64, u64) {
        let c = self.edges.choice.lock().expect("edge choice");
        (
            self.edges.list[c.current].name.clone(),
            c.failovers,
            c.returns,
        )
    }

    /// Failovers, skipped edges and returns since the last call.
    pub fn take_events(&self) -> Vec<EdgeEvent> {
        std::mem::take(&mut self.edges.choice.lock().expect("edge choice").events)
    }

    /// The set's manifest is the one with sha256 `sha` (an edge serving another is skipped);
    /// the edge it came from (`from`) needs no check.
    pub fn set_reference(&self, sha: &str, from: Option<&str>) {
        let mut c = self.edges.choice.lock().expect("edge choice");
        c.reference = Some(sha.to_ascii_lowercase());
        if let Some(i) = from.and_then(|b| self.edges.list.iter().position(|e| e.base == b)) {
            c.same_manifest[i] = Some(true);
        }
    }

    fn url(&self, base: &str, tail: &str) -> String {
        format!("{base}/v1/models/{}{tail}", self.set)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {}", t.expose())),
            None => req,
        }
    }

    fn read(
        base: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), EdgeError> {
        let unreachable = |what: &str, e: ureq::Error| EdgeError {
            message: format!("edge {base} {what}: {e}"),
            refused: false,
            elsewhere: true,
        };
        let mut resp = resp.map_err(|e| unreachable("unreachable", e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| unreachable("answer unreadable", e))?;
        Ok((status, body))
    }

    /// Run `call` on the edge in use, failing over along the preference order on errors
    /// another edge may not have; the whole is bounded by the timeout.
    fn with_failover<T>(
        &self,
        call: impl Fn(&str, Duration) -> Result<T, EdgeError>,
    ) -> Result<T, EdgeError> {
        let start = Instant::now();
        let n = self.edges.list.len();
        let mut tried = 0;
        loop {
            let remaining = self.timeout.saturating_sub(start.elapsed());
            let (i, check) = {
                let c = self.edges.choice.lock().expect("edge choice");
                let i = c.current;
                (
                    i,
                    c.reference.clone().filter(|_| c.same_manifest[i].is_none()),
                )
            };
            let base = self.edges.list[i].base.as_str();
            let result = match check {
                Some(sha) if n > 1 => self.check_manifest(i, &sha, remaining),
                _ => Ok(()),
            }
            .and_then(|()| {
                let remaining = self.timeout.saturating_sub(start.elapsed());
                if remaining.is_zero() {
                    return Err(EdgeError {
                        message: format!("edge {base}: no time left within timeout-ms"),
                        refused: false,
                        elsewhere: true,
                    });
                }
                call(base, remaining)
            });
            match result {
                Err(e) if e.elsewhere && n > 1 => {
                    tried += 1;
                    let next = self.fail_over(i, &e);
                    if tried >= n || next.is_none() || start.elapsed() >= self.timeout {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Compare edge `i`'s manifest with the reference; one that differs is skipped from now on.
    fn check_manifest(&self, i: usize, sha: &str, remaining: Duration) -> Result<(), EdgeError> {
        let base = &self.edges.list[i].base;
        let (_, bytes) = self.get_manifest(base, remaining)?;
        let got = cachenet_core::sha256_hex(&bytes);
        let same = got.eq_ignore_ascii_case(sha);
        let mut c = self.edges.choice.lock().expect("edge choice");
        c.same_manifest[i] = Some(same);
        if same {
            return Ok(());
        }
        // The skip is this streak's warning (the failover that follows is not warned again).
        c.warned = true;
        c.events.push(EdgeEvent::Warning(format!(
            "edge {base} serves another manifest of model set {:?} (sha256 {got}, this camera \
             runs {sha}): skipping it",
            self.set
        )));
        Err(EdgeError {
            message: format!("edge {base} serves another manifest"),
            refused: false,
            elsewhere: true,
        })
    }

    /// Edge `i` failed with `e`: move to the next usable edge in the preference order (when
    /// the camera still uses `i`). Returns the edge now in use, None when none is usable.
    fn fail_over(&self, i: usize, e: &EdgeError) -> Option<usize> {
        let n = self.edges.list.len();
        let mut c = self.edges.choice.lock().expect("edge choice");
        if c.current != i {
            return Some(c.current); // another worker moved on already
        }
        let next = (1..n)
            .map(|k| (i + k) % n)
            .find(|&j| c.same_manifest[j] != Some(false))?;
        c.current = next;
        c.failovers += 1;
        if !std::mem::replace(&mut c.warned, true) {
            c.events.push(EdgeEvent::Warning(format!(
                "{e}; failing over to edge {} (back to {} once it is ready)",
                self.edges.list[next].base, self.edges.list[0].base
            )));
        }
        Some(next)
    }

    fn get_manifest(
        &self,
        base: &str,
        timeout: Duration,
    ) -> Result<(Manifest, Vec<u8>), EdgeError> {
        let r = self
            .auth(self.agent.get(self.url(base, "/manifest")))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call();
        let (status, bytes) = Self::read(base, r, MAX_SMALL_BODY)?;
        if status != 200 {
            return Err(status_error(base, status, &bytes));
        }
        let m = Manifest::from_json(&bytes)
            .map_err(|e| format!("edge {base} sent an invalid manifest: {e}"))?;
        Ok((m, bytes))
    }

    /// POST an inference request; the edge's full-model answer and the submodel it selects.
    pub fn infer(
        &self,
        req: &proto::InferRequest,
    ) -> Result<(proto::InferResponse, Traffic), EdgeError> {
        let body = req.encode_to_vec();
        self.with_failover(|base, timeout| {
            let r = self
                .auth(self.agent.post(self.url(base, "/infer")))
                .header("content-type", proto::CONTENT_TYPE)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .send(&body[..]);
            let (status, bytes) = Self::read(base, r, MAX_SMALL_BODY)?;
            if status != 200 {
                return Err(status_error(base, status, &bytes));
            }
            let resp = proto::InferResponse::decode(&bytes[..])
                .map_err(|e| format!("edge {base} sent a malformed InferResponse: {e}"))?;
            Ok((
                resp,
                Traffic {
                    up: body.len() as u64,
                    down: bytes.len() as u64,
                },
            ))
        })
    }

    /// Download submodel `id` (its ONNX bytes; the caller verifies their sha256). At most
    /// `max_bytes` are read.
    pub fn submodel(&self, id: u32, max_bytes: u64) -> Result<(Vec<u8>, Traffic), EdgeError> {
        self.with_failover(|base, _| {
            let r = self
                .auth(self.agent.get(self.url(base, &format!("/submodels/{id}"))))
                .call();
            // The protobuf wrapper adds a few bytes to the ONNX payload.
            let (status, bytes) = Self::read(base, r, max_bytes.saturating_add(1024))?;
            if status != 200 {
                return Err(status_error(base, status, &bytes));
            }
            let sm = proto::Submodel::decode(&bytes[..])
                .map_err(|e| format!("edge {base} sent a malformed Submodel: {e}"))?;
            if sm.id != id {
                return Err(format!(
                    "submodel {id} download rejected: edge {base} sent submodel {}",
                    sm.id
                )
                .into());
            }
            Ok((
                sm.onnx,
                Traffic {
                    up: 0,
                    down: bytes.len() as u64,
                },
            ))
        })
    }

    /// The set's manifest (from the first edge in the preference order that answers), and the
    /// edge it came from.
    pub fn manifest(&self) -> Result<(Manifest, Vec<u8>, String), EdgeError> {
        self.with_failover(|base, timeout| {
            self.get_manifest(base, timeout)
                .map(|(m, b)| (m, b, base.to_string()))
        })
    }
}

/// What the prober needs of the client (not the client itself: the prober must not keep the
/// edges alive).
struct Prober {
    edges: Weak<Edges>,
    stopped: mpsc::Receiver<()>,
    agent: ureq::Agent,
    set: String,
    token: Option<Secret>,
    timeout: Duration,
}

impl Prober {
    /// Every [`PROBE_INTERVAL`] while the camera is away from its preferred edge, ask that
    /// edge's `/health/ready` and, once ready, its manifest: when it is the camera's, the
    /// camera returns to it. Ends when the last client is dropped.
    fn run(self) {
        while let Err(mpsc::RecvTimeoutError::Timeout) = self.stopped.recv_timeout(PROBE_INTERVAL) {
            let Some(e) = self.edges.upgrade() else {
                return;
            };
            let reference = {
                let c = e.choice.lock().expect("edge choice");
                if c.current == 0 {
                    continue;
                }
                c.reference.clone()
            };
            // No lock is held across the requests.
            let base = &e.list[0].base;
            let same = self.ready(base) && reference.is_none_or(|sha| self.manifest_is(base, &sha));
            if same {
                let mut c = e.choice.lock().expect("edge choice");
                if c.current != 0 {
                    c.current = 0;
                    c.returns += 1;
                    c.warned = false;
                    c.same_manifest[0] = Some(true);
                    c.events.push(EdgeEvent::Returned(format!(
                        "edge {base} is ready again: back to it"
                    )));
                }
            }
        }
    }

    fn get(&self, url: String) -> Option<Vec<u8>> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {}", t.expose()));
        }
        let mut r = req
            .config()
            .timeout_global(Some(self.timeout))
            .build()
            .call()
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        r.body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .ok()
    }

    fn ready(&self, base: &str) -> bool {
        self.get(format!("{base}/health/ready")).is_some()
    }

    fn manifest_is(&self, base: &str, sha: &str) -> bool {
        self.get(format!("{base}/v1/models/{}/manifest", self.set))
            .is_some_and(|b| cachenet_core::sha256_hex(&b).eq_ignore_ascii_case(sha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_url_validation() {
        assert_eq!(
            parse_edge_url("http://edge:8470/").unwrap(),
            ("http://edge:8470".to_string(), "edge".to_string())
        );
        assert!(parse_edge_url("http://127.0.0.1:8470").is_ok());
        assert_eq!(parse_edge_url("https://edge/x").unwrap().1, "edge");
        assert_eq!(parse_edge_url("https://[::1]:9").unwrap().1, "[::1]");
        assert!(
            parse_edge_url("ftp://edge")
                .unwrap_err()
                .contains("http://")
        );
        assert!(parse_edge_url("edge:8470").is_err());
        assert!(is_loopback("localhost") && is_loopback("127.0.0.1") && is_loopback("[::1]"));
        assert!(!is_loopback("edge") && !is_loopback("10.0.0.1"));
        let warn = |url: &str, token: Option<&str>| {
            EdgeClient::new(
                url,
                "s",
                token.map(Secret::new),
                Duration::from_secs(1),
                None,
                "camera",
            )
            .unwrap()
            .clear_text_warning()
        };
        assert!(warn("http://10.0.0.1:8470", Some("t")).is_some());
        assert!(warn("http://127.0.0.1:8470", Some("t")).is_none());
        assert!(warn("https://edge", Some("t")).is_none());
        assert!(warn("http://edge", None).is_none());
        assert!(parse_edge_url("http://").is_err());
        assert!(
            parse_edge_url("http://edge:port")
                .unwrap_err()
                .contains("port")
        );
    }

    /// Rendezvous hashing: cameras spread over the edges; without one edge, only its cameras
    /// move, and each to its second choice.
    #[test]
    fn cameras_prefer_edges_by_rendezvous_hashing() {
        let urls: Vec<String> = (0..3).map(|i| format!("http://edge{i}:8470")).collect();
        let mut per_edge = [0usize; 3];
        for cam in 0..300 {
            let camera = format!("host{cam}/cachenetclassify0");
            let order = preference_order(&camera, &urls);
            assert_eq!(order, preference_order(&camera, &urls), "stable");
            let first = urls.iter().position(|u| *u == order[0]).unwrap();
            per_edge[first] += 1;
            let without: Vec<String> = urls.iter().filter(|u| **u != urls[2]).cloned().collect();
            let moved = preference_order(&camera, &without);
            if first == 2 {
                assert_eq!(moved[0], order[1], "to its second choice");
            } else {
                assert_eq!(moved[0], order[0], "cameras of other edges stay");
            }
        }
        assert!(per_edge.iter().all(|&n| n > 70), "spread: {per_edge:?}");
    }

    #[test]
    fn edge_url_lists() {
        let c = |urls: &str| {
            EdgeClient::new(urls, "s", None, Duration::from_secs(1), None, "cam").map(|c| c.edges())
        };
        let mut got = c("http://a:1, http://b:2/,http://c:3").unwrap();
        got.sort();
        assert_eq!(got, ["http://a:1", "http://b:2", "http://c:3"]);
        assert!(c("http://a:1,http://a:1/").unwrap_err().contains("twice"));
        assert!(c(" , ").unwrap_err().contains("no edge"));
        assert!(c("http://a:1,ftp://b").is_err());
    }
}
