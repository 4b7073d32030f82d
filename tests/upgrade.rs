//! State written by an older build keeps reading: a RocksDB directory written by the build of
//! commit 7ca9326 (state layout 2, every kernel at encoding version 1; made by
//! `tests/data/fixtures/write_layout2.sql`) opens with this build and its pipeline continues.
//!
//! The rows of the continued batch are compared with what that build gave for the same batch
//! (`continued_by_7ca9326_*.csv`, made by `continue_layout2.sql`): bit for bit for the
//! kernels whose arithmetic did not change, within 1e-12 relative for the rolling statistics,
//! whose sums this build keeps in O(1) per row where that build summed the window. The rolling
//! states are re-encoded as they are written, and their state entries say so.
#![cfg(feature = "rocksdb")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{context, register_trades, rocks_context, sql, table_text};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fixtures");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

const COLUMNS: &str = "seq BIGINT, ts BIGINT, symbol VARCHAR, venue BIGINT, price DOUBLE, \
    qty DOUBLE, bid_px DOUBLE, bid_sz DOUBLE, ask_px DOUBLE, ask_sz DOUBLE";

async fn register_csv(ctx: &SessionContext, name: &str, file: &str, columns: Option<&str>) {
    let columns = columns.map_or(String::new(), |c| format!("({c})"));
    let order = if name.starts_with("part") {
        "WITH ORDER (ts)"
    } else {
        ""
    };
    sql(
        ctx,
        &format!(
            "CREATE EXTERNAL TABLE {name} {columns} STORED AS CSV LOCATION '{FIXTURES}/{file}' \
             OPTIONS ('format.has_header' 'true') {order}"
        ),
    )
    .await
    .unwrap();
}

/// Rows keyed by `seq` (column 0): every other column as an optional float.
fn by_seq(batches: &[RecordBatch]) -> BTreeMap<i64, Vec<Option<f64>>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let seq = b.column(0).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let values = (1..b.num_columns())
                .map(|c| {
                    let col =
                        datafusion::arrow::compute::cast(b.column(c), &DataType::Float64).unwrap();
                    let col = col.as_primitive::<Float64Type>();
                    (!col.is_null(i)).then(|| col.value(i))
                })
                .collect();
            out.insert(seq.value(i), values);
        }
    }
    out
}

/// Compares two results column by column: `exact` columns bit for bit, the others within
/// 1e-12 relative, or within 1e-12 of the prices' magnitude (~100): where a window's values
/// are all equal, that build gave a spread of a few ulps of the price and this one gives 0.
fn assert_matches(
    what: &str,
    got: &BTreeMap<i64, Vec<Option<f64>>>,
    want: &BTreeMap<i64, Vec<Option<f64>>>,
    exact: &[bool],
) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for ((seq, g), (wseq, w)) in got.iter().zip(want) {
        assert_eq!(seq, wseq, "{what}");
        for (c, (g, w)) in g.iter().zip(w).enumerate() {
            let ok = match (g, w) {
                (None, None) => true,
                (Some(g), Some(w)) if exact[c] => g.to_bits() == w.to_bits(),
                (Some(g), Some(w)) => {
                    g == w
                        || (g.is_nan() && w.is_nan())
                        || ((g - w) / w).abs() <= 1e-12
                        || (g - w).abs() <= 1e-10
                }
                _ => false,
            };
            assert!(ok, "{what}: seq {seq}, column {c}: got {g:?}, want {w:?}");
        }
    }
}

struct Batch {
    tag: &'static str,
    query: &'static str,
    expected: &'static str,
    exact: &'static [bool],
}

