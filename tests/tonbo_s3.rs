//! The Tonbo backend on an S3-compatible object store (`fintech.state_path = 's3://…'`),
//! against a real server on this machine (`common::s3`: moto's server mode). Without the
//! server these tests are skipped with a message saying so.
#![cfg(feature = "tonbo")]

mod common;

use std::path::Path;

use common::consumer::{self, *};
use common::s3::{KEY_ID, S3Server, SECRET};
use common::*;
use datafusion::arrow::util::pretty::pretty_format_batches;

/// The consumer's settings: the store's own defaults (the random-kill test's seeds use more).
const TUNING: &str = "";

/// The environment that gives a child process the server and its credentials: the usual
/// AWS variables, which the `fintech.s3.*` settings fall back to.
fn aws_env(server: &S3Server) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn s3_target(server: &S3Server, url: &str) -> Target {
    Target {
        backend: "tonbo".into(),
        state: url.into(),
        env: aws_env(server),
    }
}

/// State committed by one process on the object store is read back by the next, exactly as
/// the same batches leave it on local disk.
#[test]
fn state_on_an_object_store_survives_the_process() {
    let Some(server) = S3Server::start("state_on_an_object_store_survives_the_process") else {
        return;
    };
    server.create_bucket("fintech");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, 2, 500);
    let s3 = s3_target(&server, "s3://fintech/consumer/one");
    let local = Target::local("tonbo", &dir.path().join("state"));
    // One process per batch and target.
    for batch in 0..2 {
        for target in [&s3, &local] {
            run_to_end_in(
                &consumer_script(target, &data_dir, TUNING, batch, batch + 1),
                &target.env,
            );
        }
        let after = dump_state(&s3);
        assert!(after.contains(&format!("batch-{batch}")));
        assert_eq!(after, dump_state(&local), "after batch {batch}");
    }
}

/// SIGKILL the consumer at random moments while its pipeline lives on the object store;
/// resumed from `fintech_pipelines()`, it ends with the state and outputs of an uninterrupted
/// run. Not in the default run: moto's server answered one of its ~2,000 requests with an
/// HTTP 500 in one of five runs, which fails the uninterrupted run (the store reports it and
/// keeps the commit; the test cannot tell a server fault from ours).
#[test]
#[ignore = "moto's server fails a request now and then; cargo test --test tonbo_s3 -- --ignored"]
fn sigkill_at_random_points_then_resume() {
    let Some(server) = S3Server::start("sigkill_at_random_points_then_resume") else {
        return;
    };
    server.create_bucket("fintech");
    // One seed: the object store is slow (each commit is tens of requests to a Python server),
    // and the other ways of folding are the local-disk tests' (`tests/tonbo_store.rs`).
    consumer::sigkill_at_random_points_then_resume_at(&[TUNING], &|run_dir: &Path| {
        let run = run_dir.file_name().unwrap().to_string_lossy();
        s3_target(&server, &format!("s3://fintech/kill/{run}"))
    });
}

/// The `fintech.s3.*` settings reach the server; `fintech_state` streams Tonbo's scan of
/// objects; a prefix that holds other objects, a missing bucket and missing credentials are
/// refused with errors that name them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_server_and_bad_prefixes_are_refused() {
    let Some(server) = S3Server::start("settings_reach_the_server_and_bad_prefixes_are_refused")
    else {
        return;
    };
    server.create_bucket("fintech");
    let ctx = context(1);
    for s in server
        .settings()
        .split(';')
        .filter(|s| !s.trim().is_empty())
    {
        sql(&ctx, s).await.unwrap();
    }
    sql(&ctx, "SET fintech.state_backend = 'tonbo'")
        .await
        .unwrap();
    sql(&ctx, "SET fintech.state_path = 's3://fintech/settings'")
        .await
        .unwrap();
    sql(&ctx, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&ctx, random_ticks(3, 300, 7)).unwrap();
    let on_s3 = sql(&ctx, ALL_KERNELS_QUERY).await.unwrap();
    let listed = sql(
        &ctx,
        "SELECT backend, location, commits FROM fintech_pipelines()",
    )
    .await
    .unwrap();
    let listed = pretty_format_batches(&listed).unwrap().to_string();
    assert!(
        listed.contains("| tonbo   | s3://fintech/settings | 1 "),
        "{listed}"
    );
    let state = "SELECT symbol, rows_applied FROM fintech_state('p', 'ewma(price,0.06)@symbol') \
                 WHERE symbol IN ('S001', 'S003') ORDER BY symbol";
    let plan = sql(&ctx, &format!("EXPLAIN {state}")).await.unwrap();
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("streamed from tonbo"), "{plan}");
    let rows = pretty_format_batches(&sql(&ctx, state).await.unwrap())
        .unwrap()
        .to_string();
    assert_eq!(rows.matches("| S00").count(), 2, "{rows}");

    // The same query on memory gives the same rows.
    let mem = context(1);
    sql(&mem, "SET fintech.pipeline = 'p'").await.unwrap();
    register_trades(&mem, random_ticks(3, 300, 7)).unwrap();
    let in_memory = sql(&mem, ALL_KERNELS_QUERY).await.unwrap();
    assert_eq!(
        pretty_format_batches(&on_s3).unwrap().to_string(),
        pretty_format_batches(&in_memory).unwrap().to_string()
    );

    let open_error = |path: &'static str, extra: &'static str| {
        let endpoint = server.endpoint.clone();
        async move {
            let ctx = context(1);
            let mut script = format!(
                "SET fintech.s3.endpoint = '{endpoint}'; SET fintech.state_backend = 'tonbo'; \
                 SET fintech.state_path = '{path}'; {extra}"
            );
            script.push_str("SELECT * FROM fintech_pipelines()");
            let mut last = Ok(Vec::new());
            for s in script.split(';').filter(|s| !s.trim().is_empty()) {
                last = sql(&ctx, s).await;
                if last.is_err() {
                    break;
                }
            }
            last.unwrap_err().to_string()
        }
    };
    let creds = "SET fintech.s3.access_key_id = 'k'; SET fintech.s3.secret_access_key = 's';";

    // A prefix that holds objects of something else.
    let foreign = server.put_object("fintech", "foreign/data.csv", b"a,b\n1,2\n");
    assert!(foreign);
    let err = open_error("s3://fintech/foreign", creds).await;
    assert!(
        err.contains("not a datafusion-fintech state prefix"),
        "{err}"
    );
    assert!(err.contains("s3://fintech/foreign"), "{err}");
    assert!(
        server
            .get_object("fintech", "foreign/FINTECH_TONBO")
            .is_none()
    );

    // A bucket that does not exist.
    let err = open_error("s3://no-such-bucket/x", creds).await;
    assert!(err.contains("s3://no-such-bucket/x"), "{err}");

    // No credentials in the settings (the test's own environment has none).
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let err = open_error("s3://fintech/nocreds", "").await;
        assert!(err.contains("fintech.s3.access_key_id"), "{err}");
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
}
