//! `raftkv certs`: a cluster CA and one certificate per node, for mutual TLS between peers
//! (and HTTPS for clients), made with rcgen.
//!
//! Files in the output directory: `ca.pem` (give it to every node), `ca.key` (keep it to
//! sign certificates for nodes added later; no node needs it), and `nodeK.pem` /
//! `nodeK.key` per node. Each node certificate names `localhost`, `127.0.0.1`, `nodeK` and
//! `raft-nodeK` (the names run-cluster.sh and the compose files use), plus any extra names
//! asked for, and is good for both ends of a connection.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::raft::NodeId;

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {}", path.display(), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {}", path.display(), e))
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{}: {}", what, e)
}

/// The CA in `dir`, created if `ca.pem`/`ca.key` are not there yet.
fn ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, bool), String> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() && key_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("{}: {}", key_path.display(), e))?;
        let cert_pem = std::fs::read_to_string(&cert_path)
            .map_err(|e| format!("{}: {}", cert_path.display(), e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(err("ca.key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(err("ca.pem"))?;
        return Ok((issuer, false));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own, so a certificate of another cluster's CA is reported as from an
    // unknown issuer, not as a bad signature.
    params.distinguished_name.push(
        DnType::CommonName,
        format!("raftkv cluster CA {:08x}", rand::random::<u32>()),
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(err("CA key"))?;
    let cert = params.self_signed(&key).map_err(err("CA"))?;
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok((Issuer::new(params, key), true))
}

/// The names a node certificate carries.
pub fn node_names(id: NodeId, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        format!("node{}", id),
        format!("raft-node{}", id),
    ];
    for e in extra {
        if !names.contains(e) {
            names.push(e.clone());
        }
    }
    names
}

/// Makes (or reuses) the CA in `dir` and a certificate for each of `nodes` that does not
/// have one yet (all of them with `force`). Returns the files written.
pub fn generate(
    dir: &Path,
    nodes: &[NodeId],
    extra_names: &[String],
    force: bool,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {}", dir.display(), e))?;
    let (issuer, new_ca) = ca(dir)?;
    let mut written = Vec::new();
    if new_ca {
        written.push(dir.join("ca.pem"));
        written.push(dir.join("ca.key"));
    }
    for &id in nodes {
        let (cert_path, key_path) = (
            dir.join(format!("node{}.pem", id)),
            dir.join(format!("node{}.key", id)),
        );
        if !force && cert_path.exists() && key_path.exists() {
            continue;
        }
        let mut params =
            CertificateParams::new(node_names(id, extra_names)).map_err(err("node names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("raftkv node {}", id));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(err("node key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(err("node certificate"))?;
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        written.push(cert_path);
        written.push(key_path);
    }
    Ok(written)
}
