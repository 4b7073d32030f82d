//! The state directory of a Tonbo store, outside Tonbo's tables: what it must hold before the
//! store opens it (nothing, or a marker of this layout), the marker, the directory lock, and
//! the clearing of Tonbo's stale lock files.

use std::fs::{File, TryLockError};
use std::path::Path;

use datafusion::error::{DataFusionError, Result};

use crate::state::TONBO_MARKER;

/// What the marker file holds.
pub(super) const LAYOUT: &str = "datafusion-fintech/tonbo/1";
const LOCK: &str = "LOCK";

pub(super) fn io_error(path: &Path, what: &str, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("cannot {what} {}: {e}", path.display()))
}

/// Checks what `path` holds before anything is written to it: nothing, or a Tonbo state
/// directory of this layout.
pub(super) fn check_directory(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(DataFusionError::Execution(format!(
            "fintech.state_path {} is a file, not a state directory",
            path.display()
        )));
    }
    if !path.is_dir() {
        return Ok(());
    }
    let marker = path.join(TONBO_MARKER);
    if !marker.exists() {
        let empty = std::fs::read_dir(path)
            .map_err(|e| io_error(path, "read", e))?
            .next()
            .is_none();
        if empty {
            return Ok(());
        }
        let what = if path.join("CURRENT").is_file() {
            "a RocksDB state directory; open it with fintech.state_backend = 'rocksdb'"
        } else {
            "not a datafusion-fintech state directory (it has files but no Tonbo store)"
        };
        return Err(DataFusionError::Execution(format!(
            "{} is {what}; refusing to write into it",
            path.display()
        )));
    }
    let layout = std::fs::read_to_string(&marker).map_err(|e| io_error(&marker, "read", e))?;
    if layout.trim_end() != LAYOUT {
        return Err(DataFusionError::Execution(format!(
            "state directory {} has layout '{}', this build reads '{LAYOUT}'; nothing was \
             changed",
            path.display(),
            layout.trim_end()
        )));
    }
    Ok(())
}

/// Writes the layout marker durably: a directory never holds a store without one.
pub(super) fn write_marker(path: &Path) -> Result<()> {
    let marker = path.join(TONBO_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let tmp = path.join(format!("{TONBO_MARKER}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{LAYOUT}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &marker)?;
        File::open(path)?.sync_all()
    };
    write().map_err(|e| io_error(&marker, "write", e))
}

/// Takes the directory's lock, or says who holds it.
pub(super) fn take_lock(path: &Path) -> Result<File> {
    let file = path.join(LOCK);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)
        .map_err(|e| io_error(&file, "open", e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(DataFusionError::Execution(format!(
            "state directory {} is in use by another process (its Tonbo store is open there); \
             a state directory is opened by one process at a time",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_error(&file, "lock", e)),
    }
}

/// Removes the claims a process left under `dir`, a Tonbo table about to be opened: the
/// `*.lock` files and the manifest leases (`leases/*.json`).
///
/// - Tonbo's file system layer makes a compare-and-swap of a file (its WAL state, a manifest
///   head, a lease) exclusive with a `<file>.lock` created for the swap; a process that exits
///   or is killed during a swap leaves it, and every later swap of that file fails
///   ("precondition failed").
/// - A manifest commit holds a lease (for 60 s) while it writes its segment and then the
///   head. A process killed in between leaves the segment without the head: every later
///   commit of that manifest fails ("precondition failed") until fusio's orphan recovery, run
///   every 3 s, adopts the segment, which it does not while the segment's lease is live.
///
/// The directory lock of the store says that no other process uses the table, and this
/// process has not opened it yet: whatever claims are there are stale.
pub(super) fn clear_stale_claims(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let leases = dir.file_name().is_some_and(|n| n == "leases");
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            clear_stale_claims(&path)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "lock" || (leases && e == "json"))
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
