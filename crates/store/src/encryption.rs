//! Encryption at rest of stored values, compatible with kube-apiserver's
//! `--encryption-provider-config`: this module owns parsing and validating an
//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`), choosing the providers of a
//! group/resource (exact name, then `*.<group>`, then `*.*`), and turning a value into its stored
//! bytes and back in kube's format (`k8s:enc:<provider>:v1:<key name>:` + payload, or the
//! plaintext for `identity`), including the `stale` flag that tells the caller a value was read
//! with a provider or key other than the one writes use now. The ciphers are RustCrypto's
//! (`aes` + `cbc`, `aes-gcm`, `crypto_secretbox`); nothing here is a hand-written cipher.
//! Backends call [`Transformer::encode`] before writing and [`Transformer::decode`] after reading.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, InnerIvInit as _};
use crypto_secretbox::aead::{Aead as _, KeyInit as _};
use serde::Deserialize;

/// Every encrypted value starts with this; a plaintext (JSON) value never does.
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
/// The only accepted `apiVersion`.
const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The only accepted `kind`.
const KIND: &str = "EncryptionConfiguration";
/// Provider types we implement, in the order error messages list them.
const SUPPORTED: &str = "identity, aescbc, aesgcm, secretbox";
/// AES block (and CBC IV) size.
const AES_BLOCK: usize = 16;
/// AES-GCM nonce size (random per value, as kube's standard `aesgcm`).
const GCM_NONCE: usize = 12;
/// XSalsa20-Poly1305 nonce size.
const SECRETBOX_NONCE: usize = 24;

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes::cipher::consts::U12>;

/// Errors of this module: reading or validating a configuration, encrypting, decrypting.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The configuration file could not be read.
    #[error("reading encryption provider configuration {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid; `message` names every offending entry
    /// (`resources[0].providers[1].aescbc.keys[0] ("key1"): ...`), separated by `; `.
    #[error("invalid encryption provider configuration{}: {message}", origin(.path))]
    Config {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong, and where.
        message: String,
    },
    /// A value could not be encrypted (only for absurdly large values).
    #[error("encrypting a value of {resource} with {provider}: {reason}")]
    Encrypt {
        /// `resource.group` (just `resource` for the core group).
        resource: String,
        /// The provider and key, e.g. `aesgcm key "key1"`.
        provider: String,
        /// Why.
        reason: String,
    },
    /// A stored value could not be read by any provider configured for its resource.
    #[error("cannot decode the stored value of {resource} at {key}: {reason}")]
    Decrypt {
        /// `resource.group` (just `resource` for the core group).
        resource: String,
        /// The storage key (lossy UTF-8).
        key: String,
        /// What every candidate provider said.
        reason: String,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// A decoded stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The plaintext.
    pub value: Vec<u8>,
    /// Read with a provider (or key) other than the one writes use now: write it again.
    pub stale: bool,
}

/// A parsed encryption configuration; cheap to share (wrap in `Arc` by the caller). Its `Debug`
/// shows resources, provider types and key names, never a secret.
#[derive(Clone, Default)]
pub struct Transformer {
    /// One rule per distinct resource pattern, in configuration order.
    rules: Vec<Rule>,
}

/// The providers of one resource pattern (`secrets`, `*.apps`, `*.`, `*.*`, ...).
#[derive(Clone)]
struct Rule {
    /// Group of the pattern; `*` for `*.*`.
    group: String,
    /// Resource of the pattern; `*` for a wildcard.
    resource: String,
    /// Index of the configuration entry that first named this pattern.
    entry: usize,
    /// Providers in read order; the first writes. An exact resource named by several entries
    /// gets the providers of each, in entry order (as kube-apiserver does).
    providers: Vec<Arc<Provider>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Identity,
    AesCbc,
    AesGcm,
    Secretbox,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Identity => "identity",
            Kind::AesCbc => "aescbc",
            Kind::AesGcm => "aesgcm",
            Kind::Secretbox => "secretbox",
        }
    }

    /// The stored prefix before the key name (empty for identity).
    fn prefix(self) -> &'static [u8] {
        match self {
            Kind::Identity => b"",
            Kind::AesCbc => b"k8s:enc:aescbc:v1:",
            Kind::AesGcm => b"k8s:enc:aesgcm:v1:",
            Kind::Secretbox => b"k8s:enc:secretbox:v1:",
        }
    }
}

/// One provider of a configuration entry.
struct Provider {
    kind: Kind,
    /// Empty for identity; never empty otherwise (validated). The first writes.
    keys: Vec<NamedKey>,
}

struct NamedKey {
    name: String,
    cipher: Cipher,
}

/// A ready cipher for one key.
enum Cipher {
    Cbc128(aes::Aes128),
    Cbc192(aes::Aes192),
    Cbc256(aes::Aes256),
    Gcm128(Box<aes_gcm::Aes128Gcm>),
    Gcm192(Box<Aes192Gcm>),
    Gcm256(Box<aes_gcm::Aes256Gcm>),
    Secretbox(crypto_secretbox::XSalsa20Poly1305),
}

impl Cipher {
    fn new(kind: Kind, secret: &[u8]) -> Result<Cipher, String> {
        let bad = |want: &str| format!("secret must be {want} bytes, got {}", secret.len());
        let cipher = match (kind, secret.len()) {
            (Kind::AesCbc, 16) => aes::Aes128::new_from_slice(secret).map(Cipher::Cbc128).ok(),
            (Kind::AesCbc, 24) => aes::Aes192::new_from_slice(secret).map(Cipher::Cbc192).ok(),
            (Kind::AesCbc, 32) => aes::Aes256::new_from_slice(secret).map(Cipher::Cbc256).ok(),
            (Kind::AesGcm, 16) => aes_gcm::Aes128Gcm::new_from_slice(secret)
                .map(|c| Cipher::Gcm128(Box::new(c)))
                .ok(),
            (Kind::AesGcm, 24) => Aes192Gcm::new_from_slice(secret)
                .map(|c| Cipher::Gcm192(Box::new(c)))
                .ok(),
            (Kind::AesGcm, 32) => aes_gcm::Aes256Gcm::new_from_slice(secret)
                .map(|c| Cipher::Gcm256(Box::new(c)))
                .ok(),
            (Kind::AesCbc | Kind::AesGcm, _) => return Err(bad("16, 24 or 32")),
            (Kind::Secretbox, 32) => crypto_secretbox::XSalsa20Poly1305::new_from_slice(secret)
                .map(Cipher::Secretbox)
                .ok(),
            (Kind::Secretbox, _) => return Err(bad("32")),
            (Kind::Identity, _) => return Err("identity takes no keys".to_string()),
        };
        // invariant: the lengths matched above are the ones these ciphers accept.
        cipher.ok_or_else(|| format!("the cipher refused a {}-byte secret", secret.len()))
    }

