//! The `fintech` settings namespace: `SET fintech.pipeline = 'ticks'` and friends.
//!
//! Hand-written rather than `extensions_options!` so that `entries()` returns the full
//! `fintech.`-prefixed names: that is what makes `SHOW fintech.x` and
//! `information_schema.df_settings` work.

use std::any::Any;
use std::fmt;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

/// Backends a user can name.
pub const BACKENDS: &[&str] = &["memory", "rocksdb", "tonbo"];

pub use crate::kernels::LateRows;

/// The order a query folds its rows in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FoldOrder {
    /// `key` when the input is bounded, the state lives in a disk backend, and the keys the
    /// query will hold are estimated to outgrow `fintech.working_set_bytes`; else `time`.
    #[default]
    Auto,
    /// In input order: rows stream through, each key's state stays in the working set.
    Time,
    /// Sorted by key first (spilling to disk), so that each key's state is read once and
    /// written once, however the keys interleave in time.
    Key,
}

impl FoldOrder {
    pub fn as_str(&self) -> &'static str {
        match self {
            FoldOrder::Auto => "auto",
            FoldOrder::Time => "time",
            FoldOrder::Key => "key",
        }
    }
}

impl fmt::Display for FoldOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `fintech.*` session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FintechConfig {
    /// `memory` (default), `rocksdb` or `tonbo`.
    pub state_backend: String,
    /// Directory of a disk backend; for `memory`, a name that separates independent stores.
    pub state_path: String,
    /// Name of the state that carries across queries; empty means per-query state.
    pub pipeline: String,
    pub late_rows: LateRows,
    /// Source position stored atomically with the next commit; empty means none.
    pub commit_tag: String,
    /// Memory the keyed-state operator may hold per query before it stages state in a disk
    /// backend (ignored by `memory`, which holds everything).
    pub working_set_bytes: usize,
    /// The order a query folds its rows in.
    pub fold_order: FoldOrder,
    /// fsync every RocksDB commit.
    pub rocksdb_sync: bool,
    /// RocksDB block cache shared by every state in the process.
    pub rocksdb_block_cache_bytes: usize,
    /// RocksDB memtable budget shared by every state in the process (charged to the cache).
    pub rocksdb_write_buffer_bytes: usize,
    /// Commit-log memory shared by every RocksDB state in the process; 0: no commit log.
    pub rocksdb_commit_log_bytes: usize,
    /// Memory for states read ahead in one scan, shared by every RocksDB state in the process;
    /// 0: states are read key by key.
    pub rocksdb_read_ahead_bytes: usize,
    /// How a Tonbo store on `s3://` reaches its object store.
    pub s3: S3Settings,
}

/// The object store of a `fintech.state_path = 's3://bucket/prefix'`. An empty setting falls
/// back to the usual AWS environment variable.
#[derive(Clone, Default, PartialEq)]
pub struct S3Settings {
    /// `http(s)://host:port` of an S3-compatible server; empty: AWS (`AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`).
    pub endpoint: String,
    /// Empty: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// Empty: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// Empty: `AWS_SECRET_ACCESS_KEY`. `SHOW` gives `********` for a value that is set.
    pub secret_access_key: String,
    /// Empty: `AWS_SESSION_TOKEN`. `SHOW` gives `********` for a value that is set.
    pub session_token: String,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .finish()
    }
}

/// What `SHOW` (and `Debug`) gives for a secret.
fn hidden(secret: &str) -> String {
    if secret.is_empty() {
        String::new()
    } else {
        "********".into()
    }
}

impl Default for FintechConfig {
    fn default() -> Self {
        Self {
            state_backend: "memory".into(),
            state_path: String::new(),
            pipeline: String::new(),
            late_rows: LateRows::Skip,
            commit_tag: String::new(),
            working_set_bytes: 128 << 20,
            fold_order: FoldOrder::Auto,
            rocksdb_sync: true,
            rocksdb_block_cache_bytes: 128 << 20,
            rocksdb_write_buffer_bytes: 64 << 20,
            rocksdb_commit_log_bytes: 64 << 20,
            rocksdb_read_ahead_bytes: 256 << 20,
            s3: S3Settings::default(),
        }
    }
}

