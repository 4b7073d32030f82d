//! The metadata records every persistent store keeps, in one byte encoding: a pipeline's
//! (commits, last commit and tag, an attempt in flight) and a state's (its number, key and
//! byte counts, and its `StateInfo`).

use std::str::FromStr;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};

use super::codec::KeyColumn;
use super::{PipelineInfo, StateInfo, StateSummary};
use crate::kernels::fields::{ByteReader as Reader, FieldSource};

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PipelineMeta {
    pub(crate) commits: u64,
    pub(crate) last_commit_micros: Option<i64>,
    pub(crate) last_commit_tag: Option<String>,
    /// An attempt that staged updates and has not committed or rolled back.
    pub(crate) in_flight: Option<u64>,
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn get_str(r: &mut Reader) -> Result<String> {
    let len = r.u32().map_err(|e| DataFusionError::Execution(e.0))? as usize;
    let mut bytes = Vec::with_capacity(len);
    for _ in 0..len {
        bytes.push(r.u8().map_err(|e| DataFusionError::Execution(e.0))?);
    }
    String::from_utf8(bytes).map_err(|_| DataFusionError::Execution("bad UTF-8".into()))
}

pub(crate) fn kerr(e: crate::kernels::KernelError) -> DataFusionError {
    DataFusionError::Execution(e.0)
}

/// A reader positioned after the version byte of a metadata record (version 1).
pub(crate) fn metadata_reader<'a>(bytes: &'a [u8], what: &str) -> Result<Reader<'a>> {
    let mut r = Reader::new(bytes);
    let version = r.u8().map_err(kerr)?;
    if version != 1 {
        return Err(DataFusionError::Execution(format!(
            "{what} version {version} is not supported by this build"
        )));
    }
    Ok(r)
}

impl PipelineMeta {
    /// The pipeline as listed, if it exists for users: once it has committed (a pipeline
    /// whose attempts all failed, or a scratch pipeline, never has).
    pub(crate) fn listed(self, name: &str) -> Option<PipelineInfo> {
        (self.commits > 0).then(|| PipelineInfo {
            name: name.to_string(),
            commits: self.commits,
            last_commit_micros: self.last_commit_micros,
            last_commit_tag: self.last_commit_tag,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(&self.commits.to_le_bytes());
        match self.last_commit_micros {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        match &self.last_commit_tag {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put_str(&mut out, t);
            }
        }
        match self.in_flight {
            None => out.push(0),
            Some(a) => {
                out.push(1);
                out.extend_from_slice(&a.to_le_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = metadata_reader(bytes, "pipeline metadata")?;
        let commits = r.u64().map_err(kerr)?;
        let last_commit_micros = match r.u8().map_err(kerr)? {
            0 => None,
            _ => Some(r.i64().map_err(kerr)?),
        };
        let last_commit_tag = match r.u8().map_err(kerr)? {
            0 => None,
            _ => Some(get_str(&mut r)?),
        };
        let in_flight = match r.u8().map_err(kerr)? {
            0 => None,
            _ => Some(r.u64().map_err(kerr)?),
        };
        r.finish("pipeline metadata").map_err(kerr)?;
        Ok(Self {
            commits,
            last_commit_micros,
            last_commit_tag,
            in_flight,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateMeta {
    pub(crate) state_no: u32,
    pub(crate) keys: u64,
    pub(crate) bytes: u64,
    pub(crate) info: StateInfo,
}

impl StateMeta {
    /// The state as `fintech_states` lists it.
    pub(crate) fn summary(self) -> StateSummary {
        StateSummary {
            info: self.info,
            keys: self.keys,
            bytes: self.bytes,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(&self.state_no.to_le_bytes());
        out.extend_from_slice(&self.keys.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        let i = &self.info;
        put_str(&mut out, &i.state_id);
        put_str(&mut out, &i.kernel);
        out.extend_from_slice(&i.encoding_version.to_le_bytes());
        put_str(&mut out, &i.order_type.to_string());
        for list in [&i.params, &i.inputs] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for s in list {
                put_str(&mut out, s);
            }
        }
        out.extend_from_slice(&(i.key_columns.len() as u32).to_le_bytes());
        for c in &i.key_columns {
            put_str(&mut out, &c.name);
            put_str(&mut out, &c.data_type.to_string());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = metadata_reader(bytes, "state metadata")?;
        let state_no = r.u32().map_err(kerr)?;
        let keys = r.u64().map_err(kerr)?;
        let bytes_total = r.u64().map_err(kerr)?;
        let state_id = get_str(&mut r)?;
        let kernel = get_str(&mut r)?;
        let encoding_version = r.u32().map_err(kerr)?;
        let data_type = |s: String| {
            DataType::from_str(&s).map_err(|e| {
                DataFusionError::Execution(format!("unreadable type '{s}' in state metadata: {e}"))
            })
        };
        let order_type = data_type(get_str(&mut r)?)?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            for _ in 0..r.u32().map_err(kerr)? {
                list.push(get_str(&mut r)?);
            }
        }
        let [params, inputs] = lists;
        let mut key_columns = Vec::new();
        for _ in 0..r.u32().map_err(kerr)? {
            let name = get_str(&mut r)?;
            key_columns.push(KeyColumn {
                name,
                data_type: data_type(get_str(&mut r)?)?,
            });
        }
        r.finish("state metadata").map_err(kerr)?;
        Ok(Self {
            state_no,
            keys,
            bytes: bytes_total,
            info: StateInfo {
                state_id,
                kernel,
                params,
                inputs,
                key_columns,
                order_type,
                encoding_version,
                reads_from: encoding_version,
            },
        })
    }
}

/// The registry entry of `info` in `pipeline` after a commit that uses it: `stored` when the
/// state exists (refused if it disagrees with `info`; raised to `info`'s encoding version when
/// that is newer), else a new entry numbered `*next_state`, which is then advanced.
pub(crate) fn register(
    stored: Option<StateMeta>,
    info: &StateInfo,
    next_state: &mut u32,
    pipeline: &str,
    location: &str,
) -> Result<StateMeta> {
    match stored {
        Some(mut meta) => {
            if let Some(why) = meta.info.mismatch(info) {
                return Err(DataFusionError::Execution(format!(
                    "pipeline '{pipeline}' in {location}: {why}"
                )));
            }
            if meta.info.encoding_version < info.encoding_version {
                // Records of the newer encoding are written from now on, and this build reads
                // both: the state records the newer version.
                meta.info.encoding_version = info.encoding_version;
                meta.info.reads_from = info.encoding_version;
                return Ok(meta);
            }
            Ok(meta)
        }
        None => {
            let meta = StateMeta {
                state_no: *next_state,
                keys: 0,
                bytes: 0,
                info: info.clone(),
            };
            *next_state += 1;
            Ok(meta)
        }
    }
}