const BATCHES: &[Batch] = &[
    Batch {
        tag: "symbol",
        query:
            "SELECT seq, ewma(price, 0.06) OVER w AS ewma, rolling_mean(price, 5) OVER w AS mean5,
                 rolling_std(price, 5) OVER w AS std5, vwap(price, qty) OVER w AS vwap,
                 log_return(price) OVER w AS ret, ofi(bid_px, bid_sz, ask_px, ask_sz) OVER w AS ofi
                FROM {t} WINDOW w AS (PARTITION BY symbol ORDER BY ts)",
        expected: "continued_by_7ca9326_symbol.csv",
        exact: &[true, false, false, true, true, true],
    },
    Batch {
        tag: "venue",
        query: "SELECT seq, rolling_std(price, 20) OVER (PARTITION BY venue ORDER BY ts) AS std20
                FROM {t}",
        expected: "continued_by_7ca9326_venue.csv",
        exact: &[false],
    },
    Batch {
        tag: "pair",
        query: "SELECT seq, ewma(price, 0.5) OVER (PARTITION BY symbol, venue ORDER BY ts) AS e
                FROM {t}",
        expected: "continued_by_7ca9326_pair.csv",
        exact: &[true],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_written_by_an_older_build_continues() {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    copy_dir(&Path::new(FIXTURES).join("rocksdb-layout2"), &state);

    // The default working set.
    let ctx = rocks_context(2, &state, 128 << 20).await;
    sql(&ctx, "SET fintech.pipeline = 'fixture'").await.unwrap();
    register_csv(&ctx, "part2", "ticks_part2.csv", Some(COLUMNS)).await;
    // This build, per-query, over both parts at once: what the continuation must equal too.
    let whole = context(2);
    register_csv(&whole, "part1", "ticks_part1.csv", Some(COLUMNS)).await;
    register_csv(&whole, "part2", "ticks_part2.csv", Some(COLUMNS)).await;
    let mut rows = sql(&whole, "SELECT * FROM part1").await.unwrap();
    rows.extend(sql(&whole, "SELECT * FROM part2").await.unwrap());
    let everything = concat_batches(&rows[0].schema(), &rows).unwrap();
    register_trades(&whole, everything).unwrap();

    for (i, batch) in BATCHES.iter().enumerate() {
        sql(
            &ctx,
            &format!("SET fintech.commit_tag = 'part2-{}'", batch.tag),
        )
        .await
        .unwrap();
        let got = by_seq(
            &sql(&ctx, &batch.query.replace("{t}", "part2"))
                .await
                .unwrap(),
        );
        let name = format!("expected{i}");
        register_csv(&ctx, &name, batch.expected, None).await;
        let want = by_seq(&sql(&ctx, &format!("SELECT * FROM {name}")).await.unwrap());
        assert_matches(batch.tag, &got, &want, batch.exact);
        let at_once = by_seq(
            &sql(&whole, &batch.query.replace("{t}", "trades"))
                .await
                .unwrap(),
        );
        let at_once: BTreeMap<_, _> = at_once.into_iter().filter(|(s, _)| *s >= 1_000).collect();
        assert_matches(batch.tag, &got, &at_once, batch.exact);
    }

    let pipelines = table_text(
        &sql(
            &ctx,
            "SELECT commits, last_commit_tag FROM fintech_pipelines()",
        )
        .await
        .unwrap(),
    );
    assert!(
        pipelines
            .iter()
            .any(|l| l.contains("| 6 ") && l.contains("part2-pair")),
        "{pipelines:?}"
    );
    let versions = table_text(
        &sql(
            &ctx,
            "SELECT state_id, encoding_version, keys FROM fintech_states('fixture')",
        )
        .await
        .unwrap(),
    );
    for (state, version) in [
        ("ewma(price,0.06)@symbol", 1),
        ("rolling_std(price,5)@symbol", 2),
        ("rolling_std(price,20)@venue", 2),
        ("ofi(bid_px,bid_sz,ask_px,ask_sz)@symbol", 2),
    ] {
        assert!(
            versions
                .iter()
                .any(|l| l.contains(&format!("| {state} ")) && l.contains(&format!("| {version} "))),
            "{state}: {versions:?}"
        );
    }
    // The state table reads the re-encoded records with their new fields (the sums are
    // recomputed at least every 1,024 rows).
    let fields = table_text(
        &sql(
            &ctx,
            "SELECT symbol, rows_since_recompute < 1024 AS recent, sum_sq >= 0 AS squares,
                    rows_applied > 100 AS many
             FROM fintech_state('fixture', 'rolling_std(price,5)@symbol') WHERE symbol = 'S03'",
        )
        .await
        .unwrap(),
    );
    assert!(
        fields
            .iter()
            .any(|l| l.contains("| S03    | true   | true    | true |")),
        "{fields:?}"
    );
    // A replayed batch is still refused.
    let err = sql(&ctx, &BATCHES[2].query.replace("{t}", "part2"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already committed"), "{err}");
}
