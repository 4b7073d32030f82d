//! The RocksDB backend: crash safety under SIGKILL, and clear errors for a directory that
//! is in use, foreign or damaged. Staging, on every disk backend: `tests/staging.rs`.
#![cfg(feature = "rocksdb")]

mod common;

use std::path::Path;

use common::consumer::{self, *};
use common::*;

/// How a consumer uses the store. A batch updates 2,400 states, ~0.4 MB in memory.
///
/// Part of each batch's updates are staged (which folds the commit log first), the rest go
/// to the commit log with the commit.
const STAGING_AND_LOG: &str =
    "SET datafusion.execution.batch_size = 1000; SET fintech.working_set_bytes = 900000;";
/// Every commit written to its data keys, none to the commit log.
const NO_LOG: &str = "SET fintech.rocksdb.commit_log_bytes = 0;";
/// Commits go to the commit log, which folds every few commits.
const LOG_FOLDING: &str = "SET fintech.rocksdb.commit_log_bytes = 1000000;";
/// Input batches of 20 rows read a few keys at a time, until the store reads each state
/// ahead; stages take their undo values from what it read ahead.
const READ_AHEAD: &str = "SET datafusion.execution.batch_size = 20; \
    SET fintech.working_set_bytes = 300000; SET fintech.fold_order = 'time';";
/// Rows sorted by key before they are folded (a working set this small makes `auto` choose
/// it too), each key staged once per query.
const KEY_ORDER: &str = "SET datafusion.execution.batch_size = 100; \
    SET fintech.working_set_bytes = 300000; SET fintech.fold_order = 'key';";

/// SIGKILL the consumer at random moments, resume from `fintech_pipelines()` each time, and
/// end with exactly the state and outputs of an uninterrupted run. Each seed uses the store
/// another way: staging and the commit log, no commit log, a commit log that folds, reads
/// ahead and stages from them, or folds rows sorted by key.
#[test]
fn sigkill_at_random_points_then_resume() {
    consumer::sigkill_at_random_points_then_resume(
        "rocksdb",
        &[STAGING_AND_LOG, NO_LOG, LOG_FOLDING, READ_AHEAD, KEY_ORDER],
    );
}

/// A second process cannot open a state directory that is in use.
#[tokio::test]
async fn second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ctx = rocks_context(1, &state, 1 << 20).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, random_ticks(1, 100, 5)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();

    assert_in_use_by_another_process("rocksdb", &state);
}

async fn open_error(dir: &Path) -> String {
    let ctx = rocks_context(1, dir, 1 << 20).await;
    sql(&ctx, "SELECT * FROM fintech_pipelines()")
        .await
        .unwrap_err()
        .to_string()
}

/// A foreign, damaged or wrong-layout directory is refused and left as it was.
#[tokio::test]
async fn foreign_and_damaged_directories_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not a database").unwrap();
    let before = snapshot_dir(&foreign);
    let err = open_error(&foreign).await;
    assert!(
        err.contains("is not a datafusion-fintech state directory"),
        "{err}"
    );
    assert_eq!(snapshot_dir(&foreign), before);

    let other_db = dir.path().join("other_db");
    {
        let db = rocksdb::DB::open_default(&other_db).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let before = snapshot_dir(&other_db);
    let err = open_error(&other_db).await;
    assert!(
        err.contains("RocksDB database that datafusion-fintech did not write"),
        "{err}"
    );
    assert_eq!(snapshot_dir(&other_db), before);

    let damaged = dir.path().join("damaged");
    {
        let ctx = rocks_context(1, &damaged, 1 << 20).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        register_trades(&ctx, random_ticks(2, 100, 5)).unwrap();
        sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    }
    // Point CURRENT at a manifest that is not there.
    std::fs::write(damaged.join("CURRENT"), "MANIFEST-999999\n").unwrap();
    let before = snapshot_dir(&damaged);
    let err = open_error(&damaged).await;
    assert!(err.contains(&damaged.display().to_string()), "{err}");
    assert_eq!(snapshot_dir(&damaged), before);

    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(open_error(&file).await.contains("is a file"));
}

/// State written by one process is read back by the next, exactly.
#[test]
fn state_survives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, 2, 500);
    let target = Target::local("rocksdb", &state);
    run_to_end(&consumer_script(&target, &data_dir, STAGING_AND_LOG, 0, 1));
    let after_first = dump_state(&target);
    assert!(after_first.contains("batch-0"));
    assert_eq!(dump_state(&target), after_first, "reading changes nothing");
    run_to_end(&consumer_script(&target, &data_dir, STAGING_AND_LOG, 1, 2));
    assert!(dump_state(&target).contains("batch-1"));
}
