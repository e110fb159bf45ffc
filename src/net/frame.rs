//! Peer frames: `[len: u32 LE][payload]`, payload encoded by [`crate::codec`]. The first
//! frame on a connection is a [`Hello`] naming the sender and its cluster.

use serde::{Deserialize, Serialize};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::codec::{self, CodecError};
use crate::raft::{Message, NodeId};

/// Largest frame accepted; a longer length prefix closes the connection.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;
/// Bumped when the wire format changes incompatibly (2: the authenticated handshake).
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest handshake frame: a connection that has not proved itself cannot make the node
/// allocate more.
pub const MAX_HANDSHAKE_BYTES: usize = 4096;
const MAGIC: [u8; 6] = *b"raftkv";

/// The caller's first frame: who is calling whom, for which cluster, with a fresh nonce
/// (see `auth.rs` for the rest of the handshake).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub magic: [u8; 6],
    pub version: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
    /// The node this connection is meant for.
    pub to: NodeId,
    pub nonce: [u8; 16],
}

/// The listener's answer to an acceptable `Hello`: its nonce and its proof of the secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub nonce: [u8; 16],
    pub proof: [u8; 32],
}

/// The caller's proof of the secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub proof: [u8; 32],
}

/// The listener accepted the caller: Raft messages follow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Accepted;

impl Hello {
    pub fn new(cluster_id: &str, node_id: NodeId, to: NodeId) -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            node_id,
            to,
            nonce: rand::random(),
        }
    }

    /// Why this handshake is unacceptable for a node of `cluster_id`, if it is.
    pub fn problem(&self, cluster_id: &str) -> Option<String> {
        if self.magic != MAGIC {
            Some("not a raftkv peer".into())
        } else if self.version != PROTOCOL_VERSION {
            Some(format!(
                "protocol version {} (we speak {})",
                self.version, PROTOCOL_VERSION
            ))
        } else if self.cluster_id != cluster_id {
            Some(format!(
                "cluster '{}' (we are '{}')",
                self.cluster_id, cluster_id
            ))
        } else {
            None
        }
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    Oversized(usize, usize),
    #[error("undecodable frame: {0}")]
    Garbage(#[from] CodecError),
}

/// Appends one framed value to `buf`.
pub fn encode_frame<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    codec::encode_into(buf, value)?;
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Reads one frame's payload.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    read_frame_limited(r, MAX_FRAME_BYTES).await
}

/// Reads one frame's payload of at most `limit` bytes.
async fn read_frame_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let len = read_len(r, limit).await?;
    read_payload(r, len).await
}

/// Reads a frame's length prefix (refusing one above `limit`); `Closed` at a clean end.
async fn read_len<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::Oversized(len, limit));
    }
    Ok(len)
}

async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Reads one handshake frame (`Hello`, `Welcome`, `Proof`, `Accepted`).
pub async fn read_handshake<T: serde::de::DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<T, FrameError> {
    Ok(codec::decode(
        &read_frame_limited(r, MAX_HANDSHAKE_BYTES).await?,
    )?)
}

pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Message, FrameError> {
    Ok(codec::decode(&read_frame(r).await?)?)
}

/// Reads a message frame's length prefix: `Closed` at a clean end, `Oversized` above
/// `MAX_FRAME_BYTES` (nothing is allocated for it).
pub async fn read_message_len<R: AsyncRead + Unpin>(r: &mut R) -> Result<usize, FrameError> {
    read_len(r, MAX_FRAME_BYTES).await
}

/// Reads the `len`-byte payload that follows `read_message_len` and decodes it.
pub async fn read_message_payload<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Message, FrameError> {
    Ok(codec::decode(&read_payload(r, len).await?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_input_is_an_error() {
        let mut buf = Vec::new();
        let hello = Hello::new("c", 3, 1);
        encode_frame(&mut buf, &hello).unwrap();
        let msg = Message::RequestVoteResponse {
            term: 4,
            vote_granted: true,
        };
        encode_frame(&mut buf, &msg).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_handshake::<Hello, _>(&mut r).await.unwrap(), hello);
        assert_eq!(read_message(&mut r).await.unwrap(), msg);
        assert!(matches!(
            read_message(&mut r).await,
            Err(FrameError::Closed)
        ));

        let huge = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
        assert!(matches!(
            read_message(&mut &huge[..]).await,
            Err(FrameError::Oversized(..))
        ));
        // Before the handshake is done, a few KiB at most.
        let big_hello = (MAX_HANDSHAKE_BYTES as u32 + 1).to_le_bytes();
        assert!(matches!(
            read_handshake::<Hello, _>(&mut &big_hello[..]).await,
            Err(FrameError::Oversized(..))
        ));
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_message(&mut &garbage[..]).await,
            Err(FrameError::Garbage(_))
        ));
        assert_eq!(
            Hello::new("other", 1, 2).problem("c"),
            Some("cluster 'other' (we are 'c')".into())
        );
    }
}
