//! A small load generator: `cargo run --release --example load -- [--secs N] [--threads N]
//! [--keys N] [--value-bytes N] [--nodes a,b,c]`. Writes random keys from a fixed key space
//! through the HTTP API and prints throughput and latency percentiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv::client::http_request;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = arg(&args, "--secs", "30").parse().unwrap_or(30);
    let threads: usize = arg(&args, "--threads", "16").parse().unwrap_or(16);
    let keys: u64 = arg(&args, "--keys", "1000").parse().unwrap_or(1000);
    let value_bytes: usize = arg(&args, "--value-bytes", "100").parse().unwrap_or(100);
    let nodes: Vec<String> = arg(
        &args,
        "--nodes",
        "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003",
    )
    .split(',')
    .map(|s| s.to_string())
    .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (stop, latencies, errors, nodes) = (
            stop.clone(),
            latencies.clone(),
            errors.clone(),
            nodes.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let value = vec![b'v'; value_bytes];
            let mut i = t as u64;
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("key{}", (i >> 33) % keys);
                let node = &nodes[(i >> 20) as usize % nodes.len()];
                let t0 = Instant::now();
                match http_request(
                    node,
                    "PUT",
                    &format!("/kv/{}", key),
                    &[],
                    &value,
                    Duration::from_secs(10),
                ) {
                    Ok(r) if r.status == 200 => mine.push(t0.elapsed()),
                    _ => *errors.lock().unwrap_or_else(|e| e.into_inner()) += 1,
                }
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(mine);
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} writes in {:.1} s = {:.0} writes/s ({} threads, {} keys, {} B values), errors {}",
        l.len(),
        elapsed,
        l.len() as f64 / elapsed,
        threads,
        keys,
        value_bytes,
        errors.lock().unwrap_or_else(|e| e.into_inner())
    );
    println!(
        "latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        l.last().copied().unwrap_or_default()
    );
}
