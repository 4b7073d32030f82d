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
//! The files: `layout.rs` the key spaces and keys, `data_keys.rs` data keys built in key order
//! on every core (for commits and stages), `log.rs` the commit log, `read_ahead.rs` states read
//! whole, `tests.rs` the unit tests; this file the store. The metadata records are the
//! backend-independent ones of [`super::meta`].

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

mod read_ahead;

use super::meta::{PipelineMeta, StateMeta, register};
use data_keys::{DataKeys, PARALLEL_KEYS, on_threads, threads_for};
use layout::*;

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

/// Block cache and memtable budget shared by every RocksDB store of the process.
struct Shared {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared(settings: &FintechConfig) -> &'static Shared {
    SHARED.get_or_init(|| {
        let cache = Cache::new_lru_cache(settings.rocksdb_block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            settings.rocksdb_write_buffer_bytes,
            false,
            cache.clone(),
        );
        Shared {
            cache,
            write_buffers,
        }
    })
}

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

fn db_error(path: &Path, what: &str, e: rocksdb::Error) -> DataFusionError {
    let msg = e.to_string();
    if msg.contains("lock") || msg.contains("LOCK") {
        DataFusionError::Execution(format!(
            "state directory {} is in use by another process (RocksDB lock held): {msg}",
            path.display()
        ))
    } else if msg.contains("Corruption") {
        DataFusionError::Execution(format!(
            "state directory {} is damaged ({msg}); it was left untouched",
            path.display()
        ))
    } else {
        DataFusionError::Execution(format!("RocksDB at {}: {what}: {msg}", path.display()))
    }
}

