//! Pipeline semantics end to end through SQL: continuation, commit on success, resumption.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Batch-by-batch in a pipeline gives, bit for bit, the rows of one query over everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_is_bit_identical_to_one_query() {
    for seed in 0..6u64 {
        let partitions = if seed % 2 == 0 { 1 } else { 4 };
        let data = random_ticks(seed, 3_000, 37);

        let ctx = context(partitions);
        register_trades(&ctx, data.clone()).unwrap();
        let whole = rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());

        let mut rng = SmallRng::seed_from_u64(seed + 100);
        let mut cuts: Vec<usize> = (0..rng.random_range(1..12))
            .map(|_| rng.random_range(0..data.num_rows()))
            .collect();
        cuts.sort();
        let ctx = context(partitions);
        sql(&ctx, "SET fintech.pipeline = 'continuation'")
            .await
            .unwrap();
        let mut pieces = Vec::new();
        for part in split(&data, &cuts) {
            register_trades(&ctx, part).unwrap();
            pieces.extend(sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        }
        let batched = rows_by_seq(&pieces);
        assert_eq!(batched.len(), data.num_rows(), "seed {seed}");
        for (a, b) in whole.iter().zip(&batched) {
            assert_eq!(a, b, "seed {seed}, cuts {cuts:?}: row seq={} differs", a.0);
        }
    }
}

/// Without a pipeline, every query starts from empty state: the same input gives the same
/// output every time.
#[tokio::test]
async fn per_query_state_is_repeatable() {
    let ctx = context(4);
    register_trades(&ctx, random_ticks(7, 1_000, 11)).unwrap();
    let a = rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
    let b = rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
    assert_eq!(a, b);
    let listed = sql(&ctx, "SELECT * FROM fintech_pipelines()")
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

async fn snapshot(ctx: &datafusion::prelude::SessionContext) -> Vec<String> {
    let mut rows = Vec::new();
    for q in [
        "SELECT pipeline, commits, last_commit_tag FROM fintech_pipelines()",
        "SELECT state_id, keys, bytes FROM fintech_states('p')",
        "SELECT * FROM fintech_state('p', 'ewma(price,0.06)@symbol')",
        "SELECT * FROM fintech_state('p', 'rolling_std(price,5)@symbol')",
        "SELECT * FROM fintech_state('p', 'ofi(bid_px,bid_sz,ask_px,ask_sz)@symbol')",
    ] {
        rows.extend(table_text(&sql(ctx, q).await.unwrap()));
    }
    rows
}

/// A query that fails late in its input leaves the pipeline exactly as it was.
#[tokio::test]
async fn failed_query_commits_nothing() {
    for partitions in [1, 4] {
        let data = random_ticks(3, 2_000, 13);
        let parts = split(&data, &[800]);
        let ctx = context(partitions);
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        sql(&ctx, "SET fintech.late_rows = 'error'").await.unwrap();
        register_trades(&ctx, parts[0].clone()).unwrap();
        sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
        let before = snapshot(&ctx).await;

        // The second batch ends with a row older than everything: a late row, an error.
        let bad = datafusion::arrow::compute::concat_batches(
            &parts[1].schema(),
            &[parts[1].clone(), data.slice(0, 1)],
        )
        .unwrap();
        register_trades(&ctx, bad).unwrap();
        // The MemTable claims ts order; the late row breaks that claim on purpose.
        let err = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
        assert!(err.contains("late row"), "{err}");
        assert_eq!(snapshot(&ctx).await, before, "partitions={partitions}");

        // The good batch still continues from the untouched state.
        register_trades(&ctx, parts[1].clone()).unwrap();
        let resumed = rows_by_seq(&sql(&ctx, ALL_KERNELS_QUERY).await.unwrap());
        let whole = all_kernels_at_once(&data, partitions).await;
        assert_eq!(resumed[..], whole[800..]);
    }
}

/// A consumer that stops after an arbitrary commit resumes from `fintech_pipelines()` and
/// ends with the state of an uninterrupted run; replaying the last batch is refused.
#[tokio::test]
async fn resumption_from_commit_tags() {
    let data = random_ticks(11, 3_000, 17);
    let batches = split(&data, &[300, 700, 1_000, 1_500, 1_900, 2_400, 2_800]);

    async fn consume(
        ctx: &datafusion::prelude::SessionContext,
        batches: &[datafusion::arrow::array::RecordBatch],
        stop_after: Option<usize>,
    ) -> Vec<datafusion::arrow::array::RecordBatch> {
        let mut outputs = Vec::new();
        let last = sql(
            ctx,
            "SELECT last_commit_tag FROM fintech_pipelines() WHERE pipeline = 'p'",
        )
        .await
        .unwrap();
        let start = last
            .first()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let tag = datafusion::arrow::array::AsArray::as_string::<i32>(b.column(0))
                    .value(0)
                    .to_string();
                tag.trim_start_matches("batch-").parse::<usize>().unwrap() + 1
            })
            .unwrap_or(0);
        for (i, batch) in batches.iter().enumerate().skip(start) {
            register_trades(ctx, batch.clone()).unwrap();
            sql(ctx, &format!("SET fintech.commit_tag = 'batch-{i}'"))
                .await
                .unwrap();
            outputs.extend(sql(ctx, ALL_KERNELS_QUERY).await.unwrap());
            if Some(i) == stop_after {
                break;
            }
        }
        outputs
    }

    let whole = all_kernels_at_once(&data, 4).await;

    let straight = context(4);
    sql(&straight, "SET fintech.pipeline = 'p'").await.unwrap();
    let straight_rows = rows_by_seq(&consume(&straight, &batches, None).await);
    assert_eq!(straight_rows, whole);

    for stop in [0, 3, 6] {
        let ctx = context(4);
        sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
        let first = rows_by_seq(&consume(&ctx, &batches, Some(stop)).await);
        assert_eq!(first[..], whole[..first.len()]);

        // A replay of the last committed batch is refused and changes nothing.
        let before = snapshot(&ctx).await;
        register_trades(&ctx, batches[stop].clone()).unwrap();
        sql(&ctx, &format!("SET fintech.commit_tag = 'batch-{stop}'"))
            .await
            .unwrap();
        let err = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
        assert!(err.contains("already committed"), "{err}");
        assert_eq!(snapshot(&ctx).await, before);

        // The resumed consumer's rows are those of one query over all the data.
        let rest = rows_by_seq(&consume(&ctx, &batches, None).await);
        assert_eq!(first.len() + rest.len(), data.num_rows());
        assert_eq!(rest[..], whole[first.len()..]);

        let mut a = snapshot(&ctx).await;
        let mut b = snapshot(&straight).await;
        // Commit counts and times differ by construction; compare the states.
        a.retain(|r| !r.contains("batch-"));
        b.retain(|r| !r.contains("batch-"));
        assert!(
            a.len() > 17 * 3,
            "the snapshot holds every key of three states"
        );
        assert_eq!(a, b, "stopped after batch {stop}");
    }
}

