//! The certificates of TLS inspection: the local CA, one leaf key pair made
//! at start for every leaf, the server configuration of each host in a
//! bounded LRU cache (so a repeat host costs no signing), and the client
//! configuration that verifies origins.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::respond::ProxyError;
use crate::ca::Authority;

/// Hosts whose server configuration (leaf certificate) is kept.
pub const LEAF_CACHE: usize = 10_000;
/// How long a leaf is valid; it is signed anew after `LEAF_REFRESH`.
const LEAF_DAYS: i64 = 7;
const LEAF_REFRESH: Duration = Duration::from_secs(6 * 86_400);

/// The CA, the leaf key, the cache of per-host server configurations, and
/// the client configuration for origins.
pub struct Inspector {
    ca: Authority,
    leaf_key: rcgen::KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    configs: Mutex<lru::LruCache<String, (Arc<rustls::ServerConfig>, Instant)>>,
    upstream: Arc<rustls::ClientConfig>,
    /// The same, offering HTTP/2 first (ALPN h2, http/1.1).
    upstream_h2: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// A TLS client configuration that verifies servers against the system's
/// trust store (as curl, cargo and pip do: `SSL_CERT_FILE`/`SSL_CERT_DIR`
/// honoured, so a corporate gateway's CA installed there works), the
/// compiled-in roots (webpki-roots: what a distroless image has when its
/// store is empty) and the extra roots in `upstream_ca` (PEM files),
/// speaking HTTP/1.1: for origins of inspected requests and for a parent
/// proxy reached over TLS. Which roots are in use is logged.
pub fn upstream_client_config(upstream_ca: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (system_added, _) = roots.add_parsable_certificates(system.certs);
    for e in &system.errors {
        tracing::warn!(error = %e, "a certificate of the system trust store could not be read");
    }
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut extra = 0;
    for f in upstream_ca {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(f).map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("--upstream-ca {}: {e}", f.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("--upstream-ca {}: no PEM certificates", f.display()));
        }
        extra += n;
    }
    tracing::info!(
        system = system_added,
        compiled_in = webpki_roots::TLS_SERVER_ROOTS.len(),
        upstream_ca = extra,
        "roots for verifying origins and the parent proxy"
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Requests go upstream as HTTP/1.1, whatever the client spoke.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS listeners' server configuration from a PEM certificate chain
/// and key; HTTP/1.1 only (CONNECT and absolute-form requests), and the
/// certificate's SHA-256 fingerprint for the log.
pub fn listener_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(rustls::ServerConfig, String), String> {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest as _;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let first = chain
        .first()
        .ok_or_else(|| format!("--tls-cert {}: no PEM certificate", cert.display()))?;
    let fingerprint = sha2::Sha256::digest(first.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, fingerprint))
}

impl Inspector {
    /// Loads the CA in `dir` and the extra upstream roots in `upstream_ca`
    /// (PEM files), beside the system roots (webpki-roots).
    pub fn load(dir: &std::path::Path, upstream_ca: &[PathBuf]) -> Result<Inspector, String> {
        let ca = crate::ca::load(dir).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let upstream = upstream_client_config(upstream_ca)?;
        let mut h2 = (*upstream).clone();
        h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let leaf_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let leaf_signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .map_err(|e| e.to_string())?;
        Ok(Inspector {
            ca,
            leaf_key,
            leaf_signer,
            provider,
            configs: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(LEAF_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
            upstream,
            upstream_h2: Arc::new(h2),
        })
    }

    /// The CA certificate, as clients install it.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    pub fn ca(&self) -> &Authority {
        &self.ca
    }

    /// How origins are verified: the system roots and `--upstream-ca`.
    pub fn upstream(&self) -> Arc<rustls::ClientConfig> {
        self.upstream.clone()
    }

    /// The same verification, offering HTTP/2 to the origin first.
    pub fn upstream_h2(&self) -> Arc<rustls::ClientConfig> {
        self.upstream_h2.clone()
    }

    /// The server configuration presenting a leaf for `host` (cached; a
    /// miss signs one). Returns whether it was signed now.
    pub fn server_config(&self, host: &str) -> Result<(Arc<rustls::ServerConfig>, bool), ProxyError> {
        {
            let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((c, made)) = cache.get(host) {
                if made.elapsed() < LEAF_REFRESH {
                    return Ok((c.clone(), false));
                }
            }
        }
        let leaf = self
            .ca
            .sign_leaf(host, &self.leaf_key, LEAF_DAYS)
            .map_err(|e| ProxyError::ClientTls(format!("cannot sign a certificate for {host}: {e}")))?;
        let chain = vec![leaf, self.ca.cert_der.clone()];
        let key = Arc::new(rustls::sign::CertifiedKey::new(chain, self.leaf_signer.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::ClientTls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(OneCert(key)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        cache.put(host.to_string(), (config.clone(), Instant::now()));
        Ok((config, true))
    }
}

/// Presents the one leaf of a host's configuration, whatever the client asks.
#[derive(Debug)]
struct OneCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}
