//! The local certificate authority for TLS inspection: `egressd ca init`
//! creates it, `egressd ca show` says how to trust it, `egressd run --ca`
//! loads it to sign short-lived leaf certificates.
//!
//! The key is the one secret here: it is written mode 0600, a key readable
//! by group or others is refused at load, and it never reaches a log, a
//! metric or the admin listener (which serves the certificate only).
//! `--permit` writes X.509 name constraints, so that a stolen key cannot
//! sign for any domain outside them.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, GeneralSubtree, IsCa, KeyPair,
    KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Default validity of a new CA.
pub const DEFAULT_CA_DAYS: u32 = 3650;
pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca.key";

/// Why a CA could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0} exists; give --force to replace the CA (every client trusting the old one must trust the new one)")]
    Exists(PathBuf),
    #[error("{path} is readable by group or others (mode {mode:04o}): run `chmod 600 {path}`")]
    KeyReadable { path: PathBuf, mode: u32 },
    #[error("{path}: not a CA certificate egressd can use: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error("{path}: not a private key egressd can use: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path} and {key} do not belong together (the key does not match the certificate)")]
    Mismatch { path: PathBuf, key: PathBuf },
    #[error("--permit {0:?}: {1}")]
    BadPermit(String, String),
    #[error("cannot make the certificate: {0}")]
    Sign(#[from] rcgen::Error),
}

