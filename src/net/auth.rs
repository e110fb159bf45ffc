//! Peer authentication: both ends of a peer connection prove that they know the cluster
//! secret (HMAC-SHA256 over the handshake), before any Raft message is read.
//!
//! The caller sends `Hello` with a fresh nonce; the listener answers `Welcome` with its own
//! nonce and a proof over both; the caller answers `Proof`; the listener answers `Accepted`.
//! A proof binds the cluster id, both node ids and both nonces, so it cannot be replayed on
//! another connection or shown to another node. Without a secret the handshake runs the
//! same way with an empty key: it then checks nothing but the cluster id and node ids.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::Hello;
use crate::raft::NodeId;

/// The shared secret, read from `cluster_secret_file` (empty: peers are not authenticated).
#[derive(Clone, Default)]
pub struct ClusterSecret(Vec<u8>);

/// Shortest secret accepted from a file.
pub const MIN_SECRET_BYTES: usize = 16;

impl ClusterSecret {
    /// No secret: peers are not authenticated.
    pub fn none() -> Self {
        ClusterSecret(Vec::new())
    }

    /// The secret in `text` (surrounding white space ignored).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret has {} bytes; at least {} are needed",
                s.len(),
                MIN_SECRET_BYTES
            ));
        }
        Ok(ClusterSecret(s.as_bytes().to_vec()))
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    fn mac(&self, label: &[u8], hello: &Hello, listener: NodeId, nonce: &[u8; 16]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, the empty one included, so the fallback (a zero
        // key) is never used.
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        m.update(label);
        m.update(hello.cluster_id.as_bytes());
        m.update(&[0]);
        m.update(&hello.node_id.to_le_bytes());
        m.update(&listener.to_le_bytes());
        m.update(&hello.nonce);
        m.update(nonce);
        m
    }

    /// `side`'s proof for the handshake that began with `hello` to `listener`, given the
    /// listener's nonce.
    pub fn proof(&self, side: Side, hello: &Hello, listener: NodeId, nonce: &[u8; 16]) -> [u8; 32] {
        self.mac(side.label(), hello, listener, nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks `side`'s proof (in constant time).
    pub fn verify(
        &self,
        side: Side,
        hello: &Hello,
        listener: NodeId,
        nonce: &[u8; 16],
        proof: &[u8; 32],
    ) -> bool {
        self.mac(side.label(), hello, listener, nonce)
            .verify_slice(proof)
            .is_ok()
    }
}

/// Which end of a connection a proof comes from: each has its own label, so one end's
/// proof can never be replayed as the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Caller,
    Listener,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Caller => b"raftkv caller",
            Side::Listener => b"raftkv listener",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_and_handshake() {
        let a = ClusterSecret::from_text("0123456789abcdef-secret\n").unwrap();
        let b = ClusterSecret::from_text("another secret of enough bytes").unwrap();
        let hello = Hello::new("c", 1, 2);
        let n = [9u8; 16];
        let p = a.proof(Side::Listener, &hello, 2, &n);
        assert!(a.verify(Side::Listener, &hello, 2, &n, &p));
        assert!(
            !b.verify(Side::Listener, &hello, 2, &n, &p),
            "another secret"
        );
        assert!(
            !a.verify(Side::Listener, &hello, 3, &n, &p),
            "another listener"
        );
        assert!(
            !a.verify(Side::Listener, &hello, 2, &[8u8; 16], &p),
            "another nonce"
        );
        assert!(
            !a.verify(Side::Caller, &hello, 2, &n, &p),
            "a listener proof is no caller proof"
        );
        let other = Hello::new("c", 1, 2);
        assert!(
            !a.verify(Side::Listener, &other, 2, &n, &p),
            "another caller nonce"
        );
        assert!(ClusterSecret::from_text("short").is_err());
    }
}
