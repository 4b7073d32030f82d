//! The Tonbo backend: pipeline state as Arrow columns in Tonbo, an Arrow-native LSM store
//! (Parquet files, a write-ahead log and a manifest).
//!
//! One directory per `fintech.state_path`, or one prefix of an S3-compatible object store
//! (`s3://bucket/prefix`, [`object_store`]: the same names as objects, without `LOCK`):
//!
//! ```text
//! FINTECH_TONBO     layout marker: "datafusion-fintech/tonbo/1"
//! LOCK              locked (flock) by the process that has the store open
//! meta/             Tonbo table (k Utf8, v Binary): pipeline and state metadata, redo records
//! states/<n>/       Tonbo table of state number n: `__key` and the state's columns (table.rs)
//! staged/           Tonbo table (k Binary, v Binary): states evicted within a query (staging.rs)
//! ```
//!
//! Metadata rows (`k`): `next_state`; `p` + pipeline → [`PipelineMeta`]; `s` + the pipeline's
//! length (8 digits) + pipeline + state id → [`StateMeta`]; `redo` + chunk number → a chunk
//! of the redo record of the last commit ([`redo`]); `commit-staged` → the staged rows the
//! last commit took up. A row is cleared by writing it empty, never deleted ([`Store::write_meta`]).
//!
//! A commit is one ingest into the metadata table — the pipeline's and its states' metadata,
//! and the redo record of every state record the query writes — followed by one ingest per
//! state table and a last one that clears the redo record. The first ingest is the commit
//! point: Tonbo applies an ingest whole or not at all after a crash, and a redo record found
//! on open is applied again (its writes are upserts, so applying them twice is applying them
//! once). Within the process, a commit holds the store's writer lock until the state tables
//! are written, and reads wait for it.
//!
//! Tonbo's scans are correct but its point reads are not usable (`Transaction::get` does not
//! read flushed files) and an `IN` filter of many keys is slow, so a query reads each state it
//! uses with one scan, the first time it asks for one of its keys, and keeps the batches
//! indexed by key ([`table::Loaded`]). They stay after the query, brought up to date with the
//! rows of each commit, while all of them fit in `fintech.working_set_bytes`: the next query
//! of the pipeline reads nothing from Tonbo. Every scan runs through [`scan`], which starts a
//! scan again where it failed (a file that compaction removed). The metadata table is read whole
//! when the store opens and kept in memory: this process is its only writer.
//!
//! Tonbo's futures run on a runtime of their own ([`runtime`]); its scans are not `Send`, so
//! every call into Tonbo runs on a thread of its own that blocks on that runtime ([`block`]).
//! While Tonbo works, [`malloc`] returns the memory its threads freed to the system.
//! [`bridge`] moves batches between Tonbo's arrow (57) and DataFusion's (59); `location.rs`
//! is where the store lives and opens its tables; `directory.rs` checks, marks and locks a
//! directory, `object_store.rs` an S3 prefix; `table.rs` is a state's table; `redo.rs` the
//! redo record.

