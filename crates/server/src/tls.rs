//! TLS and client identity for the HTTPS server: the on-disk PKI (a private CA, the serving
//! certificate and an admin client certificate, created on first start and reused later), the
//! admin kubeconfig, the rustls server configuration (optional client certificates verified
//! against the CA), and the accept loop that runs each connection's handshake in its own task and
//! hands the verified client-certificate identity to the axum router as a request extension.
//!
//! [`prepare`] applies kube-apiserver's TLS and front-proxy flags ([`crate::flags`]) on
//! top of the generated PKI: a given serving certificate, a given client CA bundle, and a
//! request-header CA whose allowed names are front proxies. Each connection's certificate is then
//! checked against the client CA (a user: CN, O) and the request-header CA (a front proxy: CN)
//! separately, and [`PeerIdentity`] records both answers.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

pub use crate::authn::PeerIdentity;
use crate::authn::{AuthnError, RequestHeaders, UserInfo};
use crate::flags::{FrontProxyFlags, TlsFlags};

/// CA certificate file name in the data directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// CA private key file name.
pub const CA_KEY_FILE: &str = "ca.key";
/// Serving certificate file name.
pub const SERVING_CERT_FILE: &str = "serving.crt";
/// Serving private key file name.
pub const SERVING_KEY_FILE: &str = "serving.key";
/// Admin client certificate file name.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// Admin client private key file name.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Admin kubeconfig file name.
pub const ADMIN_KUBECONFIG_FILE: &str = "admin.kubeconfig";
/// Common name of the generated CA.
pub const CA_COMMON_NAME: &str = "replication-vw-ca";
/// Hosts the serving certificate always covers.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const SERVING_COMMON_NAME: &str = "replication-vw";
const ADMIN_USER: &str = "admin";
const ADMIN_GROUP: &str = "system:masters";
const KUBECONFIG_CLUSTER: &str = "replication-vw";

