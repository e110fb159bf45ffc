//! A multi-process test harness: runs N real `raftkv serve` processes on localhost.
//!
//! Each cluster lives in its own temp directory (`$TMPDIR/raftkv-it-<name>-<pid>`) holding,
//! per node, a generated config (`nodeK.toml`), a data dir (`nodeK/`) and a log file
//! (`nodeK.log`, the node's stdout and stderr; restarts append). On success the directory is
//! removed (unless `RAFTKV_KEEP_TEST_DIRS` is set); when a test panics it is kept and the
//! tail of every node's log is printed.
//!
//! Ports: every node gets its own HTTP and Raft port, chosen once per cluster and kept for
//! the cluster's life (so a restarted node comes back at the same addresses). They are
//! picked below the kernel's ephemeral range, so no outgoing connection of any process can
//! take one while its node is down, and each is reserved with an `flock` on a lock file
//! under `$TMPDIR/raftkv-it-ports/`, so concurrent tests (in this binary or any other using
//! this harness) never pick the same port. Locks vanish with the test process.
//!
//! No orphans: nodes are SIGKILLed and reaped in `Drop`; on Linux each node also gets
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies even if the test process is killed. (That signal
//! fires when the *thread* that spawned the node exits, so start and restart nodes from the
//! test's own thread, as the tests do.)
//!
//! All waiting is polling against a deadline; nothing relies on a fixed sleep.

// Compiled into several test crates, each using part of the API.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use raftkv::client::{encode_key, http_request, KvClient, KvResult};

/// How often polling loops look again.
pub const POLL: Duration = Duration::from_millis(20);
/// Generous bound for an election on a loaded 2-core machine.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(10);

/// What the generated configs contain. `None` leaves the key out (the node's default).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub heartbeat_interval_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub cluster_id: Option<String>,
    /// Extra `key = value` lines for every node's config.
    pub extra: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Short timeouts for quick tests: elections 150–300 ms, heartbeats every 30 ms.
    pub fn fast(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            election_timeout_min_ms: Some(150),
            election_timeout_max_ms: Some(300),
            heartbeat_interval_ms: Some(30),
            request_timeout_ms: None,
            cluster_id: None,
            extra: Vec::new(),
        }
    }

    /// Adds `key = value` to every node's config.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }

    /// The node's built-in defaults (elections 300–600 ms, heartbeats every 50 ms).
    pub fn defaults(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            election_timeout_min_ms: None,
            election_timeout_max_ms: None,
            heartbeat_interval_ms: None,
            request_timeout_ms: None,
            cluster_id: None,
            extra: Vec::new(),
        }
    }

    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = Some(ms);
        self
    }

    /// How long one HTTP call may take: the gateway's request timeout plus a margin.
    fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unwrap_or(5000)) + Duration::from_secs(5)
    }
}

/// A node's `/status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub pid: u32,
}

/// A port reserved for this process: the lock is held while this lives.
pub struct PortLock {
    pub port: u16,
    _lock: File,
}

pub struct Node {
    pub id: u64,
    pub http_addr: String,
    pub raft_addr: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// When the current process was spawned.
    started_at: Instant,
    _ports: [PortLock; 2],
}

pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub opts: ClusterOptions,
    nodes: Vec<Node>,
    /// (from, to) -> the raft address `from` dials to reach `to` (e.g. a fault proxy).
    routes: std::collections::BTreeMap<(u64, u64), String>,
    /// The cluster secret file of each node (all the same unless a test says otherwise).
    secret_files: std::collections::BTreeMap<u64, PathBuf>,
    /// Nodes started in join mode (added to a running cluster).
    joining: std::collections::BTreeSet<u64>,
    /// Extra `key = value` lines for one node's config.
    node_extra: std::collections::BTreeMap<u64, Vec<(String, String)>>,
}

