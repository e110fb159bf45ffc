//! Multi-process integration tests: real `raftkv serve` processes on localhost, driven over
//! HTTP (and, for the fault tests, raw TCP). See `tests/support/cluster.rs` for the harness.

#[path = "support/cluster.rs"]
mod cluster;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{
    raw_exchange, reserve_port, status_of, wait_for, Cluster, ClusterOptions, ELECTION_DEADLINE,
};
use raftkv::client::KvResult;

fn kvs(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("{}-{:03}", prefix, i),
                format!("value of {} #{}", prefix, i),
            )
        })
        .collect()
}

#[test]
fn leader_elected_within_two_seconds() {
    let c = Cluster::spawn_with("election", ClusterOptions::defaults(3));
    let t0 = c.ids().iter().map(|&id| c.started_at(id)).min().unwrap();
    let (leader, term) = c.wait_for_leader(ELECTION_DEADLINE);
    let took = t0.elapsed();
    eprintln!(
        "leader {} of term {} agreed {:?} after start",
        leader, term, took
    );
    assert!(term >= 1);
    assert!(
        took < Duration::from_secs(2),
        "leader {} (term {}) agreed on only {:?} after the processes started",
        leader,
        term,
        took
    );
}

#[test]
fn write_through_any_node_is_readable_through_every_node() {
    let c = Cluster::start("any-node", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    // Sequential acknowledged writes land at increasing log indexes.
    let mut last_index = 0;
    for id in c.ids() {
        let key = format!("written-via-{}", id);
        let value = format!("hello from {}", id);
        match c
            .client(&[id], &c.unique_client_id("any-node"))
            .put(&key, value.as_bytes())
        {
            KvResult::Ok(body) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let index = v["index"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no index in {}", v));
                assert!(
                    index > last_index,
                    "PUT via node {} at index {} after {}",
                    id,
                    index,
                    last_index
                );
                last_index = index;
            }
            other => panic!("PUT via node {} failed: {:?}", id, other),
        }
    }
    for reader in c.ids() {
        for writer in c.ids() {
            assert_eq!(
                c.get_via(reader, &format!("written-via-{}", writer))
                    .as_deref(),
                Some(format!("hello from {}", writer).as_str()),
                "key written via node {} read via node {}",
                writer,
                reader
            );
        }
    }
    // The raw API, once the cluster is settled: a GET through a follower answers 200 too.
    let follower = c.followers_of(leader)[0];
    let (status, body) = c.get(follower, "written-via-1");
    if status != 503 && status != 504 {
        assert_eq!((status, body.as_str()), (200, "hello from 1"));
    }

    // DELETE through a follower (forwarded to the leader).
    let follower = c.followers_of(c.wait_for_leader(ELECTION_DEADLINE).0)[0];
    let r = c.client(&[follower], "deleter").delete("written-via-2");
    match r {
        KvResult::Ok(body) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["index"].as_u64().unwrap() > 0, "{}", v);
        }
        other => panic!("DELETE via follower {} failed: {:?}", follower, other),
    }
    for id in c.ids() {
        assert_eq!(
            c.get_via(id, "written-via-2"),
            None,
            "deleted key still visible via node {}",
            id
        );
        assert_eq!(
            c.get_via(id, "written-via-3").as_deref(),
            Some("hello from 3")
        );
    }
    // A raw 404 carries the JSON error body.
    let (status, body) = c.get(leader, "never-written");
    if status != 503 && status != 504 {
        assert_eq!(status, 404, "{}", body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string(), "{}", body);
    }
}

