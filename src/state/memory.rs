//! The in-memory backend: state lives as long as the registration that opened it.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};

use super::{Commit, PipelineInfo, Put, StateInfo, StateStore, StateSummary, already_committed};

#[derive(Debug, Default)]
pub struct MemoryStore {
    path: String,
    pipelines: RwLock<HashMap<String, PipelineData>>,
}

#[derive(Debug, Default)]
struct PipelineData {
    info: PipelineInfo,
    states: HashMap<Arc<str>, StateData>,
}

#[derive(Debug)]
struct StateData {
    info: StateInfo,
    /// Encoded key -> encoded record.
    entries: HashMap<Vec<u8>, Vec<u8>>,
    bytes: u64,
}

impl MemoryStore {
    /// `path` only names the store: two paths are two independent in-memory stores.
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
            pipelines: RwLock::default(),
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
                    .map(|s| StateSummary {
                        info: s.info.clone(),
                        keys: s.entries.len() as u64,
                        bytes: s.bytes,
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
        Ok(keys
            .iter()
            .map(|k| state.entries.get(*k).cloned())
            .collect())
    }

    fn load(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        // The records are lent, not copied (a memory store commits nothing but whole
        // queries: what a query loads is what is committed).
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let Some(state) = p.get(pipeline).and_then(|d| d.states.get(state_id)) else {
            return Ok(());
        };
        for (i, key) in keys.iter().enumerate() {
            if let Some(record) = state.entries.get(*key) {
                found(i, record)?;
            }
        }
        Ok(())
    }

    fn scan(&self, pipeline: &str, state_id: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let p = self.pipelines.read().map_err(|_| poisoned())?;
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = p
            .get(pipeline)
            .and_then(|d| d.states.get(state_id))
            .map(|s| {
                s.entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
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
        let data = p
            .entry(pipeline.to_string())
            .or_insert_with(|| PipelineData {
                info: PipelineInfo {
                    name: pipeline.to_string(),
                    ..Default::default()
                },
                states: HashMap::default(),
            });
        for info in commit.states {
            data.states
                .entry(Arc::from(info.state_id.as_str()))
                .or_insert_with(|| StateData {
                    info,
                    entries: HashMap::default(),
                    bytes: 0,
                });
        }
        for Put {
            state_id,
            key,
            record,
            ..
        } in commit.puts
        {
            let state = data.states.get_mut(&state_id).ok_or_else(|| {
                DataFusionError::Internal(format!("commit writes unregistered state {state_id}"))
            })?;
            let key_len = key.len() as u64;
            state.bytes += key_len + record.len() as u64;
            if let Some(old) = state.entries.insert(key, record) {
                state.bytes -= key_len + old.len() as u64;
            }
        }
        data.info.commits += 1;
        data.info.last_commit_micros = Some(now_micros());
        data.info.last_commit_tag = commit.tag;
        Ok(())
    }
}