const ENTRIES: &[(&str, &str)] = &[
    (
        "state_backend",
        "Where pipeline state lives: memory (default), rocksdb or tonbo.",
    ),
    (
        "state_path",
        "Directory of a disk state backend. With memory, a name that keeps stores apart.",
    ),
    (
        "pipeline",
        "Name of the state that carries across queries. Empty (default): every query starts \
         from empty state.",
    ),
    (
        "late_rows",
        "A row older than its key's last applied ORDER BY value: skip (default: state \
         untouched, output NULL), apply, or error.",
    ),
    (
        "commit_tag",
        "Source position (offset, file name, batch number) stored atomically with the next \
         pipeline commit. A query whose tag equals the last committed tag is refused.",
    ),
    (
        "working_set_bytes",
        "Memory a query's keyed-state operator holds before it stages state in a disk backend \
         (default 128 MiB; memory backend: unbounded).",
    ),
    (
        "fold_order",
        "Order a query folds its rows in: auto (default: key when the input is bounded, the \
         state is on disk and its keys outgrow the working set), time (input order, \
         streaming) or key (sorted by key first, spilling to disk: each key's state is read \
         and written once).",
    ),
    (
        "rocksdb.sync",
        "fsync each RocksDB pipeline commit (default true).",
    ),
    (
        "rocksdb.block_cache_bytes",
        "RocksDB block cache shared by every state in the process (default 128 MiB; set \
         before the first RocksDB store opens).",
    ),
    (
        "rocksdb.write_buffer_bytes",
        "RocksDB memtable memory shared by every state in the process (default 64 MiB; set \
         before the first RocksDB store opens).",
    ),
    (
        "rocksdb.commit_log_bytes",
        "Records of recent small RocksDB commits held in memory and in the commit log before \
         they are folded into the state's keys, for every state in the process (default 64 \
         MiB; 0: every commit writes its keys; read when a store opens).",
    ),
    (
        "rocksdb.read_ahead_bytes",
        "Memory for RocksDB states that a query reads much of, read whole in one scan instead \
         of key by key, for every state in the process (default 256 MiB; 0: always key by \
         key; read when a store opens).",
    ),
    (
        "s3.endpoint",
        "URL of the S3-compatible server of an s3:// fintech.state_path (default: the \
         environment's AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS).",
    ),
    (
        "s3.region",
        "Region of an s3:// fintech.state_path (default: AWS_REGION, AWS_DEFAULT_REGION, \
         else us-east-1).",
    ),
    (
        "s3.access_key_id",
        "Access key of an s3:// fintech.state_path (default: AWS_ACCESS_KEY_ID).",
    ),
    (
        "s3.secret_access_key",
        "Secret key of an s3:// fintech.state_path (default: AWS_SECRET_ACCESS_KEY; shown \
         as ********).",
    ),
    (
        "s3.session_token",
        "Session token of an s3:// fintech.state_path (default: AWS_SESSION_TOKEN; shown \
         as ********).",
    ),
];

/// Backends this build can open.
pub fn backend_available(backend: &str) -> bool {
    backend == "memory"
        || (backend == "rocksdb" && cfg!(feature = "rocksdb"))
        || (backend == "tonbo" && cfg!(feature = "tonbo"))
}

/// The error for a backend this build cannot open.
pub fn backend_unavailable(backend: &str) -> DataFusionError {
    if BACKENDS.contains(&backend) {
        DataFusionError::Configuration(format!(
            "fintech.state_backend '{backend}' is not compiled into this build: enable the \
             '{backend}' cargo feature of datafusion-fintech (on by default)"
        ))
    } else {
        DataFusionError::Configuration(format!(
            "unknown fintech.state_backend '{backend}': expected one of {}",
            BACKENDS.join(", ")
        ))
    }
}

fn parse_bytes(key: &str, value: &str) -> Result<usize> {
    value.trim().parse::<usize>().map_err(|_| {
        DataFusionError::Configuration(format!(
            "fintech.{key} takes a number of bytes, got '{value}'"
        ))
    })
}

impl FintechConfig {
    /// The settings of a session, defaults if the namespace was never registered.
    pub fn from_session(config: &datafusion::common::config::ConfigOptions) -> FintechConfig {
        config
            .extensions
            .get::<FintechConfig>()
            .cloned()
            .unwrap_or_default()
    }

    /// Adds the namespace to `config` (keeping values already set).
    pub fn register(config: &mut SessionConfig) {
        if config.options().extensions.get::<FintechConfig>().is_none() {
            config
                .options_mut()
                .extensions
                .insert(FintechConfig::default());
        }
    }

    pub fn has_pipeline(&self) -> bool {
        !self.pipeline.is_empty()
    }
}

impl ConfigExtension for FintechConfig {
    const PREFIX: &'static str = "fintech";
}

