//! The full model on an inference server that speaks the Open Inference Protocol v2 (the KServe
//! v2 protocol: Triton, KServe, MLServer, OpenVINO Model Server), over REST.
//!
//! `--full-model oip+http://HOST:PORT/MODEL`: the edge keeps its own work (manifest, selector,
//! submodel store, the cameras' protocol) and sends the full model's input tensor to the
//! server. At start the server's model metadata must match the manifest (one FP32 input of the
//! full model's shape, an FP32 output with one value per label), else the edge refuses to
//! start. Tensors travel in the binary-tensor extension where the server takes it (probed at
//! start), else as JSON numbers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The header of the binary-tensor extension: the length of the JSON part of a body.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// The largest answer read from the server (a classifier's output is a few kB).
const MAX_ANSWER: u64 = 16 << 20;

/// How the edge reaches the inference server (`--full-model-*` flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// PEM certificates of a private CA for an `oip+https://` server.
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Bound on one inference call (connect, send, answer).
    pub timeout: Duration,
    /// How long the edge waits at start for the server to be ready.
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ca_file: None,
            token: None,
            timeout: Duration::from_millis(1000),
            wait: Duration::from_secs(60),
        }
    }
}

/// A failed inference call: `unavailable` (no connection, timeout, 503/429: the camera may try
/// another edge or later) or a broken answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OipError {
    Unavailable(String),
    Bad(String),
}

impl std::fmt::Display for OipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OipError::Unavailable(m) | OipError::Bad(m) => f.write_str(m),
        }
    }
}

/// `oip+http[s]://host[:port][/prefix]/MODEL` split into the server's base URL and the model.
pub fn parse_url(spec: &str) -> Result<(String, String), String> {
    let rest = spec.strip_prefix("oip+").ok_or_else(|| {
        format!("--full-model {spec:?}: expected oip+http://HOST:PORT/MODEL or oip+https://...")
    })?;
    let after = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("--full-model {spec:?}: the scheme must be oip+http or oip+https")
        })?;
    let (host, path) = after.split_once('/').unwrap_or((after, ""));
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        return Err(format!("--full-model {spec:?} has no valid host"));
    }
    let path = path.trim_end_matches('/');
    let (prefix, model) = match path.rsplit_once('/') {
        Some((p, m)) => (format!("/{p}"), m),
        None => (String::new(), path),
    };
    // `.../v2/models/MODEL` is accepted as written in the server's documentation.
    let prefix = prefix
        .strip_suffix("/v2/models")
        .unwrap_or(&prefix)
        .to_string();
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "--full-model {spec:?}: name the model after the host (…/MODEL; letters, digits, - _ .)"
        ));
    }
    let scheme = &rest[..rest.len() - after.len()];
    Ok((format!("{scheme}{host}{prefix}"), model.to_string()))
}

/// The full model served by an inference server, checked against the manifest.
#[derive(Debug)]
pub struct OipModel {
    /// `http://host:port`, the model's name, and the URL of its `infer` endpoint.
    base: String,
    model: String,
    infer_url: String,
    agent: ureq::Agent,
    token: Option<String>,
    input: String,
    /// The shape sent (a batch of one).
    shape: Vec<i64>,
    input_len: usize,
    output: String,
    classes: usize,
    /// Whether the server takes the binary-tensor extension.
    binary: bool,
    /// Bound on one inference call, retry included.
    timeout: Duration,
}

/// One tensor of the metadata answer.
#[derive(Debug, serde::Deserialize)]
struct TensorMeta {
    name: String,
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
}

#[derive(Debug, serde::Deserialize)]
struct ModelMeta {
    #[serde(default)]
    inputs: Vec<TensorMeta>,
    #[serde(default)]
    outputs: Vec<TensorMeta>,
}

fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--full-model-ca-file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("--full-model-ca-file {}: {e}", path.display()))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "--full-model-ca-file {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// Whether the metadata's `shape` describes `want` ([1, C, H, W]): -1 matches any size; a
/// server that batches (Triton with `max_batch_size`) lists the shape without the batch.
fn shape_matches(shape: &[i64], want: &[usize; 4]) -> bool {
    let dims: &[usize] = if shape.len() == 3 { &want[1..] } else { want };
    shape.len() == dims.len()
        && shape
            .iter()
            .zip(dims)
            .all(|(&s, &w)| s < 0 || s as usize == w)
}

