//! Where per-key state lives between queries: the batched [`StateStore`] trait, the byte
//! layout of keys and records ([`codec`]), and the backends.
//!
//! A store holds pipelines; a pipeline holds states (one per state id); a state maps an
//! encoded key to an encoded record. Every call is batched: the operator asks for all keys of
//! an input batch at once and writes a whole query's updates in one atomic [`Commit`].

pub mod arrow;
pub mod codec;
pub mod memory;
pub(crate) mod meta;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
#[cfg(feature = "tonbo")]
pub mod tonbo;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::HashMap;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Operator;

pub use codec::{KeyColumn, KeyType};

use crate::kernels::{BoundKernel, StateColumn};

/// What a state id stands for. Stored with the state; a query that derives the same id must
/// agree with it field for field, or it gets an error instead of a reinterpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    pub state_id: String,
    pub kernel: String,
    /// Literal parameters in canonical text form.
    pub params: Vec<String>,
    /// Input expressions as written in the plan.
    pub inputs: Vec<String>,
    /// The PARTITION BY columns: names and types.
    pub key_columns: Vec<KeyColumn>,
    /// Type of the ORDER BY column.
    pub order_type: DataType,
    /// The kernel's state encoding version: what this build writes (a query's info), or the
    /// newest version the state's records may have (a stored info).
    pub encoding_version: u32,
    /// The oldest encoding version the query's build reads; not stored (a stored info reads
    /// as its own version).
    pub reads_from: u32,
}

impl StateInfo {
    /// The kernel this state's entry names, bound to its parameters.
    pub fn bind_kernel(&self) -> std::result::Result<BoundKernel, String> {
        let params: Vec<f64> = self
            .params
            .iter()
            .map(|p| p.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "state {} has unreadable parameters {:?}: {e}",
                    self.state_id, self.params
                )
            })?;
        crate::kernels::bind(&self.kernel, &params).map_err(|e| e.0)
    }

    /// Explains how `self` (stored) and `other` (this query) disagree, if they do.
    pub fn mismatch(&self, other: &StateInfo) -> Option<String> {
        let what = if self.kernel != other.kernel || self.params != other.params {
            format!(
                "parameters {}({}) but this query uses {}({})",
                self.kernel,
                self.params.join(", "),
                other.kernel,
                other.params.join(", ")
            )
        } else if self.encoding_version > other.encoding_version {
            format!(
                "encoding version {}, written by a newer build; this build reads versions {} \
                 to {}",
                self.encoding_version, other.reads_from, other.encoding_version
            )
        } else if self.encoding_version < other.reads_from {
            format!(
                "encoding version {}, older than this build reads (versions {} to {})",
                self.encoding_version, other.reads_from, other.encoding_version
            )
        } else if self.key_columns != other.key_columns {
            format!(
                "key columns [{}] but this query has [{}]",
                codec::describe_key_columns(&self.key_columns),
                codec::describe_key_columns(&other.key_columns)
            )
        } else if self.order_type != other.order_type {
            format!(
                "ORDER BY type {} but this query orders by {}",
                self.order_type, other.order_type
            )
        } else if self.inputs != other.inputs {
            format!(
                "inputs [{}] but this query has [{}]",
                self.inputs.join(", "),
                other.inputs.join(", ")
            )
        } else {
            return None;
        };
        Some(format!(
            "state id '{}' already exists with {what}; use another pipeline or drop the state",
            self.state_id
        ))
    }
}

/// A pipeline as listed by `fintech_pipelines()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineInfo {
    pub name: String,
    pub commits: u64,
    /// Microseconds since the Unix epoch.
    pub last_commit_micros: Option<i64>,
    pub last_commit_tag: Option<String>,
}

/// A state as listed by `fintech_states(pipeline)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSummary {
    pub info: StateInfo,
    pub keys: u64,
    /// Encoded size of keys and records.
    pub bytes: u64,
}

/// One write of a state's record for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    pub state_id: Arc<str>,
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded record.
    pub record: Vec<u8>,
    /// Length of the record this one replaces, as the writer read it from this store during
    /// the same attempt (`None`: the key had no record). A store may rely on it to keep its
    /// key and byte counts without reading the key again.
    pub replaces: Option<usize>,
}

impl Put {
    /// Adds the change this put makes to its state's (keys, bytes) to `delta`: a new key
    /// adds one key and its bytes, a replaced record the difference in bytes.
    pub(crate) fn count(&self, delta: &mut (i64, i64)) {
        let new_bytes = (self.key.len() + self.record.len()) as i64;
        match self.replaces {
            None => {
                delta.0 += 1;
                delta.1 += new_bytes;
            }
            Some(old) => delta.1 += new_bytes - (self.key.len() + old) as i64,
        }
    }
}