pub mod bridge;
mod directory;
mod location;
mod malloc;
mod object_store;
mod reads;
mod redo;
mod scan;
mod staging;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use datafusion::arrow::array::{AsArray, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::runtime::Runtime;
use tonbo::prelude::{Expr, ScalarValue};

use super::arrow::state_table_fields;
use super::memory::now_micros;
use super::meta::{PipelineMeta, StateMeta, register};
use super::{
    Commit, KeyFilter, PipelineInfo, StateInfo, StateStore, StateSummary, already_committed,
};
use crate::config::FintechConfig;
use bridge::to_tonbo;
use directory::io_error;
use location::{Db, Location, with_db};
use object_store::condensed;
use scan::{Scan, ScanSpec};
use table::{KEY, Loaded, TableSchema};

/// Point reads up to this many keys are one filtered scan; more keys, a whole scan.
pub(super) const POINT_READS: usize = 64;

/// A Tonbo state store, as a registration has it open.
pub struct TonboStore {
    store: Arc<Store>,
}

/// An open Tonbo state store. It stays open until the process exits, whether a registration
/// uses it or not: Tonbo's background work for its tables (writing memtables to files,
/// compaction) has no end that can be waited for, and a second opening of the same tables
/// while it runs fails or loses writes. A registration that opens the directory again gets
/// this one back.
struct Store {
    /// Whether a registration has the store open.
    in_use: AtomicBool,
    location: Location,
    /// The location as errors name it.
    name: String,
    meta: Arc<Table>,
    /// The metadata table's rows, as committed.
    rows: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Serializes commits; held while a commit writes the state tables.
    write: Mutex<()>,
    /// Open state tables, by state number.
    tables: Mutex<HashMap<u32, Arc<StateTable>>>,
    /// States read whole, by (pipeline, state id), with the rows of every commit since: kept
    /// across queries while they fit in `keep_bytes` ([`Store::trim`]).
    loaded: Mutex<HashMap<(String, String), Arc<Loaded>>>,
    /// Memory the states read whole may keep between queries (`fintech.working_set_bytes`).
    keep_bytes: usize,
    /// Forward scans of states too large to read whole, by (pipeline, state id) ([`reads`]).
    forwards: Mutex<HashMap<(String, String), Vec<scan::Forward>>>,
    /// The table of staged updates, once opened ([`staging`]).
    staged: Mutex<Option<Arc<Table>>>,
    /// Held to write the table of staged updates, shared to scan it: a scan that runs while
    /// rows are ingested into its table can miss rows of an ingest that was done before it
    /// started (seen with several partitions staging at once).
    staged_io: RwLock<()>,
    /// Attempts that staged updates, by attempt number.
    attempts: Mutex<HashMap<u64, staging::Attempt>>,
    /// The next attempt number: it starts at the time the store opened, in microseconds, so
    /// that no attempt of this process has the number of an earlier one.
    next_attempt: AtomicU64,
    /// The directory's lock, held while the store is open (none on an object store).
    _lock: Option<File>,
}

/// An open Tonbo database (one table).
struct Table {
    db: Db,
}

/// One state's open Tonbo table.
struct StateTable {
    schema: TableSchema,
    table: Arc<Table>,
}

/// The stores this process opened, by [`Location::resolve`]'s id.
static OPEN: Mutex<Option<HashMap<String, Arc<Store>>>> = Mutex::new(None);

impl Drop for TonboStore {
    fn drop(&mut self) {
        self.store.in_use.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for TonboStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TonboStore({})", self.store.name)
    }
}

fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn pipeline_key(pipeline: &str) -> String {
    format!("p{pipeline}")
}

fn state_prefix(pipeline: &str) -> String {
    format!("s{:08}{pipeline}", pipeline.len())
}

fn state_key(pipeline: &str, state_id: &str) -> String {
    format!("{}{state_id}", state_prefix(pipeline))
}

const NEXT_STATE: &str = "next_state";
const REDO: &str = "redo";

/// The schema of the metadata table.
fn meta_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Binary, false),
    ]))
}

impl TonboStore {
    /// Opens (or creates) the store at `path` (a directory or `s3://bucket/prefix`). A
    /// location that holds anything but a datafusion-fintech Tonbo store is refused before
    /// anything is written to it; one that another process or another registration of this
    /// process has open is refused too.
    pub fn open(path: &str, settings: &FintechConfig) -> Result<Self> {
        let location = Location::new(path, settings)?;
        let id = location.resolve()?;
        let mut open = lock(&OPEN);
        let open = open.get_or_insert_with(HashMap::default);
        if let Some(store) = open.get(&id) {
            if store.in_use.swap(true, Ordering::AcqRel) {
                return Err(DataFusionError::Execution(format!(
                    "state directory {} is in use by another registration of this process; a \
                     state directory is opened by one registration at a time",
                    store.name
                )));
            }
            return Ok(Self {
                store: Arc::clone(store),
            });
        }
        let store = Arc::new(Store::open(location, settings.working_set_bytes)?);
        open.insert(id, Arc::clone(&store));
        Ok(Self { store })
    }
}

