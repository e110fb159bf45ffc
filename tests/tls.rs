//! Mutual TLS between peers, and HTTPS for clients, on real processes: a cluster whose
//! nodes hold certificates of the cluster's CA works; a peer without TLS, with a
//! certificate of another CA, or with an expired one is refused, with a clear reason on
//! both sides and no log flood.

#[path = "support/cluster.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{toml_str, wait_for, Cluster, ClusterOptions};

/// Points node `id` at its files in `dir` (made by `raftkv::certs::generate`).
fn use_tls(c: &mut Cluster, id: u64, dir: &Path) {
    let f = |name: String| toml_str(&dir.join(name).display().to_string());
    c.set_extra(id, "tls_ca_file", f("ca.pem".into()));
    c.set_extra(id, "tls_cert_file", f(format!("node{}.pem", id)));
    c.set_extra(id, "tls_key_file", f(format!("node{}.key", id)));
}

fn certs(c: &Cluster, name: &str, nodes: &[u64]) -> PathBuf {
    let dir = c.dir.join(name);
    raftkv::certs::generate(&dir, nodes, &[], false).expect("certs");
    dir
}

/// Node 3 cannot get in: it never learns a term or a leader, both sides log why (`why`),
/// and neither floods its log.
fn kept_out(c: &Cluster, insider_says: &[&str], outsider_says: &[&str]) {
    let (leader, term) = c.agreed_by_1_and_2();
    assert_ne!(leader, 3);
    c.put_acked(leader, "k", b"v");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.agreed_by_1_and_2(),
        (leader, term),
        "the outsider disturbed the cluster"
    );
    let outsider = c.status(3).unwrap();
    assert_eq!((outsider.term, outsider.leader), (0, None));
    for id in [1, 2] {
        let text = c.log_text(id);
        assert!(
            insider_says.iter().any(|w| text.contains(w)),
            "node {} does not say why node 3 is refused ({:?}):\n{}",
            id,
            insider_says,
            text
        );
        let lines = text.lines().filter(|l| l.contains("TLS")).count();
        assert!(lines <= 8, "node {} logged {} TLS lines in 3 s", id, lines);
    }
    let text = c.log_text(3);
    assert!(
        outsider_says.iter().any(|w| text.contains(w)),
        "node 3 does not say why it is refused ({:?}):\n{}",
        outsider_says,
        text
    );
    let lines = text
        .lines()
        .filter(|l| l.contains("cannot connect to peer"))
        .count();
    assert!(
        lines <= 6,
        "node 3 logged {} connection failures in 3 s",
        lines
    );
}

#[test]
fn a_tls_cluster_serves_and_refuses_a_plain_peer() {
    let mut c = Cluster::prepare("tls-plain", ClusterOptions::fast(3));
    let dir = certs(&c, "tls", &[1, 2, 3]);
    use_tls(&mut c, 1, &dir);
    use_tls(&mut c, 2, &dir);
    c.launch();
    assert!(c.log_text(1).contains("mutual TLS"));
    kept_out(
        &c,
        &["TLS"],
        &["closed the connection", "bad handshake", "TLS"],
    );
}

#[test]
fn a_certificate_of_another_ca_is_refused() {
    let mut c = Cluster::prepare("tls-other-ca", ClusterOptions::fast(3));
    let dir = certs(&c, "tls", &[1, 2]);
    let other = certs(&c, "other", &[3]);
    use_tls(&mut c, 1, &dir);
    use_tls(&mut c, 2, &dir);
    use_tls(&mut c, 3, &other);
    c.launch();
    kept_out(
        &c,
        &["UnknownIssuer", "unknown issuer", "BadSignature"],
        &["TLS"],
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let mut c = Cluster::prepare("tls-expired", ClusterOptions::fast(3));
    let dir = certs(&c, "tls", &[1, 2]);
    // Node 3's certificate is signed by the right CA but expired in 2001.
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).unwrap();
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).unwrap())
            .unwrap();
    let mut params = rcgen::CertificateParams::new(raftkv::certs::node_names(3, &[])).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("node3.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("node3.key"), key.serialize_pem()).unwrap();
    use_tls(&mut c, 1, &dir);
    use_tls(&mut c, 2, &dir);
    use_tls(&mut c, 3, &dir);
    c.launch();
    kept_out(&c, &["expired", "Expired"], &["expired", "Expired"]);
}

#[test]
fn clients_can_use_https() {
    let mut c = Cluster::prepare("https", ClusterOptions::fast(1));
    let dir = certs(&c, "tls", &[1]);
    use_tls(&mut c, 1, &dir);
    c.set_extra(1, "https", "true".into());
    // The harness speaks plain HTTP: start the node and ask with curl.
    c.launch_no_wait_public();
    let url = format!("https://{}/status", c.http_addr(1));
    let ok = wait_for(Duration::from_secs(10), || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-f", "--cacert"])
            .arg(dir.join("ca.pem"))
            .arg(&url)
            .output()
            .ok()?;
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"id\":1"))
            .then_some(())
    });
    assert!(ok.is_some(), "no HTTPS answer from {}", url);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = raftkv::client::http_request(
        &c.http_addr(1),
        "GET",
        "/status",
        &[],
        b"",
        Duration::from_secs(2),
    );
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
}