    /// The payload after `k8s:enc:<provider>:v1:<name>:`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, &'static str> {
        match self {
            Cipher::Cbc128(c) => Ok(cbc_seal(|iv| {
                cbc::Encryptor::<aes::Aes128>::inner_iv_init(c.clone(), &iv.into())
                    .encrypt_padded_vec::<Pkcs7>(plaintext)
            })),
            Cipher::Cbc192(c) => Ok(cbc_seal(|iv| {
                cbc::Encryptor::<aes::Aes192>::inner_iv_init(c.clone(), &iv.into())
                    .encrypt_padded_vec::<Pkcs7>(plaintext)
            })),
            Cipher::Cbc256(c) => Ok(cbc_seal(|iv| {
                cbc::Encryptor::<aes::Aes256>::inner_iv_init(c.clone(), &iv.into())
                    .encrypt_padded_vec::<Pkcs7>(plaintext)
            })),
            Cipher::Gcm128(c) => gcm_seal(|n| c.encrypt(&n.into(), gcm_payload(plaintext, aad))),
            Cipher::Gcm192(c) => gcm_seal(|n| c.encrypt(&n.into(), gcm_payload(plaintext, aad))),
            Cipher::Gcm256(c) => gcm_seal(|n| c.encrypt(&n.into(), gcm_payload(plaintext, aad))),
            Cipher::Secretbox(c) => {
                let nonce: [u8; SECRETBOX_NONCE] = rand::random();
                let sealed = c
                    .encrypt(&nonce.into(), plaintext)
                    .map_err(|_| "the value is too large")?;
                let mut out = Vec::with_capacity(SECRETBOX_NONCE + sealed.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
        }
    }

    /// The plaintext of a payload written by [`Cipher::seal`].
    fn open(&self, aad: &[u8], payload: &[u8]) -> Result<Vec<u8>, &'static str> {
        match self {
            Cipher::Cbc128(c) => cbc_open(payload, |iv, ct| {
                cbc::Decryptor::<aes::Aes128>::inner_iv_init(c.clone(), &iv.into())
                    .decrypt_padded_vec::<Pkcs7>(ct)
                    .ok()
            }),
            Cipher::Cbc192(c) => cbc_open(payload, |iv, ct| {
                cbc::Decryptor::<aes::Aes192>::inner_iv_init(c.clone(), &iv.into())
                    .decrypt_padded_vec::<Pkcs7>(ct)
                    .ok()
            }),
            Cipher::Cbc256(c) => cbc_open(payload, |iv, ct| {
                cbc::Decryptor::<aes::Aes256>::inner_iv_init(c.clone(), &iv.into())
                    .decrypt_padded_vec::<Pkcs7>(ct)
                    .ok()
            }),
            Cipher::Gcm128(c) => gcm_open(payload, |n, ct| {
                c.decrypt(&n.into(), gcm_payload(ct, aad)).ok()
            }),
            Cipher::Gcm192(c) => gcm_open(payload, |n, ct| {
                c.decrypt(&n.into(), gcm_payload(ct, aad)).ok()
            }),
            Cipher::Gcm256(c) => gcm_open(payload, |n, ct| {
                c.decrypt(&n.into(), gcm_payload(ct, aad)).ok()
            }),
            Cipher::Secretbox(c) => {
                let (nonce, sealed) = payload
                    .split_first_chunk::<SECRETBOX_NONCE>()
                    .ok_or("the stored data is shorter than a nonce")?;
                c.decrypt(&(*nonce).into(), sealed)
                    .map_err(|_| "authentication failed (wrong key or damaged data)")
            }
        }
    }
}

fn gcm_payload<'m, 'a>(msg: &'m [u8], aad: &'a [u8]) -> Payload<'m, 'a> {
    Payload { msg, aad }
}

/// `iv || AES-CBC(PKCS#7(plaintext))` with a fresh random IV.
fn cbc_seal(encrypt: impl FnOnce([u8; AES_BLOCK]) -> Vec<u8>) -> Vec<u8> {
    let iv: [u8; AES_BLOCK] = rand::random();
    let ciphertext = encrypt(iv);
    let mut out = Vec::with_capacity(AES_BLOCK + ciphertext.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ciphertext);
    out
}

