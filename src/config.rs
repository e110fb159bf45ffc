//! The node's TOML configuration file and its validation.
//!
//! Key names are fixed (external tools generate these files). Unknown keys, duplicate ids,
//! missing addresses and bad timeout ranges are rejected with a message naming the file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::actors::consensus::RaftOptions;
use crate::net::auth::ClusterSecret;
use crate::raft::{LogLimits, MemberAddrs, Membership, NodeId, PromotionPolicy};

/// One node's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id: unique in the cluster, never 0.
    pub id: NodeId,
    /// Directory for the log, term/vote and snapshots (created if missing).
    pub data_dir: PathBuf,
    /// Client API listen address (`host:port`).
    pub http_addr: String,
    /// Peer traffic listen address (`host:port`).
    pub raft_addr: String,
    /// Lower bound of the randomized election timeout, in ms (default 300).
    pub election_timeout_min_ms: Option<u64>,
    /// Upper bound of the randomized election timeout, in ms (default 600).
    pub election_timeout_max_ms: Option<u64>,
    /// How often a leader sends heartbeats, in ms (default 50); must be well below the
    /// election timeout.
    pub heartbeat_interval_ms: Option<u64>,
    /// Name shared by all members; a peer presenting another name is refused (default
    /// "raftkv").
    pub cluster_id: Option<String>,
    /// A file holding the cluster secret (at least 16 bytes; white space around it is
    /// ignored), shared by every member: peers prove they know it before any Raft message
    /// is read. Without it peers are not authenticated (a warning at start).
    pub cluster_secret_file: Option<PathBuf>,
    /// Where the client API listens, if not at `http_addr` (which is what the node
    /// advertises to others): for example `0.0.0.0:8000` in a container reached on several
    /// networks.
    pub http_listen: Option<String>,
    /// Where the peer listener binds, if not at `raft_addr`: for example `0.0.0.0:9000`,
    /// so the node keeps listening when its container is reconnected at a new address.
    pub raft_listen: Option<String>,
    /// Mutual TLS between peers: the cluster CA's certificate (PEM). With `tls_cert_file`
    /// and `tls_key_file` (all three or none), every peer connection is TLS and a peer
    /// without a certificate signed by this CA is refused. `raftkv certs` makes them.
    pub tls_ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA.
    pub tls_cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Serve the client API over HTTPS with `tls_cert_file`/`tls_key_file` (default false).
    #[serde(default)]
    pub https: bool,
    /// With `https`: require clients to present a certificate signed by this CA (PEM).
    pub https_client_ca_file: Option<PathBuf>,
    /// How long a client request may wait before the gateway answers 504, in ms
    /// (default 5000).
    pub request_timeout_ms: Option<u64>,
    /// Page cache of the state machine's store (`data_dir/store.redb`), in MiB (default
    /// 64). Memory use is bounded by this, not by the data size. The operating system's
    /// page cache holds the file too, so a larger cache mostly holds the same pages twice.
    pub store_cache_mb: Option<u64>,
    /// The store syncs (a durable commit) after this many applied entries, or once a
    /// second while entries are applied (default 2000). Only bounds how much log a restart
    /// replays (the Raft log is the write-ahead log), but a sync holds up applying for its
    /// duration (rare large syncs show in the tail latency) and writes the store's
    /// allocator state, which grows with the file (frequent syncs cost throughput).
    pub store_sync_entries: Option<u64>,
    /// Log entries kept below what the store holds durably, for followers that lag a
    /// little (a restart, a short partition); a follower further behind gets a snapshot
    /// (default 100000).
    pub log_tail_entries: Option<u64>,
    /// ... and at most this many MiB of them (default 32): this tail is held in memory,
    /// so with large values the entry count alone would hold gigabytes.
    pub log_tail_mb: Option<u64>,
    /// The log segments on disk keep about this many MiB below what the store holds
    /// durably (default 160, and at most 1,000,000 entries); a follower that lags beyond
    /// the memory tail is sent entries read back from them, and only one that lags beyond
    /// this gets a snapshot. At most `log_tail_mb` means no longer tail on disk.
    pub log_disk_tail_mb: Option<u64>,
    /// Size at which a log segment (`data_dir/log/*.seg`) is closed and a new one started,
    /// in MiB (default 64). Compaction deletes whole segments.
    pub log_segment_mb: Option<u64>,
    /// Start as a new member of a running cluster (default false): this node never
    /// stands for election until a configuration that makes it a voter reaches it; the
    /// cluster adds it with `POST /cluster/members`. `peers` then only says where the
    /// existing members are. Ignored once the node has recorded a configuration.
    #[serde(default)]
    pub join: bool,
    /// A leader promotes a learner once its log is within this many entries of the
    /// leader's (default 1000) ...
    pub promote_max_lag: Option<u64>,
    /// ... for this many consecutive replication rounds (default 10).
    pub promote_rounds: Option<u32>,
    /// The other members: on first start (without `join`), the cluster's initial
    /// membership. Once the cluster has recorded its membership in the log, that record is
    /// authoritative and this list only helps reach the members at start.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// Another member of the cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: NodeId,
    /// Its client API address (for redirects and for humans).
    pub http_addr: String,
    /// Its peer traffic address (where this node connects).
    pub raft_addr: String,
}

