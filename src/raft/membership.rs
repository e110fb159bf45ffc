//! Cluster membership (thesis chapter 4): who votes, who only learns, and where each
//! member listens. A configuration travels in the log as a [`Payload::Config`] entry and in
//! snapshots; a server uses the latest one in its log, committed or not (§4.1: a
//! configuration takes effect when it is appended).
//!
//! [`Payload::Config`]: super::types::Payload::Config

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::quorum::quorum_size;
use super::types::{MemberAddrs, Membership, NodeId};

/// One change to a configuration: a single server at a time (§4.1), so any two
/// consecutive configurations have overlapping majorities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new server joins as a learner; it is promoted once it has caught up.
    AddLearner { id: NodeId, addrs: MemberAddrs },
    /// A caught-up learner becomes a voter.
    Promote { id: NodeId },
    /// A voter or learner leaves.
    Remove { id: NodeId },
}

impl fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipChange::AddLearner { id, addrs } => write!(
                f,
                "add node {} as a learner (raft {}, http {})",
                id, addrs.raft_addr, addrs.http_addr
            ),
            MembershipChange::Promote { id } => write!(f, "promote learner node {} to voter", id),
            MembershipChange::Remove { id } => write!(f, "remove node {}", id),
        }
    }
}

impl Membership {
    /// Every listed server is a voter (a cluster bootstrapped from config files).
    pub fn with_voters(voters: impl IntoIterator<Item = (NodeId, MemberAddrs)>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeMap::new(),
        }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains_key(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    pub fn addrs(&self, id: NodeId) -> Option<&MemberAddrs> {
        self.voters.get(&id).or_else(|| self.learners.get(&id))
    }

    /// Every member but `me`: the servers a leader replicates to.
    pub fn others(&self, me: NodeId) -> Vec<NodeId> {
        self.voters
            .keys()
            .chain(self.learners.keys())
            .copied()
            .filter(|id| *id != me)
            .collect()
    }

    /// Voters other than `me`.
    pub fn other_voters(&self, me: NodeId) -> Vec<NodeId> {
        self.voters.keys().copied().filter(|id| *id != me).collect()
    }

    /// Votes or acknowledgements that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        quorum_size(self.voters.len())
    }

    /// How many of `ids` are voters.
    pub fn count_voters<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> usize {
        ids.into_iter().filter(|id| self.is_voter(**id)).count()
    }

    /// The configuration after `change`, or why the change makes no sense here.
    pub fn after(&self, change: &MembershipChange) -> Result<Membership, String> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner { id, addrs } => {
                if self.contains(*id) {
                    return Err(format!("node {} is already a member", id));
                }
                if addrs.raft_addr.is_empty() || addrs.http_addr.is_empty() {
                    return Err("a new member needs raft_addr and http_addr".into());
                }
                next.learners.insert(*id, addrs.clone());
            }
            MembershipChange::Promote { id } => match next.learners.remove(id) {
                Some(addrs) => {
                    next.voters.insert(*id, addrs);
                }
                None => return Err(format!("node {} is not a learner", id)),
            },
            MembershipChange::Remove { id } => {
                if next.voters.remove(id).is_none() && next.learners.remove(id).is_none() {
                    return Err(format!("node {} is not a member", id));
                }
                if next.voters.is_empty() {
                    return Err(format!(
                        "node {} is the last voter: a cluster needs at least one",
                        id
                    ));
                }
            }
        }
        Ok(next)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: &BTreeMap<NodeId, MemberAddrs>| {
            m.keys()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "voters [{}]", list(&self.voters))?;
        if !self.learners.is_empty() {
            write!(f, " learners [{}]", list(&self.learners))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u64) -> MemberAddrs {
        MemberAddrs {
            raft_addr: format!("127.0.0.1:{}", 9000 + n),
            http_addr: format!("127.0.0.1:{}", 8000 + n),
        }
    }

    #[test]
    fn one_server_at_a_time() {
        let m = Membership::with_voters((1..=3).map(|n| (n, addrs(n))));
        assert_eq!(m.quorum(), 2);
        let m = m
            .after(&MembershipChange::AddLearner {
                id: 4,
                addrs: addrs(4),
            })
            .unwrap();
        // A learner counts in no quorum.
        assert_eq!(m.quorum(), 2);
        assert_eq!(m.others(1), vec![2, 3, 4]);
        assert!(m
            .after(&MembershipChange::AddLearner {
                id: 4,
                addrs: addrs(4)
            })
            .is_err());
        let m = m.after(&MembershipChange::Promote { id: 4 }).unwrap();
        assert_eq!(m.quorum(), 3);
        assert!(m.after(&MembershipChange::Promote { id: 4 }).is_err());
        let m = m.after(&MembershipChange::Remove { id: 3 }).unwrap();
        assert_eq!(m.to_string(), "voters [1,2,4]");
        assert!(m.after(&MembershipChange::Remove { id: 3 }).is_err());
        let one = Membership::with_voters([(1, addrs(1))]);
        assert!(one.after(&MembershipChange::Remove { id: 1 }).is_err());
    }
}
