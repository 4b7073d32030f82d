//! One execution of a keyed-state operator across its partitions: it opens the pipeline,
//! stages what partitions evict (disk backends), collects what they hold at the end, and
//! commits everything at once when the last partition has consumed its input. A partition
//! that fails or is dropped early never reports, so nothing is committed: the run rolls back
//! what it staged when it is dropped, and the lease on the pipeline goes with it.

use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};

use crate::config::FintechConfig;
use crate::state::{
    Commit, PipelineLease, Put, StateInfo, StateStore, StoreRegistry, already_committed,
};

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
}

impl QueryRun {
    /// Starts a run over `partitions` partitions. With a pipeline configured, this opens the
    /// store, takes the pipeline's lease, refuses a replayed commit tag and rolls back what
    /// a crashed or failed earlier attempt left, all before any input is read.
    pub fn start(
        config: &FintechConfig,
        registry: &StoreRegistry,
        states: &[StateInfo],
        partitions: usize,
        commits: bool,
    ) -> Result<Self> {
        let mut lease = None;
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
        Ok(Self {
            pipeline,
            progress: Mutex::new(Progress {
                started: vec![false; partitions],
                remaining: partitions,
                states: states.to_vec(),
                commit: Commit::default(),
                staged: false,
                lease,
            }),
        })
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
    /// updates in one atomic store commit.
    pub fn finish_partition(&self, puts: Vec<Put>) -> Result<()> {
        let mut p = self.progress.lock().unwrap();
        p.commit.puts.extend(puts);
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
            let result = pipeline
                .store
                .commit(&pipeline.name, pipeline.attempt, commit);
            if result.is_ok() {
                p.staged = false;
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