/// The configuration is unusable; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: Config = toml::from_str(&text).map_err(|e| err(e.message().to_string()))?;
        config.validate().map_err(err)?;
        // A missing or unusable secret file is a config error: say so before anything starts.
        config.cluster_secret().map_err(err)?;
        Ok(config)
    }

    /// Parses and validates TOML text (tests).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must be a positive integer".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        check_addr("http_addr", &self.http_addr)?;
        check_addr("raft_addr", &self.raft_addr)?;
        if let Some(l) = &self.http_listen {
            check_addr("http_listen", l)?;
        }
        if let Some(l) = &self.raft_listen {
            check_addr("raft_listen", l)?;
        }
        let tls = [
            self.tls_ca_file.is_some(),
            self.tls_cert_file.is_some(),
            self.tls_key_file.is_some(),
        ];
        if tls.iter().any(|x| *x) && !tls.iter().all(|x| *x) {
            return Err(
                "tls_ca_file, tls_cert_file and tls_key_file go together: give all three or none"
                    .into(),
            );
        }
        if self.https && self.tls_cert_file.is_none() {
            return Err("https needs tls_cert_file and tls_key_file (and tls_ca_file)".into());
        }
        if self.https_client_ca_file.is_some() && !self.https {
            return Err("https_client_ca_file needs https = true".into());
        }
        let mut ids = BTreeSet::from([self.id]);
        let mut addrs = BTreeSet::from([self.http_addr.clone(), self.raft_addr.clone()]);
        if self.http_addr == self.raft_addr {
            return Err("http_addr and raft_addr must differ".into());
        }
        for p in &self.peers {
            if p.id == 0 {
                return Err("peer id must be a positive integer".into());
            }
            if !ids.insert(p.id) {
                return Err(if p.id == self.id {
                    format!("peer id {} is this node's own id", p.id)
                } else {
                    format!("duplicate peer id {}", p.id)
                });
            }
            check_addr(&format!("peer {} http_addr", p.id), &p.http_addr)?;
            check_addr(&format!("peer {} raft_addr", p.id), &p.raft_addr)?;
            for a in [&p.http_addr, &p.raft_addr] {
                if !addrs.insert(a.clone()) {
                    return Err(format!("address {} is used twice", a));
                }
            }
        }
        let min = self.election_timeout_min_ms.unwrap_or(300);
        let max = self.election_timeout_max_ms.unwrap_or(600);
        let hb = self.heartbeat_interval_ms.unwrap_or(50);
        if min == 0 || max < min {
            return Err(format!(
                "invalid election timeout range {}..{} ms: need 0 < election_timeout_min_ms <= election_timeout_max_ms",
                min, max
            ));
        }
        if hb == 0 || hb >= min {
            return Err(format!(
                "heartbeat_interval_ms {} must be positive and below election_timeout_min_ms {}",
                hb, min
            ));
        }
        if self.store_sync_entries == Some(0) {
            return Err("store_sync_entries must be positive".into());
        }
        if self.store_cache_mb == Some(0) || self.log_segment_mb == Some(0) {
            return Err("store_cache_mb and log_segment_mb must be positive".into());
        }
        if self.request_timeout_ms == Some(0) {
            return Err("request_timeout_ms must be positive".into());
        }
        if let Some(c) = &self.cluster_id {
            if c.is_empty() {
                return Err("cluster_id must not be empty".into());
            }
        }
        Ok(())
    }

    /// Reads the cluster secret named by `cluster_secret_file` (none without the key).
    pub fn cluster_secret(&self) -> Result<ClusterSecret, String> {
        match &self.cluster_secret_file {
            None => Ok(ClusterSecret::none()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cluster_secret_file {}: {}", path.display(), e))?;
                ClusterSecret::from_text(&text)
                    .map_err(|e| format!("cluster_secret_file {}: {}", path.display(), e))
            }
        }
    }

    pub fn cluster_id(&self) -> &str {
        self.cluster_id.as_deref().unwrap_or("raftkv")
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unwrap_or(5000))
    }

    pub fn raft_options(&self) -> RaftOptions {
        RaftOptions {
            election_timeout_min: Duration::from_millis(
                self.election_timeout_min_ms.unwrap_or(300),
            ),
            election_timeout_max: Duration::from_millis(
                self.election_timeout_max_ms.unwrap_or(600),
            ),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms.unwrap_or(50)),
            store_sync_entries: self
                .store_sync_entries
                .unwrap_or(RaftOptions::default().store_sync_entries),
            log_tail_entries: self
                .log_tail_entries
                .unwrap_or(RaftOptions::default().log_tail_entries),
            promotion: PromotionPolicy {
                max_lag: self
                    .promote_max_lag
                    .unwrap_or(PromotionPolicy::default().max_lag),
                rounds: self
                    .promote_rounds
                    .unwrap_or(PromotionPolicy::default().rounds)
                    .max(1),
            },
            log_limits: LogLimits {
                log_tail_bytes: self
                    .log_tail_mb
                    .map_or(LogLimits::default().log_tail_bytes, |mb| {
                        mb.saturating_mul(1024 * 1024)
                    }),
                disk_tail_bytes: self
                    .log_disk_tail_mb
                    .map_or(LogLimits::default().disk_tail_bytes, |mb| {
                        mb.saturating_mul(1024 * 1024)
                    }),
                ..LogLimits::default()
            },
            ..RaftOptions::default()
        }
    }

    /// The store's page cache, in bytes.
    pub fn store_cache_bytes(&self) -> usize {
        (self.store_cache_mb.unwrap_or(64) as usize).saturating_mul(1024 * 1024)
    }

    /// Log segment size, in bytes.
    pub fn log_segment_bytes(&self) -> u64 {
        self.log_segment_mb
            .unwrap_or(64)
            .saturating_mul(1024 * 1024)
    }

    /// Mutual TLS for peer connections, if configured (the files are read now).
    pub fn peer_tls(&self) -> Result<Option<crate::net::tls::PeerTls>, String> {
        match (&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file) {
            (Some(ca), Some(cert), Some(key)) => {
                crate::net::tls::PeerTls::load(&crate::net::tls::TlsFiles { ca, cert, key })
                    .map(Some)
                    .map_err(|e| format!("peer TLS: {}", e))
            }
            _ => Ok(None),
        }
    }

    /// The HTTPS configuration of the client API, if `https` is on.
    pub fn https_config(&self) -> Result<Option<rustls::ServerConfig>, String> {
        if !self.https {
            return Ok(None);
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                crate::net::tls::server_config(cert, key, self.https_client_ca_file.as_deref())
                    .map(Some)
                    .map_err(|e| format!("https: {}", e))
            }
            _ => Err("https needs tls_cert_file and tls_key_file".into()),
        }
    }

    /// The membership the config file describes: this node and its peers, all voters.
    pub fn file_membership(&self) -> Membership {
        let me = (
            self.id,
            MemberAddrs {
                raft_addr: self.raft_addr.clone(),
                http_addr: self.http_addr.clone(),
            },
        );
        Membership::with_voters(std::iter::once(me).chain(self.peers.iter().map(|p| {
            (
                p.id,
                MemberAddrs {
                    raft_addr: p.raft_addr.clone(),
                    http_addr: p.http_addr.clone(),
                },
            )
        })))
    }

    /// The HTTP address of node `id` (this node or a peer).
    pub fn http_addr_of(&self, id: NodeId) -> Option<&str> {
        if id == self.id {
            return Some(&self.http_addr);
        }
        self.peers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.http_addr.as_str())
    }
}

