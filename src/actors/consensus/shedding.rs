//! Load shedding at the edge: while the leader's core refuses proposals because too much is
//! waiting to commit or to be applied (`LogLimits`), the gateway refuses writes itself,
//! without queueing them in the consensus actor's mailbox. A refusal that waited behind a
//! thousand queued requests took more than 100 ms under overload; one from the gateway
//! takes microseconds. Consensus switches it on when its core refuses a proposal for one
//! of those reasons, and off after any event that lets the core accept again (it checks
//! after everything it runs, the heartbeat tick included, so it cannot stay on).
//!
//! Only ever a refusal: a write refused here was never proposed, and the client is told
//! to retry, as the core would have told it. No Raft state is shared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether writes are refused at the gateway now, and why (the core's last reason).
#[derive(Clone, Debug, Default)]
pub struct Shedding(Arc<State>);

#[derive(Debug, Default)]
struct State {
    on: AtomicBool,
    reason: Mutex<String>,
}

impl Shedding {
    /// Refuse writes with `reason` until `stop`.
    pub fn start(&self, reason: &str) {
        let mut r = match self.0.reason.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        r.clear();
        r.push_str(reason);
        self.0.on.store(true, Ordering::Release);
    }

    pub fn stop(&self) {
        self.0.on.store(false, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.0.on.load(Ordering::Acquire)
    }

    /// Why a write would be refused now, if it would be.
    pub fn refusing(&self) -> Option<String> {
        if !self.is_on() {
            return None;
        }
        let r = match self.0.reason.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_from_start_to_stop_with_the_latest_reason() {
        let s = Shedding::default();
        let gateway = s.clone();
        assert_eq!(gateway.refusing(), None);
        s.start("overloaded: 10 entries");
        s.start("overloaded: 12 entries");
        assert_eq!(
            gateway.refusing().as_deref(),
            Some("overloaded: 12 entries")
        );
        s.stop();
        assert_eq!(gateway.refusing(), None);
        assert!(!gateway.is_on());
    }
}
