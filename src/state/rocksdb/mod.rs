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
//! The files: `layout.rs` the key spaces and keys, `meta.rs` the pipeline and state metadata
//! records, `data_keys.rs` data keys built in key order on every core (for commits and
//! stages), `log.rs` the commit log, `read_ahead.rs` states read whole; this file the store.

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
mod meta;
mod read_ahead;

use data_keys::{DataKeys, PARALLEL_KEYS, on_threads, threads_for};
use layout::*;
use meta::{PipelineMeta, StateMeta};

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
        for info in states {
            let meta = match self.state_meta(pipeline, &info.state_id)? {
                Some(mut meta) => {
                    if let Some(why) = meta.info.mismatch(info) {
                        return Err(DataFusionError::Execution(format!(
                            "pipeline '{pipeline}' in {}: {why}",
                            self.path.display()
                        )));
                    }
                    if meta.info.encoding_version < info.encoding_version {
                        // Records of the newer encoding are written from now on, and this
                        // build reads both: the state records the newer version.
                        let key = state_key(pipeline, &info.state_id);
                        if let Some(attempt) = undo {
                            let p = w.pending.entry(attempt).or_default();
                            let mut before = vec![1u8];
                            before.extend_from_slice(&meta.encode());
                            batch.put(undo_key(attempt, &key, p.seq), before);
                            p.seq += 1;
                        }
                        meta.info.encoding_version = info.encoding_version;
                        meta.info.reads_from = info.encoding_version;
                        batch.put(&key, meta.encode());
                    }
                    meta
                }
                None => {
                    let meta = StateMeta {
                        state_no: w.next_state,
                        keys: 0,
                        bytes: 0,
                        info: info.clone(),
                    };
                    w.next_state += 1;
                    batch.put(meta_key("next_state"), w.next_state.to_le_bytes());
                    let key = state_key(pipeline, &info.state_id);
                    if let Some(attempt) = undo {
                        let p = w.pending.entry(attempt).or_default();
                        batch.put(undo_key(attempt, &key, p.seq), [0u8]);
                        p.seq += 1;
                    }
                    batch.put(&key, meta.encode());
                    meta
                }
            };
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
            out.push(StateSummary {
                info: meta.info,
                keys: meta.keys,
                bytes: meta.bytes,
            });
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
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::DataType;

    use crate::state::KeyColumn;

    fn info(version: u32) -> StateInfo {
        StateInfo {
            state_id: "ewma(price,0.5)@symbol".into(),
            kernel: "ewma".into(),
            params: vec!["0.5".into()],
            inputs: vec!["price".into()],
            key_columns: vec![KeyColumn {
                name: "symbol".into(),
                data_type: DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(DataType::Utf8),
                ),
            }],
            order_type: DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            encoding_version: version,
            reads_from: version,
        }
    }

    /// A one-byte record for `key`; `exists`: the key holds a (one-byte) record already.
    fn put(key: &str, value: u8, exists: bool) -> Put {
        Put {
            state_id: Arc::from("ewma(price,0.5)@symbol"),
            key: key.as_bytes().to_vec(),
            record: vec![value],
            replaces: exists.then_some(1),
        }
    }

    /// What a read of `keys` of pipeline `p` hands over, as one record (or none) per key.
    fn records(
        store: &RocksStore,
        state_id: &str,
        keys: &[&[u8]],
        view: View,
    ) -> Vec<Option<Vec<u8>>> {
        let mut out = vec![None; keys.len()];
        store
            .read("p", state_id, keys, view, &mut |i, record| {
                assert!(out[i].is_none(), "key {i} was handed over twice");
                out[i] = Some(record.to_vec());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn metadata_round_trips() {
        let m = StateMeta {
            state_no: 7,
            keys: 3,
            bytes: 99,
            info: info(1),
        };
        assert_eq!(StateMeta::decode(&m.encode()).unwrap(), m);
        let p = PipelineMeta {
            commits: 4,
            last_commit_micros: Some(-5),
            last_commit_tag: Some("t".into()),
            in_flight: Some(9),
        };
        assert_eq!(PipelineMeta::decode(&p.encode()).unwrap(), p);
        assert!(PipelineMeta::decode(&p.encode()[..5]).is_err());
    }

    /// Settings with a commit log budget: 0 writes every commit to its data keys, a huge one
    /// never folds but when a stage or the test asks.
    fn with_log(commit_log_bytes: usize) -> FintechConfig {
        FintechConfig {
            rocksdb_commit_log_bytes: commit_log_bytes,
            ..FintechConfig::default()
        }
    }

    const NEVER_FOLDS: usize = 1 << 50;

    #[test]
    fn staged_updates_roll_back_and_commit() {
        for budget in [0, NEVER_FOLDS] {
            staged_updates_roll_back_and_commit_with(budget);
        }
    }

    fn staged_updates_roll_back_and_commit_with(commit_log_bytes: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(commit_log_bytes)).unwrap();
        let a = store.begin("p").unwrap();
        store
            .commit(
                "p",
                a,
                Commit {
                    tag: Some("t1".into()),
                    states: vec![info(1)],
                    puts: vec![put("x", 1, false)],
                    ..Default::default()
                },
            )
            .unwrap();

        // Stage over x and a new y, then roll back: x is 1 again, y is gone.
        let b = store.begin("p").unwrap();
        store
            .stage(
                "p",
                b,
                &[info(1)],
                vec![put("x", 2, true), put("y", 2, false)],
            )
            .unwrap();
        store
            .stage("p", b, &[info(1)], vec![put("x", 3, true)])
            .unwrap();
        let id = "ewma(price,0.5)@symbol";
        assert_eq!(
            records(&store, id, &[b"x", b"y"], View::Running),
            vec![Some(vec![3]), Some(vec![2])]
        );
        // Readers of the committed state (the state tables) do not see what is staged, by
        // lookup (both ways: walking the state and one lookup) or by scan.
        let committed = vec![Some(vec![1]), None];
        assert_eq!(store.get_many("p", id, &[b"x", b"y"]).unwrap(), committed);
        assert_eq!(
            store.get_many("p", id, &[b"x"]).unwrap(),
            vec![Some(vec![1])]
        );
        assert_eq!(
            store.get_many("p", id, &[b"y", b"x"]).unwrap(),
            vec![None, Some(vec![1])]
        );
        assert_eq!(store.scan("p", id).unwrap(), vec![(b"x".to_vec(), vec![1])]);
        store.rollback("p", b).unwrap();
        assert_eq!(
            store.get_many("p", id, &[b"x", b"y"]).unwrap(),
            vec![Some(vec![1]), None]
        );
        assert!(store.scan_prefix(&[UNDO]).unwrap().is_empty());

        // A staged attempt left in flight (a crash) is rolled back by the next begin.
        let c = store.begin("p").unwrap();
        store
            .stage("p", c, &[info(1)], vec![put("x", 4, true)])
            .unwrap();
        let d = store.begin("p").unwrap();
        assert_eq!(
            store.get_many("p", id, &[b"x"]).unwrap(),
            vec![Some(vec![1])]
        );

        // Staged and final writes commit together, with exact counts. A state first used by
        // the attempt is listed once the attempt commits.
        let other = StateInfo {
            state_id: "other".into(),
            ..info(1)
        };
        store
            .stage(
                "p",
                d,
                &[info(1), other.clone()],
                vec![
                    put("y", 5, false),
                    put("z", 5, false),
                    Put {
                        state_id: Arc::from("other"),
                        ..put("o", 5, false)
                    },
                ],
            )
            .unwrap();
        assert_eq!(store.states("p").unwrap().len(), 1);
        assert_eq!(store.scan("p", "other").unwrap(), vec![]);
        assert_eq!(
            records(&store, "other", &[b"o"], View::Running),
            vec![Some(vec![5])]
        );
        store
            .commit(
                "p",
                d,
                Commit {
                    tag: Some("t2".into()),
                    states: vec![info(1), other],
                    puts: vec![put("x", 6, true)],
                    ..Default::default()
                },
            )
            .unwrap();
        let states = store.states("p").unwrap();
        let s = states.iter().find(|s| s.info.state_id != "other").unwrap();
        assert_eq!((s.keys, s.bytes), (3, 6));
        assert_eq!(states.len(), 2);
        assert_eq!(
            store.scan("p", "other").unwrap(),
            vec![(b"o".to_vec(), vec![5])]
        );
        assert_eq!(store.pipeline("p").unwrap().unwrap().commits, 2);
        assert!(
            store
                .commit(
                    "p",
                    99,
                    Commit {
                        tag: Some("t2".into()),
                        ..Default::default()
                    }
                )
                .is_err()
        );

        // A different encoding version is refused, nothing changes.
        let e = store.begin("p").unwrap();
        let err = store
            .commit(
                "p",
                e,
                Commit {
                    tag: None,
                    states: vec![info(2)],
                    puts: vec![put("x", 7, true)],
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encoding version 1, older than this build reads"),
            "{err}"
        );
        assert_eq!(
            store.get_many("p", id, &[b"x"]).unwrap(),
            vec![Some(vec![6])]
        );
    }

    #[test]
    fn sweeps_and_lookups_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // Without a commit log, so that reads go to RocksDB.
        let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(0)).unwrap();
        let id = "ewma(price,0.5)@symbol";
        // Keys k000..k399; every other one stored, with its number as the record.
        let key = |i: u32| format!("k{i:03}");
        let puts = (0..400u32)
            .step_by(2)
            .map(|i| Put {
                record: i.to_le_bytes().to_vec(),
                ..put(&key(i), 0, false)
            })
            .collect();
        commit(&store, puts);
        let expect = |i: u32| i.is_multiple_of(2).then(|| i.to_le_bytes().to_vec());
        // All keys (a sweep stepping through), a sparse few (lookups), and two runs far
        // apart (a sweep that seeks across the gap), in scrambled order.
        let cases: Vec<Vec<u32>> = vec![
            (0..400).rev().collect(),
            vec![7, 398, 14, 100, 3],
            (0..30).chain(370..400).rev().collect(),
        ];
        let read = |asked: &[u32], view: View| {
            let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
            let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            records(&store, id, &refs, view)
        };
        for asked in &cases {
            let want: Vec<_> = asked.iter().map(|&i| expect(i)).collect();
            assert_eq!(read(asked, View::Committed), want);
            assert_eq!(read(asked, View::Running), want);
        }

        // A running attempt stages every 7th key, over stored ones and new ones (k007): it
        // reads them as staged, committed readers as they were, through both read paths.
        let b = store.begin("p").unwrap();
        let staged: Vec<Put> = (0..400u32)
            .step_by(7)
            .map(|i| Put {
                record: vec![7],
                ..put(&key(i), 0, i.is_multiple_of(2))
            })
            .collect();
        store.stage("p", b, &[info(1)], staged).unwrap();
        for asked in &cases {
            let committed: Vec<_> = asked.iter().map(|&i| expect(i)).collect();
            let running: Vec<_> = asked
                .iter()
                .map(|&i| match i % 7 {
                    0 => Some(vec![7]),
                    _ => expect(i),
                })
                .collect();
            assert_eq!(read(asked, View::Committed), committed);
            assert_eq!(read(asked, View::Running), running);
        }
    }

    impl RocksStore {
        /// Records read ahead, over every state.
        fn read_ahead_keys(&self) -> usize {
            self.read_aheads()
                .values()
                .filter_map(|r| r.records.as_ref())
                .map(Records::len)
                .sum()
        }

        /// Values lent to read-aheads, over every state.
        fn lent_keys(&self) -> usize {
            self.read_aheads().values().map(|r| r.lent_len()).sum()
        }
    }

    #[test]
    fn lent_values_become_undo_entries_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(0)).unwrap();
        let id = "ewma(price,0.5)@symbol";
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i:03}")).collect();
        commit(&store, keys.iter().map(|k| put(k, 1, false)).collect());
        // The last commit wrote few keys: the state is not read ahead at its first read.
        commit(&store, keys[..10].iter().map(|k| put(k, 1, true)).collect());
        let ten: Vec<&[u8]> = keys[..10].iter().map(|k| k.as_bytes()).collect();

        // Point reads of 10 of a thousand keys: not read ahead, lent.
        let a = store.begin("p").unwrap();
        assert_eq!(
            records(&store, id, &ten, View::Running),
            vec![Some(vec![1]); 10]
        );
        assert_eq!((store.read_ahead_keys(), store.lent_keys()), (0, 10));

        // A stage takes its undo entries' values from them.
        let staged = |v| -> Vec<Put> { keys[..10].iter().map(|k| put(k, v, true)).collect() };
        store.stage("p", a, &[info(1)], staged(2)).unwrap();
        assert_eq!(store.lent_keys(), 0);
        // Read back, the staged values are lent; staged again, they are written without a
        // second undo entry, and forgotten.
        assert_eq!(
            records(&store, id, &ten, View::Running),
            vec![Some(vec![2]); 10]
        );
        assert_eq!(store.lent_keys(), 10);
        store.stage("p", a, &[info(1)], staged(3)).unwrap();
        assert_eq!(store.lent_keys(), 0);
        assert_eq!(store.scan_prefix(&undo_prefix(a)).unwrap().len(), 10);
        assert_eq!(
            records(&store, id, &ten, View::Running),
            vec![Some(vec![3]); 10]
        );

        // Rolled back: every key holds what was committed, and nothing stays lent.
        store.rollback("p", a).unwrap();
        assert_eq!(store.lent_keys(), 0);
        assert_eq!(
            store.get_many("p", id, &ten).unwrap(),
            vec![Some(vec![1]); 10]
        );

        // An undo entry keeps the value lent (here one lent by hand), not one read again.
        let b = store.begin("p").unwrap();
        records(&store, id, &ten[..1], View::Running);
        let no = store.state_meta("p", id).unwrap().unwrap().state_no;
        let lent = [&7u64.to_le_bytes()[..], &[9]].concat();
        store.read_aheads().get_mut(&no).unwrap().lend(
            data_key(no, b"k000").into(),
            lent.clone().into(),
            usize::MAX,
        );
        store
            .stage("p", b, &[info(1)], vec![put("k000", 4, true)])
            .unwrap();
        let undo = store.scan_prefix(&undo_prefix(b)).unwrap();
        assert_eq!(undo.len(), 1);
        assert_eq!(undo[0].1[..], [&[1], &lent[..]].concat());
    }

    #[test]
    fn a_state_its_last_commit_wrote_much_of_is_read_ahead_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let id = "ewma(price,0.5)@symbol";
        let key = |i: u32| format!("key{i}");
        let puts = |range: std::ops::Range<u32>, exists: bool| {
            range.map(|i| put(&key(i), 7, exists)).collect::<Vec<_>>()
        };
        // Whether one read of 10 keys (point reads: far from a quarter of the state) reads
        // the state ahead, in a store opened again.
        let reads_ahead_at_once = |commits: &[Vec<Put>]| {
            let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
            for c in commits {
                commit(&store, c.clone());
            }
            drop(store);
            let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
            let attempt = store.begin("p").unwrap();
            let names: Vec<String> = (0..10).map(key).collect();
            let refs: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
            let got = records(&store, id, &refs, View::Running);
            assert!(got.iter().all(|r| r.as_deref() == Some(&[7u8][..])));
            let read_ahead = store.read_ahead_keys();
            store.rollback("p", attempt).unwrap();
            read_ahead
        };
        // A commit of all 1,000 keys: the next query reads them ahead at its first read.
        assert_eq!(reads_ahead_at_once(&[puts(0..1000, false)]), 1000);
        // A commit of 100 of them (a tenth, less than an eighth): key by key again.
        assert_eq!(reads_ahead_at_once(&[puts(0..100, true)]), 0);
        // An eighth (125 keys) is much.
        assert_eq!(reads_ahead_at_once(&[puts(0..125, true)]), 1000);
    }

    #[test]
    fn partitions_reading_a_state_at_once_share_its_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
        let id = "ewma(price,0.5)@symbol";
        // Enough keys for a span per core (up to 3).
        let n = 100_000u32;
        let key = |i: u32| format!("key{i}");
        commit(
            &store,
            (0..n)
                .map(|i| Put {
                    record: i.to_le_bytes().to_vec(),
                    ..put(&key(i), 0, false)
                })
                .collect(),
        );
        store.begin("p").unwrap();
        // Two partitions, each asking for its half 500 keys at a time: past an eighth of the
        // state, one reads it ahead while the other waits for it, or reads key by key before.
        std::thread::scope(|s| {
            for half in 0..2u32 {
                let store = &store;
                s.spawn(move || {
                    let mine: Vec<u32> = (0..n).filter(|i| i % 2 == half).collect();
                    for asked in mine.chunks(500) {
                        let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
                        let refs: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
                        let got = records(store, id, &refs, View::Running);
                        for (&i, record) in asked.iter().zip(got) {
                            assert_eq!(record, Some(i.to_le_bytes().to_vec()), "key {i}");
                        }
                    }
                });
            }
        });
        assert_eq!(
            store.read_ahead_keys(),
            n as usize,
            "every key is read ahead"
        );
    }

    #[test]
    fn read_ahead_reads_what_lookups_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let id = "ewma(price,0.5)@symbol";
        let key = |i: u32| format!("k{i:03}");
        let record = |i: u32, v: u32| Put {
            record: (i * 1000 + v).to_le_bytes().to_vec(),
            ..put(&key(i), 0, v > 0)
        };
        // Every other key of k000..k399 is written to its data key (no commit log), then
        // every 10th, in a store with a commit log, is updated in the log.
        let store = RocksStore::open(path, &with_log(0)).unwrap();
        commit(&store, (0..400).step_by(2).map(|i| record(i, 0)).collect());
        drop(store);
        let store = RocksStore::open(path, &with_log(1 << 20)).unwrap();
        commit(&store, (0..400).step_by(10).map(|i| record(i, 1)).collect());
        let expect = |i: u32| match (i % 10, i % 2) {
            (0, _) => Some((i * 1000 + 1).to_le_bytes().to_vec()),
            (_, 0) => Some((i * 1000).to_le_bytes().to_vec()),
            _ => None,
        };
        // Keys asked for five at a time, in a scrambled order: point reads (not sweeps), until
        // they add up to an eighth of the state and it is read ahead.
        let order: Vec<u32> = (0..400).map(|i| (i * 137) % 400).collect();
        let read_all = |store: &RocksStore, view: View, staged: &dyn Fn(u32) -> Option<Vec<u8>>| {
            for asked in order.chunks(5) {
                let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
                let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
                let want: Vec<_> = asked
                    .iter()
                    .map(|&i| match view {
                        View::Running => staged(i).or_else(|| expect(i)),
                        View::Committed => expect(i),
                    })
                    .collect();
                assert_eq!(records(store, id, &refs, view), want, "{asked:?}");
            }
        };
        let b = store.begin("p").unwrap();
        read_all(&store, View::Running, &|_| None);
        // The state's 200 keys minus the 40 the log holds, minus the point reads before.
        assert!(
            store.read_ahead_keys() >= 100,
            "{}",
            store.read_ahead_keys()
        );
        // Staging every 7th key folds the log into the data keys and writes the staged
        // records: the read-ahead forgets both, and reads find them in RocksDB.
        let staged = |i: u32| i.is_multiple_of(7).then(|| vec![7]);
        let puts = (0..400u32)
            .step_by(7)
            .map(|i| Put {
                record: vec![7],
                ..put(&key(i), 0, expect(i).is_some())
            })
            .collect();
        store.stage("p", b, &[info(1)], puts).unwrap();
        assert!(store.read_ahead_keys() > 0);
        read_all(&store, View::Running, &staged);
        read_all(&store, View::Committed, &staged);
        // The end of the attempt drops what it read.
        store.rollback("p", b).unwrap();
        assert_eq!(store.read_ahead_keys(), 0);
        let c = store.begin("p").unwrap();
        read_all(&store, View::Running, &|_| None);
        store.rollback("p", c).unwrap();

        // A state larger than the budget is read key by key.
        drop(store);
        let small = FintechConfig {
            rocksdb_read_ahead_bytes: 100,
            ..FintechConfig::default()
        };
        let store = RocksStore::open(path, &small).unwrap();
        let d = store.begin("p").unwrap();
        read_all(&store, View::Running, &|_| None);
        assert_eq!(store.read_ahead_keys(), 0);
        store.rollback("p", d).unwrap();
    }

    fn commit(store: &RocksStore, puts: Vec<Put>) {
        let attempt = store.begin("p").unwrap();
        let commit = Commit {
            tag: None,
            states: vec![info(1)],
            puts,
            ..Default::default()
        };
        store.commit("p", attempt, commit).unwrap();
    }

    #[test]
    fn commit_log_is_read_first_folded_and_read_back_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let path = path.to_str().unwrap();
        let id = "ewma(price,0.5)@symbol";
        let all: [&[u8]; 3] = [b"x", b"y", b"z"];
        let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
        commit(&store, vec![put("x", 1, false), put("y", 1, false)]);
        commit(&store, vec![put("x", 2, true)]);
        // Logged, not in the data keys.
        assert_eq!(store.scan_prefix(&[DATA]).unwrap(), vec![]);
        assert_eq!(store.log_entries().unwrap().len(), 2);
        let want = vec![Some(vec![2]), Some(vec![1]), None];
        assert_eq!(store.get_many("p", id, &all).unwrap(), want);
        let rows = vec![(b"x".to_vec(), vec![2]), (b"y".to_vec(), vec![1])];
        assert_eq!(store.scan("p", id).unwrap(), rows);

        // Read back when the store opens again.
        drop(store);
        let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
        assert_eq!(store.get_many("p", id, &all).unwrap(), want);
        assert_eq!(store.scan("p", id).unwrap(), rows);
        let s = &store.states("p").unwrap()[0];
        assert_eq!((s.keys, s.bytes), (2, 4));

        // A fold writes the newest records to the data keys and deletes the entries; a key
        // logged after it (y) is read from the log, the others (x) from RocksDB.
        store.fold(&mut store.writer()).unwrap();
        assert!(store.log().is_empty());
        assert_eq!(store.log_entries().unwrap(), vec![]);
        assert_eq!(store.scan_prefix(&[DATA]).unwrap().len(), 2);
        commit(&store, vec![put("y", 3, true), put("z", 3, false)]);
        let want = vec![Some(vec![2]), Some(vec![3]), Some(vec![3])];
        assert_eq!(store.get_many("p", id, &all).unwrap(), want);
        let rows = vec![
            (b"x".to_vec(), vec![2]),
            (b"y".to_vec(), vec![3]),
            (b"z".to_vec(), vec![3]),
        ];
        assert_eq!(store.scan("p", id).unwrap(), rows);

        // Staging folds first: the staged record is read, and a rollback restores what the
        // log held.
        let b = store.begin("p").unwrap();
        store
            .stage("p", b, &[info(1)], vec![put("y", 4, true)])
            .unwrap();
        assert!(store.log().is_empty());
        assert_eq!(
            records(&store, id, &all, View::Running),
            vec![Some(vec![2]), Some(vec![4]), Some(vec![3])]
        );
        assert_eq!(store.get_many("p", id, &all).unwrap(), want);
        store.rollback("p", b).unwrap();
        assert_eq!(store.get_many("p", id, &all).unwrap(), want);

        // A commit too big for the log is written to the data keys, after a fold.
        commit(&store, vec![put("z", 5, true)]);
        drop(store);
        let store = RocksStore::open(path, &with_log(0)).unwrap();
        assert!(!store.log().is_empty());
        commit(&store, vec![put("x", 6, true)]);
        assert!(store.log().is_empty());
        assert_eq!(
            store.get_many("p", id, &all).unwrap(),
            vec![Some(vec![6]), Some(vec![3]), Some(vec![5])]
        );
        let s = &store.states("p").unwrap()[0];
        assert_eq!((s.keys, s.bytes), (3, 6));
    }

    /// Bytes in the write-ahead log files of the store at `path`.
    fn wal_bytes(path: &std::path::Path) -> u64 {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_closed_store_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let id = "ewma(price,0.5)@symbol";
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        for budget in [0, NEVER_FOLDS] {
            let store = RocksStore::open(path.to_str().unwrap(), &with_log(budget)).unwrap();
            commit(
                &store,
                keys.iter().map(|k| put(k, 7, budget != 0)).collect(),
            );
            assert!(
                wal_bytes(&path) > 1000,
                "the commit is in the write-ahead log"
            );
            drop(store);
            assert_eq!(wal_bytes(&path), 0, "commit log budget {budget}");
        }
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let stored = store.get_many("p", id, &keys).unwrap();
        assert!(stored.iter().all(|v| v.as_deref() == Some(&[7u8][..])));
    }

    #[test]
    fn commit_log_folds_when_it_passes_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let id = "ewma(price,0.5)@symbol";
        // A one-put commit holds 81 bytes: logged while 2 x 81 <= 200. The budget is for the
        // whole process (other tests' stores too), so when folds happen varies, but this
        // store's own log never stays above it: three commits fold at least once.
        let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(200)).unwrap();
        for value in 1..=3 {
            commit(&store, vec![put("x", value, value > 1)]);
            assert!(store.log().held() <= 200);
            assert_eq!(
                store.get_many("p", id, &[b"x"]).unwrap(),
                vec![Some(vec![value])]
            );
        }
        let stored = store.get(&data_key(0, b"x")).unwrap().unwrap();
        assert!((1..=3).contains(&store.unwrap_value(&stored).unwrap().1[0]));
        // Too big for this budget: written to its key, not logged.
        commit(&store, vec![put("x", 4, true), put("y", 4, false)]);
        assert!(store.log().is_empty());
        assert_eq!(store.log_entries().unwrap(), vec![]);
        let stored = store.get(&data_key(0, b"y")).unwrap().unwrap();
        assert_eq!(store.unwrap_value(&stored).unwrap().1, [4]);
    }

    #[test]
    fn damaged_log_and_unknown_layouts_are_refused_and_layout_1_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let path = path.to_str().unwrap();
        let reopen = |f: &dyn Fn(&DB)| {
            let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
            f(&store.db);
            drop(store);
            RocksStore::open(path, &with_log(NEVER_FOLDS))
        };
        fn layout(v: &'static [u8]) -> impl Fn(&DB) {
            move |db: &DB| db.put(meta_key("format"), v).unwrap()
        }
        let upgraded = reopen(&layout(FORMAT_1)).unwrap();
        assert_eq!(upgraded.get(&meta_key("format")).unwrap().unwrap(), FORMAT);
        drop(upgraded);
        let err = reopen(&layout(b"datafusion-fintech/9"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has layout 'datafusion-fintech/9'"), "{err}");
        let err = RocksStore::open(path, &FintechConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("has layout"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let path = path.to_str().unwrap();
        let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
        commit(&store, vec![put("x", 1, false)]);
        store
            .db
            .put_cf(
                store.family(LOG_FAMILY).unwrap(),
                log::entry_key(7),
                [1, 2, 3, 4, 5, 6, 7, 8, 9],
            )
            .unwrap();
        drop(store);
        let err = RocksStore::open(path, &with_log(NEVER_FOLDS))
            .unwrap_err()
            .to_string();
        assert!(err.contains("commit log entry 7 is damaged"), "{err}");
        assert!(err.contains(path), "{err}");
    }

    #[test]
    fn data_keys_sort_as_rocksdb_compares() {
        // Keys sharing long prefixes, prefixes of one another, trailing zero bytes, and three
        // states: the order must be plain byte order of the full data keys.
        let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], b"ab".to_vec()];
        let mut x = 88172645463325252u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Lengths 0..24 over a 3-byte alphabet: equal 16-byte heads are common.
            let len = (x % 24) as usize;
            keys.push(
                (0..len)
                    .map(|j| [0u8, 1, 0xff][(x >> (j + 5)) as usize % 3])
                    .collect(),
            );
        }
        let input: Vec<(u32, &[u8])> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ([7, 0, 65536][i % 3], k.as_slice()))
            .collect();
        // Values of 0 to 2 bytes.
        let value = |i: usize| vec![i as u8; i % 3];
        let sorted = DataKeys::sorted(&input, |i| i % 3, |i, out| out.copy_from_slice(&value(i)));
        let mut expected: Vec<Vec<u8>> = input.iter().map(|(s, k)| data_key(*s, k)).collect();
        expected.sort();
        let got: Vec<Vec<u8>> = sorted.iter().map(|(_, k, _)| k.to_vec()).collect();
        assert_eq!(got, expected);
        for (i, k, v) in sorted.iter() {
            assert_eq!(k, data_key(input[i].0, input[i].1));
            assert_eq!(v, value(i));
        }
        // In runs, one after the other, the same (an empty run included: 3 states, 4 runs).
        let whole: Vec<(usize, Vec<u8>, Vec<u8>)> = sorted
            .iter()
            .map(|(i, k, v)| (i, k.to_vec(), v.to_vec()))
            .collect();
        for count in 1..=4 {
            let runs = DataKeys::sorted_runs(
                &input,
                count,
                |i| i % 3,
                |i, out| out.copy_from_slice(&value(i)),
                |run| {
                    run.iter()
                        .map(|(i, k, v)| (i, k.to_vec(), v.to_vec()))
                        .collect::<Vec<_>>()
                },
            );
            assert_eq!(runs.len(), count);
            assert!(count == 1 || runs.iter().all(|r| r.len() < whole.len()));
            assert_eq!(runs.concat(), whole, "{count} runs");
        }
    }

    #[test]
    fn joined_batches_are_the_batch_of_all_their_writes() {
        let mut all = WriteBatch::default();
        let mut head = WriteBatch::default();
        let mut runs = vec![
            WriteBatch::default(),
            WriteBatch::default(),
            WriteBatch::default(),
        ];
        for b in [&mut all, &mut head] {
            b.put(b"k1", b"v1");
            b.delete(b"k2");
        }
        for b in [&mut all, &mut runs[0]] {
            b.put(b"k3", [7u8; 300]);
        }
        for b in [&mut all, &mut runs[2]] {
            b.put(b"k4", b"");
            b.delete_range(b"a", b"b");
        }
        let one = joined(head, runs).unwrap();
        assert_eq!(one.len(), 5);
        assert_eq!(one.data(), all.data());
        let empty = joined(WriteBatch::default(), vec![WriteBatch::default()]).unwrap();
        assert_eq!(empty.data(), WriteBatch::default().data());
    }

    #[test]
    fn large_commits_are_whole_and_switch_full_memtables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
        store.memtable_bytes = 8 << 20;
        let id = "ewma(price,0.5)@symbol";
        // ~6 MiB batches, built on two threads where there are two cores.
        let keys: Vec<String> = (0..70_000).map(|i| format!("key{i}")).collect();
        for (round, value) in [(0, 7u8), (1, 8)] {
            let mut puts: Vec<Put> = keys.iter().map(|k| put(k, value, round > 0)).collect();
            for p in &mut puts {
                p.record.resize(50, value);
            }
            commit(&store, puts);
            let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let stored = store.get_many("p", id, &keys).unwrap();
            assert!(
                stored
                    .iter()
                    .all(|v| v.as_deref() == Some(&[value; 50][..])),
                "round {round}"
            );
            // Round 0 goes into the nearly empty memtable; round 1 would overfill it with
            // round 0's writes, so it goes into a fresh one, which holds its writes alone.
            let active = store
                .db
                .property_int_value("rocksdb.num-entries-active-mem-table")
                .unwrap()
                .unwrap() as usize;
            assert!(
                (keys.len()..keys.len() + 100).contains(&active),
                "round {round}: {active} writes in the memtable"
            );
        }
        let summary = &store.states("p").unwrap()[0];
        assert_eq!(summary.keys, keys.len() as u64);
    }

    #[test]
    fn data_has_the_configured_table_options() {
        // RocksDB writes the options it runs with to OPTIONS-* files: the state's column
        // family must have bloom filters and LZ4, not RocksDB's defaults.
        let dir = tempfile::tempdir().unwrap();
        let store =
            RocksStore::open(dir.path().to_str().unwrap(), &FintechConfig::default()).unwrap();
        drop(store);
        let options: String = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("OPTIONS-")
            })
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        for want in [
            "compression=kLZ4Compression",
            "filter_policy=bloomfilter",
            "cache_index_and_filter_blocks=true",
            "partition_filters=true",
            "index_type=kTwoLevelIndexSearch",
        ] {
            assert!(options.contains(want), "{want} missing from:\n{options}");
        }
    }

    #[test]
    fn buckets_are_stable() {
        // Changing the hash would scatter stored keys: pin it.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(&data_key(1, b"a")[..5], &[DATA, 0, 0, 0, 1]);
    }
}
