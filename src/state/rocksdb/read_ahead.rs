//! Read-ahead: a query that reads much of a large state reads all of it in one scan.
//!
//! RocksDB finds a key that the commit log does not hold in 0.5–1.9 µs on the CI machine, even
//! when its blocks are cached: a filter probe, an index search and a data-block search, each
//! a few cache misses once the state outgrows the CPU caches. Reading a whole state into memory
//! costs ~0.4 µs per key (a scan at ~0.1 µs, and the index). So once the point reads of a
//! state add up to `1/READ_AHEAD_RATIO` of its keys (somewhat less than what reading it whole
//! costs), the store reads the whole state in one scan and answers its later reads from
//! memory. That is ski rental: a query that reads no further pays at most about three times
//! what its point reads cost; one that goes on to read most of the state pays much less.
//!
//! A stage also takes the values its undo entries keep from here: a query whose working set
//! overflows stages keys it loaded moments before, from tables larger than the block cache.
//!
//! The records are a copy of the state's data keys, valid for as long as nothing writes them:
//! a stage or a fold forgets the records of the keys it writes, and the end of the attempt (a
//! commit, a rollback) drops the pipeline's read-aheads, all under the writer lock, which a
//! scan also holds. The commit log is read before the read-ahead, so its newer records still
//! come first. The records take memory from `fintech.rocksdb.read_ahead_bytes`, shared by
//! every store of the process; a state that does not fit is read key by key.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::HashMap;
use datafusion::common::hash_map::Entry;

use super::fnv1a;

/// Point reads of a state, times this, at least its keys: the state is read ahead.
pub(super) const READ_AHEAD_RATIO: u64 = 8;

/// Bytes a record takes in the arena besides its key and record: two lengths, the data key's
/// prefix and the attempt that wrote it.
const ARENA_OVERHEAD: usize = 23;

/// Bytes a record takes in the index, at its emptiest after a resize.
const INDEX_BYTES: usize = 32;

/// Bytes held by the read-aheads of every store in the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes the read-aheads of every store in the process hold.
pub(super) fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Records of one state, read in one scan: `len:u32 datakey len:u32 value` each (the stored
/// value: the attempt that wrote the record, then the record), found by the hash of their
/// data key.
#[derive(Debug, Default)]
pub(super) struct Records {
    arena: Vec<u8>,
    /// FNV-1a of a data key -> its offset in `arena`. Of two keys with the same hash, the
    /// second is not indexed and is read from RocksDB.
    index: HashMap<u64, u32>,
    /// What `HELD` counts for these records.
    counted: usize,
}

impl Records {
    /// Estimated memory of the records of a state of `keys` keys and `bytes` bytes (keys and
    /// records, as the state's metadata counts them).
    pub fn estimate(keys: usize, bytes: usize) -> usize {
        bytes + keys * (ARENA_OVERHEAD + INDEX_BYTES)
    }

    /// Room for the records of a state of `keys` keys and `bytes` bytes.
    pub fn for_state(keys: usize, bytes: usize) -> Self {
        let mut records = Self {
            arena: Vec::with_capacity(bytes + keys * ARENA_OVERHEAD),
            index: HashMap::with_capacity(keys),
            counted: 0,
        };
        records.count();
        records
    }

    /// Adds the stored value of `datakey`; false if the arena cannot address it.
    pub fn push(&mut self, datakey: &[u8], value: &[u8]) -> bool {
        if self.arena.len() + datakey.len() + value.len() + 8 > u32::MAX as usize {
            return false;
        }
        let at = self.arena.len() as u32;
        match self.index.entry(fnv1a(datakey)) {
            Entry::Occupied(_) => return true,
            Entry::Vacant(v) => _ = v.insert(at),
        }
        for field in [datakey, value] {
            self.arena
                .extend_from_slice(&(field.len() as u32).to_le_bytes());
            self.arena.extend_from_slice(field);
        }
        true
    }

    /// The stored value of `datakey`, if it was read ahead (and it is not a second key of its
    /// hash).
    pub fn get(&self, datakey: &[u8]) -> Option<&[u8]> {
        let at = *self.index.get(&fnv1a(datakey))? as usize;
        let mut rest = &self.arena[at..];
        let mut field = || {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let (field, tail) = rest[4..].split_at(len);
            rest = tail;
            field
        };
        (field() == datakey).then(field)
    }

    /// Records that can be read.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Forgets the record of `datakey`, which is about to be written: it is read from RocksDB
    /// again.
    pub fn forget(&mut self, datakey: &[u8]) {
        if self.get(datakey).is_some() {
            self.index.remove(&fnv1a(datakey));
        }
    }

    /// Counts the records' memory (as allocated) in `HELD`.
    pub fn count(&mut self) {
        // A (u64, u32) slot and a control byte per bucket; 7 of 8 buckets are usable.
        let now = self.arena.capacity() + self.index.capacity() * 20;
        HELD.fetch_add(now, Ordering::Relaxed);
        HELD.fetch_sub(self.counted, Ordering::Relaxed);
        self.counted = now;
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        HELD.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// A state's read-ahead: its point reads so far, then its records.
#[derive(Debug)]
pub(super) struct ReadAhead {
    /// The pipeline of the state.
    pub pipeline: String,
    /// Keys read from RocksDB one by one since the state's records were last written.
    pub point_reads: u64,
    pub records: Option<Records>,
    /// A query is reading the state ahead: other reads meanwhile go key by key.
    pub filling: bool,
    /// The state did not fit the budget: it is read key by key until the attempt ends.
    pub too_big: bool,
}

impl ReadAhead {
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            point_reads: 0,
            records: None,
            filling: false,
            too_big: false,
        }
    }
}