fn cbc_open(
    payload: &[u8],
    decrypt: impl FnOnce([u8; AES_BLOCK], &[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, &'static str> {
    let (iv, ciphertext) = payload
        .split_first_chunk::<AES_BLOCK>()
        .ok_or("the stored data is shorter than an IV")?;
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(AES_BLOCK) {
        return Err("the stored data is not a whole number of AES blocks");
    }
    decrypt(*iv, ciphertext).ok_or("invalid PKCS#7 padding (wrong key or damaged data)")
}

/// `nonce || AES-GCM(plaintext) || tag` with a fresh random nonce.
fn gcm_seal(
    encrypt: impl FnOnce([u8; GCM_NONCE]) -> Result<Vec<u8>, aes_gcm::Error>,
) -> Result<Vec<u8>, &'static str> {
    let nonce: [u8; GCM_NONCE] = rand::random();
    let sealed = encrypt(nonce).map_err(|_| "the value is too large")?;
    let mut out = Vec::with_capacity(GCM_NONCE + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn gcm_open(
    payload: &[u8],
    decrypt: impl FnOnce([u8; GCM_NONCE], &[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, &'static str> {
    let (nonce, sealed) = payload
        .split_first_chunk::<GCM_NONCE>()
        .ok_or("the stored data is shorter than a nonce")?;
    decrypt(*nonce, sealed)
        .ok_or("authentication failed (wrong key, damaged data, or a value moved from another key)")
}

/// `resource.group`, or `resource` for the core group (kube's GroupResource string).
fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// How a configuration names a pattern: `*.` for every core resource, else `resource.group`.
fn pattern_name(group: &str, resource: &str) -> String {
    if group.is_empty() && resource == "*" {
        "*.".to_string()
    } else {
        group_resource(group, resource)
    }
}

/// `k8s:enc:<provider>:<version>:<key>` of an encrypted value, for error messages (printable
/// ASCII only, bounded; never any of the payload).
fn describe_encrypted(stored: &[u8]) -> String {
    let head: Vec<u8> = stored
        .iter()
        .take(96)
        .copied()
        .take_while(|b| b.is_ascii_graphic())
        .collect();
    let text = String::from_utf8_lossy(&head);
    let fields: Vec<&str> = text.splitn(6, ':').take(5).collect();
    fields.join(":")
}

impl Transformer {
    /// No encryption at all: encode returns the plaintext, decode accepts only plaintext (never
    /// stale).
    pub fn identity() -> Self {
        Transformer { rules: Vec::new() }
    }

    /// Read and parse a kube `EncryptionConfiguration` file (YAML or JSON).
    pub fn from_file(path: &Path) -> Result<Self, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text).map_err(|message| EncryptionError::Config {
            path: Some(path.to_path_buf()),
            message,
        })
    }

    /// Parse a kube `EncryptionConfiguration` (YAML or JSON).
    pub fn from_config(text: &str) -> Result<Self, EncryptionError> {
        parse(text).map_err(|message| EncryptionError::Config {
            path: None,
            message,
        })
    }

    /// Whether this transformer is the identity for every resource: no configured resource has
    /// any provider but `identity` (true for [`Transformer::identity`]). Then encode returns the
    /// plaintext and decode only checks that a value is not encrypted; with any encrypting
    /// provider listed, even after `identity`, it is false.
    pub fn is_identity(&self) -> bool {
        self.rules
            .iter()
            .all(|r| r.providers.iter().all(|p| p.kind == Kind::Identity))
    }

    /// The rule of a group/resource, as kube-apiserver looks it up: the exact resource, then
    /// `*.<group>`, then `*.*`. Configuration loading refuses a rule that an earlier wildcard
    /// would mask, so this is also the first configuration entry that matches.
    fn rule(&self, group: &str, resource: &str) -> Option<&Rule> {
        let find = |g: &str, r: &str| {
            self.rules
                .iter()
                .find(|rule| rule.group == g && rule.resource == r)
        };
        find(group, resource)
            .or_else(|| find(group, "*"))
            .or_else(|| find("*", "*"))
    }

    /// Encode a value for storage with the first provider (and its first key) of the first
    /// configuration entry whose `resources` match `group`/`resource`; values of unmatched
    /// resources are stored as plaintext. `storage_key` is the authenticated data of `aesgcm`
    /// (`aescbc` and `secretbox` use none, as in kube).
    pub fn encode(
        &self,
        group: &str,
        resource: &str,
        storage_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EncryptionError> {
        let Some(rule) = self.rule(group, resource) else {
            return Ok(plaintext.to_vec());
        };
        // invariant: configuration loading refuses an entry without providers.
        let Some(provider) = rule.providers.first() else {
            return Ok(plaintext.to_vec());
        };
        if provider.kind == Kind::Identity {
            return Ok(plaintext.to_vec());
        }
        // invariant: configuration loading refuses an encrypting provider without keys.
        let Some(key) = provider.keys.first() else {
            return Err(EncryptionError::Encrypt {
                resource: group_resource(group, resource),
                provider: provider.kind.name().to_string(),
                reason: "the provider has no key".to_string(),
            });
        };
        let payload =
            key.cipher
                .seal(storage_key, plaintext)
                .map_err(|reason| EncryptionError::Encrypt {
                    resource: group_resource(group, resource),
                    provider: format!("{} key {:?}", provider.kind.name(), key.name),
                    reason: reason.to_string(),
                })?;
        let prefix = provider.kind.prefix();
        let mut out = Vec::with_capacity(prefix.len() + key.name.len() + 1 + payload.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(key.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decode a stored value: try the providers configured for `group`/`resource` in order, by
    /// their prefix, and every key of a matching provider by its name. `stale` is true when the
    /// value was read by a provider other than the first, or a key other than its first
    /// (including a plaintext value read through an `identity` provider that is not first, and
    /// an encrypted value when `identity` is first). Unmatched resources: an encrypted value
    /// (`k8s:enc:`) is an error, anything else is plaintext, not stale. A value of a matched
    /// resource that no listed provider reads is an error naming the resource and key.
    pub fn decode(
        &self,
        group: &str,
        resource: &str,
        storage_key: &[u8],
        stored: &[u8],
    ) -> Result<Decoded, EncryptionError> {
        let encrypted = stored.starts_with(ENCRYPTED_PREFIX);
        let failed = |reason: String| EncryptionError::Decrypt {
            resource: group_resource(group, resource),
            key: String::from_utf8_lossy(storage_key).into_owned(),
            reason,
        };
        let Some(rule) = self.rule(group, resource) else {
            if encrypted {
                return Err(failed(format!(
                    "the value is encrypted ({}) but no encryption provider is configured for this resource",
                    describe_encrypted(stored)
                )));
            }
            return Ok(Decoded {
                value: stored.to_vec(),
                stale: false,
            });
        };
        let mut errors: Vec<String> = Vec::new();
        for (i, provider) in rule.providers.iter().enumerate() {
            if provider.kind == Kind::Identity {
                // As kube's identity provider: it refuses encrypted data, and that refusal only
                // lets the next provider try.
                if encrypted {
                    continue;
                }
                return Ok(Decoded {
                    value: stored.to_vec(),
                    stale: i != 0,
                });
            }
            let Some(rest) = stored.strip_prefix(provider.kind.prefix()) else {
                continue;
            };
            let mut key_matched = false;
            for (j, key) in provider.keys.iter().enumerate() {
                let Some(payload) = rest
                    .strip_prefix(key.name.as_bytes())
                    .and_then(|r| r.strip_prefix(b":"))
                else {
                    continue;
                };
                key_matched = true;
                match key.cipher.open(storage_key, payload) {
                    Ok(value) => {
                        return Ok(Decoded {
                            value,
                            stale: i != 0 || j != 0,
                        });
                    }
                    Err(reason) => errors.push(format!(
                        "{} key {:?}: {reason}",
                        provider.kind.name(),
                        key.name
                    )),
                }
            }
            if !key_matched {
                errors.push(format!(
                    "{}: no key named as in the value ({})",
                    provider.kind.name(),
                    describe_encrypted(stored)
                ));
            }
        }
        if errors.is_empty() {
            let listed: Vec<&str> = rule.providers.iter().map(|p| p.kind.name()).collect();
            let what = if encrypted {
                format!("the value is encrypted ({})", describe_encrypted(stored))
            } else {
                "the value is not encrypted".to_string()
            };
            return Err(failed(format!(
                "{what} and no configured provider ({}) reads it",
                listed.join(", ")
            )));
        }
        Err(failed(errors.join("; ")))
    }
}

impl fmt::Debug for Transformer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Providers<'a>(&'a [Arc<Provider>]);
        impl fmt::Debug for Providers<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for p in self.0 {
                    if p.kind == Kind::Identity {
                        list.entry(&format_args!("identity"));
                    } else {
                        let names: Vec<&str> = p.keys.iter().map(|k| k.name.as_str()).collect();
                        list.entry(&format_args!("{}({})", p.kind.name(), names.join(", ")));
                    }
                }
                list.finish()
            }
        }
        let mut map = f.debug_map();
        for rule in &self.rules {
            map.entry(
                &pattern_name(&rule.group, &rule.resource),
                &Providers(&rule.providers),
            );
        }
        map.finish()
    }
}

// --- configuration file -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<Vec<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    resources: Option<Vec<String>>,
    #[serde(default)]
    providers: Option<Vec<RawProvider>>,
}

#[derive(Deserialize)]
struct RawProvider {
    #[serde(default)]
    identity: Option<RawIdentity>,
    #[serde(default)]
    aescbc: Option<RawKeys>,
    #[serde(default)]
    aesgcm: Option<RawKeys>,
    #[serde(default)]
    secretbox: Option<RawKeys>,
    /// Anything else (`kms`, typos): refused with the entry's path.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

/// Parse and validate; the error lists every problem found, each naming its entry.
fn parse(text: &str) -> Result<Transformer, String> {
    if text.trim().is_empty() {
        return Err("the configuration is empty".to_string());
    }
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        format!(
            "not a valid EncryptionConfiguration document: {}",
            e.without_snippet()
                .render_with_formatter(&serde_saphyr::UserMessageFormatter)
        )
    })?;
    let mut errors = Vec::new();
    match raw.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => errors.push(format!("apiVersion must be {API_VERSION:?}, got {other:?}")),
        None => errors.push(format!("apiVersion is required ({API_VERSION:?})")),
    }
    match raw.kind.as_deref() {
        Some(KIND) => {}
        Some(other) => errors.push(format!("kind must be {KIND:?}, got {other:?}")),
        None => errors.push(format!("kind is required ({KIND:?})")),
    }
    let entries = raw.resources.unwrap_or_default();
    if entries.is_empty() {
        errors.push("resources: at least one entry is required".to_string());
    }
    let mut rules: Vec<Rule> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("resources[{i}]");
        let providers = build_providers(&at, entry.providers.unwrap_or_default(), &mut errors);
        let patterns = validate_resources(&at, &entry.resources.unwrap_or_default(), &mut errors);
        for (j, (name, group, resource)) in patterns.into_iter().enumerate() {
            // kube-apiserver refuses a pattern that an earlier entry's `*.<group>` or `*.*`
            // masks, since it could never apply.
            let masked_by = rules
                .iter()
                .filter(|r| r.entry < i)
                .find(|r| r.resource == "*" && (r.group == group || r.group == "*"))
                .map(|r| (pattern_name(&r.group, &r.resource), r.entry));
            if let Some((wildcard, earlier)) = masked_by {
                errors.push(format!(
                    "{at}.resources[{j}] ({name:?}): masked by the earlier rule {wildcard:?} of resources[{earlier}]; list it before that entry or drop it"
                ));
                continue;
            }
            match rules
                .iter_mut()
                .find(|r| r.group == group && r.resource == resource)
            {
                // The same exact resource in a later entry: its providers are tried after the
                // earlier entry's (kube appends them).
                Some(rule) => rule.providers.extend(providers.iter().cloned()),
                None => rules.push(Rule {
                    group,
                    resource,
                    entry: i,
                    providers: providers.clone(),
                }),
            }
        }
    }
    if errors.is_empty() {
        Ok(Transformer { rules })
    } else {
        Err(errors.join("; "))
    }
}

