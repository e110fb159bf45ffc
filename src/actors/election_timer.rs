//! The randomized election timeout (§5.2): restarted by the consensus core whenever it hears
//! from a valid leader or grants a vote; when it fires, the core starts an election (or, as
//! leader, checks that a majority still answers).

use std::time::Duration;

use actix::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
}

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
        }
    }

    fn random_timeout(&mut self) -> Duration {
        let min = self.min.as_millis() as u64;
        let max = self.max.as_millis() as u64;
        Duration::from_millis(self.rng.gen_range(min..=max))
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
        let timeout = self.random_timeout();
        let generation = msg.generation;
        self.armed = Some(ctx.run_later(timeout, move |act, _| {
            act.armed = None;
            act.target.do_send(ElectionTimeout { generation });
        }));
    }
}

impl Handler<StopTimer> for ElectionTimer {
    type Result = ();

    fn handle(&mut self, _: StopTimer, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