/// Lifetime of the generated CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Lifetime of generated serving and client certificates (capped by the CA's end of validity).
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A stored leaf certificate expiring sooner than this is reissued at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Certificates start this long in the past to tolerate clock skew between machines.
const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// A TLS handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (kube-apiserver's `ReadHeaderTimeout`): on
/// HTTP/1.1 from the start of each request (and of waiting for the next one), and on any
/// connection from the handshake to its first request, so a connection that stalls costs its
/// buffers for at most this long.
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// Bytes of request line and headers a client may send (Go's and kube-apiserver's
/// `MaxHeaderBytes`, 1 MiB, plus the 4 KiB Go allows on top). More is a 431 on HTTP/1.1 and on
/// HTTP/2 (where it bounds the decoded header list). A request target longer than 65,534 bytes
/// (the `http` crate's limit) is a 414 on HTTP/1.1 and a reset stream on HTTP/2; the 431 and 414
/// are hyper's own bodiless answers, as Go's are plain text (no layer runs for a request that
/// could not be read).
pub const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;
/// Default of `--write-stall-timeout`: a connection whose client accepted none of the bytes the
/// server had for it for this long is closed (a watcher that stopped reading; it relists when
/// it reconnects). Until then what it costs is bounded by hyper's and the socket's buffers.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections closed because their client stopped accepting bytes (`--write-stall-timeout`).
pub static CLOSED_WRITE_STALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A connection's IO that fails its writes once the peer accepted nothing for `limit` while
/// the server had something to send: the connection then ends, and with it every watch on it.
struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Armed on the first write that could not proceed; disarmed by any progress.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteStall<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteStall {
            inner,
            limit,
            deadline: None,
        }
    }

    /// Called when a write or flush is pending: an error once the deadline passed.
    fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Error> {
        let limit = self.limit;
        if limit.is_zero() {
            // `--write-stall-timeout 0`: never.
            return std::task::Poll::Pending;
        }
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                CLOSED_WRITE_STALL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::task::Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client accepted no bytes within the write stall timeout",
                ))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// The outcome of a write or flush: progress disarms the deadline; no progress arms it and
    /// fails once it passed.
    fn watch_progress<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        r: std::task::Poll<io::Result<R>>,
    ) -> std::task::Poll<io::Result<R>> {
        if r.is_pending() {
            return self.stalled(cx).map(Err);
        }
        self.deadline = None;
        r
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_progress(cx, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
/// Bytes an HTTP/2 connection gathers before it writes them even without a flush.
const GATHER_BYTES: usize = 64 * 1024;
/// A write at least this large (a full HTTP/2 DATA frame of a big response) is not copied: what
/// is kept goes first, then the write passes straight through.
const GATHER_PASS_THROUGH: usize = 16 * 1024;
/// Wake-ups by its own streams after which a connection waiting to flush writes anyway (a bound
/// on the wait when the worker never runs out of work).
const GATHER_POLLS: u32 = 16;

/// Set once the scheduler comes back to the connection task after its yield (the deferred
/// wake-up), as opposed to a wake-up by one of the connection's streams.
struct YieldDone {
    done: std::sync::atomic::AtomicBool,
    task: std::task::Waker,
}

impl std::task::Wake for YieldDone {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake_by_ref();
    }
}

type Yielding = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An HTTP/2 connection's writes gathered into one TLS write per round of its streams. Every
/// stream of a connection runs as a task of its own and wakes the connection task with each DATA
/// frame; tokio runs a task woken that way next, so without this the connection wrote (and
/// encrypted, and made a system call for) each frame alone: one change delivered to 100 watchers
/// on one connection was 100 writes. Here written bytes are kept, and a flush first yields to the
/// scheduler until the tasks already queued on this worker (the other streams) have run, then
/// writes everything at once; large writes pass through uncopied. Bounded: at most
/// [`GATHER_BYTES`] are kept, and after
/// [`GATHER_POLLS`] wake-ups by its streams the connection writes without waiting further.
struct Gather<T> {
    inner: T,
    /// Only HTTP/2 connections gather; HTTP/1.1 writes pass straight through.
    enabled: bool,
    buf: Vec<u8>,
    written: usize,
    /// The yield of a flush in progress.
    waiting: Option<(Arc<YieldDone>, Yielding)>,
    polls: u32,
}

impl<T: tokio::io::AsyncWrite + Unpin> Gather<T> {
    fn new(inner: T, enabled: bool) -> Self {
        Gather {
            inner,
            enabled,
            buf: Vec::new(),
            written: 0,
            waiting: None,
            polls: 0,
        }
    }

    /// Write out everything kept.
    fn drain(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = std::task::ready!(
                std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])
            )?;
            if n == 0 {
                return std::task::Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        std::task::Poll::Ready(Ok(()))
    }

    /// Ready once the streams queued on this worker have had their turn (or the bounds say write
    /// now).
    fn gathered(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let done = self
            .waiting
            .as_ref()
            .is_some_and(|(flag, _)| flag.done.load(std::sync::atomic::Ordering::Acquire));
        if done || self.polls >= GATHER_POLLS || self.buf.len() >= GATHER_BYTES {
            self.waiting = None;
            self.polls = 0;
            return std::task::Poll::Ready(());
        }
        self.polls += 1;
        let (flag, yielding) = self.waiting.get_or_insert_with(|| {
            let flag = Arc::new(YieldDone {
                done: std::sync::atomic::AtomicBool::new(false),
                task: cx.waker().clone(),
            });
            (flag, Box::pin(tokio::task::yield_now()))
        });
        let waker = std::task::Waker::from(flag.clone());
        let mut yield_cx = std::task::Context::from_waker(&waker);
        if yielding.as_mut().poll(&mut yield_cx).is_ready() {
            // A stream woke the task before the scheduler came back to it: yield again (the
            // first deferred wake-up still sets the flag when it comes).
            *yielding = Box::pin(tokio::task::yield_now());
            let _ = yielding.as_mut().poll(&mut yield_cx);
        }
        std::task::Poll::Pending
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Gather<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Gather<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if !self.enabled {
            return std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if buf.len() >= GATHER_PASS_THROUGH {
            std::task::ready!(self.drain(cx))?;
            return std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if self.buf.len() >= GATHER_BYTES {
            std::task::ready!(self.drain(cx))?;
        }
        let n = buf.len().min(GATHER_BYTES - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        if !self.enabled {
            return std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if bufs.iter().map(|b| b.len()).sum::<usize>() >= GATHER_PASS_THROUGH {
            std::task::ready!(self.drain(cx))?;
            return std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.buf.len() >= GATHER_BYTES {
            std::task::ready!(self.drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(GATHER_BYTES - self.buf.len());
            self.buf.extend_from_slice(&b[..take]);
            n += take;
            if take < b.len() {
                break;
            }
        }
        std::task::Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.enabled || self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.enabled && self.buf.len() > self.written {
            // A drain already under way (the socket was full) goes on without another wait.
            if self.written == 0 {
                std::task::ready!(self.gathered(cx));
            }
            std::task::ready!(self.drain(cx))?;
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.enabled {
            std::task::ready!(self.drain(cx))?;
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Generated or loaded key material, all PEM strings.
#[derive(Clone)]
pub struct Pki {
    /// CA certificate.
    pub ca_cert_pem: String,
    /// CA private key.
    pub ca_key_pem: String,
    /// Serving certificate (signed by the CA).
    pub serving_cert_pem: String,
    /// Serving private key.
    pub serving_key_pem: String,
    /// Admin client certificate (CN `admin`, O `system:masters`).
    pub admin_cert_pem: String,
    /// Admin client private key.
    pub admin_key_pem: String,
    /// CA certificate(s) clients use to verify the serving certificate: the admin kubeconfig's
    /// `certificate-authority-data`. The generated CA, unless [`prepare`] serves a
    /// `--tls-cert-file` that does not chain to it.
    pub serving_ca_pem: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("serving_cert_pem", &self.serving_cert_pem)
            .field("admin_cert_pem", &self.admin_cert_pem)
            .field("serving_ca_pem", &self.serving_ca_pem)
            .finish_non_exhaustive()
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Certificate or key generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the configuration or a certificate.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate or server-certificate verifier could not be built.
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Key material could not be parsed or is inconsistent.
    #[error("{what}: {message}")]
    Parse {
        /// Which file or PEM string.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A requested host is neither an IP address nor a valid DNS name.
    #[error("invalid host {0:?} for the serving certificate")]
    InvalidHost(String),
    /// A command-line flag is missing its companion or has an unusable value.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--tls-cert-file`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn parse_error(what: impl fmt::Display, message: impl fmt::Display) -> TlsError {
    TlsError::Parse {
        what: what.to_string(),
        message: message.to_string(),
    }
}

/// On first start generate a CA (`replication-vw-ca`), a serving certificate signed by it with
/// SANs `localhost`, `127.0.0.1`, `::1` and every extra host (IP strings become IP SANs, names DNS
/// SANs; `[v6]` brackets are stripped), and an admin client certificate (CN `admin`,
/// O `system:masters`), stored in `data_dir` as `ca.crt`, `ca.key`, `serving.crt`, `serving.key`,
/// `admin.crt`, `admin.key` (keys mode 0600).
///
/// Later starts reuse the files. The CA is never replaced: a CA certificate without its key (or
/// the reverse), an unreadable or mismatched pair, or an expired CA is an error. The serving or
/// admin certificate alone is reissued with the CA when it is missing, unreadable, does not match
/// its key, does not chain to the CA, expires within 30 days, or (serving) lacks a requested host.
pub fn ensure_pki(data_dir: &Path, extra_hosts: &[String]) -> Result<Pki, TlsError> {
    std::fs::create_dir_all(data_dir).map_err(io_error("creating", data_dir))?;
    let hosts = serving_hosts(extra_hosts)?;
    let ca = load_or_create_ca(data_dir)?;
    let issuer = ca.issuer()?;

    let provider = ring_provider();
    let roots = Arc::new(root_store(&ca.der)?);
    let server_verifier =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
    let now = SystemTime::now();
    // Stored leaves must stay valid for RENEW_BEFORE, or until just before the CA ends (issued
    // leaves never outlive the CA, so a CA close to its end must not force a reissue every start).
    let ca_end = SystemTime::from(ca.not_after);
    if ca_end < now + RENEW_BEFORE {
        tracing::warn!(not_after = %ca.not_after, "the CA expires soon; remove ca.* to generate a new one");
    }
    let renew_check_time = unix_time(
        (now + RENEW_BEFORE)
            .min(ca_end.checked_sub(Duration::from_secs(60)).unwrap_or(now))
            .max(now),
    );

    let serving_check = |der: &CertificateDer<'_>, at: UnixTime| -> Result<(), String> {
        for (host, name) in &hosts {
            server_verifier
                .verify_server_cert(der, &[], name, &[], at)
                .map_err(|e| format!("not valid for {host}: {e}"))?;
        }
        Ok(())
    };
    let admin_check = |der: &CertificateDer<'_>, at: UnixTime| -> Result<(), String> {
        client_verifier
            .verify_client_cert(der, &[], at)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };

    let serving = ensure_leaf(
        data_dir,
        (SERVING_CERT_FILE, SERVING_KEY_FILE),
        ca.created,
        |der| serving_check(der, renew_check_time),
        || {
            let names: Vec<String> = hosts.iter().map(|(h, _)| h.clone()).collect();
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name = distinguished_name(SERVING_COMMON_NAME, &[]);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            Ok(params)
        },
        |der| serving_check(der, unix_time(now)),
        &ca,
        &issuer,
    )?;
    let admin = ensure_leaf(
        data_dir,
        (ADMIN_CERT_FILE, ADMIN_KEY_FILE),
        ca.created,
        |der| admin_check(der, renew_check_time),
        || {
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(ADMIN_USER, &[ADMIN_GROUP]);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            Ok(params)
        },
        |der| admin_check(der, unix_time(now)),
        &ca,
        &issuer,
    )?;

    Ok(Pki {
        serving_ca_pem: ca.cert_pem.clone(),
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        serving_cert_pem: serving.0,
        serving_key_pem: serving.1,
        admin_cert_pem: admin.0,
        admin_key_pem: admin.1,
    })
}

/// The hosts the serving certificate must cover, each with its name for verification.
fn serving_hosts(extra_hosts: &[String]) -> Result<Vec<(String, ServerName<'static>)>, TlsError> {
    let mut hosts: Vec<(String, ServerName<'static>)> = Vec::new();
    let requested = DEFAULT_HOSTS
        .iter()
        .map(|h| (*h).to_owned())
        .chain(extra_hosts.iter().cloned());
    for raw in requested {
        let trimmed = raw.trim();
        let host = match trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(inner) => inner,
            None => trimmed,
        };
        if host.is_empty() {
            continue;
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::InvalidHost(raw))?;
        if !hosts.iter().any(|(h, _)| *h == host) {
            hosts.push((host, name));
        }
    }
    Ok(hosts)
}

/// The CA as loaded from (or just written to) the data directory.
struct Ca {
    cert_pem: String,
    key_pem: String,
    key: KeyPair,
    der: CertificateDer<'static>,
    /// End of the CA's validity; issued certificates do not outlive it.
    not_after: time::OffsetDateTime,
    /// Whether the CA was generated in this call (stored leaves then cannot chain to it).
    created: bool,
}

impl Ca {
    /// An rcgen issuer with the CA certificate's own subject and key identifier, so issued
    /// certificates name exactly this CA even if it was not generated by us.
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TlsError> {
        let cert = parse_certificate(&self.der, CA_CERT_FILE)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name_from_x509(cert.subject())
            .map_err(|m| parse_error(CA_CERT_FILE, m))?;
        params.key_identifier_method = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        Ok(Issuer::new(params, &self.key))
    }
}

fn load_or_create_ca(dir: &Path) -> Result<Ca, TlsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let key =
                KeyPair::from_pem(&key_pem).map_err(|e| parse_error(key_path.display(), e))?;
            let der = first_certificate(&cert_pem, &cert_path)?;
            let cert = parse_certificate(&der, cert_path.display())?;
            if cert.public_key().raw != key.subject_public_key_info().as_slice() {
                return Err(parse_error(
                    cert_path.display(),
                    format!("does not match the private key in {}", key_path.display()),
                ));
            }
            let not_after = cert.validity().not_after.to_datetime();
            if not_after <= time::OffsetDateTime::now_utc() {
                return Err(parse_error(
                    cert_path.display(),
                    format!("the CA expired at {not_after}; remove ca.* to generate a new one"),
                ));
            }
            Ok(Ca {
                cert_pem,
                key_pem,
                key,
                der,
                not_after,
                created: false,
            })
        }
        (None, None) => {
            let now = time::OffsetDateTime::now_utc();
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(CA_COMMON_NAME, &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = now - BACKDATE;
            params.not_after = now + CA_VALIDITY;
            let cert = params.self_signed(&key)?;
            let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
            write_file(&key_path, &key_pem, true)?;
            write_file(&cert_path, &cert_pem, false)?;
            tracing::info!(path = %cert_path.display(), "generated a new CA");
            Ok(Ca {
                cert_pem,
                key_pem,
                key,
                der: cert.der().clone(),
                not_after: params.not_after,
                created: true,
            })
        }
        (Some(_), None) => Err(parse_error(
            key_path.display(),
            format!("missing while {} exists", cert_path.display()),
        )),
        (None, Some(_)) => Err(parse_error(
            cert_path.display(),
            format!("missing while {} exists", key_path.display()),
        )),
    }
}

/// Reuses a stored leaf certificate when `still_good` accepts it, otherwise issues a new one from
/// `params` with the CA, checks it with `check_new`, and stores it. Returns (cert PEM, key PEM).
#[allow(clippy::too_many_arguments)]
fn ensure_leaf(
    dir: &Path,
    (cert_file, key_file): (&str, &str),
    ca_created: bool,
    still_good: impl Fn(&CertificateDer<'_>) -> Result<(), String>,
    params: impl FnOnce() -> Result<CertificateParams, rcgen::Error>,
    check_new: impl Fn(&CertificateDer<'_>) -> Result<(), String>,
    ca: &Ca,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(String, String), TlsError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    if !ca_created {
        match stored_leaf(&cert_path, &key_path)? {
            Ok((cert_pem, key_pem, der)) => match still_good(&der) {
                Ok(()) => return Ok((cert_pem, key_pem)),
                Err(reason) => {
                    tracing::info!(path = %cert_path.display(), %reason, "reissuing certificate");
                }
            },
            Err(reason) => {
                tracing::info!(path = %cert_path.display(), %reason, "issuing certificate");
            }
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let mut params = params()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = (now + LEAF_VALIDITY).min(ca.not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    check_new(cert.der()).map_err(|reason| {
        parse_error(
            cert_path.display(),
            format!("a certificate issued with {CA_CERT_FILE} does not verify: {reason}"),
        )
    })?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    write_file(&key_path, &key_pem, true)?;
    write_file(&cert_path, &cert_pem, false)?;
    Ok((cert_pem, key_pem))
}

/// Outer error: I/O failure other than "not found". Inner error: why the stored pair is unusable.
type StoredLeaf = Result<(String, String, CertificateDer<'static>), String>;

fn stored_leaf(cert_path: &Path, key_path: &Path) -> Result<StoredLeaf, TlsError> {
    let (Some(cert_pem), Some(key_pem)) = (read_optional(cert_path)?, read_optional(key_path)?)
    else {
        return Ok(Err("certificate or key file missing".to_owned()));
    };
    let key = match KeyPair::from_pem(&key_pem) {
        Ok(key) => key,
        Err(e) => return Ok(Err(format!("unreadable key: {e}"))),
    };
    let der = match first_certificate(&cert_pem, cert_path) {
        Ok(der) => der,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let matches = match parse_certificate(&der, cert_path.display()) {
        Ok(cert) => cert.public_key().raw == key.subject_public_key_info().as_slice(),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !matches {
        return Ok(Err("certificate does not match its key".to_owned()));
    }
    Ok(Ok((cert_pem, key_pem, der)))
}

fn distinguished_name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Rebuilds an rcgen name from a parsed certificate subject, keeping each value's string type so
/// the encoding (and thus issuer/subject matching) is unchanged.
fn distinguished_name_from_x509(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err("subject has an empty or multi-valued RDN".to_owned());
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or("subject attribute type OID too large")?
            .collect();
        let data = attr.attr_value().data;
        let text = || std::str::from_utf8(data).map_err(|_| "subject value is not valid text");
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(|e| format!("{e}"))?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|e| format!("{e}"))?),
            Tag::T61String => {
                DnValue::TeletexString(text()?.try_into().map_err(|e| format!("{e}"))?)
            }
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(|e| e.to_string())?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec())
                    .map_err(|e| e.to_string())?,
            ),
            other => return Err(format!("unsupported subject string type {other}")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unix_time(at: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn root_store(ca_der: &CertificateDer<'_>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone().into_owned())?;
    Ok(roots)
}

fn first_certificate(
    pem: &str,
    what: impl AsRef<Path>,
) -> Result<CertificateDer<'static>, TlsError> {
    let what = what.as_ref().display();
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| parse_error(&what, "no PEM certificate found"))?
        .map_err(|e| parse_error(&what, e))
}

fn parse_certificate<'a>(
    der: &'a CertificateDer<'_>,
    what: impl fmt::Display,
) -> Result<X509Certificate<'a>, TlsError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| parse_error(what, e))
}

/// `Ok(None)` when the file does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves a half-written file;
/// `secret` files are created with mode 0600.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_error("renaming into", path))
}

/// Writes `<data_dir>/admin.kubeconfig` (mode 0600): cluster `replication-vw` with
/// `server: <server_url>` and the serving CA ([`Pki::serving_ca_pem`]) inline, user `admin` with
/// the client certificate and key inline, context `admin` as current-context. Returns its path.
pub fn write_admin_kubeconfig(
    data_dir: &Path,
    server_url: &str,
    pki: &Pki,
) -> Result<PathBuf, TlsError> {
    write_admin_kubeconfig_with(data_dir, server_url, pki, &[])
}

/// The admin kubeconfig with one more context (and cluster entry) per `(name, server URL)`,
/// e.g. one per workspace (`root:cloudco` → `<url>/clusters/root:cloudco`).
pub fn write_admin_kubeconfig_with(
    data_dir: &Path,
    server_url: &str,
    pki: &Pki,
    contexts: &[(String, String)],
) -> Result<PathBuf, TlsError> {
    // A JSON string is a valid YAML double-quoted scalar.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let server = quote(server_url);
    let ca = BASE64_STANDARD.encode(&pki.serving_ca_pem);
    let cert = BASE64_STANDARD.encode(&pki.admin_cert_pem);
    let key = BASE64_STANDARD.encode(&pki.admin_key_pem);
    let mut clusters = format!(
        "- name: {KUBECONFIG_CLUSTER}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n"
    );
    let mut ctxs = format!(
        "- name: {ADMIN_USER}\n  context:\n    cluster: {KUBECONFIG_CLUSTER}\n    user: {ADMIN_USER}\n"
    );
    for (name, url) in contexts {
        let (n, u) = (quote(name), quote(url));
        clusters.push_str(&format!(
            "- name: {n}\n  cluster:\n    server: {u}\n    certificate-authority-data: {ca}\n"
        ));
        ctxs.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: {ADMIN_USER}\n"
        ));
    }
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n{clusters}\
         users:\n\
         - name: {ADMIN_USER}\n  \
           user:\n    \
             client-certificate-data: {cert}\n    \
             client-key-data: {key}\n\
         contexts:\n{ctxs}\
         current-context: {ADMIN_USER}\n\
         preferences: {{}}\n"
    );
    std::fs::create_dir_all(data_dir).map_err(io_error("creating", data_dir))?;
    let path = data_dir.join(ADMIN_KUBECONFIG_FILE);
    write_file(&path, &text, true)?;
    Ok(path)
}

/// rustls server configuration (ring provider): the serving certificate; client certificates
/// verified against the CA when presented but optional (bearer tokens and anonymous callers
/// still connect); ALPN `h2` and `http/1.1`.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = ring_provider();
    let ca = first_certificate(&pki.ca_cert_pem, "CA certificate")?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(&ca)?), provider.clone())
            .allow_unauthenticated()
            .build()?;
    let chain = certificates(&pki.serving_cert_pem, "serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes())
        .map_err(|e| parse_error("serving key", e))?;
    build_server_config(provider, verifier, chain, key)
}

fn build_server_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ClientCertVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)?;
    let resolver = Arc::new(ServingCert::new(certified));
    config_with_resolver(provider, verifier, resolver)
}

fn config_with_resolver(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ClientCertVerifier>,
    resolver: Arc<ServingCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The serving certificate handed to every handshake; replaced when its files change
/// ([`ServingCert::watch_files`]), so new connections get a renewed certificate without a
/// restart.
#[derive(Debug)]
pub struct ServingCert {
    current: parking_lot::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ServingCert {
    fn new(certified: rustls::sign::CertifiedKey) -> Self {
        ServingCert {
            current: parking_lot::RwLock::new(Arc::new(certified)),
        }
    }

    /// Re-read `cert` and `key` every `every`; switch once both parse and the key matches the
    /// certificate (cert-manager and Secret volumes replace the two files one after the other,
    /// so a half-written pair is skipped until it is whole). Runs until the process ends.
    pub fn watch_files(self: &Arc<Self>, cert: PathBuf, key: PathBuf, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = me.upgrade() else {
                    return;
                };
                let (Ok(c), Ok(k)) = (std::fs::read(&cert), std::fs::read(&key)) else {
                    continue;
                };
                if last.as_ref().is_some_and(|(lc, lk)| *lc == c && *lk == k) {
                    continue;
                }
                match certified_key(&c, &k) {
                    Ok(certified) => {
                        let first = last.is_none();
                        last = Some((c, k));
                        if first && me.current.read().cert == certified.cert {
                            continue;
                        }
                        *me.current.write() = Arc::new(certified);
                        tracing::info!(cert = %cert.display(), "Serving certificate reloaded.");
                    }
                    Err(e) => {
                        tracing::debug!(cert = %cert.display(), error = %e, "The serving certificate files are not a matching pair (yet).")
                    }
                }
            }
        });
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// A PEM certificate chain and its PEM private key, once the key is known to belong to the
/// first certificate: the check made before renewed files replace the pair in use.
fn certified_key(cert: &[u8], key: &[u8]) -> Result<rustls::sign::CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &ring_provider())
        .map_err(|e| e.to_string())?;
    certified.keys_match().map_err(|e| e.to_string())?;
    Ok(certified)
}

/// Whether a PEM private key belongs to the first certificate of a PEM chain.
pub fn key_matches_certificate(cert: &[u8], key: &[u8]) -> Result<(), String> {
    certified_key(cert, key).map(|_| ())
}

/// Every certificate of a PEM text, in order; at least one.
fn certificates(
    pem: &str,
    what: impl fmt::Display,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_error(&what, e))?;
    if chain.is_empty() {
        return Err(parse_error(what, "no PEM certificate found"));
    }
    Ok(chain)
}