#[test]
fn killing_the_leader_elects_a_new_one_and_keeps_acknowledged_writes() {
    let mut c = Cluster::start("kill-leader", 3);
    c.wait_for_leader(ELECTION_DEADLINE);
    let data = kvs("before", 50);
    c.put_all_acked("kill-leader-writer", &data);

    // Kill whoever leads now (leadership may have moved during the writes).
    let (old_leader, old_term) = c.wait_for_leader(ELECTION_DEADLINE);
    c.kill(old_leader);
    let (new_leader, new_term) = c.wait_for_leader_after(old_term, ELECTION_DEADLINE);
    assert_ne!(new_leader, old_leader);
    assert!(new_term > old_term);

    for id in c.live_ids() {
        for (k, v) in &data {
            assert_eq!(
                c.get_via(id, k).as_deref(),
                Some(v.as_str()),
                "{} via node {}",
                k,
                id
            );
        }
    }
    let more = kvs("after", 10);
    c.put_all_acked("kill-leader-writer-2", &more);
    for id in c.live_ids() {
        for (k, v) in &more {
            assert_eq!(
                c.get_via(id, k).as_deref(),
                Some(v.as_str()),
                "{} via node {}",
                k,
                id
            );
        }
    }
}

#[test]
fn restarted_follower_catches_up() {
    let mut c = Cluster::start("catch-up", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    c.put_acked(leader, "early", b"before the crash");
    let victim = c.followers_of(leader)[0];
    c.kill(victim);

    let data = kvs("while-down", 100);
    c.put_all_acked("catch-up-writer", &data);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let target = c.status(leader).unwrap().commit_index;

    c.restart(victim);
    let s = c.wait_applied(victim, target, Duration::from_secs(20));
    assert!(s.last_applied >= target);
    for (k, v) in &data {
        let (status, body) = c.get_stale(victim, k);
        assert_eq!(
            (status, body.as_str()),
            (200, v.as_str()),
            "stale read of {} on node {}",
            k,
            victim
        );
    }
    assert_eq!(
        c.get_stale(victim, "early"),
        (200, "before the crash".to_string())
    );
}

#[test]
fn full_cluster_restart_keeps_everything() {
    let mut c = Cluster::start("full-restart", 3);
    c.wait_for_leader(ELECTION_DEADLINE);
    let data = kvs("durable", 40);
    c.put_all_acked("full-restart-writer", &data);
    // A delete must survive too.
    match c
        .client(&c.live_ids(), "full-restart-deleter")
        .delete("durable-000")
    {
        KvResult::Ok(_) => {}
        r => panic!("DELETE not acknowledged: {:?}", r),
    }

    for id in c.ids() {
        c.kill(id);
    }
    for id in c.ids() {
        c.restart_no_wait(id);
    }
    for id in c.ids() {
        c.wait_until_serving(id, Duration::from_secs(10));
    }
    c.wait_for_leader(ELECTION_DEADLINE);
    for id in c.ids() {
        assert_eq!(
            c.get_via(id, "durable-000"),
            None,
            "deleted key came back via node {}",
            id
        );
        for (k, v) in &data[1..] {
            assert_eq!(
                c.get_via(id, k).as_deref(),
                Some(v.as_str()),
                "{} via node {}",
                k,
                id
            );
        }
    }
    c.put_all_acked("full-restart-writer-2", &kvs("after-restart", 5));
}

#[test]
fn lone_node_cannot_commit() {
    let mut c = Cluster::start_with("lone", ClusterOptions::fast(3).request_timeout_ms(1500));
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    c.put_acked(leader, "committed", b"yes");
    // Keep the leader: the hardest case, since it believes it leads until it notices.
    let lone = leader;
    for id in c.followers_of(leader) {
        c.kill(id);
    }
    let mut refused = Vec::new();
    for round in 0..3 {
        let key = format!("lone-{}", round);
        let (status, body) = c.put(lone, &key, b"must not commit");
        assert!(
            status == 503 || status == 504,
            "PUT on a lone node answered {}: {}",
            status,
            body
        );
        if status == 503 {
            refused.push(key.clone());
        }
        let (status, body) = c.get(lone, "committed");
        assert!(
            status == 503 || status == 504,
            "linearizable GET on a lone node answered {}: {}",
            status,
            body
        );
        let (status, body) = c.delete(lone, "committed");
        assert!(
            status == 503 || status == 504,
            "DELETE on a lone node answered {}: {}",
            status,
            body
        );
    }
    // Eventually it knows it cannot lead.
    let s = wait_for(Duration::from_secs(10), || {
        c.status(lone).ok().filter(|s| s.role != "leader")
    })
    .expect("the lone node still claims to lead");
    assert_ne!(s.leader, Some(lone));
    // A stale read still answers from what was applied.
    assert_eq!(c.get_stale(lone, "committed"), (200, "yes".to_string()));

    // Bring the others back: the cluster works again; writes refused with 503 never apply.
    for id in c.ids().into_iter().filter(|&id| id != lone) {
        c.restart(id);
    }
    c.wait_for_leader(ELECTION_DEADLINE);
    c.put_acked(lone, "after-recovery", b"ok");
    for key in &refused {
        assert_eq!(
            c.get_via(lone, key),
            None,
            "write of {} answered 503 but was applied",
            key
        );
    }
}

/// Runs `raftkv serve --config <path>` and returns (exit code, stderr); kills it if it is
/// still running after 10 s (a bad config must be rejected at once).
fn serve_with_config(path: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .arg("serve")
        .arg("--config")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftkv");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("raftkv kept running with config {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn bad_config_is_rejected_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("raftkv-it-bad-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Real free ports, so that a config wrongly accepted cannot disturb anything.
    let ports: Vec<_> = (0..4).map(|_| reserve_port()).collect();
    let p = |i: usize| ports[i].port;
    let short_secret = dir.join("short.secret");
    std::fs::write(&short_secret, "tiny\n").unwrap();
    let good = format!(
        "id = 1\ndata_dir = {:?}\nhttp_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n\n\
         [[peers]]\nid = 2\nhttp_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n",
        dir.join("data").display().to_string(),
        p(0),
        p(1),
        p(2),
        p(3)
    );
    let cases = [
        (
            "unknown-key",
            good.replace("id = 1\n", "id = 1\nelection_timeout_ms = 300\n"),
            "unknown field `election_timeout_ms`",
        ),
        (
            "duplicate-peer",
            format!(
                "{}\n[[peers]]\nid = 2\nhttp_addr = \"127.0.0.1:1\"\nraft_addr = \"127.0.0.1:2\"\n",
                good
            ),
            "duplicate peer id 2",
        ),
        (
            "missing-raft-addr",
            good.replace(&format!("raft_addr = \"127.0.0.1:{}\"\n\n", p(1)), "\n"),
            "missing field `raft_addr`",
        ),
        (
            "min-above-max",
            good.replace(
                "id = 1\n",
                "id = 1\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 400\n",
            ),
            "invalid election timeout range",
        ),
        (
            "missing-secret-file",
            good.replace(
                "id = 1\n",
                "id = 1\ncluster_secret_file = \"/nonexistent/cluster.secret\"\n",
            ),
            "cluster_secret_file /nonexistent/cluster.secret",
        ),
        (
            "short-secret",
            good.replace(
                "id = 1\n",
                &format!(
                    "id = 1\ncluster_secret_file = {:?}\n",
                    short_secret.display().to_string()
                ),
            ),
            "at least 16 are needed",
        ),
    ];
    for (name, text, want) in &cases {
        assert_ne!(text, &good, "case {} did not change the config", name);
        let path = dir.join(format!("{}.toml", name));
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = serve_with_config(&path);
        assert!(
            code.is_some() && code != Some(0),
            "{}: exit code {:?}, stderr: {}",
            name,
            code,
            stderr
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "{}: stderr does not name the file {}: {}",
            name,
            path.display(),
            stderr
        );
        assert!(
            stderr.contains(want),
            "{}: stderr does not say '{}': {}",
            name,
            want,
            stderr
        );
    }
    // A missing file is named too.
    let missing = dir.join("no-such-file.toml");
    let (code, stderr) = serve_with_config(&missing);
    assert!(
        code.is_some() && code != Some(0),
        "missing file: exit code {:?}",
        code
    );
    assert!(
        stderr.contains(&missing.display().to_string()),
        "{}",
        stderr
    );
    // Control: the unmodified config is valid, so each case fails for its own reason.
    assert!(raftkv::config::Config::parse(&good).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_get_clear_errors() {
    let c = Cluster::start("bad-requests", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let node = c.followers_of(leader)[0];

    // Empty key.
    let (status, body) = c.request(node, "PUT", "/kv/", &[], b"x");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("empty key"), "{}", v);

    // Key limits: 1024 bytes is fine, 1025 is too large.
    let k1024 = "k".repeat(1024);
    c.put_acked(node, &k1024, b"long key");
    let (status, body) = c.put(node, &"k".repeat(1025), b"v");
    assert_eq!(status, 414, "{}", body);
    assert!(body.contains("1025"), "{}", body);
    let (status, body) = c.get(node, &"k".repeat(1025));
    assert_eq!(status, 414, "{}", body);
    // A 60 kB key: still our JSON, and nothing at ERROR in the node's log.
    let (status, body) = c.request(
        node,
        "PUT",
        &format!("/kv/{}", "k".repeat(60_000)),
        &[],
        b"v",
    );
    assert_eq!(status, 414, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("exceeds 1024 bytes"),
        "{}",
        v
    );
    // Past what the HTTP parser takes (64 KiB): a plain 400, and a client's mistake is
    // not an error in our log either.
    let (status, _) = c.request(
        node,
        "PUT",
        &format!("/kv/{}", "k".repeat(100_000)),
        &[],
        b"v",
    );
    assert_eq!(status, 400);
    assert!(
        !c.log_text(node).contains(" ERROR "),
        "a client's mistake logged as an error:\n{}",
        c.log_text(node)
    );

    // Invalid percent-encoding is refused, so every key has one spelling.
    for raw in ["%ZZ", "abc%", "a%2", "%C3%28"] {
        let (status, body) = c.request(node, "PUT", &format!("/kv/{}", raw), &[], b"v");
        assert_eq!(status, 400, "{}: {}", raw, String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("percent-encoding"));
    }
    let (status, _) = c.request(node, "PUT", "/kv/%25ZZ", &[], b"literal");
    assert_eq!(status, 200);
    assert_eq!(c.get_via(leader, "%ZZ").as_deref(), Some("literal"));

    // Value limits: exactly 1 MiB is fine, one byte more is too large. The server may answer
    // before reading the whole body, so write and read concurrently.
    let mib = 1024 * 1024;
    c.put_acked(leader, "big", &vec![b'v'; mib]);
    let head = format!(
        "PUT /kv/too-big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        mib + 1
    );
    let mut req = head.into_bytes();
    req.extend(std::iter::repeat_n(b'v', mib + 1));
    let (raw, _) = raw_exchange(&c.http_addr(node), &req, Duration::from_secs(10));
    assert_eq!(
        status_of(&raw),
        Some(413),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(c.get_via(leader, "too-big"), None);
    assert_eq!(c.get_via(node, "big").map(|v| v.len()), Some(mib));

    // Malformed HTTP: a 400 or a closed connection, and the node keeps serving.
    let malformed: [&[u8]; 4] = [
        b"\x00\x01\x02\xff\xfe garbage \r\n\r\n",
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: twelve\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    ];
    for bytes in malformed {
        let (raw, closed) = raw_exchange(&c.http_addr(node), bytes, Duration::from_secs(5));
        match status_of(&raw) {
            Some(s) => assert_eq!(
                s,
                400,
                "{:?} got {}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&raw)
            ),
            None => assert!(
                closed && raw.is_empty(),
                "{:?}: neither a 400 nor a closed connection: {:?}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    assert!(c.status(node).is_ok());
    c.put_acked(node, "after-malformed-http", b"fine");

    // Garbage on the raft port of every node: that connection is closed, nothing else.
    use raftkv::net::frame::{encode_frame, Hello};
    for id in c.ids() {
        let addr = c.raft_addr(id);
        let mut undecodable = vec![8u8, 0, 0, 0];
        undecodable.extend_from_slice(&[0xff; 8]);
        for bytes in [
            undecodable,
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ] {
            let (_, closed) = raw_exchange(&addr, &bytes, Duration::from_secs(8));
            assert!(closed, "node {} kept a garbage peer connection open", id);
        }
    }
    for id in c.ids() {
        c.wait_for_log(id, "bad handshake", Duration::from_secs(5));
    }
    c.wait_for_leader(ELECTION_DEADLINE);
    c.put_acked(leader, "after-raft-garbage", b"fine");
    for id in c.ids() {
        assert_eq!(c.get_via(id, "after-raft-garbage").as_deref(), Some("fine"));
    }

    // A handshake from another cluster, or from a node that is not a peer, is refused.
    let mut hello = Vec::new();
    encode_frame(&mut hello, &Hello::new("some-other-cluster", 2, 1)).unwrap();
    let (_, closed) = raw_exchange(&c.raft_addr(1), &hello, Duration::from_secs(8));
    assert!(closed, "a handshake with the wrong cluster id was accepted");
    c.wait_for_log(
        1,
        "cluster 'some-other-cluster' (we are 'raftkv')",
        Duration::from_secs(5),
    );
    let mut hello = Vec::new();
    encode_frame(&mut hello, &Hello::new("raftkv", 99, 1)).unwrap();
    let (_, closed) = raw_exchange(&c.raft_addr(1), &hello, Duration::from_secs(8));
    assert!(closed, "a handshake from an unknown node id was accepted");
    c.wait_for_log(
        1,
        "node 99 is not a configured peer",
        Duration::from_secs(5),
    );
    // Control: the right cluster id from a configured peer id is kept open.
    let mut hello = Vec::new();
    encode_frame(&mut hello, &Hello::new("raftkv", 2, 1)).unwrap();
    let (_, closed) = raw_exchange(&c.raft_addr(1), &hello, Duration::from_millis(500));
    assert!(!closed, "a valid handshake was refused");

    // Sessions: seq starts at 1; an unknown session beyond its first request is refused
    // with 409 (it may have been applied under a session that expired), never applied.
    let sess = |id: &str, seq: &str| {
        vec![
            ("X-Client-Id", id.to_string()),
            ("X-Request-Seq", seq.to_string()),
        ]
    };
    let (status, body) = c.request(node, "PUT", "/kv/s", &sess("fresh", "0"), b"x");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, body) = c.request(node, "PUT", "/kv/s", &sess("fresh", "5"), b"x");
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("session expired"),
        "{}",
        v
    );
    assert_eq!(c.get_via(leader, "s"), None, "a refused write was applied");
    let (status, _) = c.request(node, "PUT", "/kv/s", &sess("fresh", "1"), b"one");
    assert_eq!(status, 200);
    let (status, _) = c.request(node, "PUT", "/kv/s", &sess("fresh", "2"), b"two");
    assert_eq!(status, 200);
    assert_eq!(c.get_via(leader, "s").as_deref(), Some("two"));

    c.wait_for_leader(ELECTION_DEADLINE);
    c.put_acked(node, "at-the-end", b"still fine");
}

#[test]
fn stop_and_start_keeps_data_dir_usable() {
    // A follower forwards to the leader it last knew; when that leader was just stopped the
    // forward is lost and only the request timeout ends it, so keep that short.
    let mut c = Cluster::start_with(
        "stop-start",
        ClusterOptions::fast(3).request_timeout_ms(1500),
    );
    c.wait_for_leader(ELECTION_DEADLINE);
    let mut all = Vec::new();
    // A rolling graceful restart (SIGTERM), writing between stops.
    for (round, id) in c.ids().into_iter().enumerate() {
        let batch = kvs(&format!("round{}", round), 10);
        c.put_all_acked(&format!("stop-start-{}", round), &batch);
        all.extend(batch);
        let status = c.terminate(id, Duration::from_secs(10));
        assert!(
            status.success(),
            "node {} exited with {} after SIGTERM",
            id,
            status
        );
        c.put_acked(c.live_ids()[0], &format!("while-{}-stopped", id), b"x");
        all.push((format!("while-{}-stopped", id), "x".to_string()));
        c.restart(id);
        c.wait_for_leader(ELECTION_DEADLINE);
    }
    // Stop a node twice in a row with nothing written in between: still starts.
    let id = c.ids()[0];
    assert!(c.terminate(id, Duration::from_secs(10)).success());
    c.restart(id);
    assert!(c.terminate(id, Duration::from_secs(10)).success());
    c.restart(id);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    let target = c.status(leader).unwrap().commit_index;
    for id in c.ids() {
        c.wait_applied(id, target, Duration::from_secs(20));
        for (k, v) in &all {
            assert_eq!(
                c.get_stale(id, k),
                (200, v.clone()),
                "stale read of {} on node {}",
                k,
                id
            );
        }
        assert!(
            !c.log_text(id).contains("corrupt"),
            "node {} reported corruption",
            id
        );
    }
}

/// The log's segment files in `dir`, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn damaged_data_files_are_reported_and_a_torn_tail_is_dropped() {
    let mut c = Cluster::start("damaged-data", 3);
    let (leader, _) = c.wait_for_leader(ELECTION_DEADLINE);
    c.put_all_acked("damage-writer", &kvs("damage", 20));
    let victim = c.followers_of(leader)[0];
    let target = c.status(leader).unwrap().commit_index;
    c.wait_applied(victim, target, Duration::from_secs(10));
    c.kill(victim);
    let dir = c.node(victim).data_dir.clone();
    let newest = segments(&dir).pop().expect("a log segment");
    let good = std::fs::read(&newest).unwrap();

    // A crash mid-write: part of a batch header at the end of the newest segment. The
    // node drops it, says so, and rejoins.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0x20, 0, 0, 0, 0x11, 0x22]);
    std::fs::write(&newest, &torn).unwrap();
    c.restart(victim);
    c.wait_for_log(
        victim,
        "dropping an incomplete batch",
        Duration::from_secs(5),
    );
    c.put_acked(leader, "after-torn", b"ok");
    let target = c.status(leader).unwrap().commit_index;
    c.wait_applied(victim, target, Duration::from_secs(10));
    c.kill(victim);

    // A flipped byte in the middle of a segment that holds entries (not the newest, which
    // the restart began): the node refuses to start and names the file and the offset,
    // rather than silently losing what follows.
    let mut closed = segments(&dir);
    // The newest, begun by the restart, has its space allocated ahead (zeros, not log).
    closed.pop();
    let victim_segment = closed
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a segment");
    let mut bad = std::fs::read(&victim_segment).unwrap();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&victim_segment, &bad).unwrap();
    c.restart_no_wait(victim);
    let status = wait_for(Duration::from_secs(10), || c.exited(victim))
        .expect("a node with a corrupt log must exit");
    assert!(!status.success());
    let text = c.log_text(victim);
    let name = victim_segment
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        text.contains(&name) && text.contains("corrupt record at byte offset"),
        "log does not name the damage ({}):\n{}",
        name,
        text
    );
    c.kill(victim); // reap the exited process
    std::fs::remove_dir_all(dir.join("log")).unwrap();

    // A store file that is not a store: refused, naming the file.
    std::fs::write(dir.join("store.redb"), vec![0x5a; 64 * 1024]).unwrap();
    c.restart_no_wait(victim);
    let status = wait_for(Duration::from_secs(10), || c.exited(victim))
        .expect("a node with a damaged store must exit");
    assert!(!status.success());
    let text = c.log_text(victim);
    assert!(
        text.contains("store.redb"),
        "log does not name the store:\n{}",
        text
    );

    // A data directory of the old format: refused with what to do.
    c.kill(victim);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("raft.log"), b"old").unwrap();
    c.restart_no_wait(victim);
    wait_for(Duration::from_secs(10), || c.exited(victim)).expect("old format must be refused");
    assert!(c.log_text(victim).contains("empty data directory"));
}