impl Cluster {
    /// Starts a cluster of `n` nodes with short timeouts and waits until every node answers
    /// `/status` (not for a leader).
    pub fn start(name: &str, n: usize) -> Cluster {
        Cluster::start_with(name, ClusterOptions::fast(n))
    }

    pub fn start_with(name: &str, opts: ClusterOptions) -> Cluster {
        let c = Cluster::spawn_with(name, opts);
        for id in c.ids() {
            c.wait_until_serving(id, Duration::from_secs(10));
        }
        c
    }

    /// Writes the configs and spawns every node; returns at once (no waiting).
    pub fn spawn_with(name: &str, opts: ClusterOptions) -> Cluster {
        let mut c = Cluster::prepare(name, opts);
        c.launch_no_wait();
        c
    }

    /// Makes `from` reach `to` through `addr` instead of `to`'s own raft address. Call
    /// between [`Cluster::prepare`] and [`Cluster::launch`].
    pub fn route_peer(&mut self, from: u64, to: u64, addr: String) {
        self.routes.insert((from, to), addr);
    }

    /// Adds `key = value` to node `id`'s config (a TOML value: quote strings). Call
    /// between [`Cluster::prepare`] and [`Cluster::launch`].
    pub fn set_extra(&mut self, id: u64, key: &str, value: String) {
        self.node_extra
            .entry(id)
            .or_default()
            .push((key.to_string(), value));
    }

    /// Gives node `id` another cluster secret file (`None`: no secret). Call between
    /// [`Cluster::prepare`] and [`Cluster::launch`].
    pub fn set_secret_file(&mut self, id: u64, path: Option<PathBuf>) {
        match path {
            Some(p) => self.secret_files.insert(id, p),
            None => self.secret_files.remove(&id),
        };
    }

    /// Writes the configs, spawns every node and waits until each answers `/status`.
    pub fn launch(&mut self) {
        self.launch_no_wait();
        for id in self.ids() {
            self.wait_until_serving(id, Duration::from_secs(10));
        }
    }

    /// Writes the configs and spawns every node without waiting for `/status` (for nodes
    /// the harness cannot ask: HTTPS).
    pub fn launch_no_wait_public(&mut self) {
        self.launch_no_wait();
    }