fn certificate_pem(der: &CertificateDer<'_>) -> String {
    let b64 = BASE64_STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The serving side of the process, from [`prepare`]: the PKI (for
/// [`write_admin_kubeconfig_with`]), what [`serve`] takes, and how client certificates map to
/// users and front proxies (for [`crate::authn::Authenticator::with_front_proxy_headers`]).
#[derive(Debug, Clone)]
pub struct Serving {
    /// The generated PKI, with the serving certificate, key and serving CA replaced as the flags
    /// ask.
    pub pki: Pki,
    /// The rustls configuration with its [`ClientAuth`]: `tls::serve(listener,
    /// serving.server_config, ..)`.
    pub server_config: ServerTls,
    /// Which client certificates are users and which are front proxies, and the front proxies'
    /// request headers.
    pub client_auth: ClientAuth,
}

/// What [`serve`] needs: the rustls configuration and how to read a connection's client
/// certificate. From a [`Serving`], or from a bare [`server_config`] (whose handshake trusts only
/// the generated CA, so every verified certificate is a user).
///
/// The rustls configuration of a [`prepare`]d server is deliberately not available on its own:
/// its handshake accepts the request-header CA's certificates too, and only its [`ClientAuth`]
/// tells those apart from users.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Replaced when a CA bundle changes on disk; each connection takes the current one.
    live: Arc<parking_lot::RwLock<Live>>,
    write_stall: Duration,
}

/// The handshake configuration and the matching reading of client certificates.
#[derive(Debug, Clone)]
struct Live {
    config: Arc<rustls::ServerConfig>,
    client_auth: ClientAuth,
}

impl ServerTls {
    /// Close a connection once the server has had bytes for it that the client accepted none
    /// of for this long (default [`WRITE_STALL_TIMEOUT`]).
    pub fn with_write_stall_timeout(mut self, limit: Duration) -> Self {
        self.write_stall = limit;
        self
    }
}

impl From<Arc<rustls::ServerConfig>> for ServerTls {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            live: Arc::new(parking_lot::RwLock::new(Live {
                config,
                client_auth: ClientAuth::default(),
            })),
            write_stall: WRITE_STALL_TIMEOUT,
        }
    }
}

