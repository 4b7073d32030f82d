//! The RocksDB backend: persistent, crash-safe, larger than memory.
//!
//! One RocksDB database per `fintech.state_path`, holding every pipeline stored there. Key
//! layout (the first byte names the key space):
//!
//! ```text
//! 00 "format"                               layout marker: b"datafusion-fintech/2"
//! 00 "next_state" / 00 "next_attempt"       counters
//! 00 "read_ahead" state_no:u32              present: the state's last commit wrote much of it
//! 01 pipeline                               pipeline meta: commits, last commit, tag, in-flight attempt
//! 02 pipeline 00 state_id                   state meta: state number, keys, bytes, StateInfo
//! 03 state_no:u32 bucket:u16 key            attempt:u64 + record of one key (bucket = FNV-1a(key) mod 4096)
//! 04 attempt:u64 len:u32 datakey seq:u64    undo entry: the value datakey had before the attempt
//! ```
//!
//! and, in the column family `commit_log`:
//!
//! ```text
//! 05 seq:u64                                commit log entry: the records of one commit (see log.rs)
//! ```
//!
//! The bucket prefix groups keys the way Flink's key groups and RisingWave's vnodes do, so a
//! state can later be split by key range without rewriting it.
//!
//! Commits are one `WriteBatch` (state, metadata and tag together), fsynced by default. A query
//! whose working set outgrows memory *stages* updates before it commits: each staged write
//! goes into the same batch as an undo entry holding the key's previous value, so after a
//! crash or a failed query the attempt is rolled back from its undo entries. The WAL orders
//! batches, so whatever survives a crash is a prefix of the attempt, undo included.
//!
//! A commit that is small next to `fintech.rocksdb.commit_log_bytes` writes its records as one
//! commit log entry instead of one key each ([`log`]); reads find them in memory until a fold
//! writes them to their data keys. Staging folds first, so that undo entries and staged
//! records always concern the data keys alone.
//!
//! Layout 1 (before the commit log) is layout 2 without log entries: a layout-1 directory is
//! opened and its marker is rewritten to layout 2, so that an older build refuses it.
//!
//! The files: `layout.rs` the key spaces and keys, `open.rs` opening a store, `writes.rs` write
//! batches (records, registrations, undo entries), `data_keys.rs` data keys built in key order
//! on every core (for commits and stages), `reads.rs` reading records, `read_ahead.rs` states
//! read whole, `log.rs` the commit log, `tests.rs` the unit tests; this file the store's
//! structure, its locks and metadata, and the [`StateStore`] methods (begin, stage, rollback,
//! commit). The metadata records are the backend-independent ones of [`super::meta`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};
use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    DBCompressionType, DBPinnableSlice, DEFAULT_COLUMN_FAMILY_NAME, Direction, FlushOptions,
    IteratorMode, Options, ReadOptions, Snapshot, WriteBatch, WriteBufferManager, WriteOptions,
};

use super::memory::now_micros;
use super::{Commit, PipelineInfo, Put, StateInfo, StateStore, StateSummary, already_committed};
use crate::config::FintechConfig;
use log::{CommitLog, LOG, LOG_FAMILY};
use read_ahead::{READ_AHEAD_RATIO, ReadAhead, Records, Span};

mod data_keys;
mod layout;
mod log;
mod open;
mod read_ahead;
mod reads;
mod writes;

use super::meta::{PipelineMeta, StateMeta, register};
use data_keys::{DataKeys, PARALLEL_KEYS, on_threads, threads_for};
use layout::*;
use open::db_error;
use writes::{batch_bytes, joined};

/// A read of at least 1/SWEEP_RATIO of a state's keys walks the state instead of looking
/// each key up.
const SWEEP_RATIO: u64 = 4;
/// Steps a sweep takes towards the next key before it seeks instead.
const SWEEP_STEPS: usize = 16;
/// RocksDB's memtable size (its default, set explicitly so that it is known here).
const MEMTABLE_BYTES: usize = 64 << 20;
/// Batches this large or larger switch to a new memtable when they would overfill it.
const SWITCH_BATCH_BYTES: usize = 1 << 20;
/// Undo entries restored per write batch during a rollback.
const ROLLBACK_CHUNK: usize = 16_384;

/// Read options that read as `snapshot` saw the store (the latest state without one).
fn read_options(snapshot: Option<&Snapshot>) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if let Some(snapshot) = snapshot {
        opts.set_snapshot(snapshot);
    }
    opts
}