/// A pipeline takes one query at a time; an unfinished query that is dropped commits nothing
/// and frees the pipeline.
#[tokio::test]
async fn one_query_at_a_time_per_pipeline() {
    use futures::StreamExt;
    let ctx = context(1);
    register_trades(&ctx, random_ticks(5, 1_000, 10)).unwrap();
    sql(&ctx, "SET fintech.pipeline = 'busy'").await.unwrap();
    let mut first = ctx
        .sql(ALL_KERNELS_QUERY)
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    // One batch out, end of input not yet seen: the query is still running.
    first.next().await.unwrap().unwrap();

    let err = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap_err().to_string();
    assert!(
        err.contains("pipeline 'busy' is in use by another running query"),
        "{err}"
    );

    drop(first);
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let commits = sql(&ctx, "SELECT commits FROM fintech_pipelines()")
        .await
        .unwrap();
    let commits = datafusion::arrow::array::AsArray::as_primitive::<
        datafusion::arrow::datatypes::UInt64Type,
    >(commits[0].column(0))
    .value(0);
    assert_eq!(commits, 1, "the dropped query must not have committed");
}

/// The settings can come from Rust: a `FintechConfig` in the session config.
#[tokio::test]
async fn settings_from_rust() {
    use datafusion::prelude::{SessionConfig, SessionContext};
    use datafusion_fintech::{FintechConfig, LateRows};
    let config = SessionConfig::new()
        .with_information_schema(true)
        .with_option_extension(FintechConfig {
            pipeline: "from_rust".into(),
            late_rows: LateRows::Error,
            commit_tag: "offset-42".into(),
            ..FintechConfig::default()
        });
    let ctx = SessionContext::new_with_config(config);
    datafusion_fintech::register_all(&ctx).unwrap();
    register_trades(&ctx, random_ticks(1, 100, 3)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let rows = table_text(
        &sql(
            &ctx,
            "SELECT pipeline, last_commit_tag FROM fintech_pipelines()",
        )
        .await
        .unwrap(),
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("from_rust") && r.contains("offset-42")),
        "{rows:?}"
    );
    let shown = table_text(&sql(&ctx, "SHOW fintech.late_rows").await.unwrap());
    assert!(shown.iter().any(|r| r.contains("error")), "{shown:?}");
}

/// `with_fintech` works on a fresh builder, and registering twice changes nothing.
#[tokio::test]
async fn builder_route_and_double_registration() {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;
    let state =
        datafusion_fintech::with_fintech(SessionStateBuilder::new().with_default_features())
            .build();
    let ctx = SessionContext::new_with_state(state);
    datafusion_fintech::register_all(&ctx).unwrap();
    sql(&ctx, "SET fintech.pipeline = 'b'").await.unwrap();
    register_trades(&ctx, random_ticks(4, 200, 3)).unwrap();
    sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let rules = ctx
        .state()
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() == "fintech_keyed_state")
        .count();
    assert_eq!(rules, 1);
    let listed = table_text(
        &sql(&ctx, "SELECT pipeline, commits FROM fintech_pipelines()")
            .await
            .unwrap(),
    );
    assert!(
        listed.iter().any(|r| r.contains("| b        | 1       |")),
        "{listed:?}"
    );
}
