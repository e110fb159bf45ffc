//! `raftkv`: run a node (`serve`) or talk to a cluster (`put`, `get`, `delete`, `status`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftkv::client::{http_request, KvClient, KvResult};
use raftkv::config::Config;

/// mimalloc instead of glibc's malloc: a node allocates and frees several buffers per
/// request, and glibc's malloc and free took about a tenth of a leader's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated, durable, linearizable key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Serve {
        /// The node's TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Set KEY to VALUE (exactly once, retrying across nodes).
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print the value of KEY.
    Get {
        key: String,
        /// Read from whatever the node has applied (may be stale).
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Delete KEY (exactly once).
    Delete {
        key: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Print each node's /status.
    Status {
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Make a cluster CA (or reuse the one in DIR) and a certificate per node, for mutual
    /// TLS between peers (tls_ca_file, tls_cert_file, tls_key_file) and HTTPS.
    Certs {
        /// Where the files go: ca.pem, ca.key, nodeK.pem, nodeK.key.
        #[arg(long)]
        out: PathBuf,
        /// The node ids, comma-separated (e.g. 1,2,3).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// Another name or IP address to put into every node certificate, besides
        /// localhost, 127.0.0.1, nodeK and raft-nodeK (repeat the option for several).
        #[arg(long)]
        san: Vec<String>,
        /// Replace node certificates that exist already.
        #[arg(long)]
        force: bool,
    },
    /// Exit 0 if the node at ADDR answers /status, 1 otherwise (a container health check:
    /// there is no shell or curl in the image).
    Health {
        /// The node's HTTP address (host:port).
        #[arg(default_value = "127.0.0.1:8001")]
        addr: String,
    },
    /// List, add or remove cluster members.
    Member {
        #[command(subcommand)]
        action: MemberAction,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Hand leadership to node ID (default: the most up-to-date follower).
    TransferLeader {
        id: Option<u64>,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Subcommand)]
enum MemberAction {
    /// Print the members as the leader sees them.
    List,
    /// Add node ID as a learner; the leader promotes it to voter once it has caught up.
    Add {
        id: u64,
        /// Its peer address (host:port).
        raft_addr: String,
        /// Its client address (host:port).
        http_addr: String,
    },
    /// Remove node ID from the cluster.
    Remove { id: u64 },
}

#[derive(clap::Args)]
struct ClientOpts {
    /// Comma-separated HTTP addresses of the nodes.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
    )]
    nodes: String,
    /// Client identity for exactly-once writes (default: random).
    #[arg(long, global = true)]
    client_id: Option<String>,
    /// Sequence number of this request within the client's session (default: 1).
    #[arg(long, global = true)]
    seq: Option<u64>,
    /// Give up after this many seconds of retrying (default 15).
    #[arg(long, global = true, default_value_t = 15.0)]
    timeout: f64,
}

impl ClientOpts {
    fn client(&self) -> KvClient {
        let nodes = self
            .nodes
            .split(',')
            .map(|s| s.trim().trim_start_matches("http://").to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
        let mut c = KvClient::new(nodes, id);
        if let Some(seq) = self.seq {
            c.set_next_seq(seq);
        }
        c.deadline = std::time::Duration::from_secs_f64(self.timeout.clamp(0.1, 86_400.0));
        c.attempt_timeout = c.attempt_timeout.min(c.deadline);
        c.progress = true;
        c
    }
}

fn report(result: KvResult, print_body: bool) -> ExitCode {
    match result {
        KvResult::Ok(body) => {
            if print_body {
                use std::io::Write;
                let _ = std::io::stdout().write_all(&body);
                println!();
            }
            ExitCode::SUCCESS
        }
        KvResult::NotFound => {
            eprintln!("not found");
            ExitCode::from(1)
        }
        KvResult::Failed { status, message } => {
            eprintln!("failed (status {}): {}", status, message.trim());
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Put { key, value, opts } => {
            report(opts.client().put(&key, value.as_bytes()), false)
        }
        Command::Get { key, stale, opts } => report(opts.client().get(&key, stale), true),
        Command::Delete { key, opts } => report(opts.client().delete(&key), false),
        Command::Member { action, opts } => member(action, opts),
        Command::Certs {
            out,
            nodes,
            san,
            force,
        } => match raftkv::certs::generate(&out, &nodes, &san, force) {
            Ok(files) => {
                for f in &files {
                    println!("wrote {}", f.display());
                }
                if files.is_empty() {
                    println!(
                        "nothing to do: {} already holds certificates for nodes {:?} (--force replaces them)",
                        out.display(),
                        nodes
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftkv certs: {}", e);
                ExitCode::from(1)
            }
        },
        Command::Health { addr } => {
            let addr = addr.trim_start_matches("http://");
            match http_request(
                addr,
                "GET",
                "/status",
                &[],
                b"",
                std::time::Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 200 => {
                    println!("{}", r.body_text());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    eprintln!("{}: status {}", addr, r.status);
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("{}: {}", addr, e);
                    ExitCode::from(1)
                }
            }
        }
        Command::TransferLeader { id, opts } => {
            let body = match id {
                Some(id) => format!("{{\"target\": {}}}", id),
                None => String::new(),
            };
            report(
                opts.client()
                    .request("POST", "/cluster/leader", body.as_bytes()),
                true,
            )
        }
        Command::Status { opts } => status(&opts),
    }
}

/// `raftkv status`: a table of every member, learned from the first node that answers
/// (its `/cluster/overview`), so it works for any cluster size.
fn status(opts: &ClientOpts) -> ExitCode {
    let nodes: Vec<String> = opts
        .nodes
        .split(',')
        .map(|s| s.trim().trim_start_matches("http://").to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let timeout = std::time::Duration::from_secs(3);
    let mut overview = None;
    let mut errors = Vec::new();
    for node in &nodes {
        match http_request(node, "GET", "/cluster/overview", &[], b"", timeout) {
            Ok(r) if r.status == 200 => {
                overview = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
                if overview.is_some() {
                    break;
                }
            }
            Ok(r) => errors.push(format!("{}: status {}", node, r.status)),
            Err(e) => errors.push(format!("{}: {}", node, e)),
        }
    }
    let Some(v) = overview else {
        eprintln!("no node answered: {}", errors.join("; "));
        return ExitCode::from(2);
    };
    let all = v["nodes"].as_array().cloned().unwrap_or_default();
    let commit = all
        .iter()
        .filter_map(|n| n["status"]["commit_index"].as_u64())
        .max()
        .unwrap_or(0);
    println!(
        "{:>4}  {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>8}",
        "node", "http", "role", "term", "leader", "commit", "applied", "lag"
    );
    for n in &all {
        let s = &n["status"];
        let dash = || "-".to_string();
        let num = |k: &str| s[k].as_u64().map_or_else(dash, |x| x.to_string());
        let role = if n["reachable"] == true {
            s["role"].as_str().unwrap_or("?").to_string()
        } else {
            "unreachable".to_string()
        };
        let lag = s["last_applied"]
            .as_u64()
            .map_or_else(dash, |a| commit.saturating_sub(a).to_string());
        println!(
            "{:>4}  {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>8}",
            n["id"].to_string(),
            n["http_addr"].as_str().unwrap_or("?"),
            role,
            num("term"),
            num("leader"),
            num("commit_index"),
            num("last_applied"),
            lag
        );
    }
    ExitCode::SUCCESS
}

fn member(action: MemberAction, opts: ClientOpts) -> ExitCode {
    let mut client = opts.client();
    match action {
        MemberAction::List => match client.request("GET", "/cluster/members", b"") {
            KvResult::Ok(body) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                println!(
                    "{:>4}  {:<8} {:<6} {:>10}  {:<9} {:<22} {:<22}",
                    "id", "role", "leader", "match", "caught_up", "raft_addr", "http_addr"
                );
                for m in v["members"].as_array().into_iter().flatten() {
                    println!(
                        "{:>4}  {:<8} {:<6} {:>10}  {:<9} {:<22} {:<22}",
                        m["id"].to_string(),
                        m["role"].as_str().unwrap_or("?"),
                        if m["leader"] == true { "*" } else { "" },
                        m["match_index"].to_string(),
                        m["caught_up"].to_string(),
                        m["raft_addr"].as_str().unwrap_or("?"),
                        m["http_addr"].as_str().unwrap_or("?"),
                    );
                }
                ExitCode::SUCCESS
            }
            other => report(other, false),
        },
        MemberAction::Add {
            id,
            raft_addr,
            http_addr,
        } => {
            let body =
                serde_json::json!({ "id": id, "raft_addr": raft_addr, "http_addr": http_addr });
            report(
                client.request("POST", "/cluster/members", body.to_string().as_bytes()),
                true,
            )
        }
        MemberAction::Remove { id } => report(
            client.request("DELETE", &format!("/cluster/members/{}", id), b""),
            true,
        ),
    }
}

/// actix-http logs a request it cannot parse (a URI over 64 KiB, garbage instead of HTTP)
/// at ERROR, before any of our code sees it. That is a client's mistake, not the node's:
/// it goes to DEBUG. Everything else passes through unchanged.
struct ClientMistakesAreNotErrors(env_logger::Logger);

impl log::Log for ClientMistakesAreNotErrors {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record.level() == log::Level::Error
            && record.target().starts_with("actix_http::h1::dispatcher")
        {
            let demoted = log::Record::builder()
                .args(*record.args())
                .level(log::Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.0.enabled(demoted.metadata()) {
                self.0.log(&demoted);
            }
            return;
        }
        self.0.log(record)
    }

    fn flush(&self) {
        self.0.flush()
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp_millis()
            .build();
    log::set_max_level(logger.filter());
    let _ = log::set_boxed_logger(Box::new(ClientMistakesAreNotErrors(logger)));
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftkv: invalid config: {}", e);
            return ExitCode::from(2);
        }
    };
    let system = actix::System::new();
    let result = system.block_on(raftkv::server::serve(config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", e);
            eprintln!("raftkv: {}", e);
            ExitCode::from(1)
        }
    }
}