fn u32_meta(bytes: Option<Vec<u8>>) -> u32 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_meta(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl RocksStore {
    /// Opens (or creates) the store at `path`. A directory that holds anything but a
    /// datafusion-fintech store is refused before anything is written to it.
    pub fn open(path: &str, settings: &FintechConfig) -> Result<Self> {
        if path.is_empty() {
            return Err(DataFusionError::Configuration(
                "fintech.state_backend 'rocksdb' needs fintech.state_path: the directory that \
                 holds the state"
                    .into(),
            ));
        }
        let path = PathBuf::from(path);
        let existing = path.is_dir()
            && std::fs::read_dir(&path)
                .map_err(|e| {
                    DataFusionError::Execution(format!("cannot read {}: {e}", path.display()))
                })?
                .next()
                .is_some();
        if path.exists() && !path.is_dir() {
            return Err(DataFusionError::Execution(format!(
                "fintech.state_path {} is a file, not a state directory",
                path.display()
            )));
        }
        if existing {
            if !path.join("CURRENT").is_file() {
                return Err(DataFusionError::Execution(format!(
                    "{} is not a datafusion-fintech state directory (it has files but no \
                     RocksDB database); refusing to write into it",
                    path.display()
                )));
            }
            // Check the marker without writing anything.
            let db = DB::open_for_read_only(&Options::default(), &path, false)
                .map_err(|e| db_error(&path, "open", e))?;
            let format = db
                .get(meta_key("format"))
                .map_err(|e| db_error(&path, "read", e))?;
            match format.as_deref() {
                Some(FORMAT) | Some(FORMAT_1) => {}
                Some(other) => {
                    return Err(DataFusionError::Execution(format!(
                        "state directory {} has layout '{}', this build reads '{}'; nothing \
                         was changed",
                        path.display(),
                        String::from_utf8_lossy(other),
                        String::from_utf8_lossy(FORMAT)
                    )));
                }
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "{} is a RocksDB database that datafusion-fintech did not write; \
                         refusing to use it",
                        path.display()
                    )));
                }
            }
        }

        let shared = shared(settings);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&shared.cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Filters and indexes in 4 KiB partitions, found through a small top level kept in
        // the cache. A table's whole filter is ~1.2 bytes per key: larger than a shard of the
        // block cache (a 128 MiB cache has 64 shards of 2 MiB) once a table holds a million
        // keys, so it was evicted as soon as it was read and read again, with its checksum,
        // for every batch of reads.
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&shared.write_buffers);
        opts.set_write_buffer_size(MEMTABLE_BYTES);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_max_open_files(512);
        opts.create_missing_column_families(true);
        // The default column family named, so that `cf_handle` finds it for batched reads,
        // with these options (`DB::open_cf` would give it RocksDB's defaults). The commit log
        // has its own: a log entry is one large value, read once, and a table block that
        // held it and metadata keys would be decompressed whole by every metadata read.
        let mut log_opts = opts.clone();
        log_opts.set_compression_type(DBCompressionType::None);
        let families = [
            ColumnFamilyDescriptor::new(DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
            ColumnFamilyDescriptor::new(LOG_FAMILY, log_opts),
        ];
        let db = DB::open_cf_descriptors(&opts, &path, families)
            .map_err(|e| db_error(&path, "open", e))?;
        let format = db
            .get(meta_key("format"))
            .map_err(|e| db_error(&path, "read", e))?;
        if format.as_deref() != Some(FORMAT) {
            // Synced: a directory we created must never be left without its marker, and one
            // of layout 1 is marked as layout 2 before it can hold a commit log entry.
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            db.put_opt(meta_key("format"), FORMAT, &sync)
                .map_err(|e| db_error(&path, "write", e))?;
        }
        let get = |k: &str| db.get(meta_key(k)).map_err(|e| db_error(&path, "read", e));
        let writer = Writer {
            next_state: u32_meta(get("next_state")?),
            next_attempt: u64_meta(get("next_attempt")?),
            pending: HashMap::default(),
        };
        let store = Self {
            path,
            db,
            sync: settings.rocksdb_sync,
            write: Mutex::new(writer),
            log: RwLock::default(),
            commit_log_bytes: settings.rocksdb_commit_log_bytes,
            read_aheads: Mutex::default(),
            filled: Condvar::new(),
            read_ahead_bytes: settings.rocksdb_read_ahead_bytes,
            memtable_bytes: MEMTABLE_BYTES.min(shared.write_buffers.get_buffer_size()),
        };
        // The commit log entries that were not folded before the store closed.
        {
            let mut log = store.log_mut();
            for (k, v) in store.log_entries()? {
                let seq = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or_default();
                log.apply(seq, &v).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "state directory {} is damaged: {e}; it was left untouched",
                        store.path.display()
                    ))
                })?;
            }
        }
        // Scratch pipelines of per-query state that a crashed process left behind.
        for (k, v) in store.scan_prefix(&[PIPELINE])? {
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if name.starts_with(super::SCRATCH_PREFIX)
                && let Some(attempt) = PipelineMeta::decode(&v).ok().and_then(|m| m.in_flight)
            {
                store.rollback(&name, attempt)?;
            }
        }
        Ok(store)
    }

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

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        // A batch that would overfill the memtable goes into a fresh one, and the full one is
        // written to a table file in the background (on a core that a commit leaves idle):
        // RocksDB would flush it right after this write anyway, and a million keys inserted
        // among a million older ones cost ~2.5x as much as into an empty memtable. One that
        // holds little is kept: inserting among few keys is cheap, and a switch would leave
        // a small table file.
        let size = batch.size_in_bytes();
        if size >= SWITCH_BATCH_BYTES {
            let active = self
                .db
                .property_int_value("rocksdb.cur-size-active-mem-table")
                .map_err(|e| self.err("read the memtable size", e))?
                .unwrap_or(0) as usize;
            if active >= self.memtable_bytes / 8 && active + size > self.memtable_bytes {
                let mut flush = FlushOptions::default();
                flush.set_wait(false);
                self.db
                    .flush_opt(&flush)
                    .map_err(|e| self.err("flush", e))?;
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.err("write", e))
    }

    /// The state number of each state, registering new ones into `batch` (with undo entries
    /// when `undo` names the attempt, so that a rollback unregisters them).
    fn register_states(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        pipeline: &str,
        states: &[StateInfo],
        undo: Option<u64>,
    ) -> Result<HashMap<String, StateMeta>> {
        let mut out = HashMap::default();
        let location = self.path.display().to_string();
        for info in states {
            let stored = self.state_meta(pipeline, &info.state_id)?;
            let meta = register(stored.clone(), info, &mut w.next_state, pipeline, &location)?;
            if stored.as_ref() != Some(&meta) {
                // New, or raised to a newer encoding version: written, with an undo entry
                // holding what it was (nothing, for a new state).
                let key = state_key(pipeline, &info.state_id);
                if let Some(attempt) = undo {
                    let p = w.pending.entry(attempt).or_default();
                    let before = match &stored {
                        Some(old) => [&[1u8][..], &old.encode()].concat(),
                        None => vec![0u8],
                    };
                    batch.put(undo_key(attempt, &key, p.seq), before);
                    p.seq += 1;
                }
                if stored.is_none() {
                    batch.put(meta_key("next_state"), w.next_state.to_le_bytes());
                }
                batch.put(&key, meta.encode());
            }
            out.insert(info.state_id.clone(), meta);
        }
        Ok(out)
    }

    /// The (state number, key) of each put; per state number, the change in keys and bytes
    /// that the puts make (from what each replaces), and how many keys they write.
    fn keys_and_deltas<'a>(
        metas: &HashMap<String, StateMeta>,
        puts: &'a [Put],
    ) -> Result<(StateKeys<'a>, Deltas, Written)> {
        let mut keys = Vec::with_capacity(puts.len());
        // A query's puts share one `Arc` per state (per partition): a state is found by
        // pointer among the few seen, else by its id, and not by hashing its id for every
        // put. Per state seen: its id as last met, its number and its change in keys and bytes;
        // and, alongside, its puts.
        let mut seen: Vec<(&Arc<str>, u32, (i64, i64))> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for put in puts {
            let at = match seen
                .iter()
                .position(|(id, ..)| Arc::ptr_eq(id, &put.state_id))
            {
                Some(at) => at,
                None => match seen
                    .iter()
                    .position(|(id, ..)| id.as_ref() == put.state_id.as_ref())
                {
                    Some(at) => {
                        seen[at].0 = &put.state_id;
                        at
                    }
                    None => {
                        let meta = metas.get(put.state_id.as_ref()).ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "write to unregistered state {}",
                                put.state_id
                            ))
                        })?;
                        seen.push((&put.state_id, meta.state_no, (0, 0)));
                        counts.push(0);
                        seen.len() - 1
                    }
                },
            };
            counts[at] += 1;
            let (_, state_no, d) = &mut seen[at];
            let new_bytes = (put.key.len() + put.record.len()) as i64;
            match put.replaces {
                None => {
                    d.0 += 1;
                    d.1 += new_bytes;
                }
                Some(old) => d.1 += new_bytes - (put.key.len() + old) as i64,
            }
            keys.push((*state_no, put.key.as_slice()));
        }
        let deltas = seen.iter().map(|(_, n, d)| (*n, *d)).collect();
        let written = seen
            .iter()
            .zip(counts)
            .map(|((_, n, _), c)| (*n, c))
            .collect();
        Ok((keys, deltas, written))
    }

    /// Writes `puts` of `attempt` into `batch`, in key order, and returns per state number the
    /// change in keys and bytes; with `undo`, the first write of a key in the attempt also
    /// records the value it replaces. What was read ahead of the keys is forgotten.
    fn write_puts(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        metas: &HashMap<String, StateMeta>,
        puts: &[Put],
        attempt: u64,
        undo: bool,
    ) -> Result<Deltas> {
        let (keys, deltas, _) = Self::keys_and_deltas(metas, puts)?;
        // In key order: RocksDB's memtable inserts a run of ascending keys several times
        // faster than the same keys in hash order. A stored value is the attempt that wrote
        // the record (so that a later stage of the same attempt knows the key's undo entry
        // exists), then the record.
        let keys = DataKeys::sorted(
            &keys,
            |i| 8 + puts[i].record.len(),
            |i, out| {
                out[..8].copy_from_slice(&attempt.to_le_bytes());
                out[8..].copy_from_slice(&puts[i].record);
            },
        );
        if undo {
            self.write_undo(w, batch, puts, &keys, attempt)?;
        }
        // What was read ahead of these keys is stale once the batch is written (the undo
        // entries above took their values from it first).
        if self.reads_ahead() {
            self.forget_keys(w, keys.iter().map(|(_, k, _)| k));
        }
        for (_, datakey, value) in keys.iter() {
            batch.put(datakey, value);
        }
        Ok(deltas)
    }

    /// Adds to `batch` the undo entries of the keys that `attempt` writes for the first time:
    /// the value each held before, or that it held none.
    fn write_undo(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        puts: &[Put],
        keys: &DataKeys,
        attempt: u64,
    ) -> Result<()> {
        // A key that had no record when the attempt read it has none now (the attempt is the
        // pipeline's only writer, and what it stages it reads back). Keys that had one are
        // read: this attempt may have written them already (then the undo entry exists).
        let existing: Vec<&[u8]> = keys
            .iter()
            .filter(|(i, _, _)| puts[*i].replaces.is_some())
            .map(|(_, k, _)| k)
            .collect();
        let mut previous = self.stored_values(&existing)?.into_iter();
        let p = w.pending.entry(attempt).or_default();
        let mut entries = Vec::new();
        for (i, datakey, _) in keys.iter() {
            let entry = match puts[i].replaces {
                None => vec![0],
                Some(_) => match previous.next().flatten() {
                    None => vec![0],
                    Some(old) => {
                        if self.unwrap_value(&old)?.0 == attempt {
                            continue;
                        }
                        let mut entry = Vec::with_capacity(1 + old.len());
                        entry.push(1);
                        entry.extend_from_slice(&old);
                        entry
                    }
                },
            };
            entries.push((undo_key(attempt, datakey, p.seq), entry));
            p.seq += 1;
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in entries {
            batch.put(k, v);
        }
        Ok(())
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

    /// The stored values of `keys` (sorted data keys, about to be written): from what was
    /// read ahead or lent where it has them, the others in one batched read.
    fn stored_values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        let (mut missing, mut at) = (Vec::new(), Vec::new());
        {
            let mut all = self.read_aheads();
            for (i, key) in keys.iter().enumerate() {
                let r = state_no_of(key).and_then(|n| all.get_mut(&n));
                let value = r.and_then(|r| match r.records.as_ref().and_then(|x| x.get(key)) {
                    Some(value) => Some(value.to_vec()),
                    None => r.take_lent(key).map(Vec::from),
                });
                match value {
                    Some(value) => out[i] = Some(value),
                    None => {
                        missing.push(*key);
                        at.push(i);
                    }
                }
            }
        }
        for (i, value) in at.into_iter().zip(self.multi_get_sorted(&missing, None)?) {
            out[i] = value.map(|v| v.to_vec());
        }
        Ok(out)
    }

    /// Reads `keys` (sorted data keys, as `snapshot` sees them) in one batched read.
    /// `found(i, data key, value)` takes each stored value.
    fn multi_get_each(
        &self,
        keys: &[(usize, &[u8])],
        snapshot: Option<&Snapshot>,
        mut found: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        // Sorted, RocksDB reads the keys of a memtable or table block in one sweep.
        let sorted: Vec<&[u8]> = keys.iter().map(|(_, k)| *k).collect();
        for ((i, key), value) in keys.iter().zip(self.multi_get_sorted(&sorted, snapshot)?) {
            if let Some(value) = value {
                found(*i, key, &value)?;
            }
        }
        Ok(())
    }

    /// Values of `keys`, which must be sorted, in one batched read (as `snapshot` saw them).
    fn multi_get_sorted(
        &self,
        keys: &[&[u8]],
        snapshot: Option<&Snapshot>,
    ) -> Result<Vec<Option<DBPinnableSlice<'_>>>> {
        let family = self.family(DEFAULT_COLUMN_FAMILY_NAME)?;
        self.db
            .batched_multi_get_cf_opt(family, keys, true, &read_options(snapshot))
            .into_iter()
            .map(|r| r.map_err(|e| self.err("read", e)))
            .collect()
    }

    /// Reads `keys` (of state `state_no`, as `snapshot` sees them) by walking the state's key
    /// range in order: a step to the next stored key while it is near, a seek when it is not.
    /// `found(i, data key, value)` takes each stored value.
    fn sweep(
        &self,
        keys: &[(usize, &[u8])],
        state_no: u32,
        snapshot: Option<&Snapshot>,
        mut found: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let prefix = data_prefix(state_no);
        let mut opts = read_options(snapshot);
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let mut it = self.db.raw_iterator_opt(opts);
        let mut positioned = false;
        for &(i, key) in keys {
            let mut steps = 0;
            loop {
                if !positioned || steps == SWEEP_STEPS {
                    it.seek(key);
                    positioned = true;
                    break;
                }
                match it.key() {
                    Some(k) if k < key => {
                        it.next();
                        steps += 1;
                    }
                    _ => break,
                }
            }
            if it.key() == Some(key) {
                found(i, key, it.value().unwrap_or_default())?;
            }
        }
        it.status().map_err(|e| self.err("read", e))
    }

    /// The attempt in flight on `pipeline`, as `snapshot` saw it.
    fn in_flight(&self, snapshot: &Snapshot, pipeline: &str) -> Result<Option<u64>> {
        Ok(self
            .pipeline_meta_at(pipeline, Some(snapshot))?
            .and_then(|m| m.in_flight))
    }

    /// The first undo entry `attempt` wrote for `key`, as `snapshot` saw it: `Some(None)` if
    /// the key had no value before the attempt, `None` if the attempt did not write the key.
    fn undo_entry(
        &self,
        snapshot: &Snapshot,
        attempt: u64,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>> {
        let mut prefix = undo_prefix(attempt);
        prefix.extend_from_slice(&(key.len() as u32).to_be_bytes());
        prefix.extend_from_slice(key);
        let mut opts = read_options(Some(snapshot));
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(&prefix);
        let entry = match it.value() {
            Some([1, old @ ..]) => Some(Some(old.to_vec())),
            Some(_) => Some(None),
            None => None,
        };
        it.status().map_err(|e| self.err("read", e))?;
        Ok(entry)
    }

    /// The stored value `datakey` had before `attempt` staged it (`None`: it had none).
    fn before_attempt(
        &self,
        snapshot: &Snapshot,
        attempt: u64,
        datakey: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.undo_entry(snapshot, attempt, datakey)?.ok_or_else(|| {
            DataFusionError::Execution(format!(
                "damaged state in {}: a record staged by attempt {attempt} has no undo entry",
                self.path.display()
            ))
        })
    }

    /// The committed record of a stored value read from `snapshot`, given the attempt then
    /// in flight on the value's pipeline (`staging`): a record that attempt staged reads as
    /// the record it replaced.
    fn committed_record(
        &self,
        snapshot: &Snapshot,
        staging: Option<u64>,
        datakey: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (attempt, record) = self.unwrap_value(value)?;
        if staging != Some(attempt) {
            return Ok(Some(record.to_vec()));
        }
        match self.before_attempt(snapshot, attempt, datakey)? {
            Some(old) => Ok(Some(self.unwrap_value(&old)?.1.to_vec())),
            None => Ok(None),
        }
    }

    /// Records of `keys` of a state, each handed to `found(i, record)`: committed ones, or
    /// also what the pipeline's running attempt staged. Committed ones are read from one
    /// snapshot, so that a staged record and its undo entry are read together.
    fn read(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        view: View,
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(meta) = self.state_meta(pipeline, state_id)? else {
            return Ok(());
        };
        let count = keys.len();
        let keys: Vec<(u32, &[u8])> = keys.iter().map(|k| (meta.state_no, *k)).collect();
        // Sorted only for what is left for RocksDB.
        let keys = DataKeys::in_input_order(&keys, |_, _| {});
        // The commit log first: it holds the newest records of the keys it has (committed
        // ones: staging folds the log first).
        let mut rest: Vec<(usize, &[u8])> = Vec::with_capacity(count);
        {
            let log = self.log();
            for (i, key, _) in keys.iter() {
                match log.get(key) {
                    Some(value) => found(i, self.unwrap_value(value)?.1)?,
                    None => rest.push((i, key)),
                }
            }
        }
        // Much of the committed state is asked for (the first batch of a query over few
        // symbols): one pass over the state's keys costs less than a lookup per key.
        let sweep = meta.keys > 0 && rest.len() as u64 * SWEEP_RATIO >= meta.keys;
        if view == View::Running && !rest.is_empty() {
            rest = self.read_ahead_first(pipeline, &meta, rest, !sweep, found)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        rest.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let snapshot = (view == View::Committed).then(|| self.db.snapshot());
        let staging = match &snapshot {
            Some(snapshot) => self.in_flight(snapshot, pipeline)?,
            None => None,
        };
        // What the running attempt reads from RocksDB is lent to the state's read-ahead, for
        // the undo entries of a stage; not copied at all while the budget is spent.
        let lends = view == View::Running && read_ahead::held() < self.read_ahead_bytes;
        let mut lent = Vec::new();
        let mut stored = |i: usize, key: &[u8], value: &[u8]| -> Result<()> {
            match &snapshot {
                Some(snapshot) => match self.committed_record(snapshot, staging, key, value)? {
                    Some(record) => found(i, &record),
                    None => Ok(()),
                },
                None => {
                    if lends {
                        lent.push((Box::from(key), Box::from(value)));
                    }
                    found(i, self.unwrap_value(value)?.1)
                }
            }
        };
        let read = if sweep {
            self.sweep(&rest, meta.state_no, snapshot.as_ref(), &mut stored)
        } else {
            self.multi_get_each(&rest, snapshot.as_ref(), &mut stored)
        };
        if !lent.is_empty()
            && let Some(r) = self.read_aheads().get_mut(&meta.state_no)
            && r.records.is_none()
        {
            for (key, value) in lent {
                r.lend(key, value, self.read_ahead_bytes);
            }
        }
        read
    }

    /// For the running attempt: answers what it can of `rest` (keys of the state `meta`) from
    /// the state's read-ahead. When the keys are to be looked up one by one (`lookups`), they
    /// count as point reads, and once those have come to cost about one scan, the state is
    /// read ahead first ([`read_ahead`]). Returns the keys left to read.
    fn read_ahead_first<'k>(
        &self,
        pipeline: &str,
        meta: &StateMeta,
        rest: Vec<(usize, &'k [u8])>,
        lookups: bool,
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<Vec<(usize, &'k [u8])>> {
        if self.read_ahead_bytes == 0 {
            return Ok(rest);
        }
        // The state's first read in this attempt: did its last commit write much of it?
        let hinted = !self.read_aheads().contains_key(&meta.state_no)
            && self.get(&read_ahead_key(meta.state_no))?.is_some();
        let read_ahead = {
            let mut all = self.read_aheads();
            // While another partition reads the state ahead, on every core, this one waits for
            // it instead of reading key by key. A state with no committed keys (yet) is read
            // key by key.
            while lookups && all.get(&meta.state_no).is_some_and(|r| r.filling) {
                all = self.filled.wait(all).unwrap_or_else(|e| e.into_inner());
            }
            let r = all.entry(meta.state_no).or_insert_with(|| {
                let mut r = ReadAhead::new(pipeline);
                r.hinted = hinted;
                r
            });
            if r.records.is_none() && lookups && !r.too_big && !r.filling && meta.keys > 0 {
                r.point_reads += rest.len() as u64;
                r.filling = r.hinted || r.point_reads * READ_AHEAD_RATIO >= meta.keys;
                r.filling
            } else {
                false
            }
        };
        if read_ahead {
            self.fill_read_ahead(pipeline, meta)?;
        }
        let all = self.read_aheads();
        let Some(records) = all.get(&meta.state_no).and_then(|r| r.records.as_ref()) else {
            return Ok(rest);
        };
        let mut left = Vec::new();
        for (i, key) in rest {
            match records.get(key) {
                Some(value) => found(i, self.unwrap_value(value)?.1)?,
                None => left.push((i, key)),
            }
        }
        Ok(left)
    }

    /// Reads the state `meta` ahead: all its records, if they fit the budget. Under the writer
    /// lock, so that nothing writes the state's keys meanwhile; partitions that wait for the
    /// records are woken at the end, whatever happened.
    fn fill_read_ahead(&self, pipeline: &str, meta: &StateMeta) -> Result<()> {
        let w = self.writer();
        let filled = self.fill_locked(pipeline, meta);
        drop(w);
        self.filled.notify_all();
        filled
    }

    fn fill_locked(&self, pipeline: &str, meta: &StateMeta) -> Result<()> {
        // The pipeline's attempt ended meanwhile, and its read-aheads with it.
        if self.read_aheads().get(&meta.state_no).is_none() {
            return Ok(());
        }
        let (keys, bytes) = (meta.keys as usize, meta.bytes as usize);
        let records =
            if read_ahead::held() + Records::estimate(keys, bytes) <= self.read_ahead_bytes {
                self.scan_records(meta.state_no, keys, bytes)
            } else {
                Ok(None)
            };
        let mut all = self.read_aheads();
        let r = all
            .entry(meta.state_no)
            .or_insert_with(|| ReadAhead::new(pipeline));
        r.filling = false;
        r.records = records?;
        r.too_big = r.records.is_none();
        if !r.too_big {
            r.drop_lent();
        }
        Ok(())
    }

    /// Every record of state `state_no` (of about `keys` keys and `bytes` bytes), or `None`
    /// if they do not fit the read-ahead budget after all: a span of its buckets per core.
    fn scan_records(&self, state_no: u32, keys: usize, bytes: usize) -> Result<Option<Records>> {
        let spans = Records::spans(threads_for(keys));
        let share = spans.len();
        let scans =
            on_threads(spans.into_iter().map(|buckets| {
                move || self.scan_span(state_no, buckets, keys / share, bytes / share)
            }));
        let mut spans = Vec::with_capacity(share);
        for span in scans {
            match span? {
                Some(span) => spans.push(span),
                None => return Ok(None),
            }
        }
        Ok((read_ahead::held() <= self.read_ahead_bytes).then(|| Records::from_spans(spans)))
    }

    /// The records of the buckets `buckets` of state `state_no`, in one scan; about `keys`
    /// keys and `bytes` bytes.
    fn scan_span(
        &self,
        state_no: u32,
        buckets: std::ops::Range<usize>,
        keys: usize,
        bytes: usize,
    ) -> Result<Option<Span>> {
        // Where bucket `b`'s keys start; past the last bucket, past the state.
        let bound = |b: usize| {
            let prefix = data_prefix(state_no);
            if b < BUCKETS as usize {
                [&prefix[..], &(b as u16).to_be_bytes()].concat()
            } else {
                prefix_end(&prefix)
            }
        };
        let mut opts = read_options(None);
        opts.set_iterate_upper_bound(bound(buckets.end));
        // Every block of the state is read once: cached, they would push out other blocks.
        opts.fill_cache(false);
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(bound(buckets.start));
        let mut span = Span::new(keys, bytes);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            self.unwrap_value(v)?;
            if !span.push(k, v) {
                return Ok(None);
            }
            it.next();
        }
        it.status().map_err(|e| self.err("read", e))?;
        span.index();
        Ok(Some(span))
    }

    /// Splits a stored value into the attempt that wrote it and the record.
    fn unwrap_value<'a>(&self, value: &'a [u8]) -> Result<(u64, &'a [u8])> {
        if value.len() < 8 {
            return Err(DataFusionError::Execution(format!(
                "damaged record in {}: {} byte(s)",
                self.path.display(),
                value.len()
            )));
        }
        let attempt = u64::from_le_bytes(value[..8].try_into().unwrap());
        Ok((attempt, &value[8..]))
    }
}

