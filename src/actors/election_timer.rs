//! The randomized election timeout (§5.2): restarted by the consensus core whenever it hears
//! from a valid leader or grants a vote; when it fires, the core starts an election (or, as
//! leader, checks that a majority still answers).
//!
//! The countdown measures time this node spent listening. When the timer fires late
//! because the node's thread did not run (a machine out of CPU), the silence it measured
//! is partly the node's own: the leader's heartbeats may be waiting in the socket. So a
//! late timer first waits a short grace, in which what has arrived is handled (and resets
//! it); only a timer that fires on time, or late again after its graces, reports a timeout.
//! Like a tick-driven timer whose missed ticks are dropped, this only ever delays an
//! election: safety does not depend on timing.

use std::time::Duration;

use actix::prelude::*;
use log::debug;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Fired when no reset arrived for a whole timeout. `generation` names the reset that armed
/// it, so the core can drop a timeout that raced with a newer reset.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ElectionTimeout {
    pub generation: u64,
}

/// Restart the countdown with a fresh random duration.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ResetTimer {
    pub generation: u64,
}

/// Stop the timer for good (node shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopTimer;

pub struct ElectionTimer {
    min: Duration,
    max: Duration,
    rng: StdRng,
    target: Recipient<ElectionTimeout>,
    armed: Option<SpawnHandle>,
    /// The generation of the latest reset: a countdown of an earlier one is stale (actix
    /// may still run a cancelled timer that was already due).
    generation: u64,
}

/// Graces a late timer may take before it reports the timeout anyway (a thread that keeps
/// stalling must still elect when the leader is gone).
const MAX_GRACES: u32 = 2;

impl ElectionTimer {
    /// `seed` makes the sequence of timeouts reproducible (the simulator relies on it).
    pub fn new(
        min: Duration,
        max: Duration,
        seed: u64,
        target: Recipient<ElectionTimeout>,
    ) -> Self {
        ElectionTimer {
            min,
            max: max.max(min),
            rng: StdRng::seed_from_u64(seed),
            target,
            armed: None,
            generation: 0,
        }
    }

    fn random_timeout(&mut self) -> Duration {
        let min = self.min.as_millis() as u64;
        let max = self.max.as_millis() as u64;
        Duration::from_millis(self.rng.gen_range(min..=max))
    }

    /// Lateness beyond which a firing counts as a stall of this node, and the grace then
    /// given: a quarter of the shortest timeout.
    fn stall_threshold(&self) -> Duration {
        self.min / 4
    }

    /// Arms the countdown for `timeout` from now; `graces` were already taken.
    fn arm(&mut self, generation: u64, timeout: Duration, graces: u32, ctx: &mut Context<Self>) {
        let due = Instant::now() + timeout;
        let stalled_before = crate::stall::stalled_so_far();
        self.armed = Some(ctx.run_later(timeout, move |act, ctx| {
            if generation != act.generation {
                return;
            }
            act.armed = None;
            // Time not spent listening: how late this firing is, or (when the thread
            // stalled earlier in the countdown) what the thread's watchdog saw.
            let late = Instant::now().saturating_duration_since(due);
            let stalled = crate::stall::stalled_so_far().saturating_sub(stalled_before);
            let deaf = late.max(stalled);
            let grace = act.stall_threshold();
            if deaf >= grace && graces < MAX_GRACES {
                debug!(
                    "election timer: this node's thread did not run for {} ms of the \
                     countdown: {} ms of grace to handle what arrived meanwhile",
                    deaf.as_millis(),
                    grace.as_millis()
                );
                act.arm(generation, grace, graces + 1, ctx);
                return;
            }
            act.target.do_send(ElectionTimeout { generation });
        }));
    }
}

impl Actor for ElectionTimer {
    type Context = Context<Self>;
}

impl Handler<ResetTimer> for ElectionTimer {
    type Result = ();

    fn handle(&mut self, msg: ResetTimer, ctx: &mut Context<Self>) {
        if let Some(handle) = self.armed.take() {
            ctx.cancel_future(handle);
        }
        self.generation = msg.generation;
        let timeout = self.random_timeout();
        self.arm(msg.generation, timeout, 0, ctx);
    }
}

impl Handler<StopTimer> for ElectionTimer {
    type Result = ();

