//! All binary encoding lives here, so the format (bincode 1.3 today) can be swapped in one place.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// Encoding or decoding failed; the message says why.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(String);

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_little_endian()
        .with_varint_encoding()
        .reject_trailing_bytes()
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    options()
        .with_no_limit()
        .serialize(value)
        .map_err(|e| CodecError(e.to_string()))
}

/// Appends the encoding of `value` to `buf`.
pub fn encode_into<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    options()
        .with_no_limit()
        .serialize_into(buf, value)
        .map_err(|e| CodecError(e.to_string()))
}

/// Decodes exactly one `T` from `bytes`; garbage, truncation and trailing bytes are errors.
/// No length prefix may claim more than the input holds, so garbage never makes the decoder
/// allocate more than the input's size.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| CodecError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v: (u64, String, Vec<u8>) = (7, "k".into(), vec![1, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), v);
        assert!(decode::<(u64, String, Vec<u8>)>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<(u64, String, Vec<u8>)>(&[0xff; 16]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode::<(u64, String, Vec<u8>)>(&long).is_err());
        // A length prefix claiming far more than the input holds is refused up front.
        let mut claims_huge = vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        claims_huge.extend_from_slice(b"tiny");
        assert!(decode::<Vec<u8>>(&claims_huge).is_err());
    }

    /// Byte fields marked `serde_bytes` (values, commands, snapshot chunks) encode exactly
    /// as a plain `Vec<u8>` does, so logs, snapshots and peers written before they were
    /// marked still decode; and the refusals above hold for them too.
    #[test]
    fn byte_fields_keep_the_plain_vec_encoding() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Plain(Vec<u8>, Option<Vec<u8>>);
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Marked(
            #[serde(with = "serde_bytes")] Vec<u8>,
            #[serde(with = "serde_bytes")] Option<Vec<u8>>,
        );
        for len in [0usize, 1, 250, 251, 65_536, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for opt in [None, Some(data.clone())] {
                let plain = encode(&Plain(data.clone(), opt.clone())).unwrap();
                let marked = encode(&Marked(data.clone(), opt.clone())).unwrap();
                assert_eq!(plain, marked, "length {}", len);
                assert_eq!(
                    decode::<Marked>(&plain).unwrap(),
                    Marked(data.clone(), opt.clone())
                );
                assert!(decode::<Marked>(&plain[..plain.len() - 1]).is_err());
            }
        }
        let mut claims_huge = vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        claims_huge.extend_from_slice(b"tiny");
        claims_huge.push(0);
        assert!(decode::<Marked>(&claims_huge).is_err());
    }
}