/// A key and its value as RocksDB returns them.
type KeyValue = (Box<[u8]>, Box<[u8]>);

// ---- the store ---------------------------------------------------------------------------

/// Per state number: the change in (keys, bytes) that writes make.
type Deltas = HashMap<u32, (i64, i64)>;

/// Per state number: how many keys writes write.
type Written = HashMap<u32, u64>;

/// (state number, key) pairs.
type StateKeys<'a> = Vec<(u32, &'a [u8])>;

/// Which records a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// Committed records: one that an attempt in flight staged reads as the one it replaced.
    Committed,
    /// What the pipeline's running attempt sees: what it staged, else what is committed.
    Running,
}

#[derive(Debug, Default)]
struct Pending {
    /// Next undo sequence number.
    seq: u64,
    /// Per state number: (keys added, bytes added) by staged writes of the attempt.
    deltas: Deltas,
}

pub struct RocksStore {
    path: PathBuf,
    db: DB,
    sync: bool,
    /// Serializes metadata changes (commits, stages, rollbacks, counters) and folds.
    write: Mutex<Writer>,
    /// Records of the commit log entries not folded yet; changed only under `write`.
    log: RwLock<CommitLog>,
    /// `fintech.rocksdb.commit_log_bytes` as the store opened: the budget of the process's
    /// commit logs, all together.
    commit_log_bytes: usize,
    /// Per state number: what has been read of the state ([`read_ahead`]). Filled and
    /// dropped only under `write`.
    read_aheads: Mutex<HashMap<u32, ReadAhead>>,
    /// Signalled when a read-ahead fill ends.
    filled: Condvar,
    /// `fintech.rocksdb.read_ahead_bytes` as the store opened: the budget of the process's
    /// read-aheads, all together.
    read_ahead_bytes: usize,
    /// What a memtable holds at most before RocksDB flushes it.
    memtable_bytes: usize,
}

#[derive(Default)]
struct Writer {
    next_state: u32,
    next_attempt: u64,
    pending: HashMap<u64, Pending>,
}

/// A store that closes writes its memtables to table files, so that the next process to open
/// it does not replay the write-ahead log: twice, since the layout marker is checked first
/// with a read-only open. Best effort: what a failed flush leaves is in the write-ahead log,
/// which the next open replays, as it does after a crash.
impl Drop for RocksStore {
    fn drop(&mut self) {
        let families: Vec<&ColumnFamily> = [DEFAULT_COLUMN_FAMILY_NAME, LOG_FAMILY]
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .collect();
        let _ = self.db.flush_cfs_opt(&families, &FlushOptions::default());
    }
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksStore({})", self.path.display())
    }
}

impl RocksStore {
    /// The writer lock; a panic elsewhere does not stop rollbacks from running.
    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> std::sync::RwLockReadGuard<'_, CommitLog> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn log_mut(&self) -> std::sync::RwLockWriteGuard<'_, CommitLog> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_aheads(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ReadAhead>> {
        self.read_aheads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the read-aheads of the states of `pipeline`, whose attempt ends. The caller holds
    /// the writer lock.
    fn forget_reads(&self, _w: &mut Writer, pipeline: &str) {
        self.read_aheads().retain(|_, r| r.pipeline != pipeline);
    }

    /// Whether some state has been read ahead.
    fn reads_ahead(&self) -> bool {
        self.read_aheads().values().any(|r| r.holds())
    }

    /// Forgets what was read ahead of `datakeys`, which are about to be written. The caller
    /// holds the writer lock.
    fn forget_keys<'a>(&self, _w: &mut Writer, datakeys: impl Iterator<Item = &'a [u8]>) {
        let mut all = self.read_aheads();
        for key in datakeys {
            if let Some(r) = state_no_of(key).and_then(|n| all.get_mut(&n)) {
                r.forget(key);
            }
        }
    }

    /// Writes every record of the commit log to its data key and deletes the log entries, in
    /// one batch. The caller holds the writer lock, so the log cannot change meanwhile.
    fn fold(&self, w: &mut Writer) -> Result<()> {
        let log = self.log();
        if log.is_empty() {
            return Ok(());
        }
        let records = log.sorted();
        if self.reads_ahead() {
            self.forget_keys(w, records.iter().map(|(k, _)| *k));
        }
        let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes + 1024);
        for (k, v) in records {
            batch.put(k, v);
        }
        batch.delete_range_cf(self.family(LOG_FAMILY)?, [LOG], [LOG + 1]);
        // Not synced: until a later synced write, a crash may lose the fold, and then the
        // log entries it would have deleted are still there.
        self.write(batch, false)?;
        drop(log);
        self.log_mut().clear();
        Ok(())
    }

