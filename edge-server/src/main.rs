//! `cachenet-edge`: serve CacheNet model sets to devices.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cachenet_edge::{AppState, Config, load_model_sets, serve};
use clap::Parser;

/// CacheNet edge server: full model, submodel selector and submodel store over HTTP/1.1 + protobuf.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A model-set directory (manifest.json + ONNX files); repeat for several sets.
    #[arg(long = "model-dir", required_unless_present = "make_certs")]
    model_dirs: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Inference worker threads (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests allowed to wait for a worker before the server answers 503 (default: 4 x workers).
    #[arg(long)]
    queue: Option<usize>,
    /// File holding the bearer token required on /v1/* (no token: open).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Largest accepted request body.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Request bodies received at once before the server answers 503 (a body must arrive at
    /// 1 MiB/s or better, plus 2 s; uploads never hold an inference slot).
    #[arg(long, default_value_t = 64)]
    max_uploads: usize,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Write a new private CA and a server certificate for --cert-host into this directory
    /// (ca.pem for the devices' ca-file, cert.pem and key.pem for --tls-cert/--tls-key), then exit.
    #[arg(long)]
    make_certs: Option<PathBuf>,
    /// Host names or IP addresses the certificate of --make-certs is valid for.
    #[arg(long, default_values_t = vec!["localhost".to_string(), "127.0.0.1".to_string()])]
    cert_host: Vec<String>,
    /// Write the frames of misses and audits (PNG at the full model's input) with the full
    /// model's answer (JSON) into DIR/<set>/: material to retrain or distil the set for these
    /// cameras.
    #[arg(long, value_name = "DIR")]
    collect: Option<PathBuf>,
    /// Most the --collect folder holds, in MB; the oldest frames are deleted first.
    #[arg(long, default_value_t = 1024, requires = "collect")]
    collect_max_mb: u64,
    /// What runs the full models and submodels: auto (the engine's own plan where it takes the
    /// graph, else tract), direct, tract, or onnxruntime (a build with the onnxruntime feature;
    /// the library from --onnxruntime-library, else ORT_DYLIB_PATH, else the system's).
    #[arg(long, default_value = "auto")]
    backend: cachenet_core::engine::BackendChoice,
    /// --backend onnxruntime: cpu, cuda or tensorrt (one that cannot start falls back to the
    /// CPU with a warning naming why).
    #[arg(long, default_value = "cpu")]
    execution_provider: cachenet_core::engine::Provider,
    /// --execution-provider tensorrt: keep TensorRT's engines here (only the first start builds
    /// them).
    #[arg(long)]
    trt_cache_dir: Option<PathBuf>,
    /// --backend onnxruntime: path of libonnxruntime.so.
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
    /// Run the full model on an inference server that speaks the Open Inference Protocol v2
    /// (Triton, KServe, MLServer, OpenVINO Model Server): oip+http://HOST:PORT/MODEL, or
    /// SET=oip+http://... when serving several sets; repeat per set. Its metadata must match
    /// the manifest, else the edge refuses to start.
    #[arg(long, value_name = "[SET=]URL")]
    full_model: Vec<cachenet_edge::FullModelAt>,
    /// --full-model oip+https://: PEM certificates of a private CA for the server.
    #[arg(long)]
    full_model_ca_file: Option<PathBuf>,
    /// --full-model: a file holding a bearer token the inference server requires.
    #[arg(long)]
    full_model_token_file: Option<PathBuf>,
    /// --full-model: bound on one call to the inference server (ms); a call past it, a refused
    /// connection or a 503 of the server is answered 503 to the camera.
    #[arg(long, default_value_t = 1000)]
    full_model_timeout_ms: u64,
    /// --full-model: how long to wait at start for the inference server to be ready (s).
    #[arg(long, default_value_t = 60)]
    full_model_wait_s: u64,
    /// On SIGTERM or Ctrl-C, answer /health/ready with 503 for this many seconds while still
    /// serving, so that a balancer's health checks drain this edge, then stop accepting and
    /// finish the requests in flight.
    #[arg(long, default_value_t = 0)]
    drain_s: u64,
    /// Validate the model sets, print a line per set and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.make_certs {
        return match cachenet_edge::listen::make_certs(dir, &args.cert_host) {
            Ok(f) => {
                println!(
                    "CA (ca-file of the devices): {}\ncertificate (--tls-cert): {}\nkey (--tls-key): {}",
                    f.ca.display(),
                    f.cert.display(),
                    f.key.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let engine = cachenet_core::engine::Engine {
        backend: args.backend,
        provider: args.execution_provider,
        trt_cache_dir: args.trt_cache_dir.clone(),
        library: args.onnxruntime_library.clone(),
        // One run at a time per onnxruntime session, on as many threads as --workers.
        threads: args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let full_model_token = match &args.full_model_token_file {
        Some(path) => match read_token(path, "--full-model-token-file") {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut config = Config {
        engine,
        model_dirs: args.model_dirs,
        max_body_bytes: args.max_body_bytes,
        uploads: args.max_uploads.max(1),
        full_models: args.full_model,
        full_model_options: cachenet_edge::oip::Options {
            ca_file: args.full_model_ca_file,
            token: full_model_token,
            timeout: std::time::Duration::from_millis(args.full_model_timeout_ms.max(1)),
            wait: std::time::Duration::from_secs(args.full_model_wait_s),
        },
        ..Config::default()
    };
    if args.check {
        return match load_model_sets(&config) {
            Ok(sets) => {
                for (name, s) in sets {
                    let m = &s.manifest;
                    let sizes: Vec<String> = m
                        .inputs()
                        .iter()
                        .map(|i| format!("{}x{}x{}", i.width, i.height, i.channels))
                        .collect();
                    let full = s
                        .remote_full
                        .as_ref()
                        .map(|r| format!(", full model on {}", r.describe()))
                        .unwrap_or_default();
                    println!(
                        "{name}: ok (version {}, {} labels, K = {}, input {}, threshold {} \
                         nats{full})",
                        m.version,
                        m.labels.len(),
                        m.selector.k,
                        sizes.join(" + "),
                        m.threshold
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }

    if let Some(w) = args.workers {
        config.workers = w.max(1);
        config.queue = 4 * config.workers;
    }
    if let Some(q) = args.queue {
        config.queue = q;
    }
    if let Some(dir) = &args.collect {
        match cachenet_edge::collect::Collector::open(dir, args.collect_max_mb << 20) {
            Ok(c) => config.collect = Some(std::sync::Arc::new(c)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match cachenet_edge::listen::tls_config(cert, key) {
            Ok(c) => config.tls = Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.token_file {
        match read_token(path, "--token-file") {
            Ok(t) => config.token = Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if config.token.is_some() && config.tls.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            "the bearer token and every frame cross the network in clear: serve HTTPS with \
             --tls-cert and --tls-key"
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(
        config,
        args.listen,
        std::time::Duration::from_secs(args.drain_s),
    ))
}

async fn run(config: Config, listen: SocketAddr, drain: std::time::Duration) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let load = config.clone();
    let state = AppState::new(config);
    let drainer = state.clone();
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<String>(1);
    let loader = state.clone();
    tokio::task::spawn_blocking(move || match load_model_sets(&load) {
        Ok(sets) => {
            for (name, s) in &sets {
                tracing::info!(set = %name, k = s.manifest.selector.k, "model set loaded");
            }
            loader.set_models(sets);
            tracing::info!("ready");
        }
        Err(e) => {
            let _ = fail_tx.blocking_send(e);
        }
    });
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let code = tokio::select! {
        _ = shutdown_signal() => {
            if !drain.is_zero() {
                // Readiness answers 503 first, so that a balancer's health checks take this
                // edge out of rotation before it stops accepting.
                drainer.drain();
                tracing::info!(?drain, "draining: not ready, still serving");
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: finishing in-flight requests");
            ExitCode::SUCCESS
        }
        Some(e) = fail_rx.recv() => { eprintln!("error: {e}"); ExitCode::FAILURE }
    };
    let _ = stop_tx.send(());
    match server.await {
        Ok(Ok(())) => code,
        Ok(Err(e)) => {
            eprintln!("error: server: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: server task: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bearer token from a file (trimmed; an empty file is an error).
fn read_token(path: &std::path::Path, flag: &str) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(format!("{flag} {}: the file is empty", path.display())),
        Err(e) => Err(format!("{flag} {}: {e}", path.display())),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
