//! Where a Tonbo store lives — a local directory or a prefix of an S3-compatible object store
//! — and its tables there: opening one ([`open_db`]), and removing one a commit never
//! reached.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use fusio::disk::LocalFs;
use fusio::executor::tokio::TokioExecutor;
use fusio::impls::remotes::aws::fs::AmazonS3;
use tonbo::db::wal_tuning::WalConfigExt;
use tonbo::db::{
    BatchesThreshold, CompactionOptions, CompactionStrategy, DB, LeveledPlannerConfig, WalConfig,
};
use tonbo::prelude::DbBuilder;

use super::directory::{check_directory, clear_stale_claims, io_error, take_lock, write_marker};
use super::object_store::{S3Prefix, SCHEME};
use crate::config::FintechConfig;

/// Where a store lives.
pub(super) enum Location {
    Disk(PathBuf),
    S3(S3Prefix),
}

/// An open Tonbo table, on either kind of location.
pub(super) enum Db {
    Disk(DB<LocalFs, TokioExecutor>),
    S3(DB<AmazonS3, TokioExecutor>),
}

/// `$body` with `$db` bound to the table a [`Db`] holds, whichever kind it is.
macro_rules! with_db {
    ($value:expr, $db:ident => $body:expr) => {
        match $value {
            $crate::state::tonbo::location::Db::Disk($db) => $body,
            $crate::state::tonbo::location::Db::S3($db) => $body,
        }
    };
}
pub(super) use with_db;

/// Opens the table a storage-configured builder (`Result<DbBuilder<..>>`) describes, tuned as
/// [`Location::open_db`] says.
macro_rules! tuned {
    ($builder:expr, $wal:expr) => {
        match $builder {
            Err(e) => Err(e.to_string()),
            Ok(b) => b
                .wal_config($wal)
                .with_seal_policy(Arc::new(BatchesThreshold {
                    batches: SEAL_BATCHES,
                }))
                .with_minor_compaction(1, 0)
                .with_compaction_options(CompactionOptions::new().strategy(
                    CompactionStrategy::Leveled(LeveledPlannerConfig {
                        l0_trigger: L0_TRIGGER,
                        l0_max_inputs: 8,
                        ..LeveledPlannerConfig::default()
                    }),
                ))
                .open()
                .await
                .map_err(|e| e.to_string()),
        }
    };
}

impl Location {
    /// The location `fintech.state_path` names: `s3://bucket/prefix`, else a directory.
    pub(super) fn new(path: &str, settings: &FintechConfig) -> Result<Self> {
        if path.is_empty() {
            return Err(DataFusionError::Configuration(
                "fintech.state_backend 'tonbo' needs fintech.state_path: the directory (or \
                 s3://bucket/prefix) that holds the state"
                    .into(),
            ));
        }
        if path.starts_with(SCHEME) {
            return Ok(Self::S3(S3Prefix::new(path, settings)?));
        }
        Ok(Self::Disk(PathBuf::from(path)))
    }

    /// Checks a directory and creates it if it is missing (nothing is checked on an object
    /// store here: [`Self::prepare`]), then gives what names the store within the process:
    /// two settings that name the same location give the same id.
    pub(super) fn resolve(&self) -> Result<String> {
        match self {
            Self::Disk(path) => {
                check_directory(path)?;
                std::fs::create_dir_all(path).map_err(|e| io_error(path, "create", e))?;
                let canonical = path
                    .canonicalize()
                    .map_err(|e| io_error(path, "resolve", e))?;
                Ok(canonical.display().to_string())
            }
            Self::S3(prefix) => Ok(format!("{} at '{}'", prefix.url, prefix.endpoint)),
        }
    }

    /// The location as errors and `fintech_pipelines()` name it.
    pub(super) fn name(&self) -> String {
        match self {
            Self::Disk(path) => path.display().to_string(),
            Self::S3(prefix) => prefix.url.clone(),
        }
    }

    /// Checks what the location holds, marks it as a store of this layout, and takes the
    /// directory's lock (an object store has none: [`super::object_store`]).
    pub(super) async fn prepare(&self) -> Result<Option<File>> {
        match self {
            Self::Disk(path) => {
                let lock = take_lock(path)?;
                write_marker(path)?;
                Ok(Some(lock))
            }
            Self::S3(prefix) => {
                prefix.check_and_mark().await?;
                Ok(None)
            }
        }
    }

    /// Removes the table `name` (`states/<n>`) if anything of it is there.
    pub(super) async fn remove_table(&self, name: &str) -> Result<()> {
        match self {
            Self::Disk(path) => {
                let dir = path.join(name);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, "clear", e))?;
                }
                Ok(())
            }
            Self::S3(prefix) => prefix.remove_all(name).await,
        }
    }

    /// Opens (or creates) the Tonbo table `name` (`meta`, `states/<n>`) with the schema of
    /// `empty` and the key column `key`. The log is written in segments of
    /// [`WAL_SEGMENT_BYTES`] on disk (one per append on an object store, below). Every
    /// [`SEAL_BATCHES`] ingests seal the memtable, and a sealed memtable is written to a file
    /// at once, so that an open replays at most the last few commits from the write-ahead log;
    /// level 0 is compacted from [`L0_TRIGGER`] files on, so that a scan (which reads every
    /// version a level-0 file holds) stays short.
    ///
    /// An open that fails with "precondition failed" is tried again for up to
    /// [`OPEN_PATIENCE`]: it lost a race between two of Tonbo's own manifest writes (seen
    /// under load on fresh directories), or a killed process left a manifest segment that
    /// fusio's orphan recovery adopts within 3 s once its lease is gone
    /// ([`clear_stale_claims`]).
    pub(super) async fn open_db(
        &self,
        name: &str,
        empty: arrow57::RecordBatch,
        key: &str,
    ) -> std::result::Result<Db, String> {
        if let Self::Disk(path) = self {
            clear_stale_claims(&path.join(name))
                .map_err(|e| format!("cannot clear its stale lock files and leases: {e}"))?;
        }
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let builder =
                DbBuilder::from_schema_key_name(empty.schema(), key).map_err(|e| e.to_string())?;
            let opened = match self {
                Self::Disk(path) => tuned!(
                    builder.on_disk(path.join(name)),
                    WalConfig::default().segment_max_bytes(WAL_SEGMENT_BYTES)
                )
                .map(Db::Disk),
                // An object is written when it is closed: a log segment of one frame each,
                // closed before the ingest returns, makes an ingest durable when it returns.
                Self::S3(prefix) => tuned!(
                    builder.object_store_with_fs(Arc::new(prefix.fs.clone()), prefix.path(name)),
                    WalConfig::default().segment_max_bytes(1)
                )
                .map(Db::S3),
            };
            match opened {
                Err(e)
                    if e.contains("precondition failed") && started.elapsed() < OPEN_PATIENCE =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis((20 * attempt).min(500))).await;
                }
                other => return other,
            }
        }
    }
}

/// Bytes a WAL segment on disk holds before the next is begun. Tonbo deletes a segment once
/// every ingest it holds is in Parquet files, but never the one being written: with its
/// default (64 MiB) a table's log grew by every commit's rows up to that size.
const WAL_SEGMENT_BYTES: usize = 1 << 20;
/// Ingests a memtable holds before it is sealed, and written to a Parquet file.
const SEAL_BATCHES: usize = 8;
/// Files in level 0 that start a compaction into level 1.
const L0_TRIGGER: usize = 2;

/// How long an open that fails with "precondition failed" is tried again.
const OPEN_PATIENCE: Duration = Duration::from_secs(10);
