//! The redo record of a commit: its state records, written into the metadata table in the one
//! ingest that commits the query, so that a crash while they are applied to the state tables
//! is finished by the next open.
//!
//! A redo record is cut into chunks of at most [`CHUNK_BYTES`]; each chunk is a sequence of
//! `state_no:u32 key_len:u32 key record_len:u32 record` (little-endian).

use datafusion::error::{DataFusionError, Result};

/// One write of a commit: (state number, key, record).
pub(super) type Write<'a> = (u32, &'a [u8], &'a [u8]);

/// The largest chunk: a metadata row holds one.
pub(super) const CHUNK_BYTES: usize = 8 << 20;

/// Cuts the writes `(state number, key, record)` into chunks.
pub(super) fn encode<'a>(writes: impl Iterator<Item = Write<'a>>) -> Vec<Vec<u8>> {
    let mut chunks = vec![Vec::new()];
    for (state_no, key, record) in writes {
        let len = 12 + key.len() + record.len();
        let last = chunks.last_mut().expect("one chunk");
        if !last.is_empty() && last.len() + len > CHUNK_BYTES {
            chunks.push(Vec::with_capacity(len));
        }
        let out = chunks.last_mut().expect("one chunk");
        out.extend_from_slice(&state_no.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    chunks
}

/// The writes of one chunk, in order.
pub(super) fn decode(chunk: &[u8]) -> Result<Vec<Write<'_>>> {
    let damaged = || DataFusionError::Execution("a redo record is truncated".into());
    let mut out = Vec::new();
    let mut rest = chunk;
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(damaged());
        }
        let (s, r) = rest.split_at(n);
        rest = r;
        Ok(s)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let mut left = chunk.len();
    while left > 0 {
        let state_no = u32_at(take(4)?);
        let key_len = u32_at(take(4)?) as usize;
        let key = take(key_len)?;
        let record_len = u32_at(take(4)?) as usize;
        let record = take(record_len)?;
        out.push((state_no, key, record));
        left -= 12 + key_len + record_len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_across_chunks() {
        let big = vec![7u8; CHUNK_BYTES / 3];
        let writes: Vec<(u32, Vec<u8>, Vec<u8>)> = (0..7u32)
            .map(|i| (i % 2, vec![i as u8; i as usize], big.clone()))
            .collect();
        let chunks = encode(writes.iter().map(|(n, k, r)| (*n, &k[..], &r[..])));
        assert_eq!(chunks.len(), 4, "three writes of a third fit in no chunk");
        let back: Vec<(u32, Vec<u8>, Vec<u8>)> = chunks
            .iter()
            .flat_map(|c| decode(c).unwrap())
            .map(|(n, k, r)| (n, k.to_vec(), r.to_vec()))
            .collect();
        assert_eq!(back, writes);
        let mut cut = chunks[0].clone();
        cut.pop();
        assert!(decode(&cut).unwrap_err().to_string().contains("truncated"));
    }
}
