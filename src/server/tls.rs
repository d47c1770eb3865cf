//! TLS and client identity for the HTTPS server: the on-disk PKI (a private CA, the serving
//! certificate and an admin client certificate, created on first start and reused later), the
//! admin kubeconfig, the rustls server configuration (optional client certificates verified
//! against the CA), and the accept loop that runs each connection's handshake in its own task and
//! hands the verified client-certificate identity to the axum router as a request extension.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use hyper_util::rt::{TokioExecutor, TokioIo};
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
use rustls::server::WebPkiClientVerifier;
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

use crate::server::authn::UserInfo;

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
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("serving_cert_pem", &self.serving_cert_pem)
            .field("admin_cert_pem", &self.admin_cert_pem)
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
/// `server: <server_url>` and the CA inline, user `admin` with the client certificate and key
/// inline, context `admin` as current-context. Returns its path.
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
    let ca = BASE64_STANDARD.encode(&pki.ca_cert_pem);
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
    let chain = CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_error("serving certificate", e))?;
    if chain.is_empty() {
        return Err(parse_error(
            "serving certificate",
            "no PEM certificate found",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes())
        .map_err(|e| parse_error("serving key", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Install the ring provider as the process default once (idempotent; "already installed" is
/// ignored). Needed before building reqwest clients with `rustls-no-provider`.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Identity taken from a verified client certificate: CN = user, all O = groups (in order).
/// `None` when no certificate was presented or its CN is empty.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

impl PeerIdentity {
    /// The identity in a DER certificate (already verified by the TLS layer).
    pub fn from_certificate(der: &[u8]) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Self(None);
        };
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default();
        if name.is_empty() {
            return Self(None);
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Self(Some(UserInfo {
            name: name.to_owned(),
            uid: String::new(),
            groups,
        }))
    }
}

/// Accept loop. Each TCP connection gets its own task that runs the TLS handshake (so a slow
/// handshake never blocks accepting; handshakes not done within 10 s are dropped), reads the
/// verified client certificate into a [`PeerIdentity`] request extension, and serves `app` with
/// hyper-util's auto (HTTP/1.1 + HTTP/2) builder with upgrades.
///
/// When `shutdown` resolves the listener stops accepting and this function returns at once.
/// Connections still open are then told to finish gracefully (HTTP/2 GOAWAY, HTTP/1.1 closes
/// after the current response) and keep running in their tasks until their in-flight requests
/// end — long-running watches end only when their stream ends or the runtime is dropped.
/// Handshakes still in progress at shutdown are dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
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
                tokio::spawn(serve_connection(
                    acceptor.clone(),
                    tcp,
                    remote,
                    app.clone(),
                    stop_rx.clone(),
                ));
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
    Ok(())
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
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
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
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| PeerIdentity::from_certificate(leaf.as_ref()))
        .unwrap_or_default();
    let service = ServiceBuilder::new().layer(Extension(peer)).service(app);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let user = id.0.expect("identity");
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

    async fn whoami(Extension(peer): Extension<PeerIdentity>) -> String {
        match peer.0 {
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
}