/// The final states of one kernel call in one partition, decoded: what a query commits to a
/// store that keeps states decoded ([`StateStore::keeps_decoded`]) instead of [`Put`]s.
#[derive(Debug)]
pub struct DecodedStates {
    pub state_id: Arc<str>,
    /// The encoded key of every slot of `column` (shared by a partition's kernel calls).
    pub keys: Arc<codec::EncodedKeys>,
    /// The slots to write (shared by a partition's kernel calls).
    pub slots: Arc<Vec<u32>>,
    pub column: Box<dyn StateColumn>,
}

/// Everything one query writes to one pipeline, applied all together or not at all.
#[derive(Debug, Default)]
pub struct Commit {
    /// The source position stored with this commit (`fintech.commit_tag`).
    pub tag: Option<String>,
    /// Registry entries of every state the query used.
    pub states: Vec<StateInfo>,
    pub puts: Vec<Put>,
    /// Decoded final states, for a store that keeps states decoded; a slot a kernel applied
    /// no row to is skipped.
    pub decoded: Vec<DecodedStates>,
}

/// A condition on one key column of a state's table: what a store that streams tables may
/// apply while it reads.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyFilter {
    /// `column op value`, `op` one of `=`, `<`, `<=`, `>`, `>=`.
    Compare {
        column: usize,
        op: Operator,
        value: ScalarValue,
    },
    /// `column IN (values)`.
    In {
        column: usize,
        values: Vec<ScalarValue>,
    },
}

/// A batched key-value store of pipeline state.
pub trait StateStore: Debug + Send + Sync {
    /// `memory`, `rocksdb`, ...
    fn backend(&self) -> &'static str;
    /// Where the state lives (a path, or `memory`).
    fn location(&self) -> String;
    fn pipelines(&self) -> Result<Vec<PipelineInfo>>;
    fn pipeline(&self, name: &str) -> Result<Option<PipelineInfo>>;
    fn states(&self, pipeline: &str) -> Result<Vec<StateSummary>>;
    fn state_info(&self, pipeline: &str, state_id: &str) -> Result<Option<StateInfo>>;
    /// Committed records of `keys` in one call, `None` for a key without one: what the state
    /// tables show, whatever a running query has staged.
    fn get_many(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>>;
    /// Records of `keys` as the pipeline's running query sees them: what it staged (see
    /// [`StateStore::stage`]), else what is committed. `found(i, record)` takes the record of
    /// `keys[i]`, for each key that has one, in no particular order; the first error it
    /// returns ends the load. It must not call the store.
    fn load(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let records = self.get_many(pipeline, state_id, keys)?;
        for (i, record) in records.iter().enumerate() {
            if let Some(record) = record {
                found(i, record)?;
            }
        }
        Ok(())
    }
    /// Whether the store keeps states decoded: queries then load them with
    /// [`StateStore::load_decoded`] and commit [`Commit::decoded`] instead of records.
    fn keeps_decoded(&self) -> bool {
        false
    }
    /// Copies the committed states of `keys` into `column`, key `i` into slot
    /// `first_slot + i` (which exists); returns how many keys had one. Only for a store that
    /// [keeps states decoded](StateStore::keeps_decoded).
    fn load_decoded(
        &self,
        _pipeline: &str,
        _state_id: &str,
        _keys: &[&[u8]],
        _column: &mut dyn StateColumn,
        _first_slot: usize,
    ) -> Result<usize> {
        Err(DataFusionError::Internal(format!(
            "the {} state store keeps records, not decoded states",
            self.backend()
        )))
    }
    /// All committed (key, record) pairs of a state, in key order.
    fn scan(&self, pipeline: &str, state_id: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Whether the store keeps states as the columns of their tables, and reads them as
    /// streams of record batches ([`StateStore::stream_table`]).
    fn streams_tables(&self) -> bool {
        false
    }
    /// The committed rows of a state's table (the columns of `fintech_state`, in its order,
    /// `projection` of them) in key order, as a stream that holds a few batches at a time;
    /// only rows that `filters` allow, where the store can tell (a caller applies them
    /// again). `None`: the state does not exist. Only for a store that
    /// [streams tables](StateStore::streams_tables).
    fn stream_table(
        &self,
        _pipeline: &str,
        _state_id: &str,
        _projection: Option<&[usize]>,
        _filters: &[KeyFilter],
    ) -> Result<Option<SendableRecordBatchStream>> {
        Err(DataFusionError::Internal(format!(
            "the {} state store does not stream state tables",
            self.backend()
        )))
    }
    /// Starts a query's write attempt on `pipeline`: first rolls back what an earlier attempt
    /// staged and never committed (a crash, a failed query), then returns a new attempt id.
    fn begin(&self, _pipeline: &str) -> Result<u64> {
        Ok(0)
    }

    /// Whether [`StateStore::stage`] is supported: the operator then keeps a bounded working
    /// set and stages what it evicts; otherwise it holds every touched key until the commit.
    fn stages(&self) -> bool {
        false
    }

    /// Writes updates of an attempt that is not committed yet. [`StateStore::load`] sees
    /// them, [`StateStore::get_many`] and [`StateStore::scan`] do not; a commit publishes
    /// them, a rollback (or the next `begin` after a crash) undoes them.
    fn stage(
        &self,
        _pipeline: &str,
        _attempt: u64,
        _states: &[StateInfo],
        _puts: Vec<Put>,
    ) -> Result<()> {
        Err(DataFusionError::Internal(format!(
            "the {} state store does not stage updates",
            self.backend()
        )))
    }

    /// Undoes everything `attempt` staged.
    fn rollback(&self, _pipeline: &str, _attempt: u64) -> Result<()> {
        Ok(())
    }

    /// Applies `commit` (and everything `attempt` staged) atomically. Fails without changing
    /// anything if the commit's tag equals the pipeline's last committed tag, or a state's
    /// registry entry disagrees.
    fn commit(&self, pipeline: &str, attempt: u64, commit: Commit) -> Result<()>;
}

/// The file that marks a directory as a Tonbo state store (checked by every backend).
pub(crate) const TONBO_MARKER: &str = "FINTECH_TONBO";

/// Names of per-query scratch pipelines start with this (a NUL: no SQL string names it).
pub const SCRATCH_PREFIX: &str = "\0scratch:";

/// A pipeline name no other query of this process uses.
pub fn scratch_pipeline_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{SCRATCH_PREFIX}{}:{n}", std::process::id())
}

/// The error for a replayed batch; one wording everywhere.
pub fn already_committed(pipeline: &str, tag: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "commit tag '{tag}' is already committed in pipeline '{pipeline}': this batch was \
         applied before; set fintech.commit_tag to the next batch's position"
    ))
}