impl From<&Serving> for ServerTls {
    fn from(serving: &Serving) -> Self {
        serving.server_config.clone()
    }
}

impl From<Serving> for ServerTls {
    fn from(serving: Serving) -> Self {
        serving.server_config
    }
}

/// How a connection's client certificate becomes a [`PeerIdentity`].
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    client_ca: ClientCa,
    front_proxy: Option<Arc<FrontProxy>>,
}

#[derive(Debug, Clone, Default)]
enum ClientCa {
    /// The handshake's verifier trusts only the client CA: every verified certificate is a user.
    #[default]
    Handshake,
    /// The handshake also accepts other CAs; users are the certificates this verifier accepts.
    Verifier(Arc<dyn ClientCertVerifier>),
}

#[derive(Debug)]
struct FrontProxy {
    verifier: Arc<dyn ClientCertVerifier>,
    /// Empty: any common name.
    allowed_names: Vec<String>,
    headers: RequestHeaders,
}

impl ClientAuth {
    /// The identity in a certificate chain the TLS handshake accepted (leaf first): a user
    /// (CN = name, O = groups) when it chains to the client CA, a front proxy (its CN) when it
    /// chains to the request-header CA and its CN is an allowed name (any, when none are listed).
    pub fn identify(&self, chain: &[CertificateDer<'_>]) -> PeerIdentity {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return PeerIdentity::default();
        };
        let now = UnixTime::now();
        let user = match &self.client_ca {
            ClientCa::Handshake => PeerIdentity::from_certificate(leaf.as_ref()).user,
            ClientCa::Verifier(verifier) => verifier
                .verify_client_cert(leaf, intermediates, now)
                .ok()
                .and_then(|_| PeerIdentity::from_certificate(leaf.as_ref()).user),
        };
        let front_proxy = self.front_proxy.as_ref().and_then(|proxy| {
            proxy
                .verifier
                .verify_client_cert(leaf, intermediates, now)
                .ok()?;
            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
            let name = common_name(cert.subject()).to_owned();
            (proxy.allowed_names.is_empty() || proxy.allowed_names.contains(&name)).then_some(name)
        });
        PeerIdentity { user, front_proxy }
    }

    /// The front proxies' request headers; `None` when no request-header CA is configured.
    pub fn request_headers(&self) -> Option<&RequestHeaders> {
        self.front_proxy.as_ref().map(|proxy| &proxy.headers)
    }
}

/// The PKI of [`ensure_pki`] with kube-apiserver's TLS and front-proxy flags applied, and the
/// rustls configuration serving it:
///
/// - `--tls-cert-file`/`--tls-private-key-file` (both or neither) replace the serving certificate;
///   the kubeconfig's CA ([`Pki::serving_ca_pem`]) stays the generated CA when that certificate
///   chains to it, otherwise becomes the last certificate of the file. A warning names requested
///   hosts it does not cover.
/// - `--client-ca-file` replaces the generated CA for client certificates; a warning says so
///   when the bundle does not accept the generated admin certificate.
/// - `--requestheader-client-ca-file` makes certificates of that CA whose CN is in
///   `--requestheader-allowed-names` (any CN when empty) front proxies whose request headers name
///   the user; such a certificate is a user itself only if the client CA accepts it too.
///
/// Client certificates stay optional, so bearer tokens and anonymous callers still connect.
pub fn prepare(
    data_dir: &Path,
    hosts: &[String],
    tls: &TlsFlags,
    front_proxy: &FrontProxyFlags,
) -> Result<Serving, TlsError> {
    let provider = ring_provider();
    let mut pki = ensure_pki(data_dir, hosts)?;
    let generated_ca = first_certificate(&pki.ca_cert_pem, "CA certificate")?;
    let generated_roots = root_store(&generated_ca)?;

    match (&tls.tls_cert_file, &tls.tls_private_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read_required(cert_path, "--tls-cert-file")?;
            let key_pem = read_required(key_path, "--tls-private-key-file")?;
            let chain = certificates(&cert_pem, cert_path.display())?;
            let (leaf, intermediates) = chain
                .split_first()
                .ok_or_else(|| parse_error(cert_path.display(), "no PEM certificate found"))?;
            let parsed = ParsedCertificate::try_from(leaf)
                .map_err(|e| parse_error(cert_path.display(), e))?;
            let chains_to_generated = rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &generated_roots,
                intermediates,
                UnixTime::now(),
                provider.signature_verification_algorithms.all,
            )
            .is_ok();
            let uncovered: Vec<String> = serving_hosts(hosts)?
                .into_iter()
                .filter(|(_, name)| rustls::client::verify_server_name(&parsed, name).is_err())
                .map(|(host, _)| host)
                .collect();
            if !uncovered.is_empty() {
                tracing::warn!(
                    path = %cert_path.display(),
                    hosts = %uncovered.join(","),
                    "--tls-cert-file does not cover these hosts; clients connecting by them will refuse it"
                );
            }
            pki.serving_ca_pem = if chains_to_generated {
                pki.ca_cert_pem.clone()
            } else {
                certificate_pem(intermediates.last().unwrap_or(leaf))
            };
            pki.serving_cert_pem = cert_pem;
            pki.serving_key_pem = key_pem;
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(TlsError::Flag {
                flag: "--tls-cert-file",
                message: "needs --tls-private-key-file".to_owned(),
            });
        }
        (None, Some(_)) => {
            return Err(TlsError::Flag {
                flag: "--tls-private-key-file",
                message: "needs --tls-cert-file".to_owned(),
            });
        }
    }

    let headers = match &front_proxy.requestheader_client_ca_file {
        Some(_) => Some(
            RequestHeaders::new(
                &front_proxy.requestheader_username_headers,
                &front_proxy.requestheader_group_headers,
                &front_proxy.requestheader_extra_headers_prefix,
            )
            .map_err(|e| {
                let named = |list: &[String]| match &e {
                    AuthnError::InvalidHeaderName { name, .. } => list.contains(name),
                    _ => false,
                };
                let flag = if named(&front_proxy.requestheader_group_headers) {
                    "--requestheader-group-headers"
                } else if named(&front_proxy.requestheader_extra_headers_prefix) {
                    "--requestheader-extra-headers-prefix"
                } else {
                    "--requestheader-username-headers"
                };
                TlsError::Flag {
                    flag,
                    message: e.to_string(),
                }
            })?,
        ),
        None => {
            if !front_proxy.requestheader_allowed_names.is_empty() {
                tracing::warn!(
                    "--requestheader-allowed-names has no effect without --requestheader-client-ca-file"
                );
            }
            None
        }
    };
    let trust = ClientTrust {
        provider: provider.clone(),
        generated_roots,
        admin_cert_pem: pki.admin_cert_pem.clone(),
        client_ca_file: tls.client_ca_file.clone(),
        requestheader_client_ca_file: front_proxy.requestheader_client_ca_file.clone(),
        allowed_names: front_proxy
            .requestheader_allowed_names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        headers,
    };
    let (handshake_verifier, client_auth) = trust.build()?;
    let chain = certificates(&pki.serving_cert_pem, "serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(|e| {
        parse_error(
            tls.tls_private_key_file
                .as_ref()
                .map_or("serving key".to_owned(), |p| p.display().to_string()),
            e,
        )
    })?;
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        match &tls.tls_cert_file {
            Some(path) => parse_error(path.display(), e),
            None => TlsError::Rustls(e),
        }
    })?;
    let serving_cert = Arc::new(ServingCert::new(certified));
    // Renewed certificate files (cert-manager) are picked up without a restart.
    if let (Some(cert), Some(key)) = (&tls.tls_cert_file, &tls.tls_private_key_file)
        && tokio::runtime::Handle::try_current().is_ok()
    {
        serving_cert.watch_files(cert.clone(), key.clone(), CERT_RELOAD_INTERVAL);
    }
    let server_config =
        config_with_resolver(provider.clone(), handshake_verifier, serving_cert.clone())?;
    let live = Arc::new(parking_lot::RwLock::new(Live {
        config: server_config,
        client_auth: client_auth.clone(),
    }));
    // Renewed CA bundles are picked up without a restart, as serving certificates are.
    if (trust.client_ca_file.is_some() || trust.requestheader_client_ca_file.is_some())
        && tokio::runtime::Handle::try_current().is_ok()
    {
        trust.watch_files(live.clone(), serving_cert, CERT_RELOAD_INTERVAL);
    }
    Ok(Serving {
        pki,
        server_config: ServerTls {
            write_stall: WRITE_STALL_TIMEOUT,
            live,
        },
        client_auth,
    })
}