impl ExtensionOptions for FintechConfig {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.strip_prefix("fintech.").unwrap_or(key);
        match key {
            "state_backend" => {
                let v = value.trim().to_ascii_lowercase();
                if !backend_available(&v) {
                    return Err(backend_unavailable(&v));
                }
                self.state_backend = v;
            }
            "state_path" => self.state_path = value.to_string(),
            "pipeline" => self.pipeline = value.trim().to_string(),
            "late_rows" => {
                self.late_rows = match value.trim().to_ascii_lowercase().as_str() {
                    "skip" => LateRows::Skip,
                    "apply" => LateRows::Apply,
                    "error" => LateRows::Error,
                    other => {
                        return Err(DataFusionError::Configuration(format!(
                            "unknown fintech.late_rows '{other}': expected skip, apply or error"
                        )));
                    }
                }
            }
            "commit_tag" => self.commit_tag = value.to_string(),
            "working_set_bytes" => self.working_set_bytes = parse_bytes(key, value)?,
            "fold_order" => {
                self.fold_order = match value.trim().to_ascii_lowercase().as_str() {
                    "auto" => FoldOrder::Auto,
                    "time" => FoldOrder::Time,
                    "key" => FoldOrder::Key,
                    other => {
                        return Err(DataFusionError::Configuration(format!(
                            "unknown fintech.fold_order '{other}': expected auto, time or key"
                        )));
                    }
                }
            }
            "rocksdb.sync" => {
                self.rocksdb_sync = match value.trim().to_ascii_lowercase().as_str() {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    other => {
                        return Err(DataFusionError::Configuration(format!(
                            "fintech.rocksdb.sync takes true or false, got '{other}'"
                        )));
                    }
                }
            }
            "rocksdb.block_cache_bytes" => {
                self.rocksdb_block_cache_bytes = parse_bytes(key, value)?
            }
            "rocksdb.write_buffer_bytes" => {
                self.rocksdb_write_buffer_bytes = parse_bytes(key, value)?
            }
            "rocksdb.commit_log_bytes" => self.rocksdb_commit_log_bytes = parse_bytes(key, value)?,
            "rocksdb.read_ahead_bytes" => self.rocksdb_read_ahead_bytes = parse_bytes(key, value)?,
            "s3.endpoint" => self.s3.endpoint = value.trim().to_string(),
            "s3.region" => self.s3.region = value.trim().to_string(),
            "s3.access_key_id" => self.s3.access_key_id = value.trim().to_string(),
            "s3.secret_access_key" => self.s3.secret_access_key = value.to_string(),
            "s3.session_token" => self.s3.session_token = value.to_string(),
            other => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown setting fintech.{other}: the fintech settings are {}",
                    ENTRIES
                        .iter()
                        .map(|(k, _)| format!("fintech.{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        ENTRIES
            .iter()
            .map(|(key, description)| ConfigEntry {
                key: format!("fintech.{key}"),
                value: Some(match *key {
                    "state_backend" => self.state_backend.clone(),
                    "state_path" => self.state_path.clone(),
                    "pipeline" => self.pipeline.clone(),
                    "late_rows" => self.late_rows.to_string(),
                    "commit_tag" => self.commit_tag.clone(),
                    "working_set_bytes" => self.working_set_bytes.to_string(),
                    "fold_order" => self.fold_order.to_string(),
                    "rocksdb.sync" => self.rocksdb_sync.to_string(),
                    "rocksdb.block_cache_bytes" => self.rocksdb_block_cache_bytes.to_string(),
                    "rocksdb.write_buffer_bytes" => self.rocksdb_write_buffer_bytes.to_string(),
                    "rocksdb.commit_log_bytes" => self.rocksdb_commit_log_bytes.to_string(),
                    "rocksdb.read_ahead_bytes" => self.rocksdb_read_ahead_bytes.to_string(),
                    "s3.endpoint" => self.s3.endpoint.clone(),
                    "s3.region" => self.s3.region.clone(),
                    "s3.access_key_id" => self.s3.access_key_id.clone(),
                    "s3.secret_access_key" => hidden(&self.s3.secret_access_key),
                    "s3.session_token" => hidden(&self.s3.session_token),
                    _ => unreachable!(),
                }),
                description,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_validates_and_entries_are_prefixed() {
        let mut c = FintechConfig::default();
        c.set("pipeline", "ticks").unwrap();
        c.set("late_rows", "ERROR").unwrap();
        assert_eq!(c.late_rows, LateRows::Error);
        assert!(
            c.set("late_rows", "drop")
                .unwrap_err()
                .to_string()
                .contains("late_rows")
        );
        assert!(
            c.set("state_backend", "redis")
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
        assert!(c.set("nope", "x").is_err());
        c.set("s3.secret_access_key", "s3cr3t").unwrap();
        assert_eq!(c.s3.secret_access_key, "s3cr3t");
        let e = c.entries();
        assert!(e.iter().all(|e| e.key.starts_with("fintech.")));
        assert!(
            e.iter()
                .any(|e| e.key == "fintech.pipeline" && e.value.as_deref() == Some("ticks"))
        );
        assert!(
            e.iter().any(|e| e.key == "fintech.s3.secret_access_key"
                && e.value.as_deref() == Some("********"))
        );
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }
}
