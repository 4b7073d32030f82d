//! The Tonbo backend as a consumer uses it: crash safety under SIGKILL, state that carries
//! across processes, and clear errors for a directory that is in use, foreign or damaged.
#![cfg(feature = "tonbo")]

mod common;

use std::path::Path;

use common::consumer::{self, *};
use common::*;

/// How a consumer uses the store: input batches of 1,000 rows; of 20 rows (each state read
/// is served from the state the query read whole); rows folded in key order; part of each
/// batch's updates staged (a batch updates 2,400 states, ~0.4 MB in memory); rows folded in
/// key order with states larger than the working set, staged and read forward.
const TUNINGS: &[&str] = &[
    "SET datafusion.execution.batch_size = 1000;",
    "SET datafusion.execution.batch_size = 20; SET fintech.fold_order = 'time';",
    "SET datafusion.execution.batch_size = 100; SET fintech.fold_order = 'key';",
    "SET datafusion.execution.batch_size = 1000; SET fintech.working_set_bytes = 900000;",
    "SET datafusion.execution.batch_size = 100; SET fintech.working_set_bytes = 100000; \
     SET fintech.fold_order = 'key';",
];

/// SIGKILL the consumer at random moments, resume from `fintech_pipelines()` each time, and
/// end with exactly the state and outputs of an uninterrupted run.
#[test]
fn sigkill_at_random_points_then_resume() {
    consumer::sigkill_at_random_points_then_resume("tonbo", TUNINGS);
}

/// State written by one process is read back by the next, exactly; the directory holds the
/// layout marker, the lock file, the metadata table and one table per state.
#[test]
fn state_survives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, 2, 500);
    let target = Target::local("tonbo", &state);
    run_to_end(&consumer_script(&target, &data_dir, TUNINGS[0], 0, 1));
    let after_first = dump_state(&target);
    assert!(after_first.contains("batch-0"));
    assert_eq!(dump_state(&target), after_first, "reading changes nothing");
    run_to_end(&consumer_script(&target, &data_dir, TUNINGS[0], 1, 2));
    assert!(dump_state(&target).contains("batch-1"));
    let mut names: Vec<String> = snapshot_dir(&state).into_keys().collect();
    names.sort();
    assert_eq!(names, ["FINTECH_TONBO", "LOCK", "meta", "states"]);
    let tables = std::fs::read_dir(state.join("states")).unwrap().count();
    assert_eq!(tables, STATES.len());
}

/// A second process cannot open a state directory that is in use, nor can a second
/// registration of the same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_use_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ctx = store_context("tonbo", 1, &state, 1 << 20).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, random_ticks(1, 100, 5)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();

    assert_in_use_by_another_process("tonbo", &state);

    let other = store_context("tonbo", 1, &state, 1 << 20).await;
    let err = sql(&other, "SELECT * FROM fintech_pipelines()")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another registration"), "{err}");
    drop(ctx);
    // Once the first registration is gone, the directory is the next one's.
    let listed = table_text(
        &sql(&other, "SELECT pipeline, commits FROM fintech_pipelines()")
            .await
            .unwrap(),
    );
    assert!(
        listed
            .iter()
            .any(|l| l.contains("| p ") && l.contains("| 1 ")),
        "{listed:?}"
    );
}

async fn open_error(dir: &Path) -> String {
    let ctx = store_context("tonbo", 1, dir, 1 << 20).await;
    sql(&ctx, "SELECT * FROM fintech_pipelines()")
        .await
        .unwrap_err()
        .to_string()
}

/// Every file under `dir` and its bytes, but Tonbo's lock files: a store removes those that a
/// process that exited during one of Tonbo's file swaps left behind, before it opens a table.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|e| e != "lock") {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A foreign directory, a RocksDB state directory, one of another layout and a damaged one
/// are refused, named, and left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_damaged_directories_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not a database").unwrap();
    let before = tree(&foreign);
    let err = open_error(&foreign).await;
    assert!(
        err.contains("is not a datafusion-fintech state directory"),
        "{err}"
    );
    assert_eq!(tree(&foreign), before);

    let rocks = dir.path().join("rocks");
    std::fs::create_dir(&rocks).unwrap();
    std::fs::write(rocks.join("CURRENT"), "MANIFEST-000001\n").unwrap();
    let before = tree(&rocks);
    let err = open_error(&rocks).await;
    assert!(err.contains("is a RocksDB state directory"), "{err}");
    assert_eq!(tree(&rocks), before);

    let newer = dir.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    std::fs::write(newer.join("FINTECH_TONBO"), "datafusion-fintech/tonbo/99\n").unwrap();
    let before = tree(&newer);
    let err = open_error(&newer).await;
    assert!(
        err.contains("has layout 'datafusion-fintech/tonbo/99'"),
        "{err}"
    );
    assert_eq!(tree(&newer), before);

    // A store whose metadata table's manifest head is garbage.
    let damaged = dir.path().join("damaged");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, 1, 200);
    run_to_end(&consumer_script(
        &Target::local("tonbo", &damaged),
        &data_dir,
        TUNINGS[0],
        0,
        1,
    ));
    std::fs::write(damaged.join("meta/manifest/version/head.json"), "{ garbage").unwrap();
    let before = tree(&damaged);
    let err = open_error(&damaged).await;
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains(&damaged.display().to_string()), "{err}");
    assert_eq!(tree(&damaged), before);

    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(open_error(&file).await.contains("is a file"));
}

/// `fintech_state` on Tonbo streams the table's batches, and a key filter is applied by
/// Tonbo's scan: the stream holds only the rows it allows (DataFusion applies it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_are_applied_in_tonbos_scan() {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator;
    use datafusion_fintech::state::{KeyFilter, StateStore};
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ctx = store_context("tonbo", 2, &state, 1 << 20).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, random_ticks(3, 2_000, 200)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let count = |q: &str| {
        let ctx = &ctx;
        let q = q.to_string();
        async move {
            let rows = sql(ctx, &q).await.unwrap();
            rows.iter().map(|b| b.num_rows()).sum::<usize>()
        }
    };
    let all = count("SELECT * FROM fintech_state('p', 'ewma(price,0.06)@symbol')").await;
    let some =
        count("SELECT * FROM fintech_state('p', 'ewma(price,0.06)@symbol') WHERE symbol >= 'S150'")
            .await;
    assert_eq!(all, 200);
    assert!(some > 0 && some < all, "{some} of {all}");
    drop(ctx);

    let store = datafusion_fintech::state::tonbo::TonboStore::open(
        state.to_str().unwrap(),
        &datafusion_fintech::config::FintechConfig::default(),
    )
    .unwrap();
    let filter = KeyFilter::Compare {
        column: 0,
        op: Operator::GtEq,
        value: ScalarValue::Utf8(Some("S150".into())),
    };
    let batches: Vec<_> = store
        .stream_table("p", "ewma(price,0.06)@symbol", Some(&[0, 1]), &[filter])
        .unwrap()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let streamed: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        streamed, some,
        "the scan itself kept only the filtered keys"
    );
    assert_eq!(batches[0].num_columns(), 2);
}
