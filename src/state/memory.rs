//! The in-memory backend: state lives as long as the registration that opened it.
//!
//! States are kept decoded, in the kernels' own columns ([`StateColumn`]), so a query neither
//! decodes what it loads nor encodes what it commits: a load copies a key's state into the
//! query's working set, a commit copies the query's final states back. Each state is split
//! into shards by a hash of the key, and a commit writes the shards on every core. Records
//! (bytes) are produced only for the state tables.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::codec::EncodedKeys;
use super::{
    Commit, DecodedStates, PipelineInfo, Put, StateInfo, StateStore, StateSummary,
    already_committed,
};
use crate::kernels::{BoundKernel, StateColumn};

/// Shards per state: a commit writes them on as many threads as there are cores.
const SHARDS: usize = 16;
/// Keys a commit writes, at least, before it uses more than one thread.
const PARALLEL_KEYS: usize = 16_384;

#[derive(Debug, Default)]
pub struct MemoryStore {
    path: String,
    pipelines: RwLock<HashMap<String, PipelineData>>,
    /// Hashes keys to their shards and slots: one instance, as its seed is its own.
    hasher: DefaultHashBuilder,
}

#[derive(Debug, Default)]
struct PipelineData {
    info: PipelineInfo,
    states: HashMap<Arc<str>, StateData>,
}

#[derive(Debug)]
struct StateData {
    info: StateInfo,
    shards: Vec<Shard>,
}

/// The keys of one shard of a state and their decoded states, slot by slot.
#[derive(Debug)]
struct Shard {
    index: HashTable<u32>,
    keys: EncodedKeys,
    states: Box<dyn StateColumn>,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        self.index
            .find(hash, |&s| self.keys.row(s as usize) == key)
            .map(|&s| s as usize)
    }

    /// The slot of `key`, created (with a fresh state) if it has none.
    fn slot(&mut self, hash: u64, key: &[u8], hasher: &DefaultHashBuilder) -> usize {
        if let Some(s) = self.find(hash, key) {
            return s;
        }
        let s = self.keys.len();
        self.keys.push(key);
        self.states.push_new();
        let keys = &self.keys;
        self.index
            .insert_unique(hash, s as u32, |&s| hasher.hash_one(keys.row(s as usize)));
        s
    }
}

impl StateData {
    fn new(info: StateInfo) -> Result<Self> {
        let kernel = kernel_of(&info)?;
        Ok(Self {
            info,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    index: HashTable::new(),
                    keys: EncodedKeys::default(),
                    states: kernel.new_column(),
                })
                .collect(),
        })
    }

    fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.keys.len()).sum()
    }

    /// The record of `key`, if it has a state.
    fn record(&self, hasher: &DefaultHashBuilder, key: &[u8]) -> Option<Vec<u8>> {
        let hash = hasher.hash_one(key);
        let shard = &self.shards[shard_of(hash)];
        shard.find(hash, key).map(|s| {
            let mut out = Vec::new();
            shard.states.record(s, &mut out);
            out
        })
    }
}

/// The kernel a state's registry entry names.
fn kernel_of(info: &StateInfo) -> Result<BoundKernel> {
    info.bind_kernel().map_err(DataFusionError::Internal)
}

fn shard_of(hash: u64) -> usize {
    // The high bits: the index tables use the low ones.
    (hash >> 58) as usize % SHARDS
}