    fn err(&self, what: &str, e: rocksdb::Error) -> DataFusionError {
        db_error(&self.path, what, e)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(|e| self.err("read", e))
    }

    fn pipeline_meta(&self, pipeline: &str) -> Result<Option<PipelineMeta>> {
        self.pipeline_meta_at(pipeline, None)
    }

    /// A pipeline's metadata, as `snapshot` saw it (the latest without one).
    fn pipeline_meta_at(
        &self,
        pipeline: &str,
        snapshot: Option<&Snapshot>,
    ) -> Result<Option<PipelineMeta>> {
        self.db
            .get_opt(pipeline_key(pipeline), &read_options(snapshot))
            .map_err(|e| self.err("read", e))?
            .map(|b| {
                PipelineMeta::decode(&b)
                    .map_err(|e| self.damaged(&format!("pipeline '{pipeline}'"), e))
            })
            .transpose()
    }

    fn state_meta(&self, pipeline: &str, state_id: &str) -> Result<Option<StateMeta>> {
        self.get(&state_key(pipeline, state_id))?
            .map(|b| {
                StateMeta::decode(&b).map_err(|e| self.damaged(&format!("state {state_id}"), e))
            })
            .transpose()
    }

    fn damaged(&self, what: &str, e: DataFusionError) -> DataFusionError {
        DataFusionError::Execution(format!(
            "metadata of {what} in {} cannot be read: {e}",
            self.path.display()
        ))
    }

    /// All (key, value) pairs whose key starts with `prefix`.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.scan_prefix_at(prefix, None)
    }

    /// All (key, value) pairs whose key starts with `prefix`, as `snapshot` saw them.
    fn scan_prefix_at(&self, prefix: &[u8], snapshot: Option<&Snapshot>) -> Result<Vec<KeyValue>> {
        let mut opts = read_options(snapshot);
        opts.set_iterate_upper_bound(prefix_end(prefix));
        opts.fill_cache(false);
        self.db
            .iterator_opt(IteratorMode::From(prefix, Direction::Forward), opts)
            .map(|item| item.map_err(|e| self.err("scan", e)))
            .collect()
    }

    fn family(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| DataFusionError::Internal(format!("no column family {name}")))
    }

    /// The commit log entries, in order.
    fn log_entries(&self) -> Result<Vec<KeyValue>> {
        self.db
            .iterator_cf(self.family(LOG_FAMILY)?, IteratorMode::Start)
            .map(|item| item.map_err(|e| self.err("read the commit log", e)))
            .collect()
    }
}

