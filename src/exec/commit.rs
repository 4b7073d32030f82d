//! One execution of a keyed-state operator across its partitions: it opens the pipeline,
//! stages what partitions evict (disk backends), collects what they hold at the end, and
//! commits everything at once when the last partition has consumed its input. A partition
//! that fails or is dropped early never reports, so nothing is committed: the run rolls back
//! what it staged when it is dropped, and the lease on the pipeline goes with it.
//!
//! On a disk backend, the working sets of a committed run stay in memory ([`KeptSets`]) and
//! the next run on the same pipeline starts from them instead of loading those keys again.

use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};

use super::working_set::WorkingSet;
use crate::config::FintechConfig;
use crate::state::{
    Commit, DecodedStates, PipelineLease, Put, StateInfo, StateStore, StoreRegistry,
    already_committed,
};

/// The working sets that committed runs left, for the next run on the same pipeline.
///
/// A run takes its pipeline's entry only if nothing was committed to the pipeline since (the
/// commit count matches) and it evaluates the same states; the entry is gone once taken, so
/// a failed run leaves nothing behind. Each partition keeps only the keys it updated: a key
/// that a later run sends to another partition (another `target_partitions`) is loaded from
/// the store there, and the stale copy is dropped at the end of that run.
#[derive(Debug, Default)]
pub struct KeptSets {
    entries: Mutex<Vec<KeptSet>>,
}

#[derive(Debug)]
struct KeptSet {
    location: String,
    pipeline: String,
    states: Vec<StateInfo>,
    /// The pipeline's commit count right after the commit that left this set.
    commits: u64,
    partitions: Vec<Option<WorkingSet>>,
}

impl KeptSet {
    fn bytes(&self) -> usize {
        self.partitions.iter().flatten().map(|p| p.bytes).sum()
    }
}

impl KeptSets {
    fn take(
        &self,
        location: &str,
        pipeline: &str,
        states: &[StateInfo],
        commits: u64,
    ) -> Option<Vec<Option<WorkingSet>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries
            .iter()
            .position(|e| e.location == location && e.pipeline == pipeline)?;
        let entry = entries.remove(at);
        (entry.commits == commits && entry.states == states).then_some(entry.partitions)
    }

    /// Keeps `set`, dropping the oldest others while all together exceed `budget`.
    fn put(&self, set: KeptSet, budget: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| !(e.location == set.location && e.pipeline == set.pipeline));
        entries.push(set);
        let mut total: usize = entries.iter().map(|e| e.bytes()).sum();
        while total > budget && !entries.is_empty() {
            total -= entries.remove(0).bytes();
        }
    }
}

/// The pipeline a query reads from and commits to.
#[derive(Debug)]
pub struct PipelineRun {
    pub store: Arc<dyn StateStore>,
    pub name: String,
    tag: Option<String>,
    /// False for a read-only run (under a LIMIT): it may stage, but it rolls back at the end.
    commits: bool,
    attempt: u64,
}

#[derive(Debug)]
pub struct QueryRun {
    /// `None`: per-query state held in memory, nothing is read or written.
    pub pipeline: Option<PipelineRun>,
    progress: Mutex<Progress>,
    /// Where the working sets go after the commit, when they are kept (disk backends).
    keeper: Option<Keeper>,
}

#[derive(Debug)]
struct Keeper {
    sets: Arc<KeptSets>,
    /// Total budget of kept working sets (`fintech.working_set_bytes`).
    budget: usize,
    /// Pipeline commit count when the run started.
    commits: u64,
}

#[derive(Debug)]
struct Progress {
    started: Vec<bool>,
    remaining: usize,
    states: Vec<StateInfo>,
    commit: Commit,
    /// Something was staged and is neither committed nor rolled back yet.
    staged: bool,
    lease: Option<PipelineLease>,
    /// Per partition: the working set it starts from, until taken.
    kept: Vec<Option<WorkingSet>>,
    /// Per partition: the working set it ended with, kept after the commit.
    ended: Vec<Option<WorkingSet>>,
}

impl QueryRun {
    /// Starts a run over `partitions` partitions. With a pipeline configured, this opens the
    /// store, takes the pipeline's lease, refuses a replayed commit tag and rolls back what
    /// a crashed or failed earlier attempt left, all before any input is read.
    pub fn start(
        config: &FintechConfig,
        registry: &StoreRegistry,
        kept_sets: &Arc<KeptSets>,
        states: &[StateInfo],
        partitions: usize,
        commits: bool,
    ) -> Result<Self> {
        let mut lease = None;
        let mut keeper = None;
        let mut kept = Vec::new();
        let pipeline = if config.has_pipeline() {
            let store = registry.open(config)?;
            lease = Some(registry.lease(store.as_ref(), &config.pipeline)?);
            let tag = (!config.commit_tag.is_empty()).then(|| config.commit_tag.clone());
            if let (Some(tag), Some(info)) = (&tag, store.pipeline(&config.pipeline)?)
                && info.last_commit_tag.as_deref() == Some(tag.as_str())
            {
                return Err(already_committed(&config.pipeline, tag));
            }
            for info in states {
                if let Some(stored) = store.state_info(&config.pipeline, &info.state_id)?
                    && let Some(why) = stored.mismatch(info)
                {
                    return Err(DataFusionError::Plan(format!(
                        "pipeline '{}' in {}: {why}",
                        config.pipeline,
                        store.location()
                    )));
                }
            }
            let attempt = store.begin(&config.pipeline)?;
            if commits && store.stages() {
                let count = store.pipeline(&config.pipeline)?.map_or(0, |p| p.commits);
                kept = kept_sets
                    .take(&store.location(), &config.pipeline, states, count)
                    .unwrap_or_default();
                keeper = Some(Keeper {
                    sets: Arc::clone(kept_sets),
                    budget: config.working_set_bytes,
                    commits: count,
                });
            }
            Some(PipelineRun {
                store,
                name: config.pipeline.clone(),
                tag,
                commits,
                attempt,
            })
        } else if config.state_backend != "memory" && !config.state_path.is_empty() {
            // Per-query state on a disk backend: a scratch pipeline of its own, so a one-off
            // query over more keys than fit in memory still runs. Never committed; what it
            // staged is rolled back when the query ends (or when the store next opens).
            let store = registry.open(config)?;
            let name = crate::state::scratch_pipeline_name();
            let attempt = store.begin(&name)?;
            Some(PipelineRun {
                store,
                name,
                tag: None,
                commits: false,
                attempt,
            })
        } else {
            None
        };
        kept.resize_with(partitions, || None);
        Ok(Self {
            pipeline,
            progress: Mutex::new(Progress {
                started: vec![false; partitions],
                remaining: partitions,
                states: states.to_vec(),
                commit: Commit::default(),
                staged: false,
                lease,
                kept,
                ended: (0..partitions).map(|_| None).collect(),
            }),
            keeper,
        })
    }