impl MemoryStore {
    /// `path` only names the store: two paths are two independent in-memory stores.
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
            pipelines: RwLock::default(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn poisoned() -> DataFusionError {
    DataFusionError::Execution("memory state store lock poisoned by a panic".into())
}

/// One write of a commit, found in its source: slot `slot` of `source`.
struct Write<'a> {
    hash: u64,
    key: &'a [u8],
    source: &'a dyn StateColumn,
    slot: usize,
}

/// Applies `writes` (all of one state) to `shards`, on several threads when they are many.
fn apply(shards: &mut [Shard], writes: Vec<Write<'_>>, hasher: &DefaultHashBuilder) {
    let mut per_shard: Vec<Vec<Write>> = (0..SHARDS).map(|_| Vec::new()).collect();
    let many = writes.len() >= PARALLEL_KEYS;
    for w in writes {
        per_shard[shard_of(w.hash)].push(w);
    }
    let write_shard = |shard: &mut Shard, writes: Vec<Write>| {
        for w in writes {
            let s = shard.slot(w.hash, w.key, hasher);
            shard.states.set_copy(s, w.source, w.slot);
        }
    };
    let threads = if many {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    if threads <= 1 {
        for (shard, writes) in shards.iter_mut().zip(per_shard) {
            write_shard(shard, writes);
        }
        return;
    }
    // Shards dealt round-robin to the threads.
    let mut work: Vec<Vec<(&mut Shard, Vec<Write>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, pair) in shards.iter_mut().zip(per_shard).enumerate() {
        work[i % threads].push(pair);
    }
    std::thread::scope(|scope| {
        for part in work {
            scope.spawn(|| {
                for (shard, writes) in part {
                    write_shard(shard, writes);
                }
            });
        }
    });
}

impl StateStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn location(&self) -> String {
        if self.path.is_empty() {
            "memory".into()
        } else {
            format!("memory:{}", self.path)
        }
    }

    fn pipelines(&self) -> Result<Vec<PipelineInfo>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let mut out: Vec<_> = p.values().map(|d| d.info.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn pipeline(&self, name: &str) -> Result<Option<PipelineInfo>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        Ok(p.get(name).map(|d| d.info.clone()))
    }

    fn states(&self, pipeline: &str) -> Result<Vec<StateSummary>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let mut out: Vec<_> = p
            .get(pipeline)
            .map(|d| {
                d.states
                    .values()
                    .map(|s| {
                        // The size the records would have: what a disk store would hold.
                        let mut bytes = 0;
                        let mut record = Vec::new();
                        for shard in &s.shards {
                            for slot in 0..shard.keys.len() {
                                record.clear();
                                shard.states.record(slot, &mut record);
                                bytes += (shard.keys.row(slot).len() + record.len()) as u64;
                            }
                        }
                        StateSummary {
                            info: s.info.clone(),
                            keys: s.keys() as u64,
                            bytes,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.info.state_id.cmp(&b.info.state_id));
        Ok(out)
    }

    fn state_info(&self, pipeline: &str, state_id: &str) -> Result<Option<StateInfo>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        Ok(p.get(pipeline)
            .and_then(|d| d.states.get(state_id))
            .map(|s| s.info.clone()))
    }

    fn get_many(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let Some(state) = p.get(pipeline).and_then(|d| d.states.get(state_id)) else {
            return Ok(vec![None; keys.len()]);
        };
        Ok(keys.iter().map(|k| state.record(&self.hasher, k)).collect())
    }

    fn keeps_decoded(&self) -> bool {
        true
    }

    fn load_decoded(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        column: &mut dyn StateColumn,
        first_slot: usize,
    ) -> Result<usize> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let Some(state) = p.get(pipeline).and_then(|d| d.states.get(state_id)) else {
            return Ok(0);
        };
        let mut found = 0;
        for (i, key) in keys.iter().enumerate() {
            let hash = self.hasher.hash_one(key);
            let shard = &state.shards[shard_of(hash)];
            if let Some(s) = shard.find(hash, key) {
                column.set_copy(first_slot + i, shard.states.as_ref(), s);
                found += 1;
            }
        }
        Ok(found)
    }

    fn scan(&self, pipeline: &str, state_id: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(state) = p.get(pipeline).and_then(|d| d.states.get(state_id)) {
            for shard in &state.shards {
                for slot in 0..shard.keys.len() {
                    let mut record = Vec::new();
                    shard.states.record(slot, &mut record);
                    rows.push((shard.keys.row(slot).to_vec(), record));
                }
            }
        }
        // Key order, so that scans are deterministic.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    fn commit(&self, pipeline: &str, _attempt: u64, commit: Commit) -> Result<()> {
        let mut p = self.pipelines.write().map_err(|_| poisoned())?;
        // Validate everything before the first change, so a refused commit changes nothing.
        if let Some(data) = p.get(pipeline) {
            if let (Some(tag), Some(last)) = (&commit.tag, &data.info.last_commit_tag)
                && tag == last
            {
                return Err(already_committed(pipeline, tag));
            }
            for info in &commit.states {
                if let Some(existing) = data.states.get(info.state_id.as_str())
                    && let Some(why) = existing.info.mismatch(info)
                {
                    return Err(DataFusionError::Execution(why));
                }
            }
        }
        let registered = |id: &str| commit.states.iter().any(|s| *s.state_id == *id);
        if let Some(id) = commit
            .puts
            .iter()
            .map(|p| &p.state_id)
            .chain(commit.decoded.iter().map(|d| &d.state_id))
            .find(|id| !registered(id))
        {
            return Err(DataFusionError::Internal(format!(
                "commit writes unregistered state {id}"
            )));
        }
        // Records are decoded up front: a damaged one refuses the commit untouched.
        let mut decoded_puts: Vec<DecodedStates> = Vec::new();
        for Put {
            state_id,
            key,
            record,
            ..
        } in &commit.puts
        {
            let at = match decoded_puts.iter().position(|d| d.state_id == *state_id) {
                Some(at) => at,
                None => {
                    let info = commit.states.iter().find(|s| *s.state_id == **state_id);
                    let kernel = kernel_of(info.expect("registered above"))?;
                    decoded_puts.push(DecodedStates {
                        state_id: Arc::clone(state_id),
                        keys: Arc::new(EncodedKeys::default()),
                        slots: Arc::new(Vec::new()),
                        column: kernel.new_column(),
                    });
                    decoded_puts.len() - 1
                }
            };
            let d = &mut decoded_puts[at];
            d.column.push_record(record).map_err(|e| {
                DataFusionError::Execution(format!(
                    "stored state of {state_id} cannot be decoded ({e}); nothing was committed"
                ))
            })?;
            Arc::get_mut(&mut d.keys).expect("owned").push(key);
            let slot = d.column.len() as u32 - 1;
            Arc::get_mut(&mut d.slots).expect("owned").push(slot);
        }

        let data = p
            .entry(pipeline.to_string())
            .or_insert_with(|| PipelineData {
                info: PipelineInfo {
                    name: pipeline.to_string(),
                    ..Default::default()
                },
                states: HashMap::default(),
            });
        for info in &commit.states {
            match data.states.get_mut(info.state_id.as_str()) {
                // A newer build's states replace the older ones as they are written.
                Some(state) if state.info.encoding_version < info.encoding_version => {
                    state.info = info.clone();
                }
                Some(_) => {}
                None => {
                    data.states.insert(
                        Arc::from(info.state_id.as_str()),
                        StateData::new(info.clone())?,
                    );
                }
            }
        }
        let hasher = &self.hasher;
        for d in decoded_puts.iter().chain(&commit.decoded) {
            let state = data.states.get_mut(&d.state_id).expect("registered above");
            let writes: Vec<Write> = d
                .slots
                .iter()
                .filter(|&&s| d.column.rows(s as usize) > 0)
                .map(|&s| {
                    let key = d.keys.row(s as usize);
                    Write {
                        hash: hasher.hash_one(key),
                        key,
                        source: d.column.as_ref(),
                        slot: s as usize,
                    }
                })
                .collect();
            apply(&mut state.shards, writes, hasher);
        }
        data.info.commits += 1;
        data.info.last_commit_micros = Some(now_micros());
        data.info.last_commit_tag = commit.tag;
        Ok(())
    }
}