impl Store {
    fn open(location: Location, keep_bytes: usize) -> Result<Self> {
        let name = location.name();
        let runtime =
            runtime().map_err(|e| io_error(Path::new(&name), "start a runtime for", e))?;
        let held = block(runtime, || location.prepare())?;
        let empty = to_tonbo(&RecordBatch::new_empty(meta_schema()))?;
        let meta = block(runtime, || location.open_db("meta", empty, "k"))
            .map(|db| Arc::new(Table { db }))
            .map_err(|e| damaged(&name, "its metadata table", e))?;
        let store = Self {
            in_use: AtomicBool::new(true),
            location,
            name,
            meta,
            rows: Mutex::default(),
            write: Mutex::new(()),
            tables: Mutex::default(),
            loaded: Mutex::default(),
            keep_bytes,
            forwards: Mutex::default(),
            staged: Mutex::default(),
            staged_io: RwLock::new(()),
            attempts: Mutex::default(),
            next_attempt: AtomicU64::new(now_micros().max(0) as u64),
            _lock: held,
        };
        let rows = store.scan_meta()?;
        let commit_staged = rows.contains_key(staging::COMMIT_STAGED);
        *lock(&store.rows) = rows;
        // What earlier processes staged is never committed, unless a commit names it.
        if !commit_staged {
            store.run(|| store.location.remove_table(staging::STAGED))?;
        }
        store.finish_redo()?;
        Ok(store)
    }

    /// Runs the future `make` returns on the store's runtime, from a thread of its own: the
    /// caller may be a task of another runtime, and Tonbo's scans are not `Send`.
    fn run<T: Send, F: Future<Output = T>>(&self, make: impl FnOnce() -> F + Send) -> T {
        block(runtime().expect("started when the store opened"), make)
    }

