//! HTTPS with rustls: TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`,
//! certificates chosen by SNI (exact names, then `*.` wildcards, then the
//! default or a clean handshake failure), handshakes run off the accept loop
//! with a timeout, and the certificates swapped whole on reload: new
//! handshakes use the new ones, open connections keep theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{TlsSettings, UnknownServerName};

/// The certificates in force.
#[derive(Debug)]
struct CertStore {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    refuse_unknown: bool,
}

impl CertStore {
    fn load(settings: &TlsSettings, provider: &CryptoProvider) -> anyhow::Result<Self> {
        let default = load_pair(&settings.cert, &settings.key, provider)?;
        let mut store = CertStore {
            default: Some(default.clone()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            refuse_unknown: settings.unknown_server_name == UnknownServerName::Refuse,
        };
        // The names the default certificate is for are known names too
        // (what `unknown_server_name = "refuse"` refuses is anything else);
        // `sni` entries take precedence.
        for name in default.cert.first().map(dns_names).unwrap_or_default() {
            store.add(&name, &default);
        }
        for entry in &settings.sni {
            let key = load_pair(&entry.cert, &entry.key, provider)?;
            for name in &entry.server_names {
                store.add(name, &key);
            }
        }
        Ok(store)
    }

    fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), key.clone()),
            None => self.exact.insert(name, key.clone()),
        };
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return Some(key.clone());
        }
        if self.refuse_unknown {
            None
        } else {
            self.default.clone()
        }
    }
}

/// The DNS names in a certificate's subject alternative names.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "certificate {}: not a PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("certificate {}: no certificate in the file", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("private key {}: not a PEM private key", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, provider)
        .with_context(|| format!("{} and {}", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}

/// Chooses the certificate of each handshake.
#[derive(Debug)]
struct Resolver(CertStore);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}

/// What a verified client certificate says of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's common name (the device id).
    pub common_name: String,
    /// The certificate's serial number, hex.
    pub serial: String,
}

/// Certificates loaded for a reload, not yet in force.
pub struct NextTls(Arc<rustls::ServerConfig>);

/// One HTTPS listener's TLS.
pub struct Tls {
    /// Swapped whole on reload: certificates, client CA and revocation list.
    config: ArcSwap<rustls::ServerConfig>,
    provider: Arc<CryptoProvider>,
    handshake_timeout: std::time::Duration,
}

impl Tls {
    /// TLS as `settings` describe it; fails naming the file that is wrong.
    pub fn new(settings: &TlsSettings) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = server_config(settings, &provider)?;
        Ok(Self {
            config: ArcSwap::from_pointee(config),
            provider,
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// Loads everything `settings` name, without putting it in force.
    pub fn prepare(&self, settings: &TlsSettings) -> anyhow::Result<NextTls> {
        Ok(NextTls(Arc::new(server_config(settings, &self.provider)?)))
    }

    /// Puts what [`Tls::prepare`] loaded in force for new handshakes (open
    /// connections keep theirs).
    pub fn install(&self, next: NextTls) {
        self.config.store(next.0);
    }

    /// The TLS handshake of one connection, bounded by the handshake
    /// timeout, and the identity of its verified client certificate.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, Option<ClientIdentity>)> {
        let acceptor = TlsAcceptor::from(self.config.load_full());
        let stream =
            match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ));
                }
            };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| identity_of(leaf));
        Ok((stream, identity))
    }
}

fn server_config(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<rustls::ServerConfig> {
    let resolver = Arc::new(Resolver(CertStore::load(settings, provider)?));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            builder.with_client_cert_verifier(client_verifier(ca, &settings.client_crl, provider)?)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Client certificates are asked for, not required at the handshake (routes
/// that need one refuse requests without), and verified against `ca` and
/// the revocation lists.
fn client_verifier(
    ca: &Path,
    crls: &[std::path::PathBuf],
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading client CA {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("client CA {}: not PEM", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("client CA {}", ca.display()))?;
    }
    let mut lists = Vec::new();
    for crl in crls {
        for list in rustls::pki_types::CertificateRevocationListDer::pem_file_iter(crl)
            .with_context(|| format!("reading revocation list {}", crl.display()))?
        {
            lists.push(list.with_context(|| {
                format!("revocation list {}: not a PEM X509 CRL", crl.display())
            })?);
        }
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(lists)
        .allow_unauthenticated()
        .build()
        .with_context(|| format!("client CA {}", ca.display()))
}

fn identity_of(leaf: &CertificateDer<'_>) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(ClientIdentity {
        common_name,
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}
