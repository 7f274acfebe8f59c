//! TLS for the network sources and sinks: `tls` tables, read into rustls configurations.
//!
//! The tables are always parsed, so a config that asks for TLS in a build without the `tls`
//! feature gets an error naming the key instead of running in plain text. With the feature,
//! rustls runs with the `ring` provider. `ring` compiles C, which is why the feature is off in
//! the library's default build (`scripts/check-no-c.sh` names it as the one allowed
//! exception); TLS runs on the network threads only, never on the parse or filter path.
//!
//! Client side (`elasticsearch` and `http` sinks): the system's roots (`/etc/ssl/certs`, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus an optional `ca_file`; an optional client
//! certificate. Verification cannot be turned off: give the server's CA in `ca_file`.
//! Server side (`http` and `elasticsearch` sources): a certificate chain and key, and an
//! optional `client_ca_file` that makes client certificates required.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `tls` of a sink that connects out: which servers to trust, and an optional client
/// certificate. Cost: read once at build; each connection pays one handshake.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM file of CA certificates trusted in addition to the system roots. Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whether the system's roots are trusted. Default true; false trusts `ca_file` only.
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// PEM certificate chain shown to the server (mutual TLS); needs `key_file`.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// PEM private key of `crt_file` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `tls` of a source that listens: its certificate, and optionally the CA that client
/// certificates must chain to. Cost: read once at build; each connection pays one handshake.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, the server's own certificate first. Required.
    pub crt_file: PathBuf,
    /// PEM private key of `crt_file`. Required.
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, every client must present a certificate signed by one
    /// of them. Default: none (no client certificates asked for).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for ClientTlsConfig {
    /// The system roots, no client certificate: what an `https://` URL gets with no table.
    fn default() -> Self {
        Self {
            ca_file: None,
            system_roots: true,
            crt_file: None,
            key_file: None,
        }
    }
}

/// A problem with a `tls` table: the key under `tls` that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// `tls.ca_file`, `tls.key_file`, ... (or `tls` for the table as a whole).
    pub key: &'static str,
    /// What is wrong, with the path when a file is involved.
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The message of a build without the feature.
#[cfg(not(feature = "tls"))]
const NO_TLS: &str = "this build has no TLS (the `tls` feature is off: rustls' crypto provider compiles C); use the `sluicebox` binary, or build with `--features tls`";

/// A client's TLS settings, ready for connectors. Cheap to clone (an `Arc`).
#[derive(Clone, Debug)]
pub struct ClientTls {
    #[cfg(feature = "tls")]
    config: std::sync::Arc<rustls::ClientConfig>,
}

/// A listener's TLS settings, ready to accept. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct ServerTls {
    #[cfg(feature = "tls")]
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

/// Whether this build can speak TLS (the `tls` feature).
pub const AVAILABLE: bool = cfg!(feature = "tls");

impl ClientTlsConfig {
    /// Reads the files and builds the client settings; relative paths are resolved by
    /// `resolve` (the config file's directory).
    ///
    /// # Errors
    /// The key and the problem: a missing or unreadable file, no certificate in it, a key
    /// that does not match, no roots at all, or a build without the `tls` feature.
    pub fn build(&self, resolve: impl Fn(&Path) -> PathBuf) -> Result<ClientTls, TlsError> {
        #[cfg(not(feature = "tls"))]
        {
            let _ = resolve;
            Err(TlsError::new("tls", NO_TLS))
        }
        #[cfg(feature = "tls")]
        imp::client(self, &resolve)
    }
}

impl ServerTlsConfig {
    /// Reads the files and builds the acceptor; relative paths are resolved by `resolve`.
    ///
    /// # Errors
    /// The key and the problem, as for [`ClientTlsConfig::build`].
    pub fn build(&self, resolve: impl Fn(&Path) -> PathBuf) -> Result<ServerTls, TlsError> {
        #[cfg(not(feature = "tls"))]
        {
            let _ = resolve;
            Err(TlsError::new("tls", NO_TLS))
        }
        #[cfg(feature = "tls")]
        imp::server(self, &resolve)
    }
}

impl ClientTls {
    /// The rustls configuration (for connectors).
    #[cfg(feature = "tls")]
    pub fn rustls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// A connection accepted by a listener, in plain text or TLS.
#[cfg(feature = "tls")]
pub type Accepted = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl ServerTls {
    /// Runs the server side of the handshake on `sock`.
    ///
    /// # Errors
    /// The handshake failed (a plain-text client, an untrusted client certificate, ...).
    #[cfg(feature = "tls")]
    pub async fn accept(&self, sock: tokio::net::TcpStream) -> std::io::Result<Accepted> {
        self.acceptor.accept(sock).await
    }
}

#[cfg(feature = "tls")]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::crypto::CryptoProvider;
    use rustls::server::WebPkiClientVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use super::{ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig, TlsError};

    /// ring's provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange
    /// (aws-lc-rs has it); ring is kept because its C build is small and needs no cmake or
    /// assembler here, and krafka (feature `kafka`) uses ring already.
    #[allow(deprecated)]
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let iter = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError::new(key, format!("`{}`: {e}", path.display())))?;
        let certs = iter
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::new(key, format!("`{}`: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TlsError::new(
                key,
                format!("`{}` holds no PEM certificate", path.display()),
            ));
        }
        Ok(certs)
    }

    fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(path).map_err(|e| {
            TlsError::new(
                key,
                format!("`{}`: no usable private key: {e}", path.display()),
            )
        })
    }

    fn roots(
        key: &'static str,
        ca: Option<&Path>,
        system: bool,
    ) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        if system {
            // Unreadable entries in the system store are skipped; an empty result is
            // reported below when no ca_file makes up for it.
            let found = rustls_native_certs::load_native_certs();
            let _ = roots.add_parsable_certificates(found.certs);
        }
        if let Some(ca) = ca {
            for c in certs(key, ca)? {
                roots.add(c).map_err(|e| {
                    TlsError::new(key, format!("`{}`: not a usable CA: {e}", ca.display()))
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::new(
                key,
                "no trusted roots: the system has none and no ca_file is given",
            ));
        }
        Ok(roots)
    }

    pub(super) fn client(
        c: &ClientTlsConfig,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<ClientTls, TlsError> {
        let ca = c.ca_file.as_deref().map(resolve);
        let roots = roots("tls.ca_file", ca.as_deref(), c.system_roots)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls", e.to_string()))?
            .with_root_certificates(roots);
        // No ALPN here: the connector (hyper-rustls) sets it from the HTTP versions it speaks.
        let config = match (&c.crt_file, &c.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(crt), Some(key)) => {
                let chain = certs("tls.crt_file", &resolve(crt))?;
                let key = private_key("tls.key_file", &resolve(key))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::new("tls.key_file", e.to_string()))?
            }
            (Some(_), None) => {
                return Err(TlsError::new("tls.key_file", "crt_file needs key_file"));
            }
            (None, Some(_)) => {
                return Err(TlsError::new("tls.crt_file", "key_file needs crt_file"));
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    pub(super) fn server(
        c: &ServerTlsConfig,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<ServerTls, TlsError> {
        let chain = certs("tls.crt_file", &resolve(&c.crt_file))?;
        let key = private_key("tls.key_file", &resolve(&c.key_file))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls", e.to_string()))?;
        let builder = match &c.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = roots("tls.client_ca_file", Some(&resolve(ca)), false)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::new("tls.client_ca_file", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::new("tls.key_file", e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}
