//! Checksummed, length-prefixed records:
//! `[len: u32 LE][crc32(len): u32 LE][crc32(payload): u32 LE][payload]`.
//!
//! The length has its own checksum, so a damaged length is never mistaken for a record
//! that runs past the end of the file. A record cut short at the end of a file (a crash
//! mid-write: the bytes are missing or zero) is a *torn tail*, reported so the caller can
//! drop it. Any other damage is *corruption*, reported with its offset and never skipped.
//!
//! Records are written in *batches*, one per write-and-fsync: a batch header record
//! (`BATCH_MAGIC`, the body's length and checksum) followed by the body's records. A batch
//! is acknowledged only once its fsync returns, and the next one is written only after
//! that, so recovery can tell the two kinds of damage apart (`read_batches`):
//! - damage in the *last* batch whose traces look like a write that never finished (the
//!   file ends inside it, or a whole disk sector of it is still zero, as when its pages
//!   reached the disk out of order) is a torn tail: that batch was never acknowledged;
//! - damage anywhere else is corruption: a later batch is intact (so this one had been
//!   synced), or the batch is complete with no unwritten sector (a bit flip in data that
//!   was acknowledged, such as the latest vote).

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

/// The first bytes of every batch header's payload.
pub const BATCH_MAGIC: &[u8; 8] = b"RKVBATCH";
/// Payload of a batch header: magic, body length (u64), body checksum (u32).
const BATCH_HEADER_PAYLOAD: usize = 20;
/// A batch header record, framing included.
pub const BATCH_HEADER_LEN: usize = HEADER_LEN + BATCH_HEADER_PAYLOAD;
/// The unit a disk writes atomically; a torn write leaves whole sectors unwritten (zero).
const SECTOR: usize = 512;