impl StateStore for RocksStore {
    fn backend(&self) -> &'static str {
        "rocksdb"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn pipelines(&self) -> Result<Vec<PipelineInfo>> {
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix(&[PIPELINE])? {
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            let meta = PipelineMeta::decode(&v).map_err(|e| self.damaged(&name, e))?;
            out.extend(meta.listed(&name));
        }
        Ok(out)
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineInfo>> {
        Ok(self.pipeline_meta(name)?.and_then(|m| m.listed(name)))
    }

    fn states(&self, pipeline: &str) -> Result<Vec<StateSummary>> {
        let snapshot = self.db.snapshot();
        let staging = self.in_flight(&snapshot, pipeline)?;
        let mut out = Vec::new();
        for (k, v) in self.scan_prefix_at(&state_prefix(pipeline), Some(&snapshot))? {
            // A state that the running attempt registered is not committed yet.
            if let Some(attempt) = staging
                && let Some(None) = self.undo_entry(&snapshot, attempt, &k)?
            {
                continue;
            }
            let meta = StateMeta::decode(&v).map_err(|e| self.damaged(pipeline, e))?;
            out.push(meta.summary());
        }
        Ok(out)
    }

    fn state_info(&self, pipeline: &str, state_id: &str) -> Result<Option<StateInfo>> {
        Ok(self.state_meta(pipeline, state_id)?.map(|m| m.info))
    }

    fn get_many(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        self.read(
            pipeline,
            state_id,
            keys,
            View::Committed,
            &mut |i, record| {
                out[i] = Some(record.to_vec());
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn load(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.read(pipeline, state_id, keys, View::Running, found)
    }

    fn scan(&self, pipeline: &str, state_id: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(meta) = self.state_meta(pipeline, state_id)? else {
            return Ok(vec![]);
        };
        let prefix = data_prefix(meta.state_no);
        let snapshot = self.db.snapshot();
        let staging = self.in_flight(&snapshot, pipeline)?;
        // The commit log's records of the state, copied: commits need not wait for the scan.
        let logged: HashMap<Vec<u8>, Vec<u8>> = self
            .log()
            .with_prefix(&prefix)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let mut rows = Vec::new();
        for (k, v) in self.scan_prefix_at(&prefix, Some(&snapshot))? {
            if !logged.contains_key(k.as_ref())
                && let Some(record) = self.committed_record(&snapshot, staging, &k, &v)?
            {
                rows.push((k[7..].to_vec(), record));
            }
        }
        for (k, v) in logged {
            rows.push((k[7..].to_vec(), self.unwrap_value(&v)?.1.to_vec()));
        }
        // Bucket order is hash order; give callers key order, as the memory store does.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    fn begin(&self, pipeline: &str) -> Result<u64> {
        if let Some(attempt) = self.pipeline_meta(pipeline)?.and_then(|m| m.in_flight) {
            self.rollback(pipeline, attempt)?;
        }
        let mut w = self.writer();
        self.forget_reads(&mut w, pipeline);
        w.next_attempt += 1;
        Ok(w.next_attempt)
    }

    fn stages(&self) -> bool {
        true
    }

    fn stage(
        &self,
        pipeline: &str,
        attempt: u64,
        states: &[StateInfo],
        puts: Vec<Put>,
    ) -> Result<()> {
        let mut w = self.writer();
        // Staged records and their undo entries concern data keys: a record of the commit log
        // would hide a staged one.
        self.fold(&mut w)?;
        let mut batch = WriteBatch::with_capacity_bytes(batch_bytes(&puts));
        let mut meta = self.pipeline_meta(pipeline)?.unwrap_or_default();
        if meta.in_flight != Some(attempt) {
            meta.in_flight = Some(attempt);
            batch.put(pipeline_key(pipeline), meta.encode());
            batch.put(meta_key("next_attempt"), w.next_attempt.to_le_bytes());
        }
        let metas = self.register_states(&mut w, &mut batch, pipeline, states, Some(attempt))?;
        let deltas = self.write_puts(&mut w, &mut batch, &metas, &puts, attempt, true)?;
        let pending = w.pending.entry(attempt).or_default();
        for (state_no, (k, b)) in deltas {
            let d = pending.deltas.entry(state_no).or_default();
            d.0 += k;
            d.1 += b;
        }
        // Not synced: until the commit, a crash may lose staged writes, and that is fine.
        self.write(batch, false)
    }

    fn rollback(&self, pipeline: &str, attempt: u64) -> Result<()> {
        let mut w = self.writer();
        self.forget_reads(&mut w, pipeline);
        // The first undo entry of each key holds its value before the attempt. Restoring is
        // idempotent, so a rollback interrupted by a crash is simply done again.
        let prefix = undo_prefix(attempt);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        opts.fill_cache(false);
        let mut batch = WriteBatch::default();
        let mut last: Option<Vec<u8>> = None;
        for item in self
            .db
            .iterator_opt(IteratorMode::From(&prefix, Direction::Forward), opts)
        {
            let (k, v) = item.map_err(|e| self.err("scan", e))?;
            // Entries of one key are adjacent, oldest first.
            let datakey = &k[13..k.len() - 8];
            if last.as_deref() == Some(datakey) {
                continue;
            }
            match v.first() {
                Some(1) => batch.put(datakey, &v[1..]),
                _ => batch.delete(datakey),
            }
            last = Some(datakey.to_vec());
            if batch.len() >= ROLLBACK_CHUNK {
                self.write(std::mem::take(&mut batch), false)?;
            }
        }
        let mut meta = self.pipeline_meta(pipeline)?.unwrap_or_default();
        meta.in_flight = None;
        if meta.commits == 0 {
            batch.delete(pipeline_key(pipeline));
        } else {
            batch.put(pipeline_key(pipeline), meta.encode());
        }
        batch.delete_range(undo_prefix(attempt), undo_prefix(attempt + 1));
        w.pending.remove(&attempt);
        self.write(batch, true)
    }

    fn commit(&self, pipeline: &str, attempt: u64, mut commit: Commit) -> Result<()> {
        let mut w = self.writer();
        let mut meta = self.pipeline_meta(pipeline)?.unwrap_or_default();
        if let (Some(tag), Some(last)) = (&commit.tag, &meta.last_commit_tag)
            && tag == last
        {
            return Err(already_committed(pipeline, tag));
        }
        // The attempt is over: what it read is no longer needed, and may be written now.
        self.forget_reads(&mut w, pipeline);
        let mut batch = WriteBatch::with_capacity_bytes(batch_bytes(&commit.puts));
        let mut metas = self.register_states(&mut w, &mut batch, pipeline, &commit.states, None)?;
        let payload: usize = commit
            .puts
            .iter()
            .map(|p| 7 + p.key.len() + p.record.len())
            .sum();
        let logged =
            2 * log::Entry::held_bytes(commit.puts.len(), payload) <= self.commit_log_bytes;
        let (deltas, written, entry, runs) = if commit.puts.is_empty() {
            (HashMap::default(), HashMap::default(), None, Vec::new())
        } else if logged {
            // One value for all the records, in input order: no per-key write, no sort.
            let (keys, deltas, written) = Self::keys_and_deltas(&metas, &commit.puts)?;
            let mut entry = log::Entry::new(attempt, payload + 8 * keys.len());
            for ((state_no, key), put) in keys.iter().zip(&commit.puts) {
                entry.push(|out| _ = push_data_key(out, *state_no, key), &put.record);
            }
            let seq = self.log().next_seq();
            batch.put_cf(self.family(LOG_FAMILY)?, log::entry_key(seq), &entry.value);
            (deltas, written, Some((seq, entry)), Vec::new())
        } else {
            // Too big for the log: written to the data keys, which the log's records of the
            // same keys would hide, so those go first.
            self.fold(&mut w)?;
            // Nothing read ahead holds these keys: `forget_reads` dropped the read-aheads of
            // the pipeline's states, the only ones with these state numbers.
            let (keys, deltas, written) = Self::keys_and_deltas(&metas, &commit.puts)?;
            let puts = &commit.puts;
            let runs = DataKeys::sorted_runs(
                &keys,
                threads_for(keys.len()),
                |i| 8 + puts[i].record.len(),
                |i, out| {
                    out[..8].copy_from_slice(&attempt.to_le_bytes());
                    out[8..].copy_from_slice(&puts[i].record);
                },
                |keys| {
                    let mut run = WriteBatch::with_capacity_bytes(keys.batch_bytes());
                    for (_, datakey, value) in keys.iter() {
                        run.put(datakey, value);
                    }
                    run
                },
            );
            (deltas, written, None, runs)
        };
        let staged = w.pending.remove(&attempt).unwrap_or_default();
        for m in metas.values_mut() {
            let (mut k, mut b) = deltas.get(&m.state_no).copied().unwrap_or_default();
            if let Some((sk, sb)) = staged.deltas.get(&m.state_no) {
                k += sk;
                b += sb;
            }
            m.keys = (m.keys as i64 + k).max(0) as u64;
            m.bytes = (m.bytes as i64 + b).max(0) as u64;
            batch.put(state_key(pipeline, &m.info.state_id), m.encode());
            let written = written.get(&m.state_no).copied().unwrap_or(0);
            if m.keys > 0 && written * READ_AHEAD_RATIO >= m.keys {
                batch.put(read_ahead_key(m.state_no), [1u8]);
            } else {
                batch.delete(read_ahead_key(m.state_no));
            }
        }
        meta.commits += 1;
        meta.last_commit_micros = Some(now_micros());
        meta.last_commit_tag = commit.tag;
        meta.in_flight = None;
        batch.put(pipeline_key(pipeline), meta.encode());
        batch.put(meta_key("next_attempt"), w.next_attempt.to_le_bytes());
        if staged.seq > 0 {
            batch.delete_range(undo_prefix(attempt), undo_prefix(attempt + 1));
        }
        // Freeing a million puts' buffers takes a while: on another thread, during the write.
        let puts = std::mem::take(&mut commit.puts);
        std::thread::scope(|s| {
            if puts.len() >= PARALLEL_KEYS {
                s.spawn(move || drop(puts));
            } else {
                drop(puts);
            }
            self.write(joined(batch, runs)?, self.sync)
        })?;
        if let Some((seq, entry)) = entry {
            let mut log = self.log_mut();
            log.apply(seq, &entry.value)
                .map_err(DataFusionError::Internal)?;
            let over = log.over(self.commit_log_bytes);
            drop(log);
            if over {
                // The commit is durable whatever happens now: a fold that fails here is
                // done by the next commit or stage, which reports the error if it persists.
                let _ = self.fold(&mut w);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
