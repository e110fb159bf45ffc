//! A watchdog on the thread that runs the consensus core, its Replicators and the peer
//! connections (large inbound frames are read on a thread of their own). Heartbeats go out from that thread; when it does not run for a while,
//! followers stop hearing from their leader and may elect another. The watchdog says so
//! in the log (once per interval), and tells the two causes apart: the thread was busy
//! with work of its own, or it waited for a CPU (the machine is overloaded). The election
//! timer on the same thread asks it how long the thread did not run during a countdown
//! ([`stalled_so_far`]).

use std::cell::Cell;
use std::time::Duration;

use log::warn;
use tokio::time::{Instant, MissedTickBehavior};

/// What the watchdog of this thread has seen: the stalls so far in total, and when it last
/// ran and how often it runs (`None` without a watchdog, as in the simulator).
#[derive(Clone, Copy)]
struct Seen {
    total: Duration,
    last: Option<(Instant, Duration)>,
}

thread_local! {
    static SEEN: Cell<Seen> = const {
        Cell::new(Seen {
            total: Duration::ZERO,
            last: None,
        })
    };
}

/// Lateness of a watchdog tick below this is scheduling noise, not a stall.
const NOISE: Duration = Duration::from_millis(5);

/// How long this thread has not run, in total, as far as its watchdog can tell by now
/// (including a stall that has just ended and the watchdog has not measured yet). Only
/// differences mean something: the election timer takes the stall time during its
/// countdown from it.
pub fn stalled_so_far() -> Duration {
    let seen = SEEN.with(Cell::get);
    let ongoing = seen.last.map_or(Duration::ZERO, |(at, every)| {
        let late = Instant::now()
            .saturating_duration_since(at)
            .saturating_sub(every);
        if late >= NOISE {
            late
        } else {
            Duration::ZERO
        }
    });
    seen.total + ongoing
}

/// The watchdog ran at `now`, `late` past its due time.
fn record_tick(now: Instant, every: Duration, late: Duration) {
    SEEN.with(|s| {
        let mut seen = s.get();
        if late >= NOISE {
            seen.total += late;
        }
        seen.last = Some((now, every));
        s.set(seen);
    });
}

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
        record_tick(last, every, Duration::ZERO);
        loop {
            ticks.tick().await;
            let (now, cpu) = (Instant::now(), thread_cpu());
            let late = now.duration_since(last).saturating_sub(every);
            record_tick(now, every, late);
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

/// Tells this thread's record that the watchdog ran at `now`, `late` past its due time:
/// what the watchdog does, for tests of what reads the record.
#[cfg(test)]
pub(crate) fn record_tick_for_test(now: Instant, every: Duration, late: Duration) {
    record_tick(now, every, late);
}
