//! Read-ahead: a query that reads much of a large state reads all of it at once.
//!
//! RocksDB finds a key that the commit log does not hold in 0.5–1.9 µs on the CI machine, even
//! when its blocks are cached: a filter probe, an index search and a data-block search, each
//! a few cache misses once the state outgrows the CPU caches. Reading a whole state into memory
//! costs ~0.3 µs per key (a scan at ~0.1 µs, and the index). So once the point reads of a
//! state add up to `1/READ_AHEAD_RATIO` of its keys (somewhat less than what reading it whole
//! costs), the store reads the whole state in one scan and answers its later reads from
//! memory. That is ski rental: a query that reads no further pays at most about three times
//! what its point reads cost; one that goes on to read most of the state pays much less.
//!
//! A commit notes, per state, whether it wrote at least `1/READ_AHEAD_RATIO` of the state's
//! keys (a key of its own, in the commit's batch). The pipeline's next query, in this process
//! or another, then reads that state ahead at its first point read: after a restart, a query
//! over the same symbols as the last one made 79k point reads at ~3 µs each (cold blocks)
//! before it read the state ahead. A wrong guess costs one scan; the next commit corrects it.
//!
//! The scan is split into spans of the state's buckets, one per core, and the other
//! partitions of the query wait for it rather than read key by key meanwhile: with a million
//! keys, that halved the wall time of the fill on two cores, and the point reads the other
//! partition made meanwhile (at ~3 µs each, with cold blocks) are gone.
//!
//! A stage also takes the values its undo entries keep from here: a query whose working set
//! overflows stages keys it loaded moments before, from tables larger than the block cache.
//! So until a state is read ahead, the values its point reads found are lent here too, each
//! until a stage takes it (or the key is written), within the same budget: without them, a
//! stage read each key again, a second block-cache miss and decompression per key.
//!
//! The records are a copy of the state's data keys, valid for as long as nothing writes them:
//! a stage or a fold forgets the records of the keys it writes, and the end of the attempt (a
//! commit, a rollback) drops the pipeline's read-aheads, all under the writer lock, which a
//! scan also holds. The commit log is read before the read-ahead, so its newer records still
//! come first. The records take memory from `fintech.rocksdb.read_ahead_bytes`, shared by
//! every store of the process; a state that does not fit is read key by key.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::HashMap;

use super::{BUCKETS, fnv1a};

/// Point reads of a state, times this, at least its keys: the state is read ahead.
pub(super) const READ_AHEAD_RATIO: u64 = 8;

/// Bytes a record takes in the arena besides its key and record: two lengths, the data key's
/// prefix and the attempt that wrote it.
const ARENA_OVERHEAD: usize = 23;

/// Bytes a record takes in the index at most: a bucket's slots are a power of two, at least
/// twice its records.
const INDEX_BYTES: usize = 32;

/// Bytes a lent value takes besides its data key and value: the map's entry and the two
/// allocations.
const LENT_OVERHEAD: usize = 64;

/// A slot whose record was forgotten: a lookup goes on past it.
const FORGOTTEN: u64 = u64::MAX;

/// Bytes held by the read-aheads of every store in the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes the read-aheads of every store in the process hold.
pub(super) fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// A state's records, read ahead in spans of consecutive buckets, each scanned on a thread of
/// its own: a state of a million keys is read in a fraction of the time one scan takes.
#[derive(Debug)]
pub(super) struct Records {
    spans: Vec<Span>,
    /// Per bucket, the span that holds its records.
    span_of: Vec<u8>,
}

impl Records {
    /// Estimated memory of the records of a state of `keys` keys and `bytes` bytes (keys and
    /// records, as the state's metadata counts them).
    pub fn estimate(keys: usize, bytes: usize) -> usize {
        bytes + keys * (ARENA_OVERHEAD + INDEX_BYTES)
    }

    /// The buckets of each of `spans` spans (at most 256).
    pub fn spans(spans: usize) -> Vec<std::ops::Range<usize>> {
        let (spans, buckets) = (spans.clamp(1, 256), BUCKETS as usize);
        (0..spans)
            .map(|s| buckets * s / spans..buckets * (s + 1) / spans)
            .collect()
    }