    /// Whether partitions hand over their working sets at the end, to be kept.
    pub fn keeps_working_sets(&self) -> bool {
        self.keeper.is_some()
    }

    /// The working set `partition` starts from: what it held after the pipeline's last
    /// commit, if that is still current.
    pub fn take_working_set(&self, partition: usize) -> Option<WorkingSet> {
        let mut p = self.progress.lock().unwrap();
        p.kept.get_mut(partition).and_then(Option::take)
    }

    /// Marks `partition` as started; false if this run already started it (the plan is being
    /// executed again, which needs a new run).
    pub fn claim(&self, partition: usize) -> bool {
        let mut p = self.progress.lock().unwrap();
        match p.started.get_mut(partition) {
            Some(s) if !*s => {
                *s = true;
                true
            }
            _ => false,
        }
    }

    /// Whether every partition has started.
    pub fn all_claimed(&self) -> bool {
        self.progress.lock().unwrap().started.iter().all(|s| *s)
    }

    /// Whether this run commits what partitions hold at the end.
    pub fn commits(&self) -> bool {
        self.pipeline.as_ref().is_some_and(|p| p.commits)
    }

    /// Whether the store keeps states decoded: partitions load and commit them as they are.
    pub fn keeps_decoded(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(|p| p.store.keeps_decoded())
    }

    /// Whether partitions should keep a bounded working set and stage what they evict.
    pub fn stages(&self) -> bool {
        self.pipeline.as_ref().is_some_and(|p| p.store.stages())
    }

    /// Writes evicted updates to the store, uncommitted.
    pub fn stage(&self, puts: Vec<Put>) -> Result<()> {
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        let mut p = self.progress.lock().unwrap();
        p.staged = true;
        pipeline
            .store
            .stage(&pipeline.name, pipeline.attempt, &p.states, puts)
    }

    /// A partition consumed all its input; the last one to do so commits every partition's
    /// updates (records, or decoded states) in one atomic store commit. `ended` is what the
    /// partition held, kept for the next run if the commit succeeds.
    pub fn finish_partition(
        &self,
        partition: usize,
        puts: Vec<Put>,
        decoded: Vec<DecodedStates>,
        ended: Option<WorkingSet>,
    ) -> Result<()> {
        let mut p = self.progress.lock().unwrap();
        if p.commit.puts.is_empty() {
            p.commit.puts = puts;
        } else {
            p.commit.puts.extend(puts);
        }
        p.commit.decoded.extend(decoded);
        if let Some(slot) = p.ended.get_mut(partition) {
            *slot = ended;
        }
        p.remaining -= 1;
        if p.remaining > 0 {
            return Ok(());
        }
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        let result = if pipeline.commits {
            let mut commit = std::mem::take(&mut p.commit);
            commit.tag = pipeline.tag.clone();
            commit.states = std::mem::take(&mut p.states);
            let states = commit.states.clone();
            let result = pipeline
                .store
                .commit(&pipeline.name, pipeline.attempt, commit);
            if result.is_ok() {
                p.staged = false;
                if let Some(keeper) = &self.keeper {
                    let set = KeptSet {
                        location: pipeline.store.location(),
                        pipeline: pipeline.name.clone(),
                        states,
                        commits: keeper.commits + 1,
                        partitions: std::mem::take(&mut p.ended),
                    };
                    keeper.sets.put(set, keeper.budget);
                }
            }
            result
        } else {
            Ok(())
        };
        if p.staged {
            // Read-only run, or a refused commit: undo what was staged.
            p.staged = false;
            pipeline.store.rollback(&pipeline.name, pipeline.attempt)?;
        }
        p.lease = None;
        result
    }
}

impl Drop for QueryRun {
    fn drop(&mut self) {
        let p = self.progress.get_mut().unwrap_or_else(|e| e.into_inner());
        if let (true, Some(pipeline)) = (p.staged, &self.pipeline) {
            // A failed or abandoned query. Should this fail too, the next query on the
            // pipeline rolls back in `begin` before it reads anything.
            let _ = pipeline.store.rollback(&pipeline.name, pipeline.attempt);
        }
    }
}
