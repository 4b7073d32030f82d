//! The key layout of the RocksDB store: the key spaces, and the keys of each (see the
//! table in [`super`]).

pub(super) const FORMAT: &[u8] = b"datafusion-fintech/2";
/// The layout before the commit log, which this build opens and upgrades.
pub(super) const FORMAT_1: &[u8] = b"datafusion-fintech/1";
pub(super) const META: u8 = 0x00;
pub(super) const PIPELINE: u8 = 0x01;
pub(super) const STATE: u8 = 0x02;
pub(super) const DATA: u8 = 0x03;
pub(super) const UNDO: u8 = 0x04;
/// Number of hash buckets a state's keys are spread over.
pub const BUCKETS: u64 = 4096;

pub(super) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Present when the last commit of state `state_no` wrote at least `1/READ_AHEAD_RATIO` of
/// its keys: the next query of the pipeline probably reads as much, and reads the state ahead
/// at its first point read instead of after `1/READ_AHEAD_RATIO` of its keys (see
/// [`super::read_ahead`]). Layouts before it ignore the key.
pub(super) fn read_ahead_key(state_no: u32) -> Vec<u8> {
    let mut k = meta_key("read_ahead");
    k.extend_from_slice(&state_no.to_be_bytes());
    k
}

pub(super) fn pipeline_key(pipeline: &str) -> Vec<u8> {
    let mut k = vec![PIPELINE];
    k.extend_from_slice(pipeline.as_bytes());
    k
}

pub(super) fn state_prefix(pipeline: &str) -> Vec<u8> {
    let mut k = vec![STATE];
    k.extend_from_slice(pipeline.as_bytes());
    k.push(0);
    k
}

pub(super) fn state_key(pipeline: &str, state_id: &str) -> Vec<u8> {
    let mut k = state_prefix(pipeline);
    k.extend_from_slice(state_id.as_bytes());
    k
}

/// A stable 64-bit FNV-1a: the bucket of a key must never change between builds.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(super) fn bucket(key: &[u8]) -> u16 {
    (fnv1a(key) % BUCKETS) as u16
}

/// Appends the data key of `key` in state `state_no` to `out`; returns the key's bucket.
pub(super) fn push_data_key(out: &mut Vec<u8>, state_no: u32, key: &[u8]) -> u16 {
    let bucket = bucket(key);
    out.push(DATA);
    out.extend_from_slice(&state_no.to_be_bytes());
    out.extend_from_slice(&bucket.to_be_bytes());
    out.extend_from_slice(key);
    bucket
}

/// The state number of a data key.
pub(super) fn state_no_of(datakey: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(datakey.get(1..5)?.try_into().ok()?))
}

#[cfg(test)]
pub(super) fn data_key(state_no: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_data_key(&mut out, state_no, key);
    out
}

pub(super) fn data_prefix(state_no: u32) -> Vec<u8> {
    let mut k = vec![DATA];
    k.extend_from_slice(&state_no.to_be_bytes());
    k
}

pub(super) fn undo_prefix(attempt: u64) -> Vec<u8> {
    let mut k = vec![UNDO];
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

pub(super) fn undo_key(attempt: u64, datakey: &[u8], seq: u64) -> Vec<u8> {
    let mut k = undo_prefix(attempt);
    k.extend_from_slice(&(datakey.len() as u32).to_be_bytes());
    k.extend_from_slice(datakey);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The smallest key greater than every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}