    /// The records of the spans of [`Records::spans`], in that order.
    pub fn from_spans(spans: Vec<Span>) -> Self {
        let mut span_of = vec![0u8; BUCKETS as usize];
        for (s, buckets) in Self::spans(spans.len()).into_iter().enumerate() {
            span_of[buckets].fill(s as u8);
        }
        Self { spans, span_of }
    }

    fn span(&self, datakey: &[u8]) -> Option<usize> {
        bucket_of(datakey).map(|b| self.span_of[b] as usize)
    }

    /// The stored value of `datakey`, if it was read ahead.
    pub fn get(&self, datakey: &[u8]) -> Option<&[u8]> {
        self.spans.get(self.span(datakey)?)?.get(datakey)
    }

    /// Forgets the record of `datakey`, which is about to be written: it is read from RocksDB
    /// again.
    pub fn forget(&mut self, datakey: &[u8]) {
        if let Some(s) = self.span(datakey) {
            self.spans[s].forget(datakey);
        }
    }

    /// Records that can be read.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.spans.iter().map(Span::len).sum()
    }
}

/// The records of a span of a state's buckets, read in one scan: `len:u32 datakey len:u32
/// value` each (the stored value: the attempt that wrote the record, then the record), in data
/// key order.
///
/// The index is a hash table per bucket of the data keys (their 6th and 7th bytes), each a
/// power of two long and laid out in bucket order, as the scan reads the records: building
/// it touches one bucket's few hundred slots at a time, which stay in the CPU's caches, where
/// one table for the whole state cost a cache miss per record. A slot holds the upper half of
/// the key's FNV-1a and its record's offset plus one (0: empty).
#[derive(Debug, Default)]
pub(super) struct Span {
    arena: Vec<u8>,
    /// Per bucket, where its slots start in `slots`; one more entry ends the last. While the
    /// records are pushed: per bucket, its records.
    buckets: Vec<u32>,
    slots: Vec<u64>,
    /// What `HELD` counts for these records.
    counted: usize,
}

impl Span {
    /// Room for the records of `keys` keys and `bytes` bytes.
    pub fn new(keys: usize, bytes: usize) -> Self {
        let mut records = Self {
            arena: Vec::with_capacity(bytes + keys * ARENA_OVERHEAD),
            buckets: vec![0; BUCKETS as usize + 1],
            slots: Vec::new(),
            counted: 0,
        };
        records.count();
        records
    }

    /// Adds the stored value of `datakey`, the next in data key order; false if the arena
    /// cannot address it, or it is no data key.
    pub fn push(&mut self, datakey: &[u8], value: &[u8]) -> bool {
        let Some(bucket) = bucket_of(datakey) else {
            return false;
        };
        if self.arena.len() + datakey.len() + value.len() + 8 >= u32::MAX as usize {
            return false;
        }
        self.buckets[bucket] += 1;
        for field in [datakey, value] {
            self.arena
                .extend_from_slice(&(field.len() as u32).to_le_bytes());
            self.arena.extend_from_slice(field);
        }
        true
    }

    /// Indexes the records pushed; before, none can be read.
    pub fn index(&mut self) {
        let mut start = 0u32;
        for b in self.buckets.iter_mut() {
            let records = std::mem::replace(b, start);
            if records > 0 {
                start += (2 * records).next_power_of_two();
            }
        }
        self.slots = vec![0; start as usize];
        let mut at = 0;
        while at < self.arena.len() {
            let (datakey, next) = field(&self.arena, at);
            let (_, next) = field(&self.arena, next);
            // `push` took only data keys with a bucket.
            let region = self.region(bucket_of(datakey).unwrap_or_default());
            let slots = &mut self.slots[region];
            let (h, mut i) = home(datakey, slots.len());
            let mask = slots.len() - 1;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = (h & 0xffff_ffff_0000_0000) | (at as u64 + 1);
            at = next;
        }
        self.count();
    }

    /// The slots of bucket `b`, once indexed.
    fn region(&self, b: usize) -> std::ops::Range<usize> {
        self.buckets[b] as usize..self.buckets[b + 1] as usize
    }