/// What decides which client certificates a server accepts, kept to build it again when a CA
/// bundle changes on disk.
struct ClientTrust {
    provider: Arc<CryptoProvider>,
    generated_roots: RootCertStore,
    admin_cert_pem: String,
    client_ca_file: Option<PathBuf>,
    requestheader_client_ca_file: Option<PathBuf>,
    allowed_names: Vec<String>,
    headers: Option<RequestHeaders>,
}

impl ClientTrust {
    /// The handshake's verifier (client and request-header CAs, certificates optional) and how
    /// a verified chain becomes a user or a front proxy, from the CA files as they are now.
    fn build(&self) -> Result<(Arc<dyn ClientCertVerifier>, ClientAuth), TlsError> {
        let provider = &self.provider;
        let client_roots = match &self.client_ca_file {
            Some(path) => ca_bundle(path, "--client-ca-file")?,
            None => self.generated_roots.clone(),
        };
        let client_verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots.clone()),
            provider.clone(),
        )
        .build()?;
        if let Some(path) = &self.client_ca_file {
            let admin = first_certificate(&self.admin_cert_pem, ADMIN_CERT_FILE)?;
            if client_verifier
                .verify_client_cert(&admin, &[], UnixTime::now())
                .is_err()
            {
                tracing::warn!(
                    path = %path.display(),
                    "--client-ca-file does not trust the generated CA; the admin kubeconfig's client certificate will not authenticate"
                );
            }
        }
        let mut handshake_roots = client_roots;
        let front_proxy = match (&self.requestheader_client_ca_file, &self.headers) {
            (Some(path), Some(headers)) => {
                let roots = ca_bundle(path, "--requestheader-client-ca-file")?;
                for anchor in &roots.roots {
                    if !handshake_roots.roots.contains(anchor) {
                        handshake_roots.roots.push(anchor.clone());
                    }
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()?;
                Some(Arc::new(FrontProxy {
                    verifier,
                    allowed_names: self.allowed_names.clone(),
                    headers: headers.clone(),
                }))
            }
            _ => None,
        };
        let handshake = WebPkiClientVerifier::builder_with_provider(
            Arc::new(handshake_roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        Ok((
            handshake,
            ClientAuth {
                client_ca: ClientCa::Verifier(client_verifier),
                front_proxy,
            },
        ))
    }

    /// Re-read the CA files every `every`; when their bytes changed and they still make a
    /// valid trust, new connections are verified with it (open ones keep what they were
    /// verified with). A bundle that does not parse (being written) is retried next time.
    fn watch_files(
        self,
        live: Arc<parking_lot::RwLock<Live>>,
        serving_cert: Arc<ServingCert>,
        every: Duration,
    ) {
        let files: Vec<PathBuf> = self
            .client_ca_file
            .iter()
            .chain(&self.requestheader_client_ca_file)
            .cloned()
            .collect();
        let read_all = move || -> Vec<Option<Vec<u8>>> {
            files.iter().map(|f| std::fs::read(f).ok()).collect()
        };
        let me = Arc::downgrade(&live);
        drop(live);
        tokio::spawn(async move {
            let mut last = read_all();
            loop {
                tokio::time::sleep(every).await;
                let Some(live) = me.upgrade() else {
                    return;
                };
                let now = read_all();
                if now == last || now.iter().any(Option::is_none) {
                    continue;
                }
                let rebuilt = self.build().and_then(|(handshake, client_auth)| {
                    let config = config_with_resolver(
                        self.provider.clone(),
                        handshake,
                        serving_cert.clone(),
                    )?;
                    Ok(Live {
                        config,
                        client_auth,
                    })
                });
                match rebuilt {
                    Ok(new) => {
                        *live.write() = new;
                        last = now;
                        tracing::info!("Client CA bundles reloaded.");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "The client CA bundles do not parse (yet).");
                    }
                }
            }
        });
    }
}

/// How often the serving certificate files are checked for a renewal.
pub(crate) const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A file a flag names; it must exist.
fn read_required(path: &Path, flag: &'static str) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Flag {
        flag,
        message: format!("reading {}: {e}", path.display()),
    })
}

/// Every certificate of a PEM bundle as trust anchors; at least one.
fn ca_bundle(path: &Path, flag: &'static str) -> Result<RootCertStore, TlsError> {
    let text = read_required(path, flag)?;
    let mut roots = RootCertStore::empty();
    for der in certificates(&text, path.display())? {
        roots.add(der).map_err(|e| parse_error(path.display(), e))?;
    }
    Ok(roots)
}

fn common_name<'a>(name: &'a X509Name<'_>) -> &'a str {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
}

/// Install the ring provider as the process default once (idempotent; "already installed" is
/// ignored). Needed before building reqwest clients with `rustls-no-provider`.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl PeerIdentity {
    /// The user in a DER certificate already verified against the client CA.
    pub fn from_certificate(der: &[u8]) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Self::default();
        };
        let subject = cert.subject();
        let name = common_name(subject);
        if name.is_empty() {
            return Self::default();
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Self::from_user(UserInfo {
            name: name.to_owned(),
            groups,
            ..UserInfo::default()
        })
    }
}

/// Accept loop. Each TCP connection gets its own task that runs the TLS handshake (so a slow
/// handshake never blocks accepting; handshakes not done within 10 s are dropped), reads the
/// verified client certificate into a [`PeerIdentity`] request extension (with
/// [`ClientAuth::identify`]), and serves `app` with hyper-util's auto (HTTP/1.1 + HTTP/2) builder
/// with upgrades. `tls` is [`Serving::server_config`] (or the whole [`Serving`]) from
/// [`prepare`], or a configuration from [`server_config`].
///
/// When `shutdown` resolves the listener stops accepting and this function returns at once.
/// Connections still open are then told to finish gracefully (HTTP/2 GOAWAY, HTTP/1.1 closes
/// after the current response) and keep running in their tasks until their in-flight requests
/// end — long-running watches end only when their stream ends or the runtime is dropped.
/// Handshakes still in progress at shutdown are dropped.
pub async fn serve(
    listener: TcpListener,
    tls: impl Into<ServerTls>,
    app: impl App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_draining(listener, tls, app, shutdown, Duration::ZERO).await
}

/// What [`serve`] serves: an [`axum::Router`], or any service of axum requests that answers
/// every request (such as `server::app_service`).
pub trait App:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// [`serve`], and after `shutdown` wait (at most `drain`) until every connection ended.
pub async fn serve_draining(
    listener: TcpListener,
    tls: impl Into<ServerTls>,
    app: impl App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let open = Arc::new(OpenConnections::default());
    let ServerTls { live, write_stall } = tls.into();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, remote)) => {
                let guard = open.enter();
                let Live {
                    config,
                    client_auth,
                } = live.read().clone();
                let connection = serve_connection(
                    TlsAcceptor::from(config),
                    client_auth,
                    tcp,
                    remote,
                    app.clone(),
                    stop_rx.clone(),
                    write_stall,
                );
                tokio::spawn(async move {
                    connection.await;
                    drop(guard);
                });
            }
            Err(e) if is_per_connection_error(&e) => {
                tracing::debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
    stop_tx.send_replace(true);
    if !drain.is_zero() {
        let deadline = tokio::time::Instant::now() + drain;
        if tokio::time::timeout_at(deadline, open.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                open = open.count(),
                "Connections still open at the shutdown timeout; closing them."
            );
        }
    }
    Ok(())
}

