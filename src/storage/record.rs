//! Checksummed, length-prefixed records:
//! `[len: u32 LE][crc32(len): u32 LE][crc32(payload): u32 LE][payload]`.
//!
//! The length has its own checksum, so a damaged length is never mistaken for a record
//! that runs past the end of the file. A record cut short at the end of a file (a crash
//! mid-write: the bytes are missing or zero) is a *torn tail*, reported so the caller can
//! drop it. Any other damage is *corruption*, reported with its offset and never skipped.

use std::io::Write;

/// Bytes before each payload.
pub const HEADER_LEN: usize = 12;

/// Appends framed records to a buffer.
pub struct RecordWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> RecordWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        RecordWriter { buf }
    }

    pub fn push(&mut self, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        // Writing into a Vec cannot fail.
        let _ = self.buf.write_all(&len);
        let _ = self.buf.write_all(&crc32fast::hash(&len).to_le_bytes());
        let _ = self.buf.write_all(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
    }
}

/// How reading a record file ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordReadOutcome {
    /// Every byte belonged to a valid record.
    Clean,
    /// The last record, starting at `offset`, is incomplete: a crash during its write. The
    /// caller truncates the file there.
    TornTail { offset: u64, reason: String },
    /// A damaged record at `offset` with real data after it.
    Corrupt { offset: u64, reason: String },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits `data` into record payloads (each with its starting offset).
pub fn read_records(data: &[u8]) -> (Vec<(u64, &[u8])>, RecordReadOutcome) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        let offset = pos as u64;
        // Bytes that never made it to disk read back as missing or zero.
        let only_zeros = |from: usize| rest[from.min(rest.len())..].iter().all(|b| *b == 0);
        let torn = |reason: String| RecordReadOutcome::TornTail { offset, reason };
        let corrupt = |reason: String| RecordReadOutcome::Corrupt { offset, reason };
        if rest.len() < HEADER_LEN {
            return (
                out,
                torn(format!("{} header bytes of {}", rest.len(), HEADER_LEN)),
            );
        }
        let len_bytes = &rest[0..4];
        let len = u32_at(rest, 0) as usize;
        if crc32fast::hash(len_bytes) != u32_at(rest, 4) {
            let reason = "damaged record header".to_string();
            return (
                out,
                if only_zeros(0) {
                    torn(reason)
                } else {
                    corrupt(reason)
                },
            );
        }
        let body_end = HEADER_LEN + len;
        if body_end > rest.len() {
            return (
                out,
                torn(format!("record of {} bytes but {} remain", len, rest.len())),
            );
        }
        let payload = &rest[HEADER_LEN..body_end];
        if crc32fast::hash(payload) != u32_at(rest, 8) {
            let reason = "checksum mismatch".to_string();
            return (
                out,
                if only_zeros(body_end) {
                    torn(reason)
                } else {
                    corrupt(reason)
                },
            );
        }
        out.push((offset, payload));
        pos += body_end;
    }
    (out, RecordReadOutcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_records() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = RecordWriter::new(&mut buf);
        w.push(b"one");
        w.push(b"two");
        w.push(b"three");
        buf
    }

    #[test]
    fn clean_file_reads_back() {
        let buf = three_records();
        let (recs, outcome) = read_records(&buf);
        assert_eq!(outcome, RecordReadOutcome::Clean);
        let payloads: Vec<&[u8]> = recs.iter().map(|(_, p)| *p).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn every_truncation_point_is_a_torn_tail_keeping_the_prefix() {
        let buf = three_records();
        let last_start = (HEADER_LEN + 3) * 2;
        for cut in last_start + 1..buf.len() {
            let (recs, outcome) = read_records(&buf[..cut]);
            assert_eq!(recs.len(), 2, "cut at {}", cut);
            assert!(
                matches!(outcome, RecordReadOutcome::TornTail { offset, .. } if offset == last_start as u64),
                "cut at {}: {:?}",
                cut,
                outcome
            );
        }
    }

    #[test]
    fn garbage_in_the_last_record_is_torn_but_in_the_middle_is_corrupt() {
        let mut buf = three_records();
        let n = buf.len();
        buf[n - 1] ^= 0xff;
        assert!(matches!(
            read_records(&buf).1,
            RecordReadOutcome::TornTail { .. }
        ));

        let mut buf = three_records();
        buf[HEADER_LEN + 1] ^= 0xff; // inside the first payload
        let (recs, outcome) = read_records(&buf);
        assert!(recs.is_empty());
        assert_eq!(
            outcome,
            RecordReadOutcome::Corrupt {
                offset: 0,
                reason: "checksum mismatch".into()
            }
        );
    }

    #[test]
    fn absurd_length_is_corruption() {
        let mut buf = three_records();
        buf[0..4].copy_from_slice(&7u32.to_le_bytes()); // plausible but wrong length
        assert!(matches!(
            read_records(&buf).1,
            RecordReadOutcome::Corrupt { offset: 0, .. }
        ));
    }
}