/// The header record that goes before `body` (itself framed records) on disk.
pub fn batch_header(body: &[u8]) -> [u8; BATCH_HEADER_LEN] {
    let mut payload = [0u8; BATCH_HEADER_PAYLOAD];
    payload[..8].copy_from_slice(BATCH_MAGIC);
    payload[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    payload[16..20].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let mut framed = Vec::with_capacity(BATCH_HEADER_LEN);
    RecordWriter::new(&mut framed).push(&payload);
    let mut out = [0u8; BATCH_HEADER_LEN];
    out.copy_from_slice(&framed);
    out
}

/// Why the batch at some offset does not read back whole.
struct Damage {
    /// Looks like a write that never finished (if nothing intact follows it).
    unfinished: bool,
    reason: String,
}

/// The body range of the intact batch at `pos`, or what is wrong with it.
fn check_batch(data: &[u8], pos: usize) -> Result<(usize, usize), Damage> {
    let rest = &data[pos..];
    let zeros = |b: &[u8]| b.iter().all(|x| *x == 0);
    if rest.len() < BATCH_HEADER_LEN {
        return Err(Damage {
            unfinished: true,
            reason: format!(
                "{} bytes of a {}-byte batch header",
                rest.len(),
                BATCH_HEADER_LEN
            ),
        });
    }
    // A valid record that is not a batch header: a log from before batches existed.
    if let (records, RecordReadOutcome::Clean | RecordReadOutcome::Corrupt { .. }) =
        read_records(&rest[..rest.len().min(HEADER_LEN + u32_at(rest, 0) as usize)])
    {
        if let Some((_, p)) = records.first() {
            if p.len() != BATCH_HEADER_PAYLOAD || &p[..8] != BATCH_MAGIC {
                return Err(Damage {
                    unfinished: false,
                    reason: "a record where a batch header belongs (a log written by an \
                             older raftkv?)"
                        .into(),
                });
            }
        }
    }
    let head = &rest[..BATCH_HEADER_LEN];
    let len_ok = crc32fast::hash(&head[0..4]) == u32_at(head, 4);
    let payload = &head[HEADER_LEN..];
    let framed_ok = len_ok
        && u32_at(head, 0) as usize == BATCH_HEADER_PAYLOAD
        && crc32fast::hash(payload) == u32_at(head, 8)
        && &payload[..8] == BATCH_MAGIC;
    if !framed_ok {
        return Err(Damage {
            // An unwritten sector reads as zeros; anything else is damage.
            unfinished: zeros(head),
            reason: "damaged batch header".into(),
        });
    }
    let body_len = u64::from_le_bytes(payload[8..16].try_into().unwrap_or([0xff; 8]));
    let body_crc = u32_at(payload, 16);
    let body_start = pos + BATCH_HEADER_LEN;
    let available = (data.len() - body_start) as u64;
    if body_len > available {
        return Err(Damage {
            unfinished: true,
            reason: format!("batch of {} bytes but {} remain", body_len, available),
        });
    }
    let body_end = body_start + body_len as usize;
    if crc32fast::hash(&data[body_start..body_end]) != body_crc {
        // An unwritten sector inside the batch: a write that never finished. With none,
        // the batch reached the disk whole and was damaged after.
        let mut s = body_start.div_ceil(SECTOR) * SECTOR;
        let mut unwritten = false;
        while s < body_end {
            if zeros(&data[s..(s + SECTOR).min(body_end)]) {
                unwritten = true;
                break;
            }
            s += SECTOR;
        }
        return Err(Damage {
            unfinished: unwritten,
            reason: if unwritten {
                "batch checksum mismatch with unwritten sectors".into()
            } else {
                "batch checksum mismatch in a complete batch".into()
            },
        });
    }
    Ok((body_start, body_end))
}

/// Is there an intact batch anywhere after `from`?
fn intact_batch_after(data: &[u8], from: usize) -> bool {
    let mut at = from;
    while at + BATCH_MAGIC.len() <= data.len() {
        let Some(found) = data[at..]
            .windows(BATCH_MAGIC.len())
            .position(|w| w == BATCH_MAGIC)
        else {
            return false;
        };
        let magic = at + found;
        if magic >= from + HEADER_LEN && check_batch(data, magic - HEADER_LEN).is_ok() {
            return true;
        }
        at = magic + 1;
    }
    false
}

/// Splits a file of batches into record payloads (each with its starting offset), and says
/// how it ended (see the module comment for the torn-versus-corrupt rule).
#[cfg(test)]
pub fn read_batches(data: &[u8]) -> (Vec<(u64, &[u8])>, RecordReadOutcome) {
    let (records, outcome) = read_batches_marked(data);
    (
        records.into_iter().map(|(_, o, p)| (o, p)).collect(),
        outcome,
    )
}

/// [`read_batches`], with the offset of the batch each record belongs to first.
#[allow(clippy::type_complexity)]
pub fn read_batches_marked(data: &[u8]) -> (Vec<(u64, u64, &[u8])>, RecordReadOutcome) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let offset = pos as u64;
        match check_batch(data, pos) {
            Ok((start, end)) => {
                let (records, outcome) = read_records(&data[start..end]);
                if let RecordReadOutcome::TornTail { offset: o, reason }
                | RecordReadOutcome::Corrupt { offset: o, reason } = outcome
                {
                    return (
                        out,
                        RecordReadOutcome::Corrupt {
                            offset: start as u64 + o,
                            reason: format!("{} inside a batch whose checksum matches", reason),
                        },
                    );
                }
                out.extend(
                    records
                        .into_iter()
                        .map(|(o, p)| (offset, start as u64 + o, p)),
                );
                pos = end;
            }
            Err(damage) => {
                let outcome = if intact_batch_after(data, pos + 1) {
                    RecordReadOutcome::Corrupt {
                        offset,
                        reason: format!("{}, with acknowledged batches after it", damage.reason),
                    }
                } else if damage.unfinished {
                    RecordReadOutcome::TornTail {
                        offset,
                        reason: damage.reason,
                    }
                } else {
                    RecordReadOutcome::Corrupt {
                        offset,
                        reason: damage.reason,
                    }
                };
                return (out, outcome);
            }
        }
    }
    (out, RecordReadOutcome::Clean)
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

    /// Batches as the log writes them: header, then the framed records.
    fn batches(bodies: &[&[&[u8]]]) -> (Vec<u8>, Vec<usize>) {
        let mut file = Vec::new();
        let mut starts = Vec::new();
        for records in bodies {
            let mut body = Vec::new();
            let mut w = RecordWriter::new(&mut body);
            for r in *records {
                w.push(r);
            }
            starts.push(file.len());
            file.extend_from_slice(&batch_header(&body));
            file.extend_from_slice(&body);
        }
        (file, starts)
    }

    fn payloads<'a>(recs: &[(u64, &'a [u8])]) -> Vec<&'a [u8]> {
        recs.iter().map(|(_, p)| *p).collect()
    }

    #[test]
    fn batches_read_back_and_every_cut_of_the_last_is_torn() {
        let big = vec![7u8; 3000];
        let (file, starts) = batches(&[&[b"vote"], &[b"a", &big, b"b"]]);
        let (recs, outcome) = read_batches(&file);
        assert_eq!(outcome, RecordReadOutcome::Clean);
        assert_eq!(payloads(&recs), vec![&b"vote"[..], b"a", &big[..], b"b"]);
        for cut in starts[1] + 1..file.len() {
            let (recs, outcome) = read_batches(&file[..cut]);
            assert_eq!(payloads(&recs), vec![&b"vote"[..]], "cut at {}", cut);
            assert!(
                matches!(outcome, RecordReadOutcome::TornTail { offset, .. } if offset == starts[1] as u64),
                "cut at {}: {:?}",
                cut,
                outcome
            );
        }
    }

    /// A crash while a multi-page batch was being written, its pages reaching the disk out
    /// of order: the end is there, a sector in the middle (or the header's) is not. That
    /// batch was never acknowledged: a torn tail, not corruption.
    #[test]
    fn a_last_batch_with_unwritten_sectors_is_torn_whatever_their_order() {
        let big = vec![7u8; 4000];
        let (file, starts) = batches(&[&[b"vote"], &[b"a", &big, b"b"]]);
        let start = starts[1];
        let first_full_sector = (start + BATCH_HEADER_LEN).div_ceil(SECTOR) * SECTOR;
        // A middle sector missing.
        let mut middle = file.clone();
        middle[first_full_sector + SECTOR..first_full_sector + 2 * SECTOR].fill(0);
        // The header's bytes missing, the rest written.
        let mut header = file.clone();
        header[start..start + BATCH_HEADER_LEN].fill(0);
        for (name, f) in [("middle", middle), ("header", header)] {
            let (recs, outcome) = read_batches(&f);
            assert_eq!(payloads(&recs), vec![&b"vote"[..]], "{}", name);
            assert!(
                matches!(outcome, RecordReadOutcome::TornTail { offset, .. } if offset == start as u64),
                "{}: {:?}",
                name,
                outcome
            );
        }
    }

    /// A bit flip in the last batch, which was synced and acknowledged (the latest vote,
    /// say), is corruption: dropping it would forget a vote.
    #[test]
    fn a_flipped_bit_in_the_last_acknowledged_batch_is_corruption() {
        let (mut file, starts) = batches(&[&[b"entry"], &[b"vote for node 2"]]);
        let n = file.len();
        file[n - 3] ^= 0x04;
        let (recs, outcome) = read_batches(&file);
        assert_eq!(payloads(&recs), vec![&b"entry"[..]]);
        assert!(
            matches!(outcome, RecordReadOutcome::Corrupt { offset, .. } if offset == starts[1] as u64),
            "{:?}",
            outcome
        );
        // Its header damaged by a flip (not zeroed) likewise.
        let (mut file, _) = batches(&[&[b"entry"], &[b"vote for node 2"]]);
        file[starts[1] + 14] ^= 0x01;
        assert!(matches!(
            read_batches(&file).1,
            RecordReadOutcome::Corrupt { .. }
        ));
    }

    #[test]
    fn damage_followed_by_an_intact_batch_is_corruption_even_if_it_looks_unwritten() {
        let big = vec![7u8; 2000];
        let (mut file, starts) = batches(&[&[b"one"], &[&big], &[b"three"]]);
        let sector = (starts[1] + BATCH_HEADER_LEN).div_ceil(SECTOR) * SECTOR;
        file[sector..sector + SECTOR].fill(0);
        let (recs, outcome) = read_batches(&file);
        assert_eq!(payloads(&recs), vec![&b"one"[..]]);
        assert!(
            matches!(&outcome, RecordReadOutcome::Corrupt { offset, reason } if *offset == starts[1] as u64 && reason.contains("acknowledged batches after it")),
            "{:?}",
            outcome
        );
    }

    #[test]
    fn records_without_batch_headers_are_refused() {
        let file = three_records();
        let (recs, outcome) = read_batches(&file);
        assert!(recs.is_empty());
        assert!(
            matches!(&outcome, RecordReadOutcome::Corrupt { offset: 0, reason } if reason.contains("older raftkv")),
            "{:?}",
            outcome
        );
    }
}