impl OipModel {
    /// Connect to `spec` (`oip+http://host:port/MODEL`), wait for the server to be ready (at
    /// most `opts.wait`), check its metadata against the full model's `shape` and `classes`,
    /// and probe which tensor encoding it takes.
    pub fn connect(
        spec: &str,
        shape: [usize; 4],
        classes: usize,
        opts: &Options,
    ) -> Result<OipModel, String> {
        let (base, model) = parse_url(spec)?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &opts.ca_file {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&load_ca(path)?));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .tls_config(tls.build())
            .build()
            .into();
        let mut m = OipModel {
            infer_url: format!("{base}/v2/models/{model}/infer"),
            base,
            model,
            agent,
            token: opts.token.clone(),
            input: String::new(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            input_len: shape.iter().product(),
            output: String::new(),
            classes,
            binary: true,
            timeout: opts.timeout,
        };
        m.wait_ready(opts.wait)?;
        let meta = m.metadata()?;
        let [input] = &meta.inputs[..] else {
            return Err(m.refuse(format!(
                "takes {} inputs; the full model has one",
                meta.inputs.len()
            )));
        };
        if input.datatype != "FP32" || !shape_matches(&input.shape, &shape) {
            return Err(m.refuse(format!(
                "input {:?} is {} {:?}; the manifest's full model takes FP32 {:?}",
                input.name, input.datatype, input.shape, shape
            )));
        }
        m.input = input.name.clone();
        let per_item = |t: &TensorMeta| -> i64 {
            let dims = match t.shape.first() {
                Some(&d) if d < 0 || (d == 1 && t.shape.len() > 1) => &t.shape[1..],
                _ => &t.shape[..],
            };
            dims.iter().product()
        };
        let output = meta
            .outputs
            .iter()
            .find(|t| t.datatype == "FP32" && per_item(t) == classes as i64)
            .ok_or_else(|| {
                let listed: Vec<String> = meta
                    .outputs
                    .iter()
                    .map(|t| format!("{} {} {:?}", t.name, t.datatype, t.shape))
                    .collect();
                m.refuse(format!(
                    "has no FP32 output of {classes} values (the manifest's labels); it lists {}",
                    listed.join(", ")
                ))
            })?;
        m.output = output.name.clone();
        // Binary tensors where the server takes them, else JSON.
        let zeros = vec![0.0f32; m.input_len];
        if let Err(e) = m.run(&zeros) {
            m.binary = false;
            m.run(&zeros).map_err(|json_err| {
                m.refuse(format!(
                    "cannot run it: {json_err} (with binary tensors: {e})"
                ))
            })?;
        }
        tracing::info!(
            server = %m.base,
            model = %m.model,
            input = %m.input,
            output = %m.output,
            binary_tensors = m.binary,
            "full model on the inference server"
        );
        Ok(m)
    }