/// Check the `resources` of entry `at`; returns (as written, group, resource) of each valid one.
fn validate_resources(
    at: &str,
    names: &[String],
    errors: &mut Vec<String>,
) -> Vec<(String, String, String)> {
    if names.is_empty() {
        errors.push(format!("{at}.resources: at least one resource is required"));
        return Vec::new();
    }
    let mut parsed = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let here = format!("{at}.resources[{j}] ({name:?})");
        // kube's ParseGroupResource: resource before the first dot, group after it, so
        // `cachedobjects.cache.kcp.io` is resource `cachedobjects` of group `cache.kcp.io`.
        let (resource, group) = name.split_once('.').unwrap_or((name.as_str(), ""));
        if name.chars().any(char::is_uppercase) {
            errors.push(format!(
                "{here}: resource names must not contain capital letters"
            ));
        } else if name == "*" {
            errors.push(format!(
                "{here}: use '*.' for every resource of the core group or '*.*' for every resource"
            ));
        } else if resource.is_empty() {
            errors.push(format!("{here}: the resource name is empty"));
        } else if group == "*" && resource != "*" {
            errors.push(format!(
                "{here}: one resource across every group is not supported; use '*.*' or name the group"
            ));
        } else {
            parsed.push((name.clone(), group.to_string(), resource.to_string()));
        }
    }
    // Within one list, a duplicate or a wildcard covering another item is refused (kube:
    // overlapping resources would be masked).
    for (a, (name_a, group_a, res_a)) in parsed.iter().enumerate() {
        for (name_b, group_b, res_b) in parsed.iter().skip(a + 1) {
            if group_a == group_b && res_a == res_b {
                errors.push(format!("{at}.resources: {name_a:?} is listed twice"));
            } else if (group_a == "*" && res_a == "*")
                || (group_b == "*" && res_b == "*")
                || (group_a == group_b && (res_a == "*" || res_b == "*"))
            {
                errors.push(format!(
                    "{at}.resources: {name_a:?} and {name_b:?} overlap in one list, so one would mask the other"
                ));
            }
        }
    }
    parsed
}

/// Build the providers of entry `at`, recording every problem in `errors`.
fn build_providers(
    at: &str,
    raw: Vec<RawProvider>,
    errors: &mut Vec<String>,
) -> Vec<Arc<Provider>> {
    if raw.is_empty() {
        errors.push(format!("{at}.providers: at least one provider is required"));
        return Vec::new();
    }
    let mut providers = Vec::new();
    for (k, p) in raw.into_iter().enumerate() {
        let here = format!("{at}.providers[{k}]");
        if let Some(unknown) = p.unknown.keys().next() {
            errors.push(format!(
                "{here}: unknown provider {unknown:?} (supported: {SUPPORTED})"
            ));
            continue;
        }
        let mut present: Vec<(Kind, Option<RawKeys>)> = Vec::new();
        if p.identity.is_some() {
            present.push((Kind::Identity, None));
        }
        if let Some(keys) = p.aescbc {
            present.push((Kind::AesCbc, Some(keys)));
        }
        if let Some(keys) = p.aesgcm {
            present.push((Kind::AesGcm, Some(keys)));
        }
        if let Some(keys) = p.secretbox {
            present.push((Kind::Secretbox, Some(keys)));
        }
        if present.len() > 1 {
            let names: Vec<&str> = present.iter().map(|(kind, _)| kind.name()).collect();
            errors.push(format!(
                "{here}: more than one provider ({}) in one element; give each its own list element",
                names.join(", ")
            ));
            continue;
        }
        let Some((kind, keys)) = present.pop() else {
            errors.push(format!(
                "{here}: no provider given (expected exactly one of {SUPPORTED})"
            ));
            continue;
        };
        let keys = match keys {
            None => Vec::new(),
            Some(keys) => {
                match build_keys(&format!("{here}.{}", kind.name()), kind, keys, errors) {
                    Some(keys) => keys,
                    None => continue,
                }
            }
        };
        providers.push(Arc::new(Provider { kind, keys }));
    }
    providers
}

