//! Checksummed, length-prefixed records: `[len: u32 LE][crc32: u32 LE][payload]`.
//!
//! A record cut short at the end of a file (a crash mid-write) is a *torn tail*: reported so
//! the caller can drop it. A bad record followed by more data is *corruption*: reported with
//! its offset, never skipped.

use std::io::Write;

/// Bytes before each payload.
pub const HEADER_LEN: usize = 8;
/// No record is larger than this; a bigger length field means garbage.
pub const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// Appends framed records to a buffer.
pub struct RecordWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> RecordWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        RecordWriter { buf }
    }

    pub fn push(&mut self, payload: &[u8]) {
        let crc = crc32fast::hash(payload);
        // Writing into a Vec cannot fail.
        let _ = self.buf.write_all(&(payload.len() as u32).to_le_bytes());
        let _ = self.buf.write_all(&crc.to_le_bytes());
        self.buf.extend_from_slice(payload);
    }
}

/// How reading a record file ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordReadOutcome {
    /// Every byte belonged to a valid record.
    Clean,
    /// The last record, starting at `offset`, is incomplete or fails its checksum and nothing
    /// follows it: a crash during the write. The caller truncates the file there.
    TornTail { offset: u64, reason: String },
    /// A bad record at `offset` with more data after it.
    Corrupt { offset: u64, reason: String },
}

/// Splits `data` into record payloads (each with its starting offset).
pub fn read_records(data: &[u8]) -> (Vec<(u64, &[u8])>, RecordReadOutcome) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < HEADER_LEN {
            return (
                out,
                RecordReadOutcome::TornTail {
                    offset: pos as u64,
                    reason: format!("{} header bytes of {}", rest.len(), HEADER_LEN),
                },
            );
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body_end = HEADER_LEN.saturating_add(len);
        if len > MAX_RECORD_LEN || body_end > rest.len() {
            // The length runs past the end of the file. If it is plausible this is a torn
            // write; an absurd length with lots of data after it is corruption.
            let reason = format!("record length {} but {} bytes remain", len, rest.len());
            let outcome = if len <= MAX_RECORD_LEN {
                RecordReadOutcome::TornTail {
                    offset: pos as u64,
                    reason,
                }
            } else {
                RecordReadOutcome::Corrupt {
                    offset: pos as u64,
                    reason,
                }
            };
            return (out, outcome);
        }
        let payload = &rest[HEADER_LEN..body_end];
        if crc32fast::hash(payload) != crc {
            let reason = "checksum mismatch".to_string();
            let outcome = if body_end == rest.len() {
                RecordReadOutcome::TornTail {
                    offset: pos as u64,
                    reason,
                }
            } else {
                RecordReadOutcome::Corrupt {
                    offset: pos as u64,
                    reason,
                }
            };
            return (out, outcome);
        }
        out.push((pos as u64, payload));
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
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_records(&buf).1,
            RecordReadOutcome::Corrupt { offset: 0, .. }
        ));
    }
}
