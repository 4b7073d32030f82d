//! The commit log: a small commit is one RocksDB value, not one RocksDB write per key.
//!
//! Every key RocksDB writes is a memtable (skiplist) insert: written key by key, a commit of
//! small records costs 0.7–1.2 µs per key on the CI machine, most of it in the skiplist. So a
//! commit whose records are small next to `fintech.rocksdb.commit_log_bytes` is written as one
//! *log entry* (`05 seq:u64`, all its records, in the column family `commit_log`), in the same
//! atomic batch as the pipeline's metadata. The records of the entries written since the last
//! fold are also held here, in memory, newest per key, and reads look here first.
//!
//! Once the entries of every store in the process pass the budget, a store *folds*: one batch
//! writes each key's newest record to its data key and deletes the store's entries. A key
//! that many commits updated between two folds is written to its data key once. When a store
//! opens, it reads the entries a crash or an exit left behind back into memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::HashMap;

/// The column family of the log entries.
pub(super) const LOG_FAMILY: &str = "commit_log";

/// The key space of log entries.
pub(super) const LOG: u8 = 0x05;

/// Estimated memory of a record held in the log besides its key and value (map slot,
/// allocation headers); counted so that the budget bounds memory, not only payload.
const RECORD_OVERHEAD: usize = 64;

/// Bytes held by the commit logs of every store in the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// What a commit writes to the log, before it is written.
pub(super) struct Entry {
    /// The encoded entry: `attempt:u64`, then per record `len:u32 datakey len:u32 record`.
    pub value: Vec<u8>,
}

impl Entry {
    pub fn new(attempt: u64, capacity: usize) -> Self {
        let mut value = Vec::with_capacity(8 + capacity);
        value.extend_from_slice(&attempt.to_le_bytes());
        Self { value }
    }

    /// Appends a record: `data_key` writes the data key into the buffer it is given.
    pub fn push(&mut self, data_key: impl FnOnce(&mut Vec<u8>), record: &[u8]) {
        let at = self.value.len();
        self.value.extend_from_slice(&[0; 4]);
        data_key(&mut self.value);
        let len = (self.value.len() - at - 4) as u32;
        self.value[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.value
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.value.extend_from_slice(record);
    }

    /// Bytes the log would hold for `records` records of `payload` key and record bytes.
    pub fn held_bytes(records: usize, payload: usize) -> usize {
        payload + records * (8 + RECORD_OVERHEAD)
    }
}

/// The next length-prefixed field of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().unwrap()) as usize;
    let field = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(field)
}

/// The RocksDB key of log entry `seq`.
pub(super) fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The records of the log entries a store has not folded yet.
#[derive(Debug, Default)]
pub(super) struct CommitLog {
    /// Data key -> stored value (the attempt that wrote the record, then the record), the
    /// newest of the log's entries.
    records: HashMap<Box<[u8]>, Vec<u8>>,
    /// Estimated memory of the records, superseded ones included (what a fold releases).
    held: usize,
    /// Sequence number of the next entry.
    next: u64,
}

impl CommitLog {
    /// The stored value of `data_key`, if a log entry holds it.
    pub fn get(&self, data_key: &[u8]) -> Option<&[u8]> {
        self.records.get(data_key).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Estimated memory of the records, superseded ones included.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Sequence number of the next entry.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Whether the logs of the process hold more than `budget`, so that this one should fold.
    pub fn over(&self, budget: usize) -> bool {
        !self.is_empty() && HELD.load(Ordering::Relaxed) > budget
    }

    /// Takes in the records of entry `seq` (written, or read back when the store opens).
    pub fn apply(&mut self, seq: u64, value: &[u8]) -> Result<(), String> {
        let damaged = |what: &str| format!("commit log entry {seq} is damaged: {what}");
        let attempt = value.get(..8).ok_or_else(|| damaged("no header"))?;
        let mut rest = &value[8..];
        // Counted once for the entry (also for the records taken in before damage is found).
        let mut added = 0;
        let result = loop {
            if rest.is_empty() {
                break Ok(());
            }
            let (Some(key), Some(record)) = (take(&mut rest), take(&mut rest)) else {
                break Err(damaged("a record is cut short"));
            };
            let stored = match self.records.get_mut(key) {
                Some(stored) => stored,
                None => self.records.entry(key.into()).or_default(),
            };
            stored.clear();
            stored.extend_from_slice(attempt);
            stored.extend_from_slice(record);
            added += Entry::held_bytes(1, key.len() + record.len());
        };
        self.held += added;
        HELD.fetch_add(added, Ordering::Relaxed);
        if result.is_ok() {
            self.next = self.next.max(seq + 1);
        }
        result
    }

    /// (data key, stored value) of every record, in key order: what a fold writes.
    pub fn sorted(&self) -> Vec<(&[u8], &[u8])> {
        let mut out: Vec<(&[u8], &[u8])> = self
            .records
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_slice()))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// (data key, stored value) of the records whose data key starts with `prefix`.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.records
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_ref(), v.as_slice()))
    }

    /// Forgets every record: they were folded into their data keys.
    pub fn clear(&mut self) {
        self.records = HashMap::default();
        HELD.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        HELD.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_newest_wins_and_damage_is_an_error() {
        let mut log = CommitLog::default();
        let mut e = Entry::new(3, 0);
        e.push(|b| b.extend_from_slice(b"k1"), b"one");
        e.push(|b| b.extend_from_slice(b"k2"), b"two");
        log.apply(0, &e.value).unwrap();
        let mut e = Entry::new(4, 0);
        e.push(|b| b.extend_from_slice(b"k1"), b"uno");
        log.apply(1, &e.value).unwrap();
        assert_eq!(
            log.get(b"k1").unwrap(),
            [&4u64.to_le_bytes()[..], b"uno"].concat()
        );
        assert_eq!(
            log.get(b"k2").unwrap(),
            [&3u64.to_le_bytes()[..], b"two"].concat()
        );
        assert_eq!(log.get(b"k3"), None);
        assert_eq!(log.next_seq(), 2);
        let keys: Vec<&[u8]> = log.sorted().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [b"k1", b"k2"]);

        let cut = &e.value[..e.value.len() - 1];
        assert!(
            log.apply(2, cut)
                .unwrap_err()
                .contains("entry 2 is damaged")
        );
        assert!(log.apply(2, &[1, 2]).is_err());
        log.clear();
        assert!(log.is_empty());
    }
}