/// Connections being served, so a shutdown can wait for them.
#[derive(Default)]
struct OpenConnections {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

/// Counts one connection while it lives.
struct ConnectionGuard(Arc<OpenConnections>);

impl OpenConnections {
    fn enter(self: &Arc<Self>) -> ConnectionGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn drained(&self) {
        loop {
            let changed = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Resolves once shutdown was requested or the accept loop is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it at once.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    client_auth: ClientAuth,
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    app: impl App,
    mut stop: watch::Receiver<bool>,
    write_stall: Duration,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        // Shutdown (or the accept loop gone) abandons the handshake.
        () = stopped(&mut stop) => return,
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
    };
    // Checked on every connection (resumed sessions included), not remembered from a handshake.
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| client_auth.identify(chain))
        .unwrap_or_default();
    // Set by the first request; until then the connection lives on the first-request deadline.
    let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = served.clone();
    let service = ServiceBuilder::new()
        // Shared: the identity is the connection's, and each request only needs to read it.
        .layer(Extension(Arc::new(peer)))
        .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
            req.map(axum::body::Body::new)
        })
        .service(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let connection = builder.serve_connection_with_upgrades(
        TokioIo::new(Gather::new(WriteStall::new(stream, write_stall), h2)),
        TowerToHyperService::new(service),
    );
    tokio::pin!(connection);
    let first_request = tokio::time::sleep(READ_HEADER_TIMEOUT);
    tokio::pin!(first_request);
    let mut waiting_for_first = true;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = stopped(&mut stop) => {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
            () = first_request.as_mut(), if waiting_for_first => {
                if !served.load(std::sync::atomic::Ordering::Relaxed) {
                    // Handshaken and silent (no HTTP/2 preface, no request line): give it up.
                    tracing::debug!(%remote, "no request within the header read timeout");
                    return;
                }
                waiting_for_first = false;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inner IO that records each write it is given.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl tokio::io::AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_http2_connection_sends_the_frames_written_before_a_flush_in_one_write() {
        use tokio::io::AsyncWriteExt;
        let mut io = Gather::new(Writes::default(), true);
        for frame in 0..10u8 {
            io.write_all(&[frame; 100]).await.unwrap();
        }
        assert!(io.inner.0.is_empty(), "nothing leaves before the flush");
        io.flush().await.unwrap();
        assert_eq!(io.inner.0.len(), 1);
        assert_eq!(io.inner.0[0].len(), 1000);
        assert_eq!(io.inner.0[0][999], 9);
        // A large write is not copied: what was kept goes first, then the write itself.
        io.write_all(b"small").await.unwrap();
        io.write_all(&vec![7u8; GATHER_PASS_THROUGH]).await.unwrap();
        io.flush().await.unwrap();
        let sizes: Vec<usize> = io.inner.0[1..].iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, GATHER_PASS_THROUGH]);
    }

    #[tokio::test]
    async fn an_http1_connection_writes_through_at_once() {
        use tokio::io::AsyncWriteExt;
        let mut io = Gather::new(Writes::default(), false);
        io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        io.write_all(b"\r\n").await.unwrap();
        assert_eq!(io.inner.0.len(), 2);
    }
    use axum::routing::get;
    use x509_parser::extensions::GeneralName;

    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    fn leaf(pem: &str) -> CertificateDer<'static> {
        first_certificate(pem, "test").expect("certificate PEM")
    }

    fn sans(pem: &str) -> Vec<String> {
        let der = leaf(pem);
        let cert = parse_certificate(&der, "test").expect("x509");
        let ext = cert
            .subject_alternative_name()
            .expect("SAN extension parses")
            .expect("SAN extension present");
        ext.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4"))),
                    16 => format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6"))),
                    _ => "IP:?".to_owned(),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn serving_certificate_covers_default_and_extra_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = vec![
            "10.1.2.3".to_owned(),
            "api.example.test".to_owned(),
            "[fd00::1]".to_owned(),
        ];
        let pki = ensure_pki(dir.path(), &extra).expect("pki");
        let got = sans(&pki.serving_cert_pem);
        for want in [
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:::1",
            "IP:10.1.2.3",
            "DNS:api.example.test",
            "IP:fd00::1",
        ] {
            assert!(got.iter().any(|s| s == want), "missing {want} in {got:?}");
        }
        let ca_der = leaf(&pki.ca_cert_pem);
        let ca = parse_certificate(&ca_der, "ca").expect("x509");
        let ca_cn: Vec<_> = ca
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .collect();
        assert_eq!(ca_cn, vec![CA_COMMON_NAME]);
        assert!(ca.is_ca());
    }

    #[test]
    fn admin_certificate_is_admin_in_system_masters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure_pki(dir.path(), &[]).expect("pki");
        let id = PeerIdentity::from_certificate(leaf(&pki.admin_cert_pem).as_ref());
        let user = id.user.expect("identity");
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters"]);
    }

    #[test]
    fn files_are_written_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_pki(dir.path(), &[]).expect("pki");
        for name in [
            CA_CERT_FILE,
            CA_KEY_FILE,
            SERVING_CERT_FILE,
            SERVING_KEY_FILE,
            ADMIN_CERT_FILE,
            ADMIN_KEY_FILE,
        ] {
            assert!(dir.path().join(name).is_file(), "{name} missing");
        }
        #[cfg(unix)]
        for name in [CA_KEY_FILE, SERVING_KEY_FILE, ADMIN_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(name))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn second_start_reuses_all_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["api.example.test".to_owned()];
        let first = ensure_pki(dir.path(), &hosts).expect("first");
        let second = ensure_pki(dir.path(), &hosts).expect("second");
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.ca_key_pem, second.ca_key_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
    }

    #[test]
    fn a_new_host_reissues_only_the_serving_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_pki(dir.path(), &[]).expect("first");
        let second = ensure_pki(dir.path(), &["192.0.2.7".to_owned()]).expect("second");
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_ne!(first.serving_cert_pem, second.serving_cert_pem);
        assert!(sans(&second.serving_cert_pem).contains(&"IP:192.0.2.7".to_owned()));
        let on_disk =
            std::fs::read_to_string(dir.path().join(SERVING_CERT_FILE)).expect("serving.crt");
        assert_eq!(on_disk, second.serving_cert_pem);
    }

    #[test]
    fn a_deleted_serving_key_is_reissued_with_the_same_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_pki(dir.path(), &[]).expect("first");
        std::fs::remove_file(dir.path().join(SERVING_KEY_FILE)).expect("remove");
        let second = ensure_pki(dir.path(), &[]).expect("second");
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_ne!(first.serving_key_pem, second.serving_key_pem);
        server_config(&second).expect("usable server config");
    }

    #[test]
    fn a_ca_certificate_without_its_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_pki(dir.path(), &[]).expect("first");
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("remove");
        let err = ensure_pki(dir.path(), &[]).expect_err("must fail");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn an_invalid_host_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ensure_pki(dir.path(), &["bad host!".to_owned()]).expect_err("must fail");
        assert!(
            matches!(err, TlsError::InvalidHost(ref h) if h == "bad host!"),
            "{err:?}"
        );
    }

    #[test]
    fn kubeconfig_has_cluster_user_and_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure_pki(dir.path(), &[]).expect("pki");
        let path = write_admin_kubeconfig(dir.path(), "https://127.0.0.1:6443/prefix", &pki)
            .expect("write");
        assert_eq!(path, dir.path().join("admin.kubeconfig"));
        let text = std::fs::read_to_string(&path).expect("read");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
        let decode = |v: &serde_json::Value| {
            String::from_utf8(
                BASE64_STANDARD
                    .decode(v.as_str().expect("string"))
                    .expect("b64"),
            )
            .expect("utf8")
        };
        assert_eq!(doc["kind"], "Config");
        assert_eq!(doc["current-context"], "admin");
        let cluster = &doc["clusters"][0];
        assert_eq!(cluster["name"], "replication-vw");
        assert_eq!(
            cluster["cluster"]["server"],
            "https://127.0.0.1:6443/prefix"
        );
        assert_eq!(
            decode(&cluster["cluster"]["certificate-authority-data"]),
            pki.ca_cert_pem
        );
        let user = &doc["users"][0];
        assert_eq!(user["name"], "admin");
        assert_eq!(
            decode(&user["user"]["client-certificate-data"]),
            pki.admin_cert_pem
        );
        assert_eq!(decode(&user["user"]["client-key-data"]), pki.admin_key_pem);
        let context = &doc["contexts"][0];
        assert_eq!(context["name"], "admin");
        assert_eq!(context["context"]["cluster"], "replication-vw");
        assert_eq!(context["context"]["user"], "admin");
    }

    async fn whoami(Extension(peer): Extension<Arc<PeerIdentity>>) -> String {
        match &peer.user {
            Some(user) => format!("{}|{}", user.name, user.groups.join(",")),
            None => "anonymous".to_owned(),
        }
    }

    #[tokio::test]
    async fn server_sees_client_certificate_identity_and_anonymous_without_one() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure_pki(dir.path(), &[]).expect("pki");
        let config = server_config(&pki).expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/whoami", get(whoami));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, config, app, async move {
            let _ = stop_rx.await;
        }));

        let ca = reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).expect("ca");
        let identity = reqwest::Identity::from_pem(
            format!("{}{}", pki.admin_cert_pem, pki.admin_key_pem).as_bytes(),
        )
        .expect("identity");
        let admin = reqwest::Client::builder()
            .tls_certs_only([ca.clone()])
            .identity(identity)
            .build()
            .expect("client");
        let anonymous_h1 = reqwest::Client::builder()
            .tls_certs_only([ca])
            .http1_only()
            .build()
            .expect("client");
        let url = format!("https://127.0.0.1:{port}/whoami");

        let checks = async {
            let response = admin.get(&url).send().await.expect("admin request");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.text().await.expect("body"), "admin|system:masters");
            let response = anonymous_h1
                .get(&url)
                .send()
                .await
                .expect("anonymous request");
            assert_eq!(response.version(), reqwest::Version::HTTP_11);
            assert_eq!(response.text().await.expect("body"), "anonymous");
        };
        tokio::time::timeout(TEST_TIMEOUT, checks)
            .await
            .expect("requests finish in time");

        stop_tx.send(()).expect("server still running");
        tokio::time::timeout(TEST_TIMEOUT, server)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve result");
        let after = tokio::time::timeout(TEST_TIMEOUT, anonymous_h1.get(&url).send())
            .await
            .expect("refused quickly");
        assert!(after.is_err(), "listener must be closed after shutdown");
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_fails_the_handshake() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure_pki(dir.path(), &[]).expect("pki");
        let other = ensure_pki(other_dir.path(), &[]).expect("other pki");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/whoami", get(whoami));
        let config = server_config(&pki).expect("config");
        let server = tokio::spawn(serve(listener, config, app, std::future::pending()));
        let client = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(pki.ca_cert_pem.as_bytes()).expect("ca")
            ])
            .identity(
                reqwest::Identity::from_pem(
                    format!("{}{}", other.admin_cert_pem, other.admin_key_pem).as_bytes(),
                )
                .expect("identity"),
            )
            .build()
            .expect("client");
        let result = tokio::time::timeout(
            TEST_TIMEOUT,
            client
                .get(format!("https://127.0.0.1:{port}/whoami"))
                .send(),
        )
        .await
        .expect("finishes in time");
        assert!(
            result.is_err(),
            "foreign client certificate must be refused"
        );
        server.abort();
    }

    /// A CA of the test's own, outside the data directory.
    struct TestCa {
        pem: String,
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        fn new(common_name: &str) -> Self {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(common_name, &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("self-signed CA");
            Self {
                pem: cert.pem(),
                der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        /// (certificate PEM, key PEM) of a client certificate with this CN and O.
        fn client(&self, common_name: &str, organizations: &[&str]) -> (String, String) {
            let mut params = CertificateParams::default();
            params.distinguished_name = distinguished_name(common_name, organizations);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.sign(params)
        }

        fn server(&self, hosts: &[&str]) -> (String, String) {
            let names = hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
            let mut params = CertificateParams::new(names).expect("SANs");
            params.distinguished_name = distinguished_name("external-serving", &[]);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            self.sign(params)
        }

        fn sign(&self, mut params: CertificateParams) -> (String, String) {
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            (cert.pem(), key.serialize_pem())
        }
    }

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        certificates(pem, "test").expect("certificates")
    }

    fn front_proxy_flags(ca: &Path, allowed: &[&str]) -> FrontProxyFlags {
        FrontProxyFlags {
            requestheader_client_ca_file: Some(ca.to_path_buf()),
            requestheader_allowed_names: allowed.iter().map(|n| (*n).to_owned()).collect(),
            ..FrontProxyFlags::default()
        }
    }

    #[test]
    fn a_front_proxy_name_not_in_allowed_names_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proxies = TestCa::new("front-proxy-ca");
        let ca_file = write(dir.path(), "front-proxy-ca.crt", &proxies.pem);
        let serving = prepare(
            &dir.path().join("data"),
            &[],
            &TlsFlags::default(),
            &front_proxy_flags(&ca_file, &["front-proxy", "aggregator"]),
        )
        .expect("prepare");
        let (allowed, _) = proxies.client("aggregator", &[]);
        assert_eq!(
            serving.client_auth.identify(&chain(&allowed)),
            PeerIdentity {
                user: None,
                front_proxy: Some("aggregator".to_owned()),
            }
        );
        let (other, _) = proxies.client("intruder", &["system:masters"]);
        assert_eq!(
            serving.client_auth.identify(&chain(&other)),
            PeerIdentity::default()
        );
    }

    #[test]
    fn empty_allowed_names_accepts_any_name_signed_by_the_requestheader_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proxies = TestCa::new("front-proxy-ca");
        let ca_file = write(dir.path(), "front-proxy-ca.crt", &proxies.pem);
        let serving = prepare(
            &dir.path().join("data"),
            &[],
            &TlsFlags::default(),
            &front_proxy_flags(&ca_file, &[]),
        )
        .expect("prepare");
        let (any, _) = proxies.client("whatever-proxy", &["system:masters"]);
        let id = serving.client_auth.identify(&chain(&any));
        assert_eq!(id.front_proxy.as_deref(), Some("whatever-proxy"));
        assert_eq!(
            id.user, None,
            "a front-proxy certificate not signed by the client CA is no user by itself"
        );
        let (stranger, _) = TestCa::new("other-ca").client("whatever-proxy", &[]);
        assert_eq!(
            serving.client_auth.identify(&chain(&stranger)),
            PeerIdentity::default()
        );
        assert!(serving.client_auth.request_headers().is_some());
    }

    #[test]
    fn a_certificate_trusted_by_both_cas_is_a_user_and_a_front_proxy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let pki = ensure_pki(&data, &[]).expect("pki");
        let serving = prepare(
            &data,
            &[],
            &TlsFlags::default(),
            &front_proxy_flags(&data.join(CA_CERT_FILE), &[]),
        )
        .expect("prepare");
        let id = serving.client_auth.identify(&chain(&pki.admin_cert_pem));
        assert_eq!(id.front_proxy.as_deref(), Some("admin"));
        assert_eq!(id.user.map(|u| u.name).as_deref(), Some("admin"));
    }

    #[test]
    fn without_front_proxy_flags_the_generated_ca_makes_users_and_no_front_proxies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let serving = prepare(
            dir.path(),
            &[],
            &TlsFlags::default(),
            &FrontProxyFlags::default(),
        )
        .expect("prepare");
        assert_eq!(serving.pki.serving_ca_pem, serving.pki.ca_cert_pem);
        assert!(serving.client_auth.request_headers().is_none());
        let id = serving
            .client_auth
            .identify(&chain(&serving.pki.admin_cert_pem));
        assert_eq!(
            id,
            PeerIdentity::from_certificate(leaf(&serving.pki.admin_cert_pem).as_ref())
        );
        assert_eq!(id.front_proxy, None);
    }

    #[test]
    fn client_ca_file_replaces_the_generated_ca_for_client_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients = TestCa::new("clients-ca");
        let bundle = write(dir.path(), "clients.crt", &clients.pem);
        let tls = TlsFlags {
            client_ca_file: Some(bundle),
            ..TlsFlags::default()
        };
        let serving = prepare(
            &dir.path().join("data"),
            &[],
            &tls,
            &FrontProxyFlags::default(),
        )
        .expect("prepare");
        let (bob, _) = clients.client("bob", &["team-b"]);
        let user = serving
            .client_auth
            .identify(&chain(&bob))
            .user
            .expect("bob is a user");
        assert_eq!(
            (user.name.as_str(), user.groups),
            ("bob", vec!["team-b".to_owned()])
        );
        assert_eq!(
            serving
                .client_auth
                .identify(&chain(&serving.pki.admin_cert_pem)),
            PeerIdentity::default(),
            "the generated admin certificate is not trusted by this bundle"
        );
    }

    #[test]
    fn a_client_ca_bundle_that_includes_the_generated_ca_keeps_the_admin_certificate_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let pki = ensure_pki(&data, &[]).expect("pki");
        let clients = TestCa::new("clients-ca");
        let bundle = write(
            dir.path(),
            "clients.crt",
            &format!("{}{}", clients.pem, pki.ca_cert_pem),
        );
        let tls = TlsFlags {
            client_ca_file: Some(bundle),
            ..TlsFlags::default()
        };
        let serving = prepare(&data, &[], &tls, &FrontProxyFlags::default()).expect("prepare");
        for (cert, name) in [
            (pki.admin_cert_pem.clone(), "admin"),
            (clients.client("bob", &[]).0, "bob"),
        ] {
            let id = serving.client_auth.identify(&chain(&cert));
            assert_eq!(id.user.map(|u| u.name).as_deref(), Some(name));
        }
    }

    #[test]
    fn tls_cert_file_signed_by_the_generated_ca_keeps_the_generated_ca_in_the_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let pki = ensure_pki(&data, &[]).expect("pki");
        let tls = TlsFlags {
            tls_cert_file: Some(write(dir.path(), "own.crt", &pki.serving_cert_pem)),
            tls_private_key_file: Some(write(dir.path(), "own.key", &pki.serving_key_pem)),
            client_ca_file: None,
        };
        let serving = prepare(&data, &[], &tls, &FrontProxyFlags::default()).expect("prepare");
        assert_eq!(serving.pki.serving_ca_pem, pki.ca_cert_pem);
    }

    #[test]
    fn tls_cert_file_without_a_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = TlsFlags {
            tls_cert_file: Some(dir.path().join("serving.crt")),
            ..TlsFlags::default()
        };
        let err =
            prepare(dir.path(), &[], &tls, &FrontProxyFlags::default()).expect_err("must fail");
        assert!(
            err.to_string().contains("needs --tls-private-key-file"),
            "{err}"
        );
    }

    #[test]
    fn a_key_that_does_not_match_the_tls_cert_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let external = TestCa::new("external-ca");
        let (cert, _) = external.server(&["localhost"]);
        let (_, other_key) = external.server(&["localhost"]);
        let cert_file = write(dir.path(), "tls.crt", &cert);
        let tls = TlsFlags {
            tls_cert_file: Some(cert_file.clone()),
            tls_private_key_file: Some(write(dir.path(), "tls.key", &other_key)),
            client_ca_file: None,
        };
        let err = prepare(
            &dir.path().join("data"),
            &[],
            &tls,
            &FrontProxyFlags::default(),
        )
        .expect_err("must fail");
        assert!(
            err.to_string().contains(&cert_file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_missing_requestheader_ca_file_or_a_bad_header_name_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.crt");
        let err = prepare(
            &dir.path().join("data"),
            &[],
            &TlsFlags::default(),
            &front_proxy_flags(&missing, &[]),
        )
        .expect_err("must fail");
        assert!(
            err.to_string().contains("--requestheader-client-ca-file"),
            "{err}"
        );

        let ca_file = write(dir.path(), "proxy-ca.crt", &TestCa::new("proxy-ca").pem);
        let mut flags = front_proxy_flags(&ca_file, &[]);
        flags.requestheader_group_headers = vec!["X Remote Group".to_owned()];
        let err = prepare(&dir.path().join("data"), &[], &TlsFlags::default(), &flags)
            .expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("--requestheader-group-headers: request header \"X Remote Group\""),
            "{err}"
        );
    }

    fn client(roots: &[&str], identity: Option<(&str, &str)>) -> reqwest::Client {
        let roots = roots
            .iter()
            .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).expect("root"));
        let mut builder = reqwest::Client::builder().tls_certs_only(roots);
        if let Some((cert, key)) = identity {
            builder = builder.identity(
                reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
            );
        }
        builder.build().expect("client")
    }

    #[tokio::test]
    async fn tls_cert_file_replaces_the_generated_serving_certificate() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let external = TestCa::new("external-ca");
        let (cert, key) = external.server(&["localhost", "127.0.0.1"]);
        let tls = TlsFlags {
            // The file holds the chain up to the root: the kubeconfig takes its last certificate.
            tls_cert_file: Some(write(
                dir.path(),
                "tls.crt",
                &format!("{cert}{}", external.pem),
            )),
            tls_private_key_file: Some(write(dir.path(), "tls.key", &key)),
            client_ca_file: None,
        };
        let serving = prepare(&data, &[], &tls, &FrontProxyFlags::default()).expect("prepare");
        assert_eq!(
            chain(&serving.pki.serving_ca_pem),
            vec![external.der.clone()]
        );
        assert_eq!(leaf(&serving.pki.serving_cert_pem), leaf(&cert));
        let kubeconfig =
            write_admin_kubeconfig(&data, "https://127.0.0.1:6443", &serving.pki).expect("write");
        let text = std::fs::read_to_string(kubeconfig).expect("read");
        assert!(
            text.contains(&BASE64_STANDARD.encode(&serving.pki.serving_ca_pem)),
            "{text}"
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/whoami", get(whoami));
        let server = tokio::spawn(serve(
            listener,
            serving.server_config.clone(),
            app,
            std::future::pending(),
        ));
        let url = format!("https://127.0.0.1:{port}/whoami");
        let checks = async {
            let admin = client(
                &[&serving.pki.serving_ca_pem],
                Some((&serving.pki.admin_cert_pem, &serving.pki.admin_key_pem)),
            );
            let body = admin
                .get(&url)
                .send()
                .await
                .expect("the given certificate verifies with the kubeconfig's CA")
                .text()
                .await
                .expect("body");
            assert_eq!(body, "admin|system:masters");
            let generated = client(&[&serving.pki.ca_cert_pem], None);
            assert!(
                generated.get(&url).send().await.is_err(),
                "the generated serving certificate is no longer served"
            );
        };
        tokio::time::timeout(TEST_TIMEOUT, checks)
            .await
            .expect("requests finish in time");
        server.abort();
    }

    /// Echoes the user the authenticator finds, as `name|groups|extra` or `anonymous`
    /// (`unauthorized` for an unknown bearer token), like the server's authentication layer.
    async fn authenticated_user(
        axum::extract::State(authn): axum::extract::State<Arc<crate::authn::Authenticator>>,
        Extension(peer): Extension<Arc<PeerIdentity>>,
        headers: axum::http::HeaderMap,
    ) -> String {
        match authn.authenticate_or_reject(&peer, &headers) {
            Ok(Some(user)) => {
                let extra: Vec<String> = user
                    .extra
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.join("+")))
                    .collect();
                format!(
                    "{}|{}|{}",
                    user.name,
                    user.groups.join(","),
                    extra.join(";")
                )
            }
            Ok(None) => "anonymous".to_owned(),
            Err(_) => "unauthorized".to_owned(),
        }
    }

    #[tokio::test]
    async fn front_proxy_headers_are_honoured_only_on_a_front_proxy_connection() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let proxies = TestCa::new("front-proxy-ca");
        let ca_file = write(dir.path(), "front-proxy-ca.crt", &proxies.pem);
        let serving = prepare(
            &dir.path().join("data"),
            &[],
            &TlsFlags::default(),
            &front_proxy_flags(&ca_file, &["front-proxy"]),
        )
        .expect("prepare");
        let tokens = crate::authn::TokenFile::parse("tok,carol,u-3,viewers").expect("tokens");
        let authn = crate::authn::Authenticator::new(Some(tokens))
            .with_front_proxy_headers(serving.client_auth.request_headers().cloned());
        let app = axum::Router::new()
            .route("/whoami", get(authenticated_user))
            .with_state(Arc::new(authn));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(serve(
            listener,
            serving.server_config.clone(),
            app,
            std::future::pending(),
        ));
        let url = format!("https://127.0.0.1:{port}/whoami");
        let ca = serving.pki.serving_ca_pem.as_str();
        let proxy_identity = proxies.client("front-proxy", &[]);
        let intruder_identity = proxies.client("intruder", &[]);
        let front_proxy = client(&[ca], Some((&proxy_identity.0, &proxy_identity.1)));
        let intruder = client(&[ca], Some((&intruder_identity.0, &intruder_identity.1)));
        let admin = client(
            &[ca],
            Some((&serving.pki.admin_cert_pem, &serving.pki.admin_key_pem)),
        );
        let anonymous = client(&[ca], None);

        let ask = |client: &reqwest::Client, bearer: Option<&str>, as_alice: bool| {
            let mut request = client.get(&url);
            if as_alice {
                request = request
                    .header("X-Remote-User", "alice")
                    .header("X-Remote-Group", "team-a")
                    .header("X-Remote-Group", "system:masters")
                    .header("X-Remote-Extra-Scopes", "read");
            }
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            async move {
                request
                    .send()
                    .await
                    .expect("request")
                    .text()
                    .await
                    .expect("body")
            }
        };
        let checks = async {
            assert_eq!(
                ask(&front_proxy, None, true).await,
                "alice|team-a,system:masters,system:authenticated|scopes=read"
            );
            assert_eq!(
                ask(&front_proxy, Some("tok"), true).await,
                "alice|team-a,system:masters,system:authenticated|scopes=read",
                "the front proxy's headers come before a bearer token"
            );
            assert_eq!(
                ask(&admin, None, true).await,
                "admin|system:masters,system:authenticated|",
                "a plain client certificate's headers are ignored"
            );
            assert_eq!(
                ask(&anonymous, Some("tok"), true).await,
                "carol|viewers,system:authenticated|",
                "a bearer token's headers are ignored"
            );
            assert_eq!(ask(&anonymous, None, true).await, "anonymous");
            assert_eq!(
                ask(&intruder, None, true).await,
                "anonymous",
                "a name not in --requestheader-allowed-names is no front proxy"
            );
            assert_eq!(
                ask(&front_proxy, None, false).await,
                "anonymous",
                "a front-proxy certificate is no user by itself"
            );
            assert_eq!(
                ask(&front_proxy, Some("tok"), false).await,
                "carol|viewers,system:authenticated|"
            );
        };
        tokio::time::timeout(TEST_TIMEOUT, checks)
            .await
            .expect("requests finish in time");
        server.abort();
    }
}