/// `batch`'s writes followed by those of `runs`, as one batch. RocksDB's batch format is a
/// header of 12 bytes (a sequence number, then the number of writes as a little-endian u32)
/// followed by the writes, so batches join by appending their writes and adding their counts
/// (RocksDB's own `WriteBatchInternal::Append`, which its C API does not offer).
fn joined(batch: WriteBatch, runs: Vec<WriteBatch>) -> Result<WriteBatch> {
    const HEADER: usize = 12;
    if runs.is_empty() {
        return Ok(batch);
    }
    let count = batch.len() + runs.iter().map(WriteBatch::len).sum::<usize>();
    let count = u32::try_from(count).map_err(|_| {
        DataFusionError::Execution(format!(
            "a commit of {count} writes is too large for RocksDB"
        ))
    })?;
    let size = batch.data().len() + runs.iter().map(|r| r.data().len() - HEADER).sum::<usize>();
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(batch.data());
    drop(batch);
    for run in runs {
        data.extend_from_slice(&run.data()[HEADER..]);
    }
    data[8..HEADER].copy_from_slice(&count.to_le_bytes());
    Ok(WriteBatch::from_data(&data))
}

/// About the size of a write batch holding `puts`, so that it is allocated once.
fn batch_bytes(puts: &[Put]) -> usize {
    let per_put = 7 + 8 + 16; // key prefix, writer attempt, batch framing
    4096 + puts
        .iter()
        .map(|p| per_put + p.key.len() + p.record.len())
        .sum::<usize>()
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
