//! A watchdog on the thread that runs the consensus core, its Replicators and the peer
//! connections. Heartbeats go out from that thread; when it does not run for a while,
//! followers stop hearing from their leader and may elect another. The watchdog says so
//! in the log (once per interval), and tells the two causes apart: the thread was busy
//! with work of its own, or it waited for a CPU (the machine is overloaded).

use std::time::Duration;

use log::warn;
use tokio::time::{Instant, MissedTickBehavior};

use crate::net::LogEvery;
use crate::raft::NodeId;

/// CPU time this thread has used (zero where the clock is not available).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Starts the watchdog on the current thread (an actix arbiter's): it wakes every
/// `every` and warns when a wake-up comes `threshold` or more late.
pub fn watch_current_thread(node: NodeId, every: Duration, threshold: Duration) {
    actix::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut reports = LogEvery::new(Duration::from_secs(5));
        let (mut last, mut last_cpu) = (Instant::now(), thread_cpu());
        loop {
            ticks.tick().await;
            let (now, cpu) = (Instant::now(), thread_cpu());
            let late = now.duration_since(last).saturating_sub(every);
            if late >= threshold {
                let ran = cpu.saturating_sub(last_cpu);
                if let Some(held) = reports.check() {
                    let why = if ran * 2 >= late {
                        "busy with its own work"
                    } else {
                        "waiting for a CPU: the machine is overloaded"
                    };
                    warn!(
                        "[node {}] the consensus thread stalled for {} ms (it ran {} ms of \
                         them: {}); heartbeats and replication waited ({} such reports \
                         held back)",
                        node,
                        late.as_millis(),
                        ran.as_millis(),
                        why,
                        held
                    );
                }
            }
            (last, last_cpu) = (now, cpu);
        }
    });
}
