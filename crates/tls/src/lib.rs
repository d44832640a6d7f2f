//! The lab's PKI and the rustls configurations every TLS program uses.
//!
//! At `d11 lab up` the lab issues, with rcgen, a root CA, an intermediate CA under it, and a
//! server certificate for each TLS node under the intermediate, so a client verifies a real
//! three-level chain as the seed describes (the server sends leaf + intermediate; the client
//! trusts the root). Files in the lab's `pki/` directory:
//!
//! | file | what |
//! |---|---|
//! | `root.pem` | the root CA certificate: `curl --cacert`, `openssl s_client -CAfile` |
//! | `intermediate.pem` | the intermediate CA certificate |
//! | `<node>.pem` | the node's chain: its certificate, then the intermediate |
//! | `<node>.key` | the node's private key (PKCS#8) |
//!
//! The root's private key is never written: nothing can be issued after `lab up`.
//!
//! rustls runs with the ring provider only. When `SSLKEYLOGFILE` is set (`d11 lab up --keylog`
//! sets it for every program), TLS secrets are appended there in the NSS key log format, so
//! Wireshark and tshark decrypt the captures.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate to issue: the file stem (`<stem>.pem`, `<stem>.key`) and its names (DNS
/// names or IP addresses).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub stem: String,
    pub names: Vec<String>,
}

/// Paths of one issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain: PathBuf,
    pub key: PathBuf,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "d11 lab");
    d.push(DnType::CommonName, cn);
    d
}

/// Issues the PKI into `dir`: root, intermediate, and one certificate per leaf.
pub fn issue(dir: &Path, lab: &str, leaves: &[Leaf]) -> Result<Vec<Issued>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut root = CertificateParams::new(Vec::<String>::new())?;
    root.distinguished_name = dn(&format!("d11 {lab} root CA"));
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root_key = KeyPair::generate()?;
    let root_cert = root.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root, root_key);

    let mut inter = CertificateParams::new(Vec::<String>::new())?;
    inter.distinguished_name = dn(&format!("d11 {lab} intermediate CA"));
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let inter_key = KeyPair::generate()?;
    let inter_cert = inter.signed_by(&inter_key, &root_issuer)?;
    let inter_issuer = Issuer::new(inter, inter_key);

    std::fs::write(dir.join("root.pem"), root_cert.pem())?;
    std::fs::write(dir.join("intermediate.pem"), inter_cert.pem())?;
    let mut out = Vec::new();
    for leaf in leaves {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = dn(leaf
            .names
            .first()
            .map_or(leaf.stem.as_str(), String::as_str));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for n in &leaf.names {
            p.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .with_context(|| format!("certificate name {n:?}"))?,
                ),
            });
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &inter_issuer)?;
        let chain = dir.join(format!("{}.pem", leaf.stem));
        let keyf = dir.join(format!("{}.key", leaf.stem));
        std::fs::write(&chain, format!("{}{}", cert.pem(), inter_cert.pem()))?;
        std::fs::write(&keyf, key.serialize_pem())?;
        out.push(Issued { chain, key: keyf });
    }
    Ok(out)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config from a chain and key file: TLS 1.3 and 1.2, ALPN `http/1.1`, key log.
pub fn server_config(chain: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .with_context(|| format!("cannot read certificates {}", chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in {}", chain.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read key {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(Arc::new(cfg))
}

/// A client config that trusts the CA certificates in `root_pem`, with key log.
pub fn client_config(root_pem: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root_pem)
        .with_context(|| format!("cannot read {}", root_pem.display()))?
    {
        roots.add(c.with_context(|| format!("bad PEM in {}", root_pem.display()))?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.key_log = Arc::new(rustls::KeyLogFile::new());
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_verifies_to_the_root_in_memory() {
        let dir = std::env::temp_dir().join(format!("d11-pki-{}", std::process::id()));
        let issued = issue(
            &dir,
            "t",
            &[Leaf {
                stem: "ctl".into(),
                names: vec!["www.shop.example".into(), "192.168.1.20".into()],
            }],
        )
        .unwrap();
        let server = server_config(&issued[0].chain, &issued[0].key).unwrap();
        let client = client_config(&dir.join("root.pem")).unwrap();
        // A handshake in memory: both sides' buffers shuttled until neither has anything to say.
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let mut c =
            rustls::ClientConnection::new(client, "www.shop.example".try_into().unwrap()).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(s.peer_certificates(), None);
        assert_eq!(
            c.peer_certificates().unwrap().len(),
            2,
            "leaf + intermediate"
        );
        // A name not on the certificate is refused.
        let client = client_config(&dir.join("root.pem")).unwrap();
        let server = server_config(&issued[0].chain, &issued[0].key).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let mut c =
            rustls::ClientConnection::new(client, "evil.example".try_into().unwrap()).unwrap();
        let mut failed = false;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            let _ = s.process_new_packets();
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            if c.process_new_packets().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
