//! What the server listens on: plain TCP or TLS (rustls), with every connection closed when it
//! sends nothing for [`IDLE`] (a client trickling its headers, or an idle keep-alive), and TLS
//! handshakes done off the accept loop (a slow handshake never holds up other clients).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A connection that sends nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(20);
/// A TLS handshake must finish within this.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY: usize = 64;

/// The server's certificate chain and key, from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use pki_types::pem::PemObject;
    let certs: Vec<pki_types::CertificateDer<'static>> =
        pki_types::CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Files written by [`make_certs`].
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The new certificate authority: give it to devices (`ca-file`).
    pub ca: std::path::PathBuf,
    /// The server's certificate (`--tls-cert`) and key (`--tls-key`).
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Create a private certificate authority and a server certificate it signs for `hosts`
/// (names or IP addresses), as `ca.pem`, `cert.pem` and `key.pem` (mode 0600) in `dir`.
pub fn make_certs(dir: &Path, hosts: &[String]) -> Result<CertFiles, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| format!("certificate: {e}");
    let io = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "CacheNet edge private CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("cachenet-edge", |h| h.as_str()),
    );
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let files = CertFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).map_err(|e| io(&files.ca, e))?;
    std::fs::write(&files.cert, cert.pem()).map_err(|e| io(&files.cert, e))?;
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&files.key)
            .and_then(|mut f| f.write_all(key.serialize_pem().as_bytes()))
            .map_err(|e| io(&files.key, e))?;
    }
    Ok(files)
}

/// A stream whose reads fail with `TimedOut` once nothing has moved either way for [`IDLE`]
/// (a slow download to the client keeps the connection alive).
pub struct Idle<S> {
    inner: S,
    timer: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S) -> Idle<S> {
        Idle {
            inner,
            timer: Box::pin(tokio::time::sleep(IDLE)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.timer.as_mut().reset(Instant::now() + IDLE);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.timer.as_mut().reset(Instant::now() + IDLE);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.timer.as_mut().reset(Instant::now() + IDLE);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Plain TCP connections, each behind [`Idle`].
pub struct Plain(pub TcpListener);

impl axum::serve::Listener for Plain {
    type Io = Idle<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (s, a) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = s.set_nodelay(true);
        (Idle::new(s), a)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// TLS connections: TCP is accepted here, each handshake runs on its own task (bounded by
/// [`HANDSHAKE`]), and finished ones are handed to the server.
pub struct Tls {
    addr: SocketAddr,
    ready: mpsc::Receiver<(Idle<tokio_rustls::server::TlsStream<TcpStream>>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Tls {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Tls> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY);
        let accepting = tokio::spawn(async move {
            let mut listener = listener;
            loop {
                let (s, peer) = axum::serve::Listener::accept(&mut listener).await;
                let _ = s.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(s)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((Idle::new(tls), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Tls {
            addr,
            ready,
            accepting,
        })
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for Tls {
    type Io = Idle<tokio_rustls::server::TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