/// The stores open in this registration, and which pipelines a query is using right now.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: Mutex<HashMap<(String, String), Arc<dyn StateStore>>>,
    busy: Arc<Busy>,
}

/// Pipelines in use, and a signal when one is released.
#[derive(Debug, Default)]
struct Busy {
    pipelines: Mutex<HashSet<(String, String)>>,
    released: Condvar,
}

/// How long a query waits for a pipeline that another query is using. A query that ended
/// early (a LIMIT, a dropped stream) releases its pipeline when DataFusion's aborted tasks
/// are dropped, which is asynchronous: the next query must not fail on that.
const LEASE_WAIT: Duration = Duration::from_secs(1);

/// Runs `wait`, which blocks, without holding up other tasks: on a worker of a
/// multi-threaded tokio runtime, the worker's queued tasks move to another thread meanwhile.
/// What a query waits for (an ending query's tasks being dropped) may sit in that queue.
pub(crate) fn wait_in_place<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Held by a running query: no other query may use the same pipeline until it is dropped.
#[derive(Debug)]
pub struct PipelineLease {
    busy: Arc<Busy>,
    id: (String, String),
}

impl Drop for PipelineLease {
    fn drop(&mut self) {
        let mut pipelines = self
            .busy
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pipelines.remove(&self.id);
        self.busy.released.notify_all();
    }
}

impl StoreRegistry {
    /// The store the settings name, opened once and then shared.
    pub fn open(&self, settings: &crate::config::FintechConfig) -> Result<Arc<dyn StateStore>> {
        let (backend, path) = (
            settings.state_backend.as_str(),
            settings.state_path.as_str(),
        );
        let mut stores = self.stores.lock().unwrap();
        let id = (backend.to_string(), path.to_string());
        if let Some(store) = stores.get(&id) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn StateStore> = match backend {
            "memory" => Arc::new(memory::MemoryStore::new(path)),
            #[cfg(feature = "rocksdb")]
            "rocksdb" => Arc::new(rocksdb::RocksStore::open(path, settings)?),
            #[cfg(feature = "tonbo")]
            "tonbo" => Arc::new(tonbo::TonboStore::open(path, settings)?),
            other => return Err(crate::config::backend_unavailable(other)),
        };
        stores.insert(id, Arc::clone(&store));
        Ok(store)
    }