    fn tables_mut(&self) -> MutexGuard<'_, HashMap<u32, Arc<StateTable>>> {
        lock(&self.tables)
    }

    fn tonbo_error(&self, what: &str, e: impl std::fmt::Display) -> DataFusionError {
        DataFusionError::Execution(format!(
            "Tonbo store {}: {what}: {}",
            self.name,
            condensed(&e)
        ))
    }

    /// Every row of the metadata table but the cleared ones (empty).
    fn scan_meta(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let spec = ScanSpec {
            filter: None,
            projection: None,
            what: format!("Tonbo store {}: read the metadata table", self.name),
        };
        let batches = self
            .collect(&self.meta, spec)
            .map_err(|e| damaged(&self.name, "its metadata table", e))?;
        let mut rows = BTreeMap::new();
        for batch in batches {
            if batch.num_columns() != 2 {
                return Err(damaged(&self.name, "its metadata table", "wrong columns"));
            }
            let (Some(k), Some(v)) = (
                batch.column(0).as_string_opt::<i32>(),
                batch.column(1).as_binary_opt::<i32>(),
            ) else {
                return Err(damaged(&self.name, "its metadata table", "wrong columns"));
            };
            for i in (0..batch.num_rows()).filter(|&i| !v.value(i).is_empty()) {
                rows.insert(k.value(i).to_string(), v.value(i).to_vec());
            }
        }
        Ok(rows)
    }

    /// Every batch of a scan of `table`, waited for.
    fn collect(&self, table: &Arc<Table>, spec: ScanSpec) -> Result<Vec<RecordBatch>> {
        let mut scan = Scan::start(Arc::clone(table), spec, &self.name)?;
        let mut batches = Vec::new();
        while let Some(batch) = scan.next_batch() {
            batches.push(batch?);
        }
        Ok(batches)
    }

    /// Writes `puts` in the metadata table, in one ingest, and then in the copy in memory.
    /// A row is cleared by writing it empty: Tonbo's deletes (`ingest_with_tombstones`) are
    /// not used, because on 0.4.0-a2 they can leave the deleted rows in later scans and hide
    /// rows written after them (docs/tonbo.md).
    fn write_meta(&self, puts: Vec<(String, Vec<u8>)>) -> Result<()> {
        if puts.is_empty() {
            return Ok(());
        }
        let keys = StringArray::from_iter_values(puts.iter().map(|(k, _)| k.as_str()));
        let values = BinaryArray::from_iter_values(puts.iter().map(|(_, v)| v.as_slice()));
        let batch = to_tonbo(&RecordBatch::try_new(
            meta_schema(),
            vec![Arc::new(keys), Arc::new(values)],
        )?)?;
        self.run(|| async { with_db!(&self.meta.db, db => db.ingest(batch).await) })
            .map_err(|e| self.tonbo_error("write the metadata table", e))?;
        let mut rows = lock(&self.rows);
        for (k, v) in puts {
            if v.is_empty() {
                rows.remove(&k);
            } else {
                rows.insert(k, v);
            }
        }
        Ok(())
    }

    /// Clears the metadata rows `keys` (writes them empty).
    fn clear_meta(&self, keys: Vec<String>) -> Result<()> {
        self.write_meta(keys.into_iter().map(|k| (k, Vec::new())).collect())
    }

    fn pipeline_meta(&self, pipeline: &str) -> Result<Option<PipelineMeta>> {
        lock(&self.rows)
            .get(&pipeline_key(pipeline))
            .map(|b| {
                PipelineMeta::decode(b)
                    .map_err(|e| self.damaged_meta(&format!("pipeline '{pipeline}'"), e))
            })
            .transpose()
    }

    fn state_meta(&self, pipeline: &str, state_id: &str) -> Result<Option<StateMeta>> {
        lock(&self.rows)
            .get(&state_key(pipeline, state_id))
            .map(|b| {
                StateMeta::decode(b).map_err(|e| self.damaged_meta(&format!("state {state_id}"), e))
            })
            .transpose()
    }

    /// Every state's metadata, by state number.
    fn state_metas(&self) -> Result<HashMap<u32, StateMeta>> {
        let rows = lock(&self.rows);
        let mut out = HashMap::default();
        for (k, v) in rows.range("s".to_string().."t".to_string()) {
            let meta = StateMeta::decode(v).map_err(|e| self.damaged_meta(k, e))?;
            out.insert(meta.state_no, meta);
        }
        Ok(out)
    }

    fn damaged_meta(&self, what: &str, e: DataFusionError) -> DataFusionError {
        DataFusionError::Execution(format!(
            "metadata of {what} in {} cannot be read: {e}",
            self.name
        ))
    }

    /// The name of the table of state number `n` in its location.
    fn state_table(n: u32) -> String {
        format!("states/{n}")
    }

    /// The open table of a state, opened (or created) on first use.
    fn table(&self, meta: &StateMeta) -> Result<Arc<StateTable>> {
        if let Some(t) = self.tables_mut().get(&meta.state_no) {
            return Ok(Arc::clone(t));
        }
        let schema = TableSchema::new(&meta.info)?;
        let empty = schema.tonbo_empty()?;
        let name = Self::state_table(meta.state_no);
        let db = self
            .run(|| self.location.open_db(&name, empty, KEY))
            .map_err(|e| {
                damaged(
                    &self.name,
                    &format!("the table of state '{}'", meta.info.state_id),
                    e,
                )
            })?;
        let table = Arc::new(StateTable {
            schema,
            table: Arc::new(Table { db }),
        });
        self.tables_mut().insert(meta.state_no, Arc::clone(&table));
        Ok(table)
    }

    /// The rows of a state's table that `filter` selects (all without one).
    fn scan_table(&self, table: &StateTable, filter: Option<Expr>) -> Result<Loaded> {
        let spec = ScanSpec {
            filter,
            projection: None,
            what: format!(
                "Tonbo store {}: read the table of state '{}'",
                self.name, table.schema.info.state_id
            ),
        };
        let batches = self.collect(&table.table, spec)?;
        Loaded::new(&table.schema, batches, &self.name)
    }

    /// The rows of `table` (a state `declared` as its registry entry says), `projection` of
    /// its columns, that `filters` allow where Tonbo's scan can tell, as a stream. The scan runs
    /// on a thread of its own and hands over a few batches at a time ([`scan`]); it ends when
    /// the stream is dropped.
    fn stream(
        &self,
        table: Arc<StateTable>,
        declared: &StateInfo,
        projection: Option<&[usize]>,
        filters: &[KeyFilter],
    ) -> Result<SendableRecordBatchStream> {
        let kernel = declared.bind_kernel().map_err(DataFusionError::Execution)?;
        let full = Schema::new(state_table_fields(declared, kernel.def()));
        let columns: Vec<usize> = match projection {
            Some(p) => p.to_vec(),
            None => (0..full.fields().len()).collect(),
        };
        let out = Arc::new(full.project(&columns)?);
        // `__key` first: Tonbo merges its sources by key.
        let scanned: Vec<usize> = std::iter::once(0)
            .chain(columns.iter().map(|c| c + 1))
            .collect();
        let scan_schema = Arc::new(table.schema.schema.project(&scanned)?);
        let empty = to_tonbo(&RecordBatch::new_empty(scan_schema))?;
        let spec = ScanSpec {
            filter: table::scan_filter(&table.schema, filters),
            projection: Some(empty),
            what: format!(
                "Tonbo store {}: read the table of state '{}'",
                self.name, declared.state_id
            ),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(scan::SCAN_BATCHES);
        // Not waited for: the stream's reader decides when it ends.
        let _thread = scan::spawn(
            Arc::clone(&table.table),
            spec,
            &self.name,
            scan::Sink::Stream(tx),
        )?;
        let schema = Arc::clone(&out);
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
                .map(move |batch| {
                    // Without `__key`, each column as declared (key columns are stored canonical).
                    let batch = batch?;
                    let columns = batch.columns()[1..]
                        .iter()
                        .zip(schema.fields())
                        .map(|(c, f)| Ok(cast(c, f.data_type())?))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
                });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out, batches)))
    }

    /// The writer lock, once the state tables hold every commit: a commit whose tables were
    /// not all written is finished first.
    fn writer(&self) -> Result<MutexGuard<'_, ()>> {
        let w = lock(&self.write);
        self.finish_redo()?;
        Ok(w)
    }

    /// The state `state_id` of `pipeline` as committed, read whole on first use.
    fn loaded(&self, pipeline: &str, meta: &StateMeta) -> Result<Arc<Loaded>> {
        let id = (pipeline.to_string(), meta.info.state_id.clone());
        if let Some(l) = lock(&self.loaded).get(&id) {
            return Ok(Arc::clone(l));
        }
        let _w = self.writer()?;
        let table = self.table(meta)?;
        let loaded = Arc::new(self.scan_table(&table, None)?);
        lock(&self.loaded).insert(id, Arc::clone(&loaded));
        Ok(loaded)
    }

    fn forget_reads(&self, pipeline: &str) {
        lock(&self.loaded).retain(|(p, _), _| p != pipeline);
    }

    /// Brings the states of `pipeline` read whole up to date with the rows its commit wrote
    /// (`batches`); one that a reader still holds is dropped instead. A state the commit
    /// created (numbered `first_new` or more) is its rows.
    fn keep(
        &self,
        pipeline: &str,
        batches: Vec<(StateMeta, RecordBatch)>,
        first_new: u32,
    ) -> Result<()> {
        let mut loaded = lock(&self.loaded);
        for (meta, batch) in batches {
            let id = (pipeline.to_string(), meta.info.state_id.clone());
            let Some(state) = loaded.get_mut(&id) else {
                if meta.state_no >= first_new {
                    let schema = &self.table(&meta)?.schema;
                    loaded.insert(id, Arc::new(Loaded::new(schema, vec![batch], &self.name)?));
                }
                continue;
            };
            let Some(state) = Arc::get_mut(state) else {
                loaded.remove(&id);
                continue;
            };
            let schema = &self.table(&meta)?.schema;
            state.apply(schema, batch, &self.name)?;
        }
        Ok(())
    }

    /// Drops every state read whole if together they take more than `keep_bytes`.
    fn trim(&self) {
        let mut loaded = lock(&self.loaded);
        let bytes: usize = loaded.values().map(|l| l.memory_size()).sum();
        if bytes > self.keep_bytes {
            loaded.clear();
        }
    }

    /// The rows `writes` (state number, key, record) put into each state's table: every
    /// record is decoded into its columns here, before anything is written.
    fn batches(
        metas: &HashMap<u32, StateMeta>,
        writes: &[redo::Write],
    ) -> Result<Vec<(StateMeta, RecordBatch)>> {
        let mut by_state: HashMap<u32, Vec<usize>> = HashMap::default();
        for (i, (state_no, ..)) in writes.iter().enumerate() {
            by_state.entry(*state_no).or_default().push(i);
        }
        let mut out = Vec::with_capacity(by_state.len());
        for (state_no, mut rows) in by_state {
            // In key order: Tonbo inserts each row into a skip list, and a search for the
            // key next to the last one's finds its path in the cache. A stable sort: of two
            // writes of one key, Tonbo keeps the later.
            rows.sort_by_key(|&i| writes[i].1);
            let meta = metas.get(&state_no).ok_or_else(|| {
                DataFusionError::Internal(format!("write to unregistered state number {state_no}"))
            })?;
            let batch = TableSchema::new(&meta.info)?
                .batch(rows.iter().map(|&i| (writes[i].1, writes[i].2)))?;
            out.push((meta.clone(), batch));
        }
        Ok(out)
    }

    /// Ingests each batch into its state's table (committed states only: a table is
    /// created by the first commit that writes its state).
    fn ingest(&self, batches: Vec<(StateMeta, RecordBatch)>) -> Result<()> {
        for (meta, batch) in batches {
            let table = self.table(&meta)?;
            let batch = to_tonbo(&batch)?;
            self.run(|| async { with_db!(&table.table.db, db => db.ingest(batch).await) })
                .map_err(|e| {
                    self.tonbo_error(
                        &format!("write the table of state '{}'", meta.info.state_id),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// The redo record's chunks (key, chunk) in the metadata table: those of a commit whose
    /// state tables were not all written.
    fn redo_chunks(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.rows)
            .range(REDO.to_string()..format!("{REDO}~"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Applies the redo record a commit left (a crash before it was applied), then clears
    /// it.
    fn finish_redo(&self) -> Result<()> {
        let chunks = self.redo_chunks();
        let staged = lock(&self.rows).contains_key(staging::COMMIT_STAGED);
        if chunks.is_empty() && !staged {
            return Ok(());
        }
        let metas = self.state_metas()?;
        // The staged rows first: the commit's own rows are newer.
        let attempt = self.finish_staged(&metas)?;
        let mut writes = Vec::new();
        for (_, chunk) in &chunks {
            writes.extend(
                redo::decode(chunk)
                    .map_err(|e| damaged(&self.name, "the redo record of its last commit", e))?,
            );
        }
        self.ingest(Self::batches(&metas, &writes)?)?;
        let mut done: Vec<String> = chunks.into_iter().map(|(k, _)| k).collect();
        if attempt.is_some() {
            done.push(staging::COMMIT_STAGED.to_string());
        }
        self.clear_meta(done)
    }
}

/// The runtime of every Tonbo store of the process: Tonbo's background tasks (the WAL writer,
/// writing sealed memtables to files, compaction) run on the runtime that opened the
/// database, and one that a closing store cut short would leave work for the next open.
fn runtime() -> std::io::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(r) = RUNTIME.get() {
        return Ok(r);
    }
    let r = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fintech-tonbo")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| r))
}

/// Runs the future `make` returns on `runtime`, from a thread of its own.
fn block<T: Send, F: Future<Output = T>>(runtime: &Runtime, make: impl FnOnce() -> F + Send) -> T {
    let handle = runtime.handle();
    malloc::working();
    super::wait_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(make()))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

fn damaged(location: &str, what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!(
        "state directory {location} is damaged: {what} cannot be opened ({}); it was left \
         untouched",
        condensed(&e)
    ))
}

impl StateStore for TonboStore {
    fn backend(&self) -> &'static str {
        "tonbo"
    }

    fn location(&self) -> String {
        self.store.name.clone()
    }

    fn pipelines(&self) -> Result<Vec<PipelineInfo>> {
        let rows = lock(&self.store.rows);
        let mut out = Vec::new();
        for (k, v) in rows.range("p".to_string().."q".to_string()) {
            let name = &k[1..];
            let meta = PipelineMeta::decode(v).map_err(|e| self.store.damaged_meta(name, e))?;
            out.extend(meta.listed(name));
        }
        Ok(out)
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineInfo>> {
        Ok(self.store.pipeline_meta(name)?.and_then(|m| m.listed(name)))
    }

    fn states(&self, pipeline: &str) -> Result<Vec<StateSummary>> {
        let prefix = state_prefix(pipeline);
        let rows = lock(&self.store.rows);
        let mut out = Vec::new();
        for (k, v) in rows.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            let meta = StateMeta::decode(v).map_err(|e| self.store.damaged_meta(pipeline, e))?;
            out.push(meta.summary());
        }
        Ok(out)
    }

    fn state_info(&self, pipeline: &str, state_id: &str) -> Result<Option<StateInfo>> {
        Ok(self.store.state_meta(pipeline, state_id)?.map(|m| m.info))
    }

    fn get_many(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        let Some(meta) = self.store.state_meta(pipeline, state_id)? else {
            return Ok(out);
        };
        if keys.is_empty() {
            return Ok(out);
        }
        let _w = self.store.writer()?;
        let table = self.store.table(&meta)?;
        // Few keys: one scan that Tonbo filters; many: the whole state.
        let filter = (keys.len() <= POINT_READS).then(|| {
            Expr::or(
                keys.iter()
                    .map(|k| Expr::eq(KEY, ScalarValue::Binary(Some(k.to_vec()))))
                    .collect(),
            )
        });
        let loaded = self.store.scan_table(&table, filter)?;
        loaded.records(&table.schema, keys, &mut |i, record| {
            out[i] = Some(record.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    fn load(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut staged = vec![false; keys.len()];
        self.store
            .staged_records(pipeline, state_id, keys, &mut staged, found)?;
        let Some(meta) = self.store.state_meta(pipeline, state_id)? else {
            return Ok(());
        };
        self.store
            .committed_records(pipeline, &meta, keys, &staged, found)
    }

    fn scan(&self, pipeline: &str, state_id: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(meta) = self.store.state_meta(pipeline, state_id)? else {
            return Ok(Vec::new());
        };
        let _w = self.store.writer()?;
        let table = self.store.table(&meta)?;
        self.store.scan_table(&table, None)?.pairs(&table.schema)
    }

    fn streams_tables(&self) -> bool {
        true
    }

    fn stream_table(
        &self,
        pipeline: &str,
        state_id: &str,
        projection: Option<&[usize]>,
        filters: &[KeyFilter],
    ) -> Result<Option<SendableRecordBatchStream>> {
        let Some(meta) = self.store.state_meta(pipeline, state_id)? else {
            return Ok(None);
        };
        let table = {
            let _w = self.store.writer()?;
            self.store.table(&meta)?
        };
        self.store
            .stream(table, &meta.info, projection, filters)
            .map(Some)
    }

    fn begin(&self, pipeline: &str) -> Result<u64> {
        self.store.end_forward_reads(pipeline);
        // An attempt whose rollback failed is rolled back now.
        lock(&self.store.attempts).retain(|_, a| a.pipeline != pipeline);
        self.store.trim();
        Ok(self.store.next_attempt.fetch_add(1, Ordering::Relaxed))
    }

    fn stages(&self) -> bool {
        true
    }

    fn stage(
        &self,
        pipeline: &str,
        attempt: u64,
        states: &[StateInfo],
        puts: Vec<super::Put>,
    ) -> Result<()> {
        self.store.stage(pipeline, attempt, states, puts)
    }

    fn rollback(&self, pipeline: &str, attempt: u64) -> Result<()> {
        // The states read whole are as committed: an attempt never changes them.
        self.store.end_forward_reads(pipeline);
        self.store.trim();
        self.store.roll_back(attempt);
        Ok(())
    }

    fn commit(&self, pipeline: &str, attempt: u64, commit: Commit) -> Result<()> {
        self.store.end_forward_reads(pipeline);
        let _w = self.store.writer()?;
        let mut meta = self.store.pipeline_meta(pipeline)?.unwrap_or_default();
        if let (Some(tag), Some(last)) = (&commit.tag, &meta.last_commit_tag)
            && tag == last
        {
            return Err(already_committed(pipeline, tag));
        }
        let mut next_state = lock(&self.store.rows)
            .get(NEXT_STATE)
            .and_then(|b| b.as_slice().try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0);
        let first_new = next_state;
        let mut metas: HashMap<String, StateMeta> = HashMap::default();
        for info in &commit.states {
            let stored = self.store.state_meta(pipeline, &info.state_id)?;
            let m = register(stored, info, &mut next_state, pipeline, &self.store.name)?;
            metas.insert(info.state_id.clone(), m);
        }
        // Per put: its state number; per state, the change in keys and bytes, the staged
        // writes' included.
        let mut writes = Vec::with_capacity(commit.puts.len());
        let mut deltas: HashMap<u32, (i64, i64)> = HashMap::default();
        let staged = lock(&self.store.attempts)
            .get(&attempt)
            .map(|a| (a.states.clone(), a.deltas.clone()));
        let mut staged_nos = Vec::new();
        if let Some((states, staged_deltas)) = &staged {
            for info in states {
                let m = metas.get(&info.state_id).ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "staged unregistered state {}",
                        info.state_id
                    ))
                })?;
                staged_nos.push(m.state_no);
                let (k, b) = staged_deltas
                    .get(&info.state_id)
                    .copied()
                    .unwrap_or_default();
                let d = deltas.entry(m.state_no).or_default();
                d.0 += k;
                d.1 += b;
            }
        }
        for put in &commit.puts {
            let m = metas.get(put.state_id.as_ref()).ok_or_else(|| {
                DataFusionError::Internal(format!("write to unregistered state {}", put.state_id))
            })?;
            put.count(deltas.entry(m.state_no).or_default());
            writes.push((m.state_no, put.key.as_slice(), put.record.as_slice()));
        }
        let by_number: HashMap<u32, StateMeta> =
            metas.values().map(|m| (m.state_no, m.clone())).collect();
        let batches = Store::batches(&by_number, &writes)?;
        let mut puts = Vec::new();
        for m in metas.values_mut() {
            let (k, b) = deltas.get(&m.state_no).copied().unwrap_or_default();
            m.keys = (m.keys as i64 + k).max(0) as u64;
            m.bytes = (m.bytes as i64 + b).max(0) as u64;
            puts.push((state_key(pipeline, &m.info.state_id), m.encode()));
        }
        if next_state != first_new {
            puts.push((NEXT_STATE.to_string(), next_state.to_le_bytes().to_vec()));
        }
        // A new state's table starts empty: a directory of its number can only be left by a
        // commit that never reached its commit point.
        for n in first_new..next_state {
            let name = Store::state_table(n);
            self.store.run(|| self.store.location.remove_table(&name))?;
        }
        meta.commits += 1;
        meta.last_commit_micros = Some(now_micros());
        meta.last_commit_tag = commit.tag.clone();
        meta.in_flight = None;
        puts.push((pipeline_key(pipeline), meta.encode()));
        let chunks = if writes.is_empty() {
            Vec::new()
        } else {
            redo::encode(writes.iter().copied())
        };
        let mut redo_keys: Vec<String> =
            (0..chunks.len()).map(|i| format!("{REDO}{i:08}")).collect();
        puts.extend(redo_keys.iter().cloned().zip(chunks));
        if staged.is_some() {
            let named = staging::encode_commit_staged(attempt, &staged_nos);
            puts.push((staging::COMMIT_STAGED.to_string(), named));
            redo_keys.push(staging::COMMIT_STAGED.to_string());
        }
        // The commit point.
        self.store.write_meta(puts)?;
        // Committed: what fails from here on is finished from the redo record (and the
        // staged rows it names) before the state is next read.
        let written = batches.clone();
        let metas_by_no = self.store.state_metas();
        metas_by_no
            .and_then(|metas| match staged {
                Some(_) => self.store.copy_staged(attempt, &staged_nos, &metas),
                None => Ok(()),
            })
            .and_then(|()| self.store.ingest(batches))
            .and_then(|()| self.store.clear_meta(redo_keys))
            .map_err(|e| {
                self.store.forget_reads(pipeline);
                DataFusionError::Execution(format!(
                    "pipeline '{pipeline}' committed (its commit and tag are durable), but its \
                     state tables were not all written: {e}; they are written from the \
                     commit's redo record before the state is next read"
                ))
            })?;
        lock(&self.store.attempts).remove(&attempt);
        if staged.is_some() {
            // The states read whole do not have the staged rows; they are read again.
            self.store.forget_reads(pipeline);
        } else if self.store.keep(pipeline, written, first_new).is_err() {
            // The commit is done; states that cannot be kept up to date are read again.
            self.store.forget_reads(pipeline);
        }
        self.store.trim();
        Ok(())
    }
}