    fn refuse(&self, why: String) -> String {
        format!(
            "--full-model: model {:?} on {} {why}: refusing to start with a full model that is \
             not the manifest's",
            self.model, self.base
        )
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn wait_ready(&self, wait: Duration) -> Result<(), String> {
        // The model's readiness, not the server's: a server may be ready before it has loaded
        // the model (PyTriton binds models after Triton starts).
        let url = format!("{}/v2/models/{}/ready", self.base, self.model);
        let start = Instant::now();
        let mut logged = false;
        loop {
            let why = match self.auth(self.agent.get(&url)).call() {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) => format!("answered HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= wait {
                return Err(format!(
                    "--full-model: model {:?} on the inference server {} is not ready after \
                     {wait:?}: {why}",
                    self.model, self.base
                ));
            }
            if !std::mem::replace(&mut logged, true) {
                tracing::info!(
                    server = %self.base,
                    model = %self.model,
                    "waiting for the model on the inference server: {why}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn metadata(&self) -> Result<ModelMeta, String> {
        let url = format!("{}/v2/models/{}", self.base, self.model);
        let mut r = self
            .auth(self.agent.get(&url))
            .call()
            .map_err(|e| format!("--full-model: GET {url}: {e}"))?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| format!("--full-model: GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!(
                "--full-model: GET {url} answered HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("--full-model: GET {url}: not model metadata: {e}"))
    }

    /// The full model's output (logits) for one normalised input tensor.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, OipError> {
        if input.len() != self.input_len {
            return Err(OipError::Bad(format!(
                "input of {} values, the full model takes {}",
                input.len(),
                self.input_len
            )));
        }
        let request = if self.binary {
            json!({
                "inputs": [{
                    "name": self.input, "shape": self.shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": input.len() * 4},
                }],
                "outputs": [{"name": self.output, "parameters": {"binary_data": true}}],
            })
        } else {
            json!({
                "inputs": [{
                    "name": self.input, "shape": self.shape, "datatype": "FP32", "data": input,
                }],
                "outputs": [{"name": self.output}],
            })
        };
        let header = serde_json::to_vec(&request).map_err(|e| OipError::Bad(e.to_string()))?;
        let (headers, body) = if self.binary {
            let len = header.len().to_string();
            let mut b = header;
            b.reserve(input.len() * 4);
            for v in input {
                b.extend_from_slice(&v.to_le_bytes());
            }
            (
                vec![
                    (HEADER_LENGTH, len),
                    ("content-type", "application/octet-stream".to_string()),
                ],
                b,
            )
        } else {
            (
                vec![("content-type", "application/json".to_string())],
                header,
            )
        };
        let unavailable =
            |e: String| OipError::Unavailable(format!("the full model's server: {e}"));
        let started = Instant::now();
        let mut retried = false;
        let mut resp = loop {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            let mut req = self.auth(self.agent.post(&self.infer_url));
            for (k, v) in &headers {
                req = req.header(*k, v);
            }
            match req
                .config()
                .timeout_global(Some(remaining))
                .build()
                .send(&body[..])
            {
                Ok(r) => break r,
                // A pooled connection the server closed while idle, or a refused one: once
                // more while time is left (never after a timeout).
                Err(e)
                    if !retried
                        && !matches!(e, ureq::Error::Timeout(_))
                        && started.elapsed() + Duration::from_millis(1) < self.timeout =>
                {
                    retried = true;
                }
                Err(e) => return Err(unavailable(e.to_string())),
            }
        };
        let status = resp.status().as_u16();
        let json_len = resp
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| unavailable(e.to_string()))?;
        match status {
            200 => {}
            429 | 502 | 503 | 504 => {
                return Err(unavailable(format!("answered HTTP {status}")));
            }
            _ => {
                return Err(OipError::Bad(format!(
                    "the full model's server answered HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                )));
            }
        }
        self.output_of(&bytes, json_len).map_err(|e| {
            OipError::Bad(format!(
                "the full model's server sent a malformed answer: {e}"
            ))
        })
    }

    /// Our output's values from an infer answer (JSON, or JSON then binary tensors).
    fn output_of(&self, bytes: &[u8], json_len: Option<usize>) -> Result<Vec<f32>, String> {
        let json_len = json_len.unwrap_or(bytes.len());
        if json_len > bytes.len() {
            return Err(format!(
                "{HEADER_LENGTH} {json_len} exceeds the body of {} bytes",
                bytes.len()
            ));
        }
        let answer: Value =
            serde_json::from_slice(&bytes[..json_len]).map_err(|e| e.to_string())?;
        let outputs = answer["outputs"].as_array().ok_or("no \"outputs\" list")?;
        // Binary tensors follow the JSON in the order of the outputs that have one.
        let mut offset = json_len;
        for o in outputs {
            let size = o["parameters"]["binary_data_size"]
                .as_u64()
                .map(|s| s as usize);
            if o["name"].as_str() != Some(self.output.as_str()) {
                offset += size.unwrap_or(0);
                continue;
            }
            if o["datatype"].as_str().is_some_and(|d| d != "FP32") {
                return Err(format!(
                    "output {:?} is {}, not FP32",
                    self.output, o["datatype"]
                ));
            }
            let values: Vec<f32> = match size {
                Some(size) => {
                    let raw = bytes
                        .get(offset..offset + size)
                        .ok_or("a binary tensor runs past the body")?;
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                None => o["data"]
                    .as_array()
                    .ok_or("the output has neither data nor binary_data_size")?
                    .iter()
                    .map(|v| v.as_f64().map(|x| x as f32))
                    .collect::<Option<_>>()
                    .ok_or("the output's data are not numbers")?,
            };
            if values.len() != self.classes {
                return Err(format!(
                    "output {:?} has {} values; the manifest has {} labels",
                    self.output,
                    values.len(),
                    self.classes
                ));
            }
            return Ok(values);
        }
        Err(format!("no output named {:?}", self.output))
    }

    /// Whether the server answers its model's readiness now (bounded by the timeout).
    pub fn is_ready(&self) -> bool {
        let url = format!("{}/v2/models/{}/ready", self.base, self.model);
        self.auth(self.agent.get(&url))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    /// `http://host:port` of the server and the model's name (for logs and `--check`).
    pub fn describe(&self) -> String {
        format!(
            "{}/v2/models/{} ({} tensors)",
            self.base,
            self.model,
            if self.binary { "binary" } else { "JSON" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("oip+http://triton:8000/full").unwrap(),
            ("http://triton:8000".to_string(), "full".to_string())
        );
        assert_eq!(
            parse_url("oip+https://ks.example/serving/v2/models/teacher/").unwrap(),
            (
                "https://ks.example/serving".to_string(),
                "teacher".to_string()
            )
        );
        assert!(
            parse_url("http://triton:8000/full")
                .unwrap_err()
                .contains("oip+")
        );
        assert!(
            parse_url("oip+ftp://triton/full")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            parse_url("oip+http://triton:8000")
                .unwrap_err()
                .contains("model")
        );
        assert!(parse_url("oip+http://triton:8000/a b").is_err());
    }

    #[test]
    fn shapes() {
        let want = [1, 3, 224, 224];
        assert!(shape_matches(&[1, 3, 224, 224], &want));
        assert!(shape_matches(&[-1, 3, 224, 224], &want));
        assert!(shape_matches(&[3, 224, 224], &want));
        assert!(!shape_matches(&[1, 3, 112, 112], &want));
        assert!(!shape_matches(&[1, 224, 224, 3], &want));
    }
}