    fn launch_no_wait(&mut self) {
        for id in self.ids() {
            let text = self.config_text(id);
            let path = self.node(id).config_path.clone();
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("write {}: {}", path.display(), e));
        }
        for id in self.ids() {
            self.spawn(id);
        }
    }

    /// Reserves ports and directories for a cluster without starting it.
    pub fn prepare(name: &str, opts: ClusterOptions) -> Cluster {
        assert!(opts.nodes >= 1);
        let dir = std::env::temp_dir().join(format!("raftkv-it-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {}", dir.display(), e));
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let id = i as u64 + 1;
            let http = reserve_port();
            let raft = reserve_port();
            nodes.push(Node {
                id,
                http_addr: format!("127.0.0.1:{}", http.port),
                raft_addr: format!("127.0.0.1:{}", raft.port),
                config_path: dir.join(format!("node{}.toml", id)),
                data_dir: dir.join(format!("node{}", id)),
                log_path: dir.join(format!("node{}.log", id)),
                child: None,
                started_at: Instant::now(),
                _ports: [http, raft],
            });
        }
        // Peers authenticate with a secret, as run-cluster.sh sets up.
        let secret = dir.join("cluster.secret");
        std::fs::write(
            &secret,
            format!("test-secret-{}-{}\n", name, std::process::id()),
        )
        .unwrap_or_else(|e| panic!("write {}: {}", secret.display(), e));
        let secret_files = nodes.iter().map(|n| (n.id, secret.clone())).collect();
        Cluster {
            name: name.to_string(),
            dir,
            opts,
            nodes,
            routes: std::collections::BTreeMap::new(),
            secret_files,
            joining: std::collections::BTreeSet::new(),
            node_extra: std::collections::BTreeMap::new(),
        }
    }

    /// The generated TOML of node `id`.
    pub fn config_text(&self, id: u64) -> String {
        let n = self.node(id);
        let mut t = String::new();
        t.push_str(&format!("id = {}\n", id));
        t.push_str(&format!(
            "data_dir = {}\n",
            toml_str(&n.data_dir.display().to_string())
        ));
        t.push_str(&format!("http_addr = \"{}\"\n", n.http_addr));
        t.push_str(&format!("raft_addr = \"{}\"\n", n.raft_addr));
        let o = &self.opts;
        for (key, v) in [
            ("election_timeout_min_ms", o.election_timeout_min_ms),
            ("election_timeout_max_ms", o.election_timeout_max_ms),
            ("heartbeat_interval_ms", o.heartbeat_interval_ms),
            ("request_timeout_ms", o.request_timeout_ms),
        ] {
            if let Some(v) = v {
                t.push_str(&format!("{} = {}\n", key, v));
            }
        }
        if let Some(c) = &o.cluster_id {
            t.push_str(&format!("cluster_id = {}\n", toml_str(c)));
        }
        if let Some(f) = self.secret_files.get(&id) {
            t.push_str(&format!(
                "cluster_secret_file = {}\n",
                toml_str(&f.display().to_string())
            ));
        }
        for (key, value) in &o.extra {
            t.push_str(&format!("{} = {}\n", key, value));
        }
        if self.joining.contains(&id) {
            t.push_str("join = true\n");
        }
        for (key, value) in self.node_extra.get(&id).into_iter().flatten() {
            t.push_str(&format!("{} = {}\n", key, value));
        }
        for p in self.nodes.iter().filter(|p| p.id != id) {
            t.push_str(&format!(
                "\n[[peers]]\nid = {}\nhttp_addr = \"{}\"\nraft_addr = \"{}\"\n",
                p.id,
                p.http_addr,
                self.routes.get(&(id, p.id)).unwrap_or(&p.raft_addr)
            ));
        }
        t
    }

    /// Starts a new, empty node in join mode (the next id, its own ports and directory)
    /// and waits until it serves; the cluster still has to add it (`POST /cluster/members`).
    pub fn start_joining(&mut self) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let http = reserve_port();
        let raft = reserve_port();
        let secret = self.dir.join("cluster.secret");
        self.nodes.push(Node {
            id,
            http_addr: format!("127.0.0.1:{}", http.port),
            raft_addr: format!("127.0.0.1:{}", raft.port),
            config_path: self.dir.join(format!("node{}.toml", id)),
            data_dir: self.dir.join(format!("node{}", id)),
            log_path: self.dir.join(format!("node{}.log", id)),
            child: None,
            started_at: Instant::now(),
            _ports: [http, raft],
        });
        self.secret_files.insert(id, secret);
        self.joining.insert(id);
        let path = self.node(id).config_path.clone();
        std::fs::write(&path, self.config_text(id))
            .unwrap_or_else(|e| panic!("write {}: {}", path.display(), e));
        self.spawn(id);
        self.wait_until_serving(id, Duration::from_secs(10));
        id
    }

    /// The leader and term that nodes 1 and 2 agree on (tests where node 3 is kept out).
    pub fn agreed_by_1_and_2(&self) -> (u64, u64) {
        wait_for(ELECTION_DEADLINE, || {
            let (a, b) = (self.status(1).ok()?, self.status(2).ok()?);
            let leader = a
                .leader
                .filter(|l| Some(*l) == b.leader && a.term == b.term)?;
            Some((leader, a.term))
        })
        .expect("nodes 1 and 2 agree on a leader")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {}", id))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {}", id))
    }

    pub fn http_addr(&self, id: u64) -> String {
        self.node(id).http_addr.clone()
    }

    pub fn raft_addr(&self, id: u64) -> String {
        self.node(id).raft_addr.clone()
    }

    /// When node `id`'s current process was spawned.
    pub fn started_at(&self, id: u64) -> Instant {
        self.node(id).started_at
    }

    /// The OS pid of node `id`'s current process, if it is running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(|c| c.id())
    }

    /// Nodes whose process the harness has started and not killed (a process that died by
    /// itself still counts; see [`Cluster::exited`]).
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// If node `id`'s process has exited on its own, its exit status.
    pub fn exited(&mut self, id: u64) -> Option<ExitStatus> {
        self.node_mut(id)
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn spawn(&mut self, id: u64) {
        let n = self.node_mut(id);
        assert!(n.child.is_none(), "node {} is already running", id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .unwrap_or_else(|e| panic!("open {}: {}", n.log_path.display(), e));
        let _ = writeln!(log, "=== harness: starting node {} ===", id);
        let err = log.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftkv"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&n.config_path)
            .env(
                "RUST_LOG",
                std::env::var("RAFTKV_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        die_with_parent(&mut cmd);
        n.started_at = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {}", env!("CARGO_BIN_EXE_raftkv"), e));
        n.child = Some(child);
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u64) {
        let n = self.node_mut(id);
        let mut child = n
            .child
            .take()
            .unwrap_or_else(|| panic!("node {} is not running", id));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        append_marker(
            &n.log_path,
            &format!("=== harness: killed node {} (SIGKILL) ===", id),
        );
    }

    /// Sends SIGTERM to node `id` and waits (up to `timeout`) for it to exit; returns how it
    /// exited. Panics if it does not exit in time (after killing it).
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> ExitStatus {
        let n = self.node_mut(id);
        let mut child = n
            .child
            .take()
            .unwrap_or_else(|| panic!("node {} is not running", id));
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                append_marker(
                    &n.log_path,
                    &format!(
                        "=== harness: node {} exited after SIGTERM: {} ===",
                        id, status
                    ),
                );
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not exit within {:?} of SIGTERM", id, timeout);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts node `id` again with the same config, ports and data dir, and waits until it
    /// answers `/status`.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
        self.wait_until_serving(id, Duration::from_secs(10));
    }

    /// Starts node `id` again without waiting.
    pub fn restart_no_wait(&mut self, id: u64) {
        self.spawn(id);
    }

    /// Waits until node `id` answers `/status` with its own pid (so the port really is ours).
    pub fn wait_until_serving(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let pid = self
            .pid(id)
            .unwrap_or_else(|| panic!("node {} is not running", id));
        let mut last: String;
        loop {
            match self.status(id) {
                Ok(s) if s.pid == pid => return,
                Ok(s) => {
                    last = format!("status shows pid {} but node {} is pid {}", s.pid, id, pid)
                }
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!("node {} not serving within {:?}: {}", id, timeout, last);
            }
            std::thread::sleep(POLL);
        }
    }

    /// One raw HTTP call to node `id`: (status, body); status 0 means a transport error (the
    /// body then says which).
    pub fn request(
        &self,
        id: u64,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        match http_request(
            &self.http_addr(id),
            method,
            path,
            headers,
            body,
            self.opts.http_timeout(),
        ) {
            Ok(r) => (r.status, r.body),
            Err(e) => (0, format!("transport error: {}", e).into_bytes()),
        }
    }

    /// `/status` of node `id`.
    pub fn status(&self, id: u64) -> Result<Status, String> {
        let r = http_request(
            &self.http_addr(id),
            "GET",
            "/status",
            &[],
            b"",
            Duration::from_secs(5),
        )
        .map_err(|e| format!("node {}: {}", id, e))?;
        if r.status != 200 {
            return Err(format!(
                "node {}: /status answered {}: {}",
                id,
                r.status,
                r.body_text()
            ));
        }
        serde_json::from_slice(&r.body)
            .map_err(|e| format!("node {}: bad /status JSON ({}): {}", id, e, r.body_text()))
    }

    /// Waits until every live node reports the same leader and term, and that leader (a live
    /// node) says it leads. Returns (leader, term).
    pub fn wait_for_leader(&self, timeout: Duration) -> (u64, u64) {
        self.wait_for_leader_after(0, timeout)
    }

    /// Like [`Cluster::wait_for_leader`], for a leader of a term above `min_term`.
    pub fn wait_for_leader_after(&self, min_term: u64, timeout: Duration) -> (u64, u64) {
        let live = self.live_ids();
        let mut last = String::new();
        wait_for(timeout, || {
            let statuses: Result<Vec<Status>, String> =
                live.iter().map(|&id| self.status(id)).collect();
            match statuses {
                Err(e) => last = e,
                Ok(ss) => {
                    last = format!("{:?}", ss);
                    let first = &ss[0];
                    if let Some(leader) = first.leader {
                        let agreed = ss
                            .iter()
                            .all(|s| s.leader == Some(leader) && s.term == first.term);
                        let leads = ss.iter().any(|s| s.id == leader && s.role == "leader");
                        if agreed && leads && first.term > min_term {
                            return Some((leader, first.term));
                        }
                    }
                }
            }
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "no agreed leader among {:?} within {:?}; last seen: {}",
                live, timeout, last
            )
        })
    }

    /// Live nodes other than `leader`.
    pub fn followers_of(&self, leader: u64) -> Vec<u64> {
        self.live_ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect()
    }

    /// Waits until node `id` has applied at least `index`.
    pub fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> Status {
        let mut last = String::new();
        wait_for(timeout, || {
            match self.status(id) {
                Ok(s) if s.last_applied >= index => return Some(s),
                Ok(s) => last = format!("{:?}", s),
                Err(e) => last = e,
            }
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "node {} did not apply index {} within {:?}; last: {}",
                id, index, timeout, last
            )
        })
    }

    // ----- single-attempt key-value calls: (status, body text) -----

    pub fn put(&self, id: u64, key: &str, value: &[u8]) -> (u16, String) {
        text(self.request(id, "PUT", &format!("/kv/{}", encode_key(key)), &[], value))
    }

    /// Linearizable read.
    pub fn get(&self, id: u64, key: &str) -> (u16, String) {
        text(self.request(id, "GET", &format!("/kv/{}", encode_key(key)), &[], b""))
    }

    /// Possibly stale read of node `id`'s own state.
    pub fn get_stale(&self, id: u64, key: &str) -> (u16, String) {
        text(self.request(
            id,
            "GET",
            &format!("/kv/{}?consistency=stale", encode_key(key)),
            &[],
            b"",
        ))
    }

    pub fn delete(&self, id: u64, key: &str) -> (u16, String) {
        text(self.request(id, "DELETE", &format!("/kv/{}", encode_key(key)), &[], b""))
    }

    // ----- retrying calls, for steps that must succeed despite a leader change -----

    /// A [`KvClient`] talking to the given nodes only (it retries writes exactly-once).
    pub fn client(&self, via: &[u64], client_id: &str) -> KvClient {
        let mut c = KvClient::new(
            via.iter().map(|&id| self.http_addr(id)).collect(),
            client_id.to_string(),
        );
        c.deadline = Duration::from_secs(20);
        c.attempt_timeout = self.opts.http_timeout();
        c
    }

    /// A fresh client id (a reused id with a reused seq would be taken for a retry).
    pub fn unique_client_id(&self, what: &str) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut id = format!(
            "{}-{}-{}",
            what,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        id.truncate(128);
        id
    }

    /// Writes `key` through node `via` (retrying 503/504 exactly-once); panics unless the
    /// write is acknowledged.
    pub fn put_acked(&self, via: u64, key: &str, value: &[u8]) {
        let r = self
            .client(&[via], &self.unique_client_id("put"))
            .put(key, value);
        assert!(
            matches!(r, KvResult::Ok(_)),
            "PUT {} via node {} not acknowledged: {:?}",
            key,
            via,
            r
        );
    }

    /// Writes every (key, value) through the live nodes with one client session; panics
    /// unless all are acknowledged.
    pub fn put_all_acked(&self, client_id: &str, kvs: &[(String, String)]) {
        let mut c = self.client(&self.live_ids(), client_id);
        for (k, v) in kvs {
            let r = c.put(k, v.as_bytes());
            assert!(
                matches!(r, KvResult::Ok(_)),
                "PUT {} not acknowledged: {:?}",
                k,
                r
            );
        }
    }

    /// Linearizable read through node `via`, retrying 503/504: Some(value) or None (404).
    pub fn get_via(&self, via: u64, key: &str) -> Option<String> {
        match self.client(&[via], "reader").get(key, false) {
            KvResult::Ok(v) => Some(String::from_utf8_lossy(&v).into_owned()),
            KvResult::NotFound => None,
            r => panic!("GET {} via node {} failed: {:?}", key, via, r),
        }
    }

    pub fn log_text(&self, id: u64) -> String {
        std::fs::read(&self.node(id).log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until node `id`'s log contains `needle`.
    pub fn wait_for_log(&self, id: u64, needle: &str, timeout: Duration) {
        wait_for(timeout, || self.log_text(id).contains(needle).then_some(())).unwrap_or_else(
            || {
                panic!(
                    "node {}'s log never showed '{}' within {:?}",
                    id, needle, timeout
                )
            },
        );
    }

    fn print_log_tails(&self, lines: usize) {
        for n in &self.nodes {
            let text = self.log_text(n.id);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            eprintln!(
                "----- last {} lines of node {} log ({}) -----",
                all.len() - from,
                n.id,
                n.log_path.display()
            );
            for l in &all[from..] {
                eprintln!("{}", l);
            }
        }
        eprintln!("----- test dir kept: {} -----", self.dir.display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_log_tails(40);
        } else if std::env::var_os("RAFTKV_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every [`POLL`] until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `bytes` to `addr` (from a separate thread, so a server that answers early and
/// stops reading cannot deadlock us) and returns whatever comes back until the peer closes
/// or `timeout` passes. The bool is true when the connection was closed (EOF or reset)
/// rather than left open.
pub fn raw_exchange(addr: &str, bytes: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {}: {}", addr, e));
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let data = bytes.to_vec();
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(&data);
        let _ = writer.flush();
    });
    let mut reader = stream;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    let closed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break false
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break true, // reset
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = w.join();
    (got, closed)
}

/// The status code of a raw HTTP response, if it starts with a status line.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().next()?;
    if !line.starts_with("HTTP/1.") {
        return None;
    }
    line.split_whitespace().nth(1)?.parse().ok()
}

fn text((status, body): (u16, Vec<u8>)) -> (u16, String) {
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn append_marker(path: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(path) {
        let _ = writeln!(f, "{}", line);
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// Ports below the kernel's ephemeral range (outgoing connections never use them).
fn port_range() -> (u16, u16) {
    let eph_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let high = eph_low.clamp(12_000, 32_768);
    (10_000, high)
}

/// Picks a free localhost port and holds a cross-process lock on it.
pub fn reserve_port() -> PortLock {
    let lock_dir = std::env::temp_dir().join("raftkv-it-ports");
    let _ = std::fs::create_dir_all(&lock_dir);
    let (low, high) = port_range();
    let span = (high - low) as u64;
    for attempt in 0..10_000u64 {
        let port = low + (rand::random::<u64>() % span) as u16;
        let lock_path = lock_dir.join(format!("{}.lock", port));
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        else {
            continue;
        };
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            continue;
        }
        // Free right now? (Something outside the harness may be using it.)
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let _ = attempt;
        return PortLock { port, _lock: file };
    }
    panic!("no free port found in {}..{}", low, high);
}
