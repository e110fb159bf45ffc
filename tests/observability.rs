//! What an operator sees, on real processes: `/metrics` counters move with writes and with
//! a leader's death, and the `/ui` page, rendered by a real headless browser, shows the
//! members, exactly one leader, and a new term on its timeline after the leader is killed.
//!
//! The browser part needs Debian's `chromium` (`.ci/run` installs it and sets
//! `RAFTKV_REQUIRE_BROWSER=1`, which makes its absence a failure; elsewhere the test says
//! it skipped that part).

#[path = "support/cluster.rs"]
mod cluster;

use std::process::Command;
use std::time::Duration;

use cluster::{wait_for, Cluster, ClusterOptions};
use raftkv::metrics::sample;

fn scrape(c: &Cluster, id: u64) -> String {
    let (status, body) = c.request(id, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "GET /metrics on node {}", id);
    String::from_utf8(body).expect("utf-8")
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or_else(|| panic!("no sample {} {:?}", name, labels))
}

#[test]
fn metrics_move_with_writes_and_a_leader_kill() {
    let mut c = Cluster::start_with("metrics", ClusterOptions::fast(3));
    let (leader, term) = c.wait_for_leader(Duration::from_secs(10));
    let before = scrape(&c, leader);
    assert_eq!(value(&before, "raftkv_role", &[("role", "leader")]), 1.0);
    assert_eq!(value(&before, "raftkv_term", &[]), term as f64);
    assert!(value(&before, "raftkv_elections_won_total", &[]) >= 1.0);
    let accepted = value(&before, "raftkv_proposals_total", &[("result", "accepted")]);
    for i in 0..20 {
        c.put_acked(leader, &format!("m{}", i), b"v");
    }
    let after = scrape(&c, leader);
    assert!(value(&after, "raftkv_proposals_total", &[("result", "accepted")]) >= accepted + 20.0);
    assert!(value(&after, "raftkv_commit_latency_seconds_count", &[]) >= 20.0);
    assert!(value(&after, "raftkv_fsync_latency_seconds_count", &[]) >= 1.0);
    assert!(value(&after, "raftkv_commit_index", &[]) >= 20.0);
    assert!(
        value(
            &after,
            "raftkv_http_requests_total",
            &[("route", "/kv"), ("class", "2xx")]
        ) >= 20.0
    );
    let follower = c.followers_of(leader)[0];
    assert!(
        value(
            &after,
            "raftkv_append_entries_sent_total",
            &[("peer", &follower.to_string())]
        ) >= 1.0
    );
    let f_before = scrape(&c, follower);
    let changes = value(&f_before, "raftkv_leader_changes_total", &[]);

    c.kill(leader);
    let (new_leader, new_term) = c.wait_for_leader_after(term, Duration::from_secs(10));
    assert_ne!(new_leader, leader);
    let f_after = scrape(&c, follower);
    assert!(value(&f_after, "raftkv_leader_changes_total", &[]) > changes);
    assert!(value(&f_after, "raftkv_term", &[]) >= new_term as f64);
    let l_after = scrape(&c, new_leader);
    assert!(value(&l_after, "raftkv_elections_started_total", &[]) >= 1.0);
    assert_eq!(value(&l_after, "raftkv_role", &[("role", "leader")]), 1.0);
    // Events tell the same story.
    let (status, body) = c.request(follower, "GET", "/cluster/events", &[], b"");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let leaders: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "leader")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        leaders.contains(&leader.to_string()) && leaders.contains(&new_leader.to_string()),
        "leader events: {:?}",
        leaders
    );
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The page as the browser renders it, after its scripts ran.
fn rendered(browser: &str, url: &str, screenshot: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1100,760",
        "--virtual-time-budget=4000",
    ]);
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run the browser");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attr(dom: &str, name: &str) -> Option<u64> {
    let at = dom.find(&format!("{}=\"", name))? + name.len() + 2;
    dom[at..].split('"').next()?.parse().ok()
}

#[test]
fn the_cluster_page_shows_members_a_leader_and_the_new_term() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("RAFTKV_REQUIRE_BROWSER").is_err(),
            "no chromium found, and RAFTKV_REQUIRE_BROWSER is set (apt-get install -y chromium)"
        );
        eprintln!("SKIPPED the browser part: no chromium (apt-get install -y chromium)");
        return;
    };
    let mut c = Cluster::start_with("ui", ClusterOptions::fast(3));
    let (leader, term) = c.wait_for_leader(Duration::from_secs(10));
    c.put_acked(leader, "k", b"v");
    let viewer = c.followers_of(leader)[0];
    let url = format!("http://{}/ui", c.http_addr(viewer));
    let dom = wait_for(Duration::from_secs(20), || {
        let dom = rendered(browser, &url, None);
        (dom.contains("data-loaded=\"1\"") && dom.matches("class=\"member\"").count() == 3)
            .then_some(dom)
    })
    .expect("the page never showed three members");
    assert_eq!(dom.matches("data-role=\"leader\"").count(), 1, "{}", dom);
    assert!(dom.contains(&format!("data-id=\"{}\" data-role=\"leader\"", leader)));
    assert!(attr(&dom, "data-max-term").unwrap_or(0) >= term);

    c.kill(leader);
    let dom = wait_for(Duration::from_secs(15), || {
        let dom = rendered(browser, &url, None);
        (attr(&dom, "data-max-term").unwrap_or(0) > term
            && dom.matches("data-role=\"leader\"").count() == 1)
            .then_some(dom)
    })
    .expect("the timeline never showed a new term after the leader was killed");
    assert!(
        dom.contains("data-role=\"unreachable\""),
        "the dead leader is not shown as unreachable"
    );
    // A picture for the CI artifacts.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&dir).expect("create the target directory");
    let shot = dir.join("ui-after-leader-kill.png");
    let _ = std::fs::remove_file(&shot);
    rendered(browser, &url, Some(&shot));
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