    fn handle(&mut self, _: StopTimer, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records when each timeout arrived.
    struct Clock(Arc<Mutex<Vec<(u64, Instant)>>>);

    impl Actor for Clock {
        type Context = Context<Self>;
    }

    impl Handler<ElectionTimeout> for Clock {
        type Result = ();

        fn handle(&mut self, msg: ElectionTimeout, _: &mut Context<Self>) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((msg.generation, Instant::now()));
        }
    }

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// Arms a 100 ms timer, then runs `stall` (which may jump the clock, as a thread that
    /// did not run sees it), then lets `after` pass; returns the timeouts seen, with their
    /// time after the start.
    fn run(stall: Duration, after: Duration, reset_after_stall: bool) -> Vec<(u64, Duration)> {
        let system = System::new();
        system.block_on(async move {
            tokio::time::pause();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let clock = Clock(seen.clone()).start();
            let timer = ElectionTimer::new(TIMEOUT, TIMEOUT, 7, clock.recipient()).start();
            let start = Instant::now();
            timer.do_send(ResetTimer { generation: 1 });
            tokio::task::yield_now().await;
            // The clock jumps without the timer task running in between: as on a thread
            // that got no CPU. The timer finds itself late when it next runs.
            tokio::time::advance(stall).await;
            if reset_after_stall {
                // What the core does once it has read and handled the heartbeat that
                // waited in the socket meanwhile: a few scheduler turns after the timer
                // task, which was due first, has run.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                timer.do_send(ResetTimer { generation: 2 });
            }
            tokio::time::sleep(after).await;
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            seen.into_iter().map(|(g, at)| (g, at - start)).collect()
        })
    }

    /// `seen` is one timeout of `generation`, at `at` (tokio's timer rounds up to the next
    /// millisecond).
    fn once(seen: &[(u64, Duration)], generation: u64, at: Duration) {
        assert!(
            matches!(seen, [(g, t)] if *g == generation && *t >= at && *t <= at + Duration::from_millis(2)),
            "expected one timeout of generation {generation} at {at:?}, got {seen:?}"
        );
    }

    #[test]
    fn a_timer_on_time_fires_at_its_timeout() {
        let seen = run(Duration::ZERO, Duration::from_millis(150), false);
        once(&seen, 1, TIMEOUT);
    }

    /// After a 300 ms stall, the heartbeat that arrived meanwhile resets the timer before
    /// it reports: no election for a silence this node did not observe.
    #[test]
    fn a_late_timer_lets_what_arrived_meanwhile_reset_it() {
        let seen = run(Duration::from_millis(300), Duration::from_millis(50), true);
        assert_eq!(seen, vec![], "the reset after the stall wins");
        let seen = run(Duration::from_millis(300), Duration::from_millis(200), true);
        once(&seen, 2, Duration::from_millis(400));
    }

    /// A stall earlier in the countdown, seen by the thread's watchdog, counts too: the
    /// timer fires on time but the node was deaf for part of it.
    #[test]
    fn a_stall_during_the_countdown_earns_a_grace() {
        let system = System::new();
        let seen = system.block_on(async move {
            tokio::time::pause();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let clock = Clock(seen.clone()).start();
            let timer = ElectionTimer::new(TIMEOUT, TIMEOUT, 7, clock.recipient()).start();
            let start = Instant::now();
            let every = Duration::from_millis(20);
            crate::stall::record_tick_for_test(start, every, Duration::ZERO);
            // The thread's watchdog, every 20 ms; at 60 ms it finds the thread was 30 ms
            // late: deaf for 30 ms of the countdown.
            actix::spawn(async move {
                for i in 1..=10 {
                    tokio::time::sleep(every).await;
                    let late = Duration::from_millis(if i == 3 { 30 } else { 0 });
                    crate::stall::record_tick_for_test(Instant::now(), every, late);
                }
            });
            timer.do_send(ResetTimer { generation: 1 });
            tokio::time::sleep(Duration::from_millis(160)).await;
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            seen.into_iter()
                .map(|(g, at)| (g, at - start))
                .collect::<Vec<_>>()
        });
        once(&seen, 1, Duration::from_millis(125));
    }

    /// With nothing arriving, a late timer still reports, after one grace of a quarter of
    /// the timeout.
    #[test]
    fn a_late_timer_still_fires_after_its_grace() {
        let seen = run(
            Duration::from_millis(300),
            Duration::from_millis(100),
            false,
        );
        once(&seen, 1, Duration::from_millis(325));
    }
}
