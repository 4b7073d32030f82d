//! `fintech.fold_order`: folding rows sorted by key gives the rows of folding them in time
//! order, bit for bit; `auto` sorts by key when the keys outgrow the working set of a disk
//! backend; the sort spills within the memory it is given; and the memory backend fails
//! clearly under a memory limit it cannot keep.
#![cfg(feature = "rocksdb")]

mod common;

use common::*;
use datafusion::prelude::SessionContext;

async fn plan_text(ctx: &SessionContext, q: &str) -> String {
    table_text(&sql(ctx, &format!("EXPLAIN {q}")).await.unwrap()).join("\n")
}

/// Batch by batch on a pipeline, folding by key: the rows of one query over everything
/// folded in time order, whatever the working set holds. With 5 symbols, rows of one key
/// with equal timestamps fall in different input batches all the time: they must still be
/// applied in input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_gives_the_rows_of_time_order() {
    let cases = [
        (0u64, 1, 1usize << 30, 300),
        (1, 4, 20_000, 300),
        (2, 2, 1, 300),
        (3, 4, 1, 5),
    ];
    for (seed, partitions, working_set, symbols) in cases {
        let data = random_ticks(seed + 70, 5_000, symbols);
        let whole = all_kernels_at_once(&data, partitions).await;
        let dir = tempfile::tempdir().unwrap();
        let ctx = rocks_context(partitions, &dir.path().join("state"), working_set).await;
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        sql(&ctx, "SET fintech.fold_order = 'key'").await.unwrap();
        let mut out = Vec::new();
        for part in split(&data, &[1_200, 3_100]) {
            register_trades_chunked(&ctx, part, 97).unwrap();
            let plan = plan_text(&ctx, ALL_KERNELS_QUERY).await;
            assert!(
                plan.contains("fold_order=key") && plan.contains("SortExec"),
                "{plan}"
            );
            out.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        }
        assert_eq!(rows_by_seq(&out), whole, "seed {seed}");
    }
}

/// `auto` folds by key when the keys a query will hold outgrow the working set: known from
/// the pipeline's stored states, or from the range of an integer key column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sorts_by_key_when_the_keys_outgrow_the_working_set() {
    let data = random_ticks(5, 3_000, 200);
    let dir = tempfile::tempdir().unwrap();
    let ctx = rocks_context(2, &dir.path().join("state"), 4_000).await;
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, data.clone()).unwrap();
    // A fresh pipeline keyed by strings: nothing tells how many keys there are.
    let q = "SELECT seq, ewma(price, 0.5) OVER (PARTITION BY symbol ORDER BY ts) FROM trades";
    assert!(!plan_text(&ctx, q).await.contains("fold_order=key"));
    sql(&ctx, q).await.unwrap();
    // Now its state holds 200 keys, far more than 4,000 bytes hold.
    assert!(plan_text(&ctx, q).await.contains("fold_order=key"));
    // An integer key's statistics bound its keys: in a Parquet file, seq takes 3,000 values.
    let file = dir.path().join("ticks.parquet");
    sql(
        &ctx,
        &format!(
            "COPY (SELECT * FROM trades) TO '{}' STORED AS PARQUET",
            file.display()
        ),
    )
    .await
    .unwrap();
    sql(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE ticks STORED AS PARQUET LOCATION '{}' WITH ORDER (ts)",
            file.display()
        ),
    )
    .await
    .unwrap();
    let by_seq = "SELECT ewma(price, 0.5) OVER (PARTITION BY seq ORDER BY ts) FROM ticks";
    sql(&ctx, "SET fintech.pipeline = 'q'").await.unwrap();
    assert!(plan_text(&ctx, by_seq).await.contains("fold_order=key"));
    // With room for them, or on the memory backend, rows stream in time order.
    sql(&ctx, "SET fintech.working_set_bytes = 1073741824")
        .await
        .unwrap();
    assert!(!plan_text(&ctx, by_seq).await.contains("fold_order=key"));
    let mem = context(2);
    sql(
        &mem,
        &format!(
            "CREATE EXTERNAL TABLE ticks STORED AS PARQUET LOCATION '{}' WITH ORDER (ts)",
            file.display()
        ),
    )
    .await
    .unwrap();
    sql(&mem, "SET fintech.working_set_bytes = 10")
        .await
        .unwrap();
    sql(&mem, "SET fintech.pipeline = 'p'").await.unwrap();
    assert!(!plan_text(&mem, by_seq).await.contains("fold_order=key"));
}

/// The key sort spills to disk within the memory it is given — `fintech.working_set_bytes`
/// when the query's pool has no limit, else the pool — and the rows stay those of time
/// order; the memory backend, which must hold every key, fails with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_sort_spills_and_memory_state_fails_clearly() {
    let data = random_ticks(9, 150_000, 2_000);
    let whole = all_kernels_at_once(&data, 2).await;
    // No memory limit: the sort's own bound is the working set's budget (1 MiB, raised to room
    // for the merges of two partitions, 4 x 2 x 256 KiB).
    // A 4 MiB limit, one partition: DataFusion's greedy pool serves one sort at a time.
    for (partitions, limit) in [(2, None), (1, Some("4M"))] {
        let dir = tempfile::tempdir().unwrap();
        let ctx = rocks_context(partitions, &dir.path().join("state"), 1 << 20).await;
        sql(&ctx, "SET fintech.fold_order = 'key'").await.unwrap();
        sql(
            &ctx,
            "SET datafusion.execution.sort_spill_reservation_bytes = 262144",
        )
        .await
        .unwrap();
        if let Some(limit) = limit {
            let set = format!("SET datafusion.runtime.memory_limit = '{limit}'");
            sql(&ctx, &set).await.unwrap();
        }
        register_trades_chunked(&ctx, data.clone(), 4_000).unwrap();
        let analyzed = table_text(
            &sql(&ctx, &format!("EXPLAIN ANALYZE {ALL_KERNELS_QUERY}"))
                .await
                .unwrap(),
        )
        .join("\n");
        assert!(
            analyzed.contains("spill_count=") && !analyzed.contains("spill_count=0,"),
            "{analyzed}"
        );
        let rows = rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        assert_eq!(rows, whole, "{partitions} partition(s), limit {limit:?}");
    }

    let mem = context(2);
    sql(&mem, "SET datafusion.runtime.memory_limit = '1M'")
        .await
        .unwrap();
    register_trades(&mem, data).unwrap();
    let err = sql(&mem, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("raise datafusion.runtime.memory_limit"),
        "{err}"
    );
}
