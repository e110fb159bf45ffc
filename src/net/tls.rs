//! Mutual TLS for peer connections (rustls): every node presents a certificate signed by the
//! cluster's CA and accepts only peers that do the same. The cluster-secret handshake
//! (`auth.rs`) still runs inside the TLS session.
//!
//! The caller checks the listener's certificate against the host name it dialed (the host
//! part of the peer's `raft_addr`), as HTTPS does; `raftkv certs` puts the usual names into
//! each node's certificate (see `crate::certs`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where a node's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    /// The cluster CA's certificate (PEM): peers must present a certificate it signed.
    pub ca: &'a Path,
    /// This node's certificate chain (PEM).
    pub cert: &'a Path,
    /// This node's private key (PEM).
    pub key: &'a Path,
}

/// Both ends of mutual TLS for one node.
#[derive(Clone)]
pub struct PeerTls {
    pub connector: TlsConnector,
    pub acceptor: TlsAcceptor,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {}", path.display(), e))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {}", path.display(), e))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {}", ca.display(), e))?;
    }
    Ok(Arc::new(roots))
}

/// The server side of HTTPS (and of peer TLS): our certificate, and optionally clients'
/// certificates required to be signed by `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| format!("{}: {}", ca.display(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| format!("{} / {}: {}", cert.display(), key.display(), e))
}

impl PeerTls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let server = server_config(files.cert, files.key, Some(files.ca))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(files.ca)?)
            .with_client_auth_cert(load_certs(files.cert)?, load_key(files.key)?)
            .map_err(|e| format!("{} / {}: {}", files.cert.display(), files.key.display(), e))?;
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

/// The name a caller expects in the certificate of the peer at `addr` (`host:port`).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{}': {}", host, e))
}