fn check_addr(what: &str, addr: &str) -> Result<(), String> {
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} '{}' is not host:port", what, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
data_dir = "data/node1"
http_addr = "127.0.0.1:8001"
raft_addr = "127.0.0.1:9001"

[[peers]]
id = 2
http_addr = "127.0.0.1:8002"
raft_addr = "127.0.0.1:9002"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.id, 1);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(
            c.raft_options().heartbeat_interval,
            Duration::from_millis(50)
        );
        assert_eq!(c.http_addr_of(2), Some("127.0.0.1:8002"));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            (
                format!(
                    "{}\nbogus = 1",
                    GOOD.replace("[[peers]]", "bogus_key = 1\n[[peers]]")
                ),
                "unknown field",
            ),
            (GOOD.replace("id = 2", "id = 1"), "own id"),
            (
                format!(
                    "{}\n[[peers]]\nid = 2\nhttp_addr = \"h:1\"\nraft_addr = \"h:2\"\n",
                    GOOD
                ),
                "duplicate peer id 2",
            ),
            (
                GOOD.replace("raft_addr = \"127.0.0.1:9001\"\n", ""),
                "missing field `raft_addr`",
            ),
            (
                GOOD.replace("http_addr = \"127.0.0.1:8002\"\n", ""),
                "missing field `http_addr`",
            ),
            (
                GOOD.replace(
                    "id = 1\n",
                    "id = 1\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 400\n",
                ),
                "invalid election timeout range",
            ),
            (
                GOOD.replace("id = 1\n", "id = 1\nheartbeat_interval_ms = 400\n"),
                "heartbeat_interval_ms",
            ),
            (GOOD.replace("127.0.0.1:9001", "nonsense"), "not host:port"),
        ];
        for (text, want) in cases {
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(want), "expected '{}' in '{}'", want, err);
        }
    }

    #[test]
    fn load_names_the_file() {
        let path = std::env::temp_dir().join(format!("raftkv-cfg-{}.toml", std::process::id()));
        std::fs::write(&path, "id = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{}", err);
        let _ = std::fs::remove_file(&path);
    }
}