    /// Reserves `pipeline` in `store` for one query, waiting briefly for a query that is
    /// ending.
    pub fn lease(&self, store: &dyn StateStore, pipeline: &str) -> Result<PipelineLease> {
        let id = (store.location(), pipeline.to_string());
        let deadline = Instant::now() + LEASE_WAIT;
        let mut pipelines = self
            .busy
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while pipelines.contains(&id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DataFusionError::Execution(format!(
                    "pipeline '{pipeline}' is in use by another running query; pipelines \
                     take one query at a time"
                )));
            }
            pipelines = wait_in_place(|| {
                self.busy
                    .released
                    .wait_timeout(pipelines, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            });
        }
        pipelines.insert(id.clone());
        Ok(PipelineLease {
            busy: Arc::clone(&self.busy),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> StateInfo {
        StateInfo {
            state_id: "ewma(price,0.5)@symbol".into(),
            kernel: "ewma".into(),
            params: vec!["0.5".into()],
            inputs: vec!["price".into()],
            key_columns: vec![KeyColumn {
                name: "symbol".into(),
                data_type: DataType::Utf8,
            }],
            order_type: DataType::Int64,
            encoding_version: 2,
            reads_from: 2,
        }
    }

    #[test]
    fn every_disagreement_is_named() {
        let stored = info();
        assert_eq!(stored.mismatch(&info()), None);
        type Change = Box<dyn Fn(&mut StateInfo)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|i| i.params = vec!["0.25".into()]),
                "parameters ewma(0.5)",
            ),
            (
                Box::new(|i| i.encoding_version = 1),
                "encoding version 2, written by a newer build; this build reads versions 2 to 1",
            ),
            (
                Box::new(|i| {
                    i.encoding_version = 4;
                    i.reads_from = 3;
                }),
                "encoding version 2, older than this build reads (versions 3 to 4)",
            ),
            (
                Box::new(|i| i.key_columns[0].data_type = DataType::Int64),
                "key columns [symbol Utf8]",
            ),
            (
                Box::new(|i| i.order_type = DataType::Int32),
                "ORDER BY type Int64",
            ),
            (
                Box::new(|i| i.inputs = vec!["mid".into()]),
                "inputs [price]",
            ),
        ];
        for (change, want) in cases {
            let mut other = info();
            change(&mut other);
            let why = stored.mismatch(&other).expect(want);
            assert!(
                why.contains(want) && why.contains("ewma(price,0.5)@symbol"),
                "{why}"
            );
        }
    }

    #[test]
    fn memory_commit_is_all_or_nothing() {
        let store = memory::MemoryStore::new("");
        // An ewma record: one row applied at ORDER BY 7, average 1.5.
        let mut record = 1u64.to_le_bytes().to_vec();
        record.push(1);
        record.extend_from_slice(&7i64.to_le_bytes());
        record.push(1);
        record.extend_from_slice(&1.5f64.to_le_bytes());
        let put = |k: &str| Put {
            state_id: Arc::from("ewma(price,0.5)@symbol"),
            key: k.as_bytes().to_vec(),
            record: record.clone(),
            replaces: None,
        };
        store
            .commit(
                "p",
                0,
                Commit {
                    tag: Some("t1".into()),
                    states: vec![info()],
                    puts: vec![put("a")],
                    ..Default::default()
                },
            )
            .unwrap();
        // A replayed tag and a disagreeing registry entry are both refused untouched.
        let replay = Commit {
            tag: Some("t1".into()),
            states: vec![info()],
            puts: vec![put("b")],
            ..Default::default()
        };
        assert!(
            store
                .commit("p", 0, replay)
                .unwrap_err()
                .to_string()
                .contains("already committed")
        );
        let mut bad = info();
        bad.encoding_version = 1;
        let refused = Commit {
            tag: Some("t2".into()),
            states: vec![bad],
            puts: vec![put("c")],
            ..Default::default()
        };
        assert!(store.commit("p", 0, refused).is_err());
        let mut damaged = put("d");
        damaged.record.pop();
        let refused = Commit {
            tag: Some("t3".into()),
            states: vec![info()],
            puts: vec![put("e"), damaged],
            ..Default::default()
        };
        let err = store.commit("p", 0, refused).unwrap_err().to_string();
        assert!(err.contains("cannot be decoded"), "{err}");
        assert_eq!(
            store.scan("p", "ewma(price,0.5)@symbol").unwrap(),
            vec![(b"a".to_vec(), record.clone())]
        );
        let p = store.pipeline("p").unwrap().unwrap();
        assert_eq!((p.commits, p.last_commit_tag.as_deref()), (1, Some("t1")));
        assert_eq!(
            store.states("p").unwrap()[0].bytes,
            27,
            "one key of one byte and a record of 26 bytes"
        );
    }
}