    /// The slot of `datakey`, if it was read ahead and not forgotten.
    fn find(&self, datakey: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None; // not indexed yet, or no records
        }
        let region = self.region(bucket_of(datakey)?);
        if region.is_empty() {
            return None;
        }
        let start = region.start;
        let (h, mut i) = home(datakey, region.len());
        let mask = region.len() - 1;
        loop {
            let slot = self.slots[start + i];
            if slot == 0 {
                return None;
            }
            if slot != FORGOTTEN && slot >> 32 == h >> 32 {
                let at = (slot & 0xffff_ffff) as usize - 1;
                if field(&self.arena, at).0 == datakey {
                    return Some(start + i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The stored value of `datakey`, if it was read ahead.
    pub fn get(&self, datakey: &[u8]) -> Option<&[u8]> {
        let at = (self.slots[self.find(datakey)?] & 0xffff_ffff) as usize - 1;
        let (_, value) = field(&self.arena, at);
        Some(field(&self.arena, value).0)
    }

    /// Records that can be read.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| **s != 0 && **s != FORGOTTEN)
            .count()
    }

    /// Forgets the record of `datakey`, which is about to be written: it is read from RocksDB
    /// again.
    pub fn forget(&mut self, datakey: &[u8]) {
        if let Some(i) = self.find(datakey) {
            self.slots[i] = FORGOTTEN;
        }
    }

    /// Counts the records' memory (as allocated) in `HELD`.
    pub fn count(&mut self) {
        let now = self.arena.capacity() + self.buckets.capacity() * 4 + self.slots.capacity() * 8;
        HELD.fetch_add(now, Ordering::Relaxed);
        HELD.fetch_sub(self.counted, Ordering::Relaxed);
        self.counted = now;
    }
}

/// The hash of `datakey`'s key and its first slot among `slots` (a power of two). The hash's
/// low 12 bits are the bucket, the same for every key of the region.
fn home(datakey: &[u8], slots: usize) -> (u64, usize) {
    let h = fnv1a(&datakey[7..]);
    (h, (h >> 12) as usize & (slots - 1))
}

/// The bucket of a data key (of at least 7 bytes).
fn bucket_of(datakey: &[u8]) -> Option<usize> {
    let b = u16::from_be_bytes(datakey.get(5..7)?.try_into().ok()?) as usize;
    (b < BUCKETS as usize).then_some(b)
}

/// The length-prefixed field at `at` in `arena`, and where the next one starts.
fn field(arena: &[u8], at: usize) -> (&[u8], usize) {
    let len = u32::from_le_bytes(arena[at..at + 4].try_into().unwrap()) as usize;
    (&arena[at + 4..at + 4 + len], at + 4 + len)
}

impl Drop for Span {
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
    /// A query is reading the state ahead: other reads of it wait (see the module's notes).
    pub filling: bool,
    /// The state did not fit the budget: it is read key by key until the attempt ends.
    pub too_big: bool,
    /// The state's last commit wrote much of it: it is read ahead at its first point read.
    pub hinted: bool,
    /// Data key -> stored value, of keys read one by one (see the module's notes).
    lent: HashMap<Box<[u8]>, Box<[u8]>>,
    /// What `HELD` counts for `lent`.
    lent_bytes: usize,
}

impl ReadAhead {
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            point_reads: 0,
            records: None,
            filling: false,
            too_big: false,
            hinted: false,
            lent: HashMap::default(),
            lent_bytes: 0,
        }
    }

    /// Whether it holds anything a write must forget.
    pub fn holds(&self) -> bool {
        self.records.is_some() || !self.lent.is_empty()
    }

    /// Keeps the stored value of `datakey`, read from RocksDB, if the read-aheads of the
    /// process stay within `budget`.
    pub fn lend(&mut self, datakey: Box<[u8]>, value: Box<[u8]>, budget: usize) {
        let bytes = datakey.len() + value.len() + LENT_OVERHEAD;
        if held() + bytes > budget {
            return;
        }
        let key_len = datakey.len();
        if let Some(old) = self.lent.insert(datakey, value) {
            self.release(key_len + old.len() + LENT_OVERHEAD);
        }
        HELD.fetch_add(bytes, Ordering::Relaxed);
        self.lent_bytes += bytes;
    }

    /// The stored value of `datakey` lent here, taken out (it is about to be written).
    pub fn take_lent(&mut self, datakey: &[u8]) -> Option<Box<[u8]>> {
        let value = self.lent.remove(datakey)?;
        self.release(datakey.len() + value.len() + LENT_OVERHEAD);
        Some(value)
    }

    /// Forgets what it holds of `datakey`, which is about to be written.
    pub fn forget(&mut self, datakey: &[u8]) {
        if let Some(records) = self.records.as_mut() {
            records.forget(datakey);
        }
        self.take_lent(datakey);
    }

    /// Values lent.
    #[cfg(test)]
    pub fn lent_len(&self) -> usize {
        self.lent.len()
    }

    /// Drops the lent values (the state is read ahead now).
    pub fn drop_lent(&mut self) {
        self.lent = HashMap::default();
        self.release(self.lent_bytes);
    }

    fn release(&mut self, bytes: usize) {
        HELD.fetch_sub(bytes, Ordering::Relaxed);
        self.lent_bytes -= bytes;
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        HELD.fetch_sub(self.lent_bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::data_key;
    use super::*;

    #[test]
    fn records_find_what_was_pushed_until_forgotten() {
        // 20,000 keys: ~5 per bucket, so probes wrap around the ends of buckets' slots.
        let mut keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| data_key(3, format!("k{i}").as_bytes()))
            .collect();
        keys.push(data_key(3, b""));
        keys.sort();
        let value = |k: &[u8]| k.iter().rev().copied().collect::<Vec<u8>>();
        let mut records = Span::new(keys.len(), 0);
        assert_eq!(
            records.get(&keys[0]),
            None,
            "nothing is found before the index"
        );
        for k in &keys {
            assert!(records.push(k, &value(k)));
        }
        records.index();
        assert_eq!(records.len(), keys.len());
        for k in &keys {
            assert_eq!(records.get(k), Some(&value(k)[..]));
        }
        for missing in [data_key(3, b"k20000"), data_key(4, b"k1"), vec![1, 2, 3]] {
            assert_eq!(records.get(&missing), None);
        }
        for k in keys.iter().step_by(3) {
            records.forget(k);
        }
        for (i, k) in keys.iter().enumerate() {
            let want = (i % 3 != 0).then(|| value(k));
            assert_eq!(records.get(k).map(<[u8]>::to_vec), want);
        }
        assert_eq!(records.len(), keys.len() - keys.len().div_ceil(3));
        assert!(!records.push(&[1, 2], b"no data key"));
    }

    #[test]
    fn records_in_spans_find_each_key_in_its_span() {
        let keys: Vec<Vec<u8>> = (0..5_000u32)
            .map(|i| data_key(3, format!("k{i}").as_bytes()))
            .collect();
        let value = |k: &[u8]| k.iter().rev().copied().collect::<Vec<u8>>();
        let ranges = Records::spans(3);
        assert_eq!(ranges, [0..1365, 1365..2730, 2730..4096]);
        let spans = ranges
            .iter()
            .map(|buckets| {
                let mut mine: Vec<&Vec<u8>> = keys
                    .iter()
                    .filter(|k| buckets.contains(&bucket_of(k).unwrap()))
                    .collect();
                mine.sort();
                let mut span = Span::new(mine.len(), 0);
                for k in mine {
                    assert!(span.push(k, &value(k)));
                }
                span.index();
                span
            })
            .collect();
        let mut records = Records::from_spans(spans);
        assert_eq!(records.len(), keys.len());
        for k in &keys {
            assert_eq!(records.get(k), Some(&value(k)[..]));
        }
        records.forget(&keys[7]);
        assert_eq!(records.get(&keys[7]), None);
        assert_eq!(records.get(&data_key(3, b"k5000")), None);
        assert_eq!(records.len(), keys.len() - 1);
    }
}
