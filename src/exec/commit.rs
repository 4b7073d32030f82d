//! One execution of a keyed-state operator across its partitions: it opens the pipeline,
//! collects every partition's updates, and commits them all at once when the last partition
//! has consumed its input. A partition that fails or is dropped early never reports, so
//! nothing is committed and the lease on the pipeline goes with the last stream.

use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};

use crate::config::FintechConfig;
use crate::state::{
    Commit, PipelineLease, StateInfo, StateStore, StoreRegistry, already_committed,
};

/// The pipeline a query reads from and commits to.
#[derive(Debug)]
pub struct PipelineRun {
    pub store: Arc<dyn StateStore>,
    pub name: String,
    tag: Option<String>,
    commits: bool,
}

#[derive(Debug)]
pub struct QueryRun {
    /// `None`: per-query state, nothing is read or written.
    pub pipeline: Option<PipelineRun>,
    progress: Mutex<Progress>,
}

#[derive(Debug)]
struct Progress {
    started: Vec<bool>,
    remaining: usize,
    states: Vec<StateInfo>,
    commit: Commit,
    lease: Option<PipelineLease>,
}

impl QueryRun {
    /// Starts a run over `partitions` partitions. With a pipeline configured, this opens the
    /// store, takes the pipeline's lease and refuses a replayed commit tag, all before any
    /// input is read.
    pub fn start(
        config: &FintechConfig,
        registry: &StoreRegistry,
        states: &[StateInfo],
        partitions: usize,
        commits: bool,
    ) -> Result<Self> {
        let mut lease = None;
        let pipeline = if config.has_pipeline() {
            let store = registry.open(&config.state_backend, &config.state_path)?;
            lease = Some(registry.lease(store.as_ref(), &config.pipeline)?);
            let tag = (!config.commit_tag.is_empty()).then(|| config.commit_tag.clone());
            if let (Some(tag), Some(info)) = (&tag, store.pipeline(&config.pipeline)?) {
                if info.last_commit_tag.as_deref() == Some(tag.as_str()) {
                    return Err(already_committed(&config.pipeline, tag));
                }
            }
            for info in states {
                if let Some(stored) = store.state_info(&config.pipeline, &info.state_id)? {
                    if let Some(why) = stored.mismatch(info) {
                        return Err(DataFusionError::Plan(format!(
                            "pipeline '{}': {why}",
                            config.pipeline
                        )));
                    }
                }
            }
            Some(PipelineRun {
                store,
                name: config.pipeline.clone(),
                tag,
                commits,
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

    /// A partition consumed all its input; the last one to do so commits every partition's
    /// updates in one atomic store commit.
    pub fn finish_partition(&self, puts: Vec<(Arc<str>, Vec<u8>, Vec<u8>)>) -> Result<()> {
        let mut p = self.progress.lock().unwrap();
        p.commit.puts.extend(puts);
        p.remaining -= 1;
        if p.remaining > 0 {
            return Ok(());
        }
        let Some(pipeline) = self.pipeline.as_ref().filter(|p| p.commits) else {
            p.lease = None;
            return Ok(());
        };
        let mut commit = std::mem::take(&mut p.commit);
        commit.tag = pipeline.tag.clone();
        commit.states = std::mem::take(&mut p.states);
        let result = pipeline.store.commit(&pipeline.name, commit);
        p.lease = None;
        result
    }
}
