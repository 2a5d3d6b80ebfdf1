//! HTTP client for `cachenet-edge`. Every call is bounded by the configured timeout, so the
//! streaming thread never waits unbounded on the network.

use std::path::Path;
use std::time::Duration;

use cachenet_core::manifest::{Manifest, is_safe_name};
use cachenet_core::proto;
use prost::Message;

use crate::secret::Secret;

const MAX_SMALL_BODY: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct EdgeClient {
    base: String,
    /// The host of `base` (for the clear-text warning).
    host: String,
    set: String,
    token: Option<Secret>,
    agent: ureq::Agent,
}

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
/// outage and retried with back-off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError {
    pub message: String,
    pub refused: bool,
}

impl From<String> for EdgeError {
    fn from(message: String) -> EdgeError {
        EdgeError {
            message,
            refused: false,
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

fn status_error(status: u16, body: &[u8]) -> EdgeError {
    // The edge's message is shown as data (debug-quoted): it comes from the network.
    let message = match proto::Error::decode(body) {
        Ok(e) if !e.code.is_empty() => {
            format!("edge answered {status} {:?}: {:?}", e.code, e.message)
        }
        _ => format!("edge answered HTTP {status}"),
    };
    EdgeError {
        message,
        refused: status == 401 || status == 403,
    }
}

/// Bytes sent and received by one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub up: u64,
    pub down: u64,
}

impl EdgeClient {
    /// A client for `url`. `https://` URLs are verified against Mozilla's root certificates,
    /// or against the certificates of `ca_file` (a private CA) when one is given.
    pub fn new(
        url: &str,
        set: &str,
        token: Option<Secret>,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<EdgeClient, String> {
        let (base, host) = parse_edge_url(url)?;
        if !is_safe_name(set) {
            return Err(format!("model-set {set:?} must be letters, digits, - _ ."));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&load_ca_file(path)?));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(EdgeClient {
            base,
            host,
            set: set.to_string(),
            token,
            agent,
        })
    }

    /// A warning when the token would cross the network in clear: `http://` to another host.
    pub fn clear_text_warning(&self) -> Option<String> {
        (self.token.is_some() && self.base.starts_with("http://") && !is_loopback(&self.host)).then(
            || {
                format!(
                    "the token goes to {} unencrypted: use an https:// edge-url (and ca-file for a \
                 private CA)",
                    self.base
                )
            },
        )
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v1/models/{}{tail}", self.base, self.set)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {}", t.expose())),
            None => req,
        }
    }

    fn read(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut resp = resp.map_err(|e| format!("edge unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| format!("reading the edge's answer: {e}"))?;
        Ok((status, body))
    }

    /// POST an inference request; the edge's full-model answer and the submodel it selects.
    pub fn infer(
        &self,
        req: &proto::InferRequest,
    ) -> Result<(proto::InferResponse, Traffic), EdgeError> {
        let body = req.encode_to_vec();
        let r = self
            .auth(self.agent.post(self.url("/infer")))
            .header("content-type", proto::CONTENT_TYPE)
            .send(&body[..]);
        let (status, bytes) = Self::read(r, MAX_SMALL_BODY)?;
        if status != 200 {
            return Err(status_error(status, &bytes));
        }
        let resp = proto::InferResponse::decode(&bytes[..])
            .map_err(|e| format!("edge sent a malformed InferResponse: {e}"))?;
        Ok((
            resp,
            Traffic {
                up: body.len() as u64,
                down: bytes.len() as u64,
            },
        ))
    }

    /// Download submodel `id` (its ONNX bytes; the caller verifies their sha256). At most
    /// `max_bytes` are read.
    pub fn submodel(&self, id: u32, max_bytes: u64) -> Result<(Vec<u8>, Traffic), EdgeError> {
        let r = self
            .auth(self.agent.get(self.url(&format!("/submodels/{id}"))))
            .call();
        // The protobuf wrapper adds a few bytes to the ONNX payload.
        let (status, bytes) = Self::read(r, max_bytes.saturating_add(1024))?;
        if status != 200 {
            return Err(status_error(status, &bytes));
        }
        let sm = proto::Submodel::decode(&bytes[..])
            .map_err(|e| format!("edge sent a malformed Submodel: {e}"))?;
        if sm.id != id {
            return Err(format!(
                "submodel {id} download rejected: the edge sent submodel {}",
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
    }

    /// The set's manifest.
    pub fn manifest(&self) -> Result<(Manifest, Vec<u8>), EdgeError> {
        let r = self.auth(self.agent.get(self.url("/manifest"))).call();
        let (status, bytes) = Self::read(r, MAX_SMALL_BODY)?;
        if status != 200 {
            return Err(status_error(status, &bytes));
        }
        let m = Manifest::from_json(&bytes)
            .map_err(|e| format!("edge sent an invalid manifest: {e}"))?;
        Ok((m, bytes))
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
}