/// What `egressd ca init` was asked.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub days: u32,
    pub force: bool,
    /// DNS names (and the names under them) the CA may sign for; all when empty.
    pub permit: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |error| CaError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Creates `DIR/ca.pem` and `DIR/ca.key` (ECDSA P-256, CA basic
/// constraints, key usage certificate signing), the key mode 0600.
pub fn init(opts: &InitOptions) -> Result<Authority, CaError> {
    let cert_path = opts.dir.join(CERT_FILE);
    let key_path = opts.dir.join(KEY_FILE);
    for p in [&cert_path, &key_path] {
        if p.exists() && !opts.force {
            return Err(CaError::Exists(p.clone()));
        }
    }
    let permitted = opts
        .permit
        .iter()
        .map(|p| {
            let name = crate::policy::normalize_host(p.trim_start_matches('.'))
                .map_err(|e| CaError::BadPermit(p.clone(), e.to_string()))?;
            match name {
                crate::policy::Host::Name(n) => Ok(GeneralSubtree::DnsName(n)),
                crate::policy::Host::Ip(_) => Err(CaError::BadPermit(p.clone(), "give a DNS name".into())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "egressd");
    dn.push(
        DnType::CommonName,
        format!("egressd inspection CA on {}", host_name()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // TLS server certificates only: a stolen key signs nothing that
    // verifies as code signing or client authentication where verifiers
    // chain the extended key usage.
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(opts.days.max(1) as i64);
    if !permitted.is_empty() {
        // Permitted DNS names leave IP addresses unconstrained (RFC 5280
        // 4.2.1.10): excluded outright, or a stolen key signs any address.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(rcgen::CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(rcgen::CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
    }
    let cert = params.self_signed(&key)?;
    fs::create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    load(&opts.dir)
}

/// Writes a file with `mode` from its first byte (never briefly readable).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let _ = fs::remove_file(path);
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or("this host")
        .to_string()
}

/// A loaded CA: its certificate (served to clients) and its key (kept here).
pub struct Authority {
    pub cert_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
    /// The CA as rcgen signs with it (same name, key identifier and key).
    issuer: rcgen::Certificate,
    key: KeyPair,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Names the CA may sign for, when it carries name constraints.
    pub permitted: Vec<String>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Authority")
            .field("subject", &self.subject)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Loads `DIR/ca.pem` and `DIR/ca.key`, refusing a key readable by group
/// or others and a key that does not match the certificate.
pub fn load(dir: &Path) -> Result<Authority, CaError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let meta = fs::metadata(&key_path).map_err(io(&key_path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyReadable { path: key_path, mode });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let bad_cert = |reason: String| CaError::BadCert {
        path: cert_path.clone(),
        reason,
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::BadKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let der = pem_der(&cert_pem).ok_or_else(|| bad_cert("no PEM certificate".into()))?;
    let params = CertificateParams::from_ca_cert_der(&der).map_err(|e| bad_cert(e.to_string()))?;
    if !matches!(params.is_ca, IsCa::Ca(_)) {
        return Err(bad_cert("it is not a CA certificate (basic constraints)".into()));
    }
    let (not_before, not_after) = (params.not_before, params.not_after);
    let subject = distinguished_name(&params.distinguished_name);
    let permitted = params
        .name_constraints
        .iter()
        .flat_map(|c| c.permitted_subtrees.iter())
        .filter_map(|s| match s {
            GeneralSubtree::DnsName(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let issuer = params.self_signed(&key)?;
    // Re-signing with the loaded key gives the same public key only if the
    // key is the certificate's.
    if !same_public_key(&der, &key) {
        return Err(CaError::Mismatch {
            path: cert_path,
            key: key_path,
        });
    }
    Ok(Authority {
        cert_pem,
        cert_der: der,
        issuer,
        key,
        subject,
        not_before,
        not_after,
        permitted,
    })
}

/// A certificate in PEM, as `ca.pem` and `--upstream-ca` files hold them.
pub fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn pem_der(pem: &str) -> Option<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
}

/// Whether the certificate carries `key`'s public key (its SPKI bytes
/// appear in the certificate).
fn same_public_key(cert: &[u8], key: &KeyPair) -> bool {
    let spki = key.public_key_der();
    cert.windows(spki.len()).any(|w| w == spki.as_slice())
}

fn distinguished_name(dn: &DistinguishedName) -> String {
    dn.iter()
        .map(|(t, v)| {
            let name = match t {
                DnType::CommonName => "CN".to_string(),
                DnType::OrganizationName => "O".to_string(),
                DnType::OrganizationalUnitName => "OU".to_string(),
                DnType::CountryName => "C".to_string(),
                other => format!("{other:?}"),
            };
            let value = match v {
                rcgen::DnValue::PrintableString(s) => s.to_string(),
                rcgen::DnValue::Utf8String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Authority {
    /// SHA-256 of the certificate, as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(self.cert_der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// A leaf certificate for `host` (a DNS name or an IP address), with the
    /// shared leaf key, valid from an hour ago for `days` days but never
    /// past the CA's own end. Carries the CA's key identifier (AKI) and its
    /// own (SKI), which strict verifiers require.
    pub fn sign_leaf(
        &self,
        host: &str,
        leaf_key: &KeyPair,
        days: i64,
    ) -> Result<rustls::pki_types::CertificateDer<'static>, rcgen::Error> {
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = (now + Duration::days(days)).min(self.not_after);
        let cert = params.signed_by(leaf_key, &self.issuer, &self.key)?;
        Ok(cert.der().clone())
    }

    /// `egressd ca show`: what the CA is, and how each client trusts it.
    pub fn describe(&self, dir: &Path) -> String {
        let pem = dir.join(CERT_FILE);
        let pem = pem.display();
        let constraints = if self.permitted.is_empty() {
            "none: it may sign for any name (recreate with --permit to limit it)".to_string()
        } else {
            format!(
                "may sign only for {} and the names under them, no IP address",
                self.permitted.join(", ")
            )
        };
        format!(
            "subject:      {subject}
sha-256:      {fp}
valid:        {nb} to {na}
constraints:  {constraints}

Trust it where clients check certificates (the key stays with egressd):
  Debian/Ubuntu system store:
    cp {pem} /usr/local/share/ca-certificates/egressd.crt && update-ca-certificates
  Chromium on Linux (the user's NSS database):
    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n egressd -i {pem}
  Firefox (its own store, per profile; or Settings > Certificates > Import,
  or the enterprise policy Certificates.Install):
    certutil -d sql:$HOME/.mozilla/firefox/PROFILE -A -t C,, -n egressd -i {pem}
  Firefox on Windows and macOS may read the system store instead:
    the enterprise policy Certificates.ImportEnterpriseRoots (security.enterprise_roots.enabled)
  RHEL, Fedora:  cp {pem} /etc/pki/ca-trust/source/anchors/egressd.pem && update-ca-trust
  macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {pem}
  curl alone:    curl --cacert {pem} ...
  Node.js:       NODE_EXTRA_CA_CERTS={pem}
  Python requests: REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt (after update-ca-certificates)
  OpenSSL-based tools (curl, git, Ruby, Go on Linux): SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  Java:
    keytool -importcert -noprompt -alias egressd -file {pem} -cacerts -storepass changeit

Remove the trust: rm /usr/local/share/ca-certificates/egressd.crt && update-ca-certificates --fresh;
  rm /etc/pki/ca-trust/source/anchors/egressd.pem && update-ca-trust; certutil -d sql:DB -D -n egressd;
  sudo security delete-certificate -c \"{subject}\" /Library/Keychains/System.keychain;
  keytool -delete -alias egressd -cacerts -storepass changeit.
Rotate it: egressd ca init --dir NEW_DIR, trust the new CA beside the old, point run --ca at
  NEW_DIR and send SIGHUP (the CA is reloaded without a restart), then remove the old trust.
",
            subject = self.subject,
            fp = self.fingerprint(),
            nb = self.not_before.date(),
            na = self.not_after.date(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new CA for `example.com` in a fresh directory.
    fn example_ca(name: &str) -> (PathBuf, Authority) {
        let d = dir(name);
        let ca = init(&InitOptions {
            dir: d.clone(),
            days: 30,
            force: false,
            permit: vec!["example.com".into()],
        })
        .unwrap();
        (d, ca)
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("egressd-ca-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn init_writes_a_private_key_and_refuses_to_overwrite() {
        let d = dir("init");
        let opts = InitOptions {
            dir: d.clone(),
            days: 30,
            force: false,
            permit: vec!["example.com".into()],
        };
        let ca = init(&opts).unwrap();
        assert!(ca.subject.contains("egressd"), "{}", ca.subject);
        assert_eq!(ca.permitted, vec!["example.com".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(init(&opts), Err(CaError::Exists(_))));
        let again = init(&InitOptions { force: true, ..opts }).unwrap();
        assert_ne!(again.fingerprint(), ca.fingerprint());
        let leaf = again
            .sign_leaf(
                "www.example.com",
                &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
                7,
            )
            .unwrap();
        assert!(!leaf.is_empty());
        assert!(!format!("{again:?}").contains("PRIVATE"));
        let _ = fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("mode");
        init(&InitOptions {
            dir: d.clone(),
            days: 30,
            force: false,
            permit: vec![],
        })
        .unwrap();
        fs::set_permissions(d.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&d).unwrap_err();
        assert!(matches!(e, CaError::KeyReadable { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    /// A handshake with a leaf the CA signed, verified as a client does
    /// (rustls/webpki, trusting only the CA): the name constraints hold.
    async fn handshake(ca: &Authority, leaf_for: &str, client_asks: &str) -> Result<(), String> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = ca.sign_leaf(leaf_for, &leaf_key, 7).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf, ca.cert_der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let accept = tokio::spawn(async move { acceptor.accept(s).await.map(|_| ()) });
        let name = rustls::pki_types::ServerName::try_from(client_asks.to_string()).unwrap();
        let r = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, c)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = accept.await;
        r
    }

    #[tokio::test]
    async fn leaves_verify_and_name_constraints_bind() {
        let (d, ca) = example_ca("leaf");
        handshake(&ca, "www.example.com", "www.example.com")
            .await
            .unwrap();
        let wrong = handshake(&ca, "www.example.com", "other.example.com").await;
        assert!(wrong.is_err(), "a leaf for another name must not verify");
        // A stolen key signing outside the constraints: clients refuse it.
        let outside = handshake(&ca, "bank.example.net", "bank.example.net").await;
        assert!(outside.is_err(), "{outside:?}");
        // Nor for an IP address, which DNS name constraints leave open.
        let address = handshake(&ca, "192.0.2.10", "192.0.2.10").await;
        assert!(address.is_err(), "{address:?}");
        let _ = fs::remove_dir_all(&d);
    }

    /// Leaves pass OpenSSL's strict X.509 checks (`-x509_strict`, what
    /// Python 3.13 turns on by default: AKI, SKI, key usage and the like).
    #[test]
    fn leaves_pass_strict_x509_verification() {
        let (d, ca) = example_ca("strict");
        // A leaf for `name`, written to `file` in the CA's directory.
        let signed = |name: &str, file: &str| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let path = d.join(file);
            fs::write(&path, pem_certificate(&ca.sign_leaf(name, &key, 7).unwrap())).unwrap();
            path
        };
        let leaf_path = signed("www.example.com", "leaf.pem");
        // The helper writes what the loader reads.
        assert_eq!(pem_der(&pem_certificate(&ca.cert_der)).unwrap(), ca.cert_der);
        let verify = |leaf: &Path, host: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(["verify", "-x509_strict", "-purpose", "sslserver"])
                .args(host)
                .arg("-CAfile")
                .arg(d.join(CERT_FILE))
                .arg(leaf)
                .output()
                .expect("openssl (the CI installs it)");
            let text =
                String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (ok, text) = verify(&leaf_path, &["-verify_hostname", "www.example.com"]);
        assert!(ok, "{text}");
        // A stolen key signing for an IP address: the constraints refuse it.
        let ip_path = signed("192.0.2.10", "ip.pem");
        let (ok, text) = verify(&ip_path, &["-verify_ip", "192.0.2.10"]);
        assert!(!ok, "a leaf for an IP address verified: {text}");
        assert!(text.contains("subtree violation"), "{text}");
        let _ = fs::remove_dir_all(&d);
    }
}