/// Build the keys of one encrypting provider; `None` (with `errors` filled) when any is invalid.
fn build_keys(
    here: &str,
    kind: Kind,
    raw: RawKeys,
    errors: &mut Vec<String>,
) -> Option<Vec<NamedKey>> {
    let raw = raw.keys.unwrap_or_default();
    if raw.is_empty() {
        errors.push(format!("{here}.keys: at least one key is required"));
        return None;
    }
    let before = errors.len();
    let mut keys: Vec<NamedKey> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (k, key) in raw.into_iter().enumerate() {
        let name = key.name.unwrap_or_default();
        let here = if name.is_empty() {
            format!("{here}.keys[{k}]")
        } else {
            format!("{here}.keys[{k}] ({name:?})")
        };
        if name.is_empty() {
            errors.push(format!("{here}: name is required"));
        } else if let Some(first) = seen.get(&name) {
            errors.push(format!(
                "{here}: duplicate key name (also keys[{first}]); names must be unique within a provider"
            ));
        } else {
            seen.insert(name.clone(), k);
        }
        let secret = key.secret.unwrap_or_default();
        if secret.is_empty() {
            errors.push(format!("{here}: secret is required"));
            continue;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(secret.trim()) else {
            errors.push(format!("{here}: secret must be base64 encoded"));
            continue;
        };
        match Cipher::new(kind, &bytes) {
            Ok(cipher) => keys.push(NamedKey { name, cipher }),
            Err(reason) => errors.push(format!("{here}: {reason}")),
        }
    }
    (errors.len() == before).then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = br#"{"kind":"Secret","data":{"password":"hunter2"}}"#;
    const SKEY: &[u8] = b"/core/secrets/root/c1/ns/s1";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn secret(len: usize, fill: u8) -> String {
        b64(&vec![fill; len])
    }

    /// A config with one entry: `resources` and the given provider YAML items.
    fn config(resources: &[&str], providers: &[String]) -> String {
        let mut s = format!("apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n");
        s.push_str("  - resources:\n");
        for r in resources {
            s.push_str(&format!("      - {r:?}\n"));
        }
        s.push_str("    providers:\n");
        for p in providers {
            s.push_str(&format!("      - {p}\n"));
        }
        s
    }

    fn keyed(kind: &str, keys: &[(&str, String)]) -> String {
        let list: Vec<String> = keys
            .iter()
            .map(|(n, s)| format!("{{name: {n}, secret: {s:?}}}"))
            .collect();
        format!("{kind}: {{keys: [{}]}}", list.join(", "))
    }

    fn aescbc(keys: &[(&str, String)]) -> String {
        keyed("aescbc", keys)
    }

    fn identity() -> String {
        "identity: {}".to_string()
    }

    fn t(text: &str) -> Transformer {
        match Transformer::from_config(text) {
            Ok(t) => t,
            Err(e) => panic!("config refused: {e}\n{text}"),
        }
    }

    fn refused(text: &str) -> String {
        match Transformer::from_config(text) {
            Ok(t) => panic!("config accepted: {t:?}\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn secrets_with(providers: &[String]) -> Transformer {
        t(&config(&["secrets"], providers))
    }

    fn decode_secret(tr: &Transformer, stored: &[u8]) -> Result<Decoded, EncryptionError> {
        tr.decode("", "secrets", SKEY, stored)
    }

    #[test]
    fn a_value_written_with_aescbc_starts_with_the_provider_and_key_and_never_contains_the_plaintext()
     {
        let tr = secrets_with(&[aescbc(&[("key1", secret(32, 1))])]);
        let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
        assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"));
        assert!(!stored.windows(7).any(|w| w == b"hunter2"));
        assert!(!stored.windows(PLAIN.len()).any(|w| w == PLAIN));
        // prefix + 16-byte IV + PKCS#7-padded ciphertext
        let payload = &stored[b"k8s:enc:aescbc:v1:key1:".len()..];
        assert_eq!(payload.len(), 16 + (PLAIN.len() / 16 + 1) * 16);
    }

    #[test]
    fn aescbc_round_trips_with_16_24_and_32_byte_keys() {
        for len in [16, 24, 32] {
            let tr = secrets_with(&[aescbc(&[("k", secret(len, 7))])]);
            for plain in [&b""[..], b"x", &[0u8; 16][..], PLAIN] {
                let stored = tr.encode("", "secrets", SKEY, plain).unwrap();
                let got = decode_secret(&tr, &stored).unwrap();
                assert_eq!(got.value, plain, "key of {len} bytes");
                assert!(!got.stale);
            }
        }
    }

    #[test]
    fn aesgcm_round_trips_with_16_24_and_32_byte_keys() {
        for len in [16, 24, 32] {
            let tr = secrets_with(&[keyed("aesgcm", &[("g", secret(len, 9))])]);
            for plain in [&b""[..], b"x", PLAIN] {
                let stored = tr.encode("", "secrets", SKEY, plain).unwrap();
                assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:g:"));
                // prefix + 12-byte nonce + ciphertext + 16-byte tag
                assert_eq!(
                    stored.len(),
                    b"k8s:enc:aesgcm:v1:g:".len() + 12 + plain.len() + 16
                );
                let got = decode_secret(&tr, &stored).unwrap();
                assert_eq!(got.value, plain, "key of {len} bytes");
                assert!(!got.stale);
            }
        }
    }

    #[test]
    fn secretbox_round_trips() {
        let tr = secrets_with(&[keyed("secretbox", &[("s", secret(32, 3))])]);
        for plain in [&b""[..], b"x", PLAIN] {
            let stored = tr.encode("", "secrets", SKEY, plain).unwrap();
            assert!(stored.starts_with(b"k8s:enc:secretbox:v1:s:"));
            // prefix + 24-byte nonce + 16-byte tag + ciphertext
            assert_eq!(
                stored.len(),
                b"k8s:enc:secretbox:v1:s:".len() + 24 + 16 + plain.len()
            );
            let got = decode_secret(&tr, &stored).unwrap();
            assert_eq!(got.value, plain);
            assert!(!got.stale);
        }
    }

    #[test]
    fn an_identity_provider_stores_the_plaintext_as_is() {
        let tr = secrets_with(&[identity()]);
        assert_eq!(tr.encode("", "secrets", SKEY, PLAIN).unwrap(), PLAIN);
        let got = decode_secret(&tr, PLAIN).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: false
            }
        );
        assert!(tr.is_identity());
    }

    #[test]
    fn every_write_uses_a_fresh_iv_or_nonce() {
        for p in [
            aescbc(&[("k", secret(32, 1))]),
            keyed("aesgcm", &[("k", secret(32, 1))]),
            keyed("secretbox", &[("k", secret(32, 1))]),
        ] {
            let tr = secrets_with(&[p]);
            let a = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
            let b = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
            assert_ne!(a, b);
        }
    }

    #[test]
    fn aescbc_reads_a_value_laid_out_as_kube_writes_it() {
        // Computed independently: `openssl enc -aes-256-cbc` (PKCS#7) with this key and IV.
        let key: Vec<u8> = (0u8..32).collect();
        let iv = hex::decode("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf").unwrap();
        let ct = hex::decode("da54e881eafae68f34aa2ddb00e56b529066cf56a14d31a2be6e24349eab8782")
            .unwrap();
        let tr = secrets_with(&[aescbc(&[("key1", b64(&key))])]);
        let stored = [&b"k8s:enc:aescbc:v1:key1:"[..], &iv, &ct].concat();
        let got = decode_secret(&tr, &stored).unwrap();
        assert_eq!(got.value, br#"{"kind":"Secret"}"#);
    }

    #[test]
    fn aesgcm_reads_a_value_laid_out_as_kube_writes_it() {
        // Computed independently: Python `cryptography` AESGCM(key).encrypt(nonce, pt, aad).
        let key: Vec<u8> = (0u8..16).collect();
        let nonce: Vec<u8> = (0xb0u8..0xbc).collect();
        let sealed =
            hex::decode("25ebdbf4a9f309059c793e65a71f6bc4a4cc946079103b56122d9577c35be6af54")
                .unwrap();
        let tr = secrets_with(&[keyed("aesgcm", &[("key1", b64(&key))])]);
        let stored = [&b"k8s:enc:aesgcm:v1:key1:"[..], &nonce, &sealed].concat();
        let got = decode_secret(&tr, &stored).unwrap();
        assert_eq!(got.value, br#"{"kind":"Secret"}"#);
    }

    #[test]
    fn aesgcm_refuses_a_value_moved_to_another_storage_key() {
        let tr = secrets_with(&[keyed("aesgcm", &[("k", secret(32, 1))])]);
        let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
        let err = tr
            .decode("", "secrets", b"/core/secrets/root/c1/ns/other", &stored)
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets"), "{err}");
        assert!(err.contains("/core/secrets/root/c1/ns/other"), "{err}");
        assert!(err.contains("authentication failed"), "{err}");
    }

    #[test]
    fn aescbc_and_secretbox_do_not_bind_the_value_to_its_storage_key() {
        for p in [
            aescbc(&[("k", secret(32, 1))]),
            keyed("secretbox", &[("k", secret(32, 1))]),
        ] {
            let tr = secrets_with(&[p]);
            let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
            let got = tr.decode("", "secrets", b"/elsewhere", &stored).unwrap();
            assert_eq!(got.value, PLAIN);
        }
    }

    #[test]
    fn a_value_written_under_key1_and_read_with_key2_key1_is_stale_and_decodes() {
        let key1 = ("key1", secret(32, 1));
        let key2 = ("key2", secret(32, 2));
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let old = secrets_with(&[keyed(kind, std::slice::from_ref(&key1))]);
            let stored = old.encode("", "secrets", SKEY, PLAIN).unwrap();
            let new = secrets_with(&[keyed(kind, &[key2.clone(), key1.clone()])]);
            let got = decode_secret(&new, &stored).unwrap();
            assert_eq!(
                got,
                Decoded {
                    value: PLAIN.to_vec(),
                    stale: true
                },
                "{kind}"
            );
            let rewritten = new.encode("", "secrets", SKEY, &got.value).unwrap();
            assert!(rewritten.starts_with(format!("k8s:enc:{kind}:v1:key2:").as_bytes()));
            assert!(!decode_secret(&new, &rewritten).unwrap().stale);
        }
    }

    #[test]
    fn a_provider_listed_after_the_first_reads_old_values_as_stale() {
        let gcm = keyed("aesgcm", &[("g", secret(32, 5))]);
        let cbc = aescbc(&[("c", secret(32, 6))]);
        let stored = secrets_with(std::slice::from_ref(&cbc))
            .encode("", "secrets", SKEY, PLAIN)
            .unwrap();
        let got = decode_secret(&secrets_with(&[gcm, cbc]), &stored).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: true
            }
        );
    }

    #[test]
    fn two_providers_of_one_type_are_tried_in_turn() {
        let a = aescbc(&[("key2", secret(32, 2))]);
        let b = aescbc(&[("key1", secret(32, 1))]);
        let stored = secrets_with(std::slice::from_ref(&b))
            .encode("", "secrets", SKEY, PLAIN)
            .unwrap();
        let got = decode_secret(&secrets_with(&[a, b]), &stored).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: true
            }
        );
    }

    #[test]
    fn with_identity_then_aescbc_an_encrypted_value_is_stale_and_writes_are_plaintext() {
        let cbc = aescbc(&[("key1", secret(32, 1))]);
        let stored = secrets_with(std::slice::from_ref(&cbc))
            .encode("", "secrets", SKEY, PLAIN)
            .unwrap();
        let tr = secrets_with(&[identity(), cbc]);
        let got = decode_secret(&tr, &stored).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: true
            }
        );
        assert_eq!(tr.encode("", "secrets", SKEY, PLAIN).unwrap(), PLAIN);
        assert!(!decode_secret(&tr, PLAIN).unwrap().stale);
        assert!(!tr.is_identity());
    }

    #[test]
    fn with_aescbc_then_identity_a_plaintext_value_is_stale() {
        let tr = secrets_with(&[aescbc(&[("key1", secret(32, 1))]), identity()]);
        let got = decode_secret(&tr, PLAIN).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: true
            }
        );
    }

    #[test]
    fn with_only_aescbc_a_plaintext_value_is_an_error_naming_the_resource() {
        let tr = secrets_with(&[aescbc(&[("key1", secret(32, 1))])]);
        let err = decode_secret(&tr, PLAIN).unwrap_err().to_string();
        assert!(
            err.contains("secrets at /core/secrets/root/c1/ns/s1"),
            "{err}"
        );
        assert!(err.contains("not encrypted"), "{err}");
    }

    #[test]
    fn a_value_of_a_provider_or_key_not_listed_is_an_error_naming_the_resource() {
        let gcm = secrets_with(&[keyed("aesgcm", &[("key9", secret(32, 9))])]);
        let stored = gcm.encode("", "secrets", SKEY, PLAIN).unwrap();
        let tr = secrets_with(&[aescbc(&[("key1", secret(32, 1))]), identity()]);
        let err = decode_secret(&tr, &stored).unwrap_err().to_string();
        assert!(
            err.contains("secrets at /core/secrets/root/c1/ns/s1"),
            "{err}"
        );
        assert!(err.contains("k8s:enc:aesgcm:v1:key9"), "{err}");

        let other_key = secrets_with(&[keyed("aesgcm", &[("key1", secret(32, 1))])]);
        let err = decode_secret(&other_key, &stored).unwrap_err().to_string();
        assert!(err.contains("no key named as in the value"), "{err}");
    }

    #[test]
    fn a_key_replaced_under_the_same_name_is_an_error_not_garbage() {
        for kind in ["aesgcm", "secretbox"] {
            let old = secrets_with(&[keyed(kind, &[("key1", secret(32, 1))])]);
            let stored = old.encode("", "secrets", SKEY, PLAIN).unwrap();
            let new = secrets_with(&[keyed(kind, &[("key1", secret(32, 2))])]);
            let err = decode_secret(&new, &stored).unwrap_err().to_string();
            assert!(err.contains(&format!("{kind} key \"key1\"")), "{err}");
        }
    }

    #[test]
    fn an_unmatched_resource_is_stored_as_plaintext_and_refuses_encrypted_values() {
        let tr = secrets_with(&[aescbc(&[("key1", secret(32, 1))])]);
        assert_eq!(tr.encode("", "configmaps", SKEY, PLAIN).unwrap(), PLAIN);
        let got = tr.decode("", "configmaps", SKEY, PLAIN).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: false
            }
        );
        let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
        let err = tr
            .decode("", "configmaps", b"/core/configmaps/x", &stored)
            .unwrap_err()
            .to_string();
        assert!(err.contains("configmaps at /core/configmaps/x"), "{err}");
        assert!(
            err.contains("no encryption provider is configured"),
            "{err}"
        );
    }

    #[test]
    fn the_identity_transformer_passes_plaintext_and_refuses_encrypted_values() {
        let tr = Transformer::identity();
        assert!(tr.is_identity());
        assert_eq!(
            tr.encode("apps", "deployments", SKEY, PLAIN).unwrap(),
            PLAIN
        );
        let got = tr.decode("apps", "deployments", SKEY, PLAIN).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: false
            }
        );
        let err = tr
            .decode("apps", "deployments", SKEY, b"k8s:enc:aescbc:v1:k:xxxx")
            .unwrap_err()
            .to_string();
        assert!(err.contains("deployments.apps"), "{err}");
    }

    #[test]
    fn is_identity_is_false_once_any_resource_lists_an_encrypting_provider() {
        assert!(secrets_with(&[identity()]).is_identity());
        assert!(!secrets_with(&[aescbc(&[("k", secret(16, 1))])]).is_identity());
        assert!(!secrets_with(&[identity(), aescbc(&[("k", secret(16, 1))])]).is_identity());
    }

    /// Which key (by its name) writes `group`/`resource`, or "plain".
    fn writer(tr: &Transformer, group: &str, resource: &str) -> String {
        let stored = tr.encode(group, resource, SKEY, PLAIN).unwrap();
        if stored == PLAIN {
            return "plain".to_string();
        }
        let text = String::from_utf8_lossy(&stored);
        text.split(':').nth(4).unwrap_or_default().to_string()
    }

    fn entries(list: &[(&[&str], &str)]) -> String {
        let mut s = format!("apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n");
        for (i, (resources, key)) in list.iter().enumerate() {
            let quoted: Vec<String> = resources.iter().map(|r| format!("{r:?}")).collect();
            s.push_str(&format!("  - resources: [{}]\n", quoted.join(", ")));
            if *key == "identity" {
                s.push_str("    providers: [{identity: {}}]\n");
            } else {
                let sec = secret(32, i as u8);
                s.push_str(&format!(
                    "    providers: [{{aescbc: {{keys: [{{name: {key}, secret: {sec:?}}}]}}}}]\n"
                ));
            }
        }
        s
    }

    #[test]
    fn star_star_matches_every_resource_of_every_group() {
        let tr = t(&entries(&[(&["*.*"], "all")]));
        assert_eq!(writer(&tr, "", "secrets"), "all");
        assert_eq!(writer(&tr, "apps", "deployments"), "all");
        assert_eq!(writer(&tr, "cache.kcp.io", "cachedobjects"), "all");
    }

    #[test]
    fn star_dot_group_matches_every_resource_of_that_group_only() {
        let tr = t(&entries(&[(&["*.apps"], "apps")]));
        assert_eq!(writer(&tr, "apps", "deployments"), "apps");
        assert_eq!(writer(&tr, "apps", "statefulsets"), "apps");
        assert_eq!(writer(&tr, "", "deployments"), "plain");
        assert_eq!(writer(&tr, "batch", "jobs"), "plain");
        assert_eq!(writer(&tr, "apps.example", "deployments"), "plain");
    }

    #[test]
    fn star_dot_matches_every_resource_of_the_core_group_only() {
        let tr = t(&entries(&[(&["*."], "core")]));
        assert_eq!(writer(&tr, "", "secrets"), "core");
        assert_eq!(writer(&tr, "", "configmaps"), "core");
        assert_eq!(writer(&tr, "apps", "deployments"), "plain");
    }

    #[test]
    fn an_exact_name_matches_only_that_resource_and_group() {
        let tr = t(&entries(&[(
            &["secrets", "deployments.apps", "cachedobjects.cache.kcp.io"],
            "exact",
        )]));
        assert_eq!(writer(&tr, "", "secrets"), "exact");
        assert_eq!(writer(&tr, "apps", "deployments"), "exact");
        assert_eq!(writer(&tr, "cache.kcp.io", "cachedobjects"), "exact");
        assert_eq!(writer(&tr, "apps", "secrets"), "plain");
        assert_eq!(writer(&tr, "", "deployments"), "plain");
        assert_eq!(writer(&tr, "kcp.io", "cachedobjects"), "plain");
        assert_eq!(writer(&tr, "", "configmaps"), "plain");
    }

    #[test]
    fn the_first_matching_entry_wins() {
        // kube's documented example shape: events unencrypted, then exact names, then a
        // group wildcard, then everything.
        let tr = t(&entries(&[
            (&["events"], "identity"),
            (&["secrets", "configmaps"], "one"),
            (&["*.apps"], "two"),
            (&["*.*"], "three"),
        ]));
        assert_eq!(writer(&tr, "", "events"), "plain");
        assert_eq!(writer(&tr, "", "secrets"), "one");
        assert_eq!(writer(&tr, "", "configmaps"), "one");
        assert_eq!(writer(&tr, "apps", "deployments"), "two");
        assert_eq!(writer(&tr, "", "pods"), "three");
        assert_eq!(writer(&tr, "cache.kcp.io", "cachedobjects"), "three");
    }

    #[test]
    fn a_resource_repeated_in_a_later_entry_adds_that_entrys_providers_for_reading() {
        let text = entries(&[(&["secrets"], "new"), (&["secrets"], "old")]);
        let tr = t(&text);
        assert_eq!(writer(&tr, "", "secrets"), "new");
        // Written under "old" (same secret as entry 1 of `tr`: fill byte 1).
        let old_only = t(&entries(&[
            (&["configmaps"], "unused"),
            (&["secrets"], "old"),
        ]));
        let stored = old_only.encode("", "secrets", SKEY, PLAIN).unwrap();
        let got = tr.decode("", "secrets", SKEY, &stored).unwrap();
        assert_eq!(
            got,
            Decoded {
                value: PLAIN.to_vec(),
                stale: true
            }
        );
    }

    #[test]
    fn a_resource_masked_by_an_earlier_wildcard_is_refused() {
        for (first, second) in [
            ("*.", "secrets"),
            ("*.apps", "deployments.apps"),
            ("*.*", "secrets"),
            ("*.*", "*.apps"),
            ("*.apps", "*.apps"),
        ] {
            let msg = refused(&entries(&[(&[first], "a"), (&[second], "b")]));
            assert!(
                msg.contains(&format!(
                    "resources[1].resources[0] ({second:?}): masked by the earlier rule {first:?} of resources[0]"
                )),
                "{msg}"
            );
        }
        // The other way round is fine: the exact name comes first.
        let tr = t(&entries(&[
            (&["deployments.apps"], "a"),
            (&["*.apps"], "b"),
        ]));
        assert_eq!(writer(&tr, "apps", "deployments"), "a");
        assert_eq!(writer(&tr, "apps", "replicasets"), "b");
    }

    #[test]
    fn overlapping_or_repeated_resources_in_one_list_are_refused() {
        let msg = refused(&entries(&[(&["secrets", "*."], "a")]));
        assert!(
            msg.contains("resources[0].resources: \"secrets\" and \"*.\" overlap"),
            "{msg}"
        );
        let msg = refused(&entries(&[(&["*.*", "deployments.apps"], "a")]));
        assert!(msg.contains("resources[0].resources: \"*.*\" and"), "{msg}");
        let msg = refused(&entries(&[(&["secrets", "secrets"], "a")]));
        assert!(
            msg.contains("resources[0].resources: \"secrets\" is listed twice"),
            "{msg}"
        );
        // Different groups do not overlap.
        t(&entries(&[(&["*.apps", "secrets", "*.batch"], "a")]));
    }

    #[test]
    fn malformed_resource_names_are_refused_naming_the_entry() {
        for (name, says) in [
            ("*", "use '*.'"),
            ("Secrets", "capital letters"),
            ("secrets.*", "across every group"),
            (".apps", "resource name is empty"),
            ("", "resource name is empty"),
        ] {
            let msg = refused(&entries(&[(&["configmaps", name], "a")]));
            assert!(
                msg.contains(&format!("resources[0].resources[1] ({name:?})")),
                "{msg}"
            );
            assert!(msg.contains(says), "{msg}");
        }
    }

    #[test]
    fn bad_yaml_is_refused_with_its_location() {
        let msg = refused("apiVersion: [unclosed\nkind: x\n");
        assert!(
            msg.contains("not a valid EncryptionConfiguration document"),
            "{msg}"
        );
        assert!(msg.contains("line"), "{msg}");
        let msg = refused(&format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresource: []\n"
        ));
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn an_unknown_provider_such_as_kms_is_refused_naming_the_entry() {
        let text = config(
            &["secrets"],
            &[
                identity(),
                "kms: {apiVersion: v2, name: p, endpoint: 'unix:///kms.sock'}".to_string(),
            ],
        );
        let msg = refused(&text);
        assert!(
            msg.contains("resources[0].providers[1]: unknown provider \"kms\""),
            "{msg}"
        );
        let msg = refused(&config(&["secrets"], &["aescbd: {keys: []}".to_string()]));
        assert!(
            msg.contains("resources[0].providers[0]: unknown provider \"aescbd\""),
            "{msg}"
        );
    }

    #[test]
    fn a_wrong_key_size_is_refused_naming_the_entry() {
        let text = config(
            &["secrets"],
            &[identity(), aescbc(&[("key1", secret(10, 1))])],
        );
        let msg = refused(&text);
        assert!(
            msg.contains(
                "resources[0].providers[1].aescbc.keys[0] (\"key1\"): secret must be 16, 24 or 32 bytes, got 10"
            ),
            "{msg}"
        );
        let msg = refused(&config(
            &["secrets"],
            &[keyed(
                "aesgcm",
                &[("ok", secret(16, 1)), ("g", secret(33, 1))],
            )],
        ));
        assert!(
            msg.contains("resources[0].providers[0].aesgcm.keys[1] (\"g\"): secret must be 16, 24 or 32 bytes, got 33"),
            "{msg}"
        );
        let msg = refused(&config(
            &["secrets"],
            &[keyed("secretbox", &[("s", secret(16, 1))])],
        ));
        assert!(
            msg.contains("resources[0].providers[0].secretbox.keys[0] (\"s\"): secret must be 32 bytes, got 16"),
            "{msg}"
        );
    }

    #[test]
    fn missing_keys_are_refused_naming_the_entry() {
        let msg = refused(&config(&["secrets"], &["aescbc: {keys: []}".to_string()]));
        assert!(
            msg.contains("resources[0].providers[0].aescbc.keys: at least one key is required"),
            "{msg}"
        );
        let msg = refused(&config(&["secrets"], &["aesgcm: {}".to_string()]));
        assert!(
            msg.contains("resources[0].providers[0].aesgcm.keys: at least one key is required"),
            "{msg}"
        );
        let msg = refused(&config(
            &["secrets"],
            &["secretbox: {keys: [{name: s}]}".to_string()],
        ));
        assert!(
            msg.contains("resources[0].providers[0].secretbox.keys[0] (\"s\"): secret is required"),
            "{msg}"
        );
        let text = config(
            &["secrets"],
            &[format!(
                "aescbc: {{keys: [{{secret: {:?}}}]}}",
                secret(32, 1)
            )],
        );
        let msg = refused(&text);
        assert!(
            msg.contains("resources[0].providers[0].aescbc.keys[0]: name is required"),
            "{msg}"
        );
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_naming_the_entry() {
        let msg = refused(&config(
            &["secrets"],
            &[aescbc(&[("key1", "not base64!".to_string())])],
        ));
        assert!(
            msg.contains(
                "resources[0].providers[0].aescbc.keys[0] (\"key1\"): secret must be base64 encoded"
            ),
            "{msg}"
        );
        assert!(
            !msg.contains("not base64!"),
            "the secret must not be echoed: {msg}"
        );
    }

    #[test]
    fn duplicate_key_names_within_a_provider_are_refused() {
        let msg = refused(&config(
            &["secrets"],
            &[aescbc(&[("key1", secret(32, 1)), ("key1", secret(32, 2))])],
        ));
        assert!(
            msg.contains("resources[0].providers[0].aescbc.keys[1] (\"key1\"): duplicate key name (also keys[0])"),
            "{msg}"
        );
    }

    #[test]
    fn a_provider_element_must_name_exactly_one_provider() {
        let two = format!("{{identity: {{}}, {}}}", aescbc(&[("k", secret(32, 1))]));
        let msg = refused(&config(&["secrets"], &[two]));
        assert!(
            msg.contains("resources[0].providers[0]: more than one provider (identity, aescbc)"),
            "{msg}"
        );
        let msg = refused(&config(&["secrets"], &["{}".to_string()]));
        assert!(
            msg.contains("resources[0].providers[0]: no provider given"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_api_version_or_kind_is_refused() {
        let good = config(&["secrets"], &[identity()]);
        let msg = refused(&good.replace(API_VERSION, "v1"));
        assert!(
            msg.contains("apiVersion must be \"apiserver.config.k8s.io/v1\", got \"v1\""),
            "{msg}"
        );
        let msg = refused(&good.replace(KIND, "EncryptionConfig"));
        assert!(
            msg.contains("kind must be \"EncryptionConfiguration\", got \"EncryptionConfig\""),
            "{msg}"
        );
        let msg = refused("resources: []\n");
        assert!(msg.contains("apiVersion is required"), "{msg}");
        assert!(msg.contains("kind is required"), "{msg}");
    }

    #[test]
    fn empty_resources_or_providers_are_refused() {
        let msg = refused("");
        assert!(msg.contains("empty"), "{msg}");
        let msg = refused(&format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources: []\n"
        ));
        assert!(
            msg.contains("resources: at least one entry is required"),
            "{msg}"
        );
        let msg = refused(&config(&[], &[identity()]));
        assert!(
            msg.contains("resources[0].resources: at least one resource is required"),
            "{msg}"
        );
        let msg = refused(&config(&["secrets"], &[]));
        assert!(
            msg.contains("resources[0].providers: at least one provider is required"),
            "{msg}"
        );
    }

    #[test]
    fn every_problem_of_a_configuration_is_reported_at_once() {
        let text = format!(
            "apiVersion: {API_VERSION}\nkind: {KIND}\nresources:\n  - resources: [secrets]\n    providers: [{{kms: {{}}}}]\n  - resources: [configmaps]\n    providers: [{}]\n",
            aescbc(&[("k", secret(5, 1))])
        );
        let msg = refused(&text);
        assert!(
            msg.contains("resources[0].providers[0]: unknown provider"),
            "{msg}"
        );
        assert!(
            msg.contains("resources[1].providers[0].aescbc.keys[0] (\"k\"): secret must be"),
            "{msg}"
        );
    }

    #[test]
    fn a_json_configuration_is_accepted() {
        let text = format!(
            "{{\n\t\"apiVersion\": \"{API_VERSION}\",\n\t\"kind\": \"{KIND}\",\n\t\"resources\": [\n\t\t{{\n\t\t\t\"resources\": [\"secrets\"],\n\t\t\t\"providers\": [\n\t\t\t\t{{\"aesgcm\": {{\"keys\": [{{\"name\": \"key1\", \"secret\": \"{}\"}}]}}}},\n\t\t\t\t{{\"identity\": {{}}}}\n\t\t\t]\n\t\t}}\n\t]\n}}\n",
            secret(32, 4)
        );
        let tr = t(&text);
        assert_eq!(writer(&tr, "", "secrets"), "key1");
    }

    #[test]
    fn the_documented_kube_example_is_accepted() {
        let text = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
      - configmaps
      - pandas.awesome.bears.example
    providers:
      - aesgcm:
          keys:
            - name: key1
              secret: MDEyMzQ1Njc4OWFiY2RlZg==
            - name: key2
              secret: ZmVkY2JhOTg3NjU0MzIxMA==
      - aescbc:
          keys:
            - name: key1
              secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
      - secretbox:
          keys:
            - name: key1
              secret: ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=
      - identity: {}
"#;
        let tr = t(text);
        assert_eq!(writer(&tr, "awesome.bears.example", "pandas"), "key1");
        assert!(
            tr.encode("", "configmaps", SKEY, PLAIN)
                .unwrap()
                .starts_with(b"k8s:enc:aesgcm:v1:key1:")
        );
    }

    #[test]
    fn from_file_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.yaml");
        std::fs::write(
            &path,
            config(&["secrets"], &[aescbc(&[("k", secret(32, 1))])]),
        )
        .unwrap();
        let tr = Transformer::from_file(&path).unwrap();
        assert_eq!(writer(&tr, "", "secrets"), "k");

        std::fs::write(&path, config(&["secrets"], &["kms: {}".to_string()])).unwrap();
        let msg = Transformer::from_file(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("resources[0].providers[0]: unknown provider"),
            "{msg}"
        );

        let missing = dir.path().join("absent.yaml");
        let err = Transformer::from_file(&missing).unwrap_err();
        assert!(matches!(err, EncryptionError::Read { .. }), "{err}");
        assert!(err.to_string().contains("absent.yaml"), "{err}");
    }

    #[test]
    fn a_tampered_ciphertext_is_an_error_not_a_panic() {
        for kind in ["aesgcm", "secretbox"] {
            let tr = secrets_with(&[keyed(kind, &[("k", secret(32, 1))])]);
            let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
            let prefix = format!("k8s:enc:{kind}:v1:k:").len();
            for at in prefix..stored.len() {
                let mut bad = stored.clone();
                bad[at] ^= 0x01;
                assert!(decode_secret(&tr, &bad).is_err(), "flip at {at}");
            }
            for len in 0..stored.len() {
                let _ = decode_secret(&tr, &stored[..len]);
            }
        }
        // AES-CBC has no integrity (as in kube); a cut value is still an error.
        let tr = secrets_with(&[aescbc(&[("k", secret(32, 1))])]);
        let stored = tr.encode("", "secrets", SKEY, PLAIN).unwrap();
        let prefix = b"k8s:enc:aescbc:v1:k:".len();
        for len in prefix..stored.len() {
            if len - prefix <= 16 || !(len - prefix).is_multiple_of(16) {
                assert!(decode_secret(&tr, &stored[..len]).is_err(), "cut at {len}");
            }
        }
        for at in prefix..stored.len() {
            let mut bad = stored.clone();
            bad[at] ^= 0x80;
            let _ = decode_secret(&tr, &bad);
        }
    }

    #[test]
    fn arbitrary_stored_bytes_never_panic() {
        let tr = secrets_with(&[
            keyed("aesgcm", &[("a", secret(16, 1)), ("b", secret(24, 2))]),
            aescbc(&[("a", secret(24, 3))]),
            keyed("secretbox", &[("a", secret(32, 4))]),
        ]);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for prefix in [
            &b""[..],
            b"k8s:enc:",
            b"k8s:enc:aesgcm:v1:",
            b"k8s:enc:aesgcm:v1:a:",
            b"k8s:enc:aesgcm:v1:b:",
            b"k8s:enc:aescbc:v1:a:",
            b"k8s:enc:secretbox:v1:a:",
            b"k8s:enc:kms:v2:x:",
        ] {
            for len in 0..80 {
                let tail: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                inputs.push([prefix, &tail[..]].concat());
            }
        }
        for input in inputs {
            let _ = decode_secret(&tr, &input);
            let _ = Transformer::identity().decode("", "secrets", SKEY, &input);
        }
    }

    #[test]
    fn the_debug_output_names_keys_but_never_secrets() {
        let sec = secret(32, 0x41);
        let tr = secrets_with(&[aescbc(&[("key1", sec.clone())]), identity()]);
        let shown = format!("{tr:?}");
        assert!(shown.contains("secrets"), "{shown}");
        assert!(shown.contains("aescbc(key1)"), "{shown}");
        assert!(shown.contains("identity"), "{shown}");
        assert!(!shown.contains(&sec), "{shown}");
        assert!(!shown.contains("AAAA"), "{shown}");
    }
}
