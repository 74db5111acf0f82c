//! A certificate authority made by a test: server and device
//! certificates, revocation lists, and HTTPS clients that trust it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};

/// A certificate authority of the test's own.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "kiosk test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes `NAME.pem` and `NAME.key` for `names` into `dir`; returns the DER.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str], serial: u64) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        // Written aside and renamed: a reload never reads half a file.
        for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
            let tmp = dir.join(format!(".{file}.{ext}"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
        }
        cert.der().to_vec()
    }

    /// A client certificate for device `common_name`: (chain PEM, key PEM).
    pub fn device(&self, common_name: &str, serial: u64) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA's certificate as `ca.pem` into `dir`.
    pub fn write_pem(&self, dir: &Path) {
        std::fs::write(dir.join("ca.pem"), self.cert.pem()).unwrap();
    }

    /// Writes `crl.pem` revoking `serials`.
    pub fn revoke(&self, dir: &Path, serials: &[u64], number: u64) {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap();
        let tmp = dir.join(".crl.pem");
        std::fs::write(&tmp, crl.pem().unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join("crl.pem")).unwrap();
    }

    pub fn client(&self, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
        self.client_as(resolve, None)
    }

    pub fn client_as(
        &self,
        resolve: &[(&str, SocketAddr)],
        device: Option<&(String, String)>,
    ) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match device {
            None => config.with_no_client_auth(),
            Some((chain, key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                config.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Every connection a full handshake, so the certificate seen is the one served now.
        config.resumption = rustls::client::Resumption::disabled();
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20));
        for (name, addr) in resolve {
            builder = builder.resolve(name, *addr);
        }
        builder.build().unwrap()
    }
}
