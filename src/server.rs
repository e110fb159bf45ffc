//! The production node: the data directory on disk, the TCP peer transport and the HTTP
//! gateway around the actors that [`crate::node::start_node`] wires together.

use log::{info, warn};

use crate::actors::consensus::LogClock;
use crate::config::Config;
use crate::kv::{KvStore, StoreDisk};
use crate::net::tcp::{serve_inbound, FrameThread, Listener, TcpTransport};
use crate::node::{start_node, Bootstrap, NodeDeps};
use crate::raft::NodeId;
use crate::storage::FileStorage;

/// Runs a production node until it is asked to stop. Returns a message on a startup error.
pub async fn serve(config: Config) -> Result<(), String> {
    FileStorage::prepare_dir(&config.data_dir).map_err(|e| e.to_string())?;
    let (store, applied) = KvStore::open(
        &StoreDisk::Dir(config.data_dir.clone()),
        config.store_cache_bytes(),
    )
    .map_err(|e| e.to_string())?;
    // Entries the store already holds stay on disk (read back for lagging followers).
    let (storage, initial) =
        FileStorage::open_after(&config.data_dir, config.log_segment_bytes(), applied)
            .map_err(|e| e.to_string())?;
    info!(
        "[node {}] store {} has applied up to index {} (term {})",
        config.id,
        config.data_dir.join(crate::kv::STORE_FILE).display(),
        applied.index,
        applied.term
    );
    let raft_listen = config.raft_listen.as_deref().unwrap_or(&config.raft_addr);
    let listener = tokio::net::TcpListener::bind(raft_listen)
        .await
        .map_err(|e| format!("cannot listen for peers on {}: {}", raft_listen, e))?;
    let peers: Vec<(NodeId, String)> = config
        .peers
        .iter()
        .map(|p| (p.id, p.raft_addr.clone()))
        .collect();
    let secret = config.cluster_secret()?;
    if !secret.is_set() {
        warn!(
            "[node {}] no cluster_secret_file in the config: peers are not authenticated \
             (anyone who can reach {} can pose as a member)",
            config.id, config.raft_addr
        );
    }
    let tls = config.peer_tls()?;
    if tls.is_some() {
        info!(
            "[node {}] peer connections use mutual TLS (CA {})",
            config.id,
            config
                .tls_ca_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    } else {
        warn!(
            "[node {}] no tls_* files in the config: peer traffic is not encrypted",
            config.id
        );
    }
    let transport = TcpTransport::start(
        config.id,
        config.cluster_id(),
        &peers,
        secret.clone(),
        tls.clone(),
    );
    let tcp = transport.clone();
    let bootstrap = if config.join {
        Bootstrap::Join
    } else {
        Bootstrap::Members(config.file_membership())
    };
    let node = start_node(
        config.id,
        bootstrap,
        config.raft_options(),
        NodeDeps {
            transport: tcp,
            storage: Box::new(storage),
            initial,
            store,
            applied,
            threaded: true,
            seed: rand::random(),
            clock: LogClock::system(),
            observer: None,
        },
    )?;
    crate::stall::watch_current_thread(
        config.id,
        std::time::Duration::from_millis(20),
        config.raft_options().heartbeat_interval * 2,
    );
    actix::spawn(serve_inbound(
        listener,
        Listener {
            self_id: config.id,
            cluster_id: config.cluster_id().to_string(),
            peers: transport.known_peers(),
            losses: transport.link_losses(),
            secret,
            tls,
        },
        node.consensus.clone().recipient(),
        FrameThread::start(config.id)
            .map_err(|e| format!("cannot start the peer frame thread: {}", e))?,
    ));
    info!(
        "[node {}] listening: clients on http://{}, peers on {}",
        config.id, config.http_addr, config.raft_addr
    );
    let result = crate::http::serve(&config, node.clone()).await;
    node.consensus.do_send(crate::actors::consensus::Shutdown);
    info!("[node {}] stopped", config.id);
    result
}
