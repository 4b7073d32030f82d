//! A consumer of micro-batches as a child process (`fintech-sql`): batch files, the script
//! that processes them with commit tags, the state it leaves, and the random-SIGKILL run
//! that every persistent backend passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::random_ticks;

pub const KERNELS: &str =
    "ewma(price, 0.06) OVER w AS ewma, rolling_mean(price, 20) OVER w AS mean20,
    rolling_std(price, 20) OVER w AS std20, vwap(price, qty) OVER w AS vwap,
    log_return(price) OVER w AS ret, ofi(bid_px, bid_sz, ask_px, ask_sz) OVER w AS ofi";
pub const STATES: &[&str] = &[
    "ewma(price,0.06)@symbol",
    "rolling_mean(price,20)@symbol",
    "rolling_std(price,20)@symbol",
    "vwap(price,qty)@symbol",
    "log_return(price)@symbol",
    "ofi(bid_px,bid_sz,ask_px,ask_sz)@symbol",
];

/// Where a consumer keeps its pipeline: a backend, a location (a directory, or
/// `s3://bucket/prefix`), and the environment its processes need to reach it.
#[derive(Clone)]
pub struct Target {
    pub backend: String,
    pub state: String,
    pub env: Vec<(String, String)>,
}

impl Target {
    /// `backend` in the directory `state`.
    pub fn local(backend: &str, state: &Path) -> Self {
        Self {
            backend: backend.into(),
            state: state.display().to_string(),
            env: Vec::new(),
        }
    }
}

pub fn fintech_sql(script: &str) -> std::process::Child {
    fintech_sql_in(script, &[])
}

/// `fintech-sql` running `script` with the environment variables `env` added.
pub fn fintech_sql_in(script: &str, env: &[(String, String)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_fintech-sql"))
        .args(["-c", script])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The settings of the consumer's pipeline `crash` at `target`.
pub fn settings(target: &Target) -> String {
    format!(
        "SET fintech.state_backend = '{}'; SET fintech.state_path = '{}';
         SET fintech.pipeline = 'crash';",
        target.backend, target.state
    )
}

/// The script that processes batches `from..to`, each committed with its tag, each writing
/// its output rows to out_<i>.csv.
pub fn consumer_script(
    target: &Target,
    dir: &Path,
    tuning: &str,
    from: usize,
    to: usize,
) -> String {
    let mut s = settings(target);
    s.push_str(tuning);
    for i in from..to {
        s.push_str(&format!(
            "CREATE EXTERNAL TABLE b{i} (seq BIGINT, ts BIGINT, symbol VARCHAR, price DOUBLE,
               qty DOUBLE, bid_px DOUBLE, bid_sz DOUBLE, ask_px DOUBLE, ask_sz DOUBLE)
             STORED AS CSV LOCATION '{d}/batch_{i}.csv' OPTIONS ('format.has_header' 'true')
             WITH ORDER (ts);
             SET fintech.commit_tag = 'batch-{i}';
             COPY (SELECT seq, {KERNELS} FROM b{i} WINDOW w AS (PARTITION BY symbol ORDER BY ts)
                   ORDER BY seq) TO '{d}/out_{i}.csv' STORED AS CSV;\n",
            d = dir.display()
        ));
    }
    s
}

/// Asserts that a new process cannot open `state` on `backend` (this process has it open),
/// and that its error says so and names the directory.
pub fn assert_in_use_by_another_process(backend: &str, state: &Path) {
    let out = fintech_sql(&format!(
        "SET fintech.state_backend = '{backend}'; SET fintech.state_path = '{}';
         SELECT * FROM fintech_pipelines();",
        state.display()
    ))
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another process"), "{err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
}

pub fn run_to_end(script: &str) -> String {
    run_to_end_in(script, &[])
}

/// [`run_to_end`] with the environment variables `env` added.
pub fn run_to_end_in(script: &str, env: &[(String, String)]) -> String {
    let out = fintech_sql_in(script, env).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn last_committed(target: &Target) -> Option<usize> {
    let out = run_to_end_in(
        &format!(
            "{} SELECT last_commit_tag FROM fintech_pipelines();",
            settings(target)
        ),
        &target.env,
    );
    out.lines()
        .find_map(|l| l.split("batch-").nth(1))
        .map(|rest| {
            rest.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap()
        })
}

pub fn dump_state(target: &Target) -> String {
    let mut s = settings(target);
    s.push_str("SELECT pipeline, commits, last_commit_tag FROM fintech_pipelines();");
    s.push_str("SELECT state_id, keys, bytes FROM fintech_states('crash') ORDER BY state_id;");
    for id in STATES {
        s.push_str(&format!(
            "SELECT * FROM fintech_state('crash', '{id}') ORDER BY symbol;"
        ));
    }
    run_to_end_in(&s, &target.env)
}

pub fn write_batches(dir: &Path, batches: usize, rows: usize) {
    let data = random_ticks(77, batches * rows, 400);
    for i in 0..batches {
        let file = std::fs::File::create(dir.join(format!("batch_{i}.csv"))).unwrap();
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(file);
        w.write(&data.slice(i * rows, rows)).unwrap();
    }
}

/// A directory under `dir` holding a copy of the batch files of `data_dir`.
pub fn batch_dir(dir: &Path, name: &str, data_dir: &Path, batches: usize) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir(&out).unwrap();
    for i in 0..batches {
        let file = format!("batch_{i}.csv");
        std::fs::copy(data_dir.join(&file), out.join(&file)).unwrap();
    }
    out
}

pub fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect()
}

/// SIGKILL the consumer at random moments, resume from `fintech_pipelines()` each time, and
/// end with exactly the state and outputs of an uninterrupted run. Each seed uses the store
/// another way: staging and the commit log, no commit log, a commit log that folds, reads
/// ahead and stages from them, or folds rows sorted by key.
pub fn sigkill_at_random_points_then_resume(backend: &str, tunings: &[&str]) {
    sigkill_at_random_points_then_resume_at(tunings, &|run_dir| {
        Target::local(backend, &run_dir.join("state"))
    })
}

/// [`sigkill_at_random_points_then_resume`] with the pipeline of each run (in its directory
/// `run_dir`) at `target(run_dir)`.
pub fn sigkill_at_random_points_then_resume_at(tunings: &[&str], target: &dyn Fn(&Path) -> Target) {
    const BATCHES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    write_batches(&data_dir, BATCHES, 6_000);

    // Uninterrupted runs: every way of using the store ends with the same state and rows.
    let clean_dir = batch_dir(dir.path(), "clean", &data_dir, BATCHES);
    let mut expected_state = String::new();
    let mut full = Vec::new();
    for (t, tuning) in tunings.iter().enumerate() {
        let run_dir = batch_dir(dir.path(), &format!("clean{t}"), &data_dir, BATCHES);
        let state = target(&run_dir);
        let start = Instant::now();
        run_to_end_in(
            &consumer_script(&state, &run_dir, tuning, 0, BATCHES),
            &state.env,
        );
        full.push(start.elapsed());
        let dumped = dump_state(&state);
        if t == 0 {
            assert!(dumped.contains("batch-9"));
            expected_state = dumped;
            for i in 0..BATCHES {
                let out = format!("out_{i}.csv");
                std::fs::copy(run_dir.join(&out), clean_dir.join(&out)).unwrap();
            }
        } else {
            assert_eq!(dumped, expected_state, "uninterrupted, with {tuning}");
            for i in 0..BATCHES {
                let out = format!("out_{i}.csv");
                let a = std::fs::read_to_string(clean_dir.join(&out)).unwrap();
                let b = std::fs::read_to_string(run_dir.join(&out)).unwrap();
                assert_eq!(a, b, "uninterrupted, with {tuning}: output of batch {i}");
            }
        }
    }

    let mut killed_running = 0;
    for seed in 0..tunings.len() as u64 {
        let tuning = tunings[seed as usize];
        let mut rng = SmallRng::seed_from_u64(seed);
        let run_dir = batch_dir(dir.path(), &format!("run{seed}"), &data_dir, BATCHES);
        let state = target(&run_dir);
        let mut kills = 0;
        let mut resumed_from = BTreeMap::new();
        let mut final_from = None;
        loop {
            let from = last_committed(&state).map_or(0, |b| b + 1);
            if from == BATCHES {
                break;
            }
            let mut child = fintech_sql_in(
                &consumer_script(&state, &run_dir, tuning, from, BATCHES),
                &state.env,
            );
            if kills < 3 {
                // Somewhere inside what is left of the work (the machine's speed varies).
                let left = (BATCHES - from) as f64 / BATCHES as f64;
                let delay = full[seed as usize].mul_f64(rng.random_range(0.02..0.8) * left);
                std::thread::sleep(delay);
                if child.try_wait().unwrap().is_none() {
                    killed_running += 1;
                }
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                resumed_from.insert(kills, from);
            } else {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                final_from = Some(from);
            }
        }
        assert_eq!(
            dump_state(&state),
            expected_state,
            "seed {seed}, with {tuning}, resumed at {resumed_from:?}"
        );
        // Every batch the last, unkilled consumer processed wrote the same rows. (Outputs of
        // killed consumers may be cut short after their commit: files are not transactional.)
        for i in final_from.unwrap_or(BATCHES)..BATCHES {
            let a = std::fs::read_to_string(clean_dir.join(format!("out_{i}.csv"))).unwrap();
            let b = std::fs::read_to_string(run_dir.join(format!("out_{i}.csv"))).unwrap();
            assert_eq!(a, b, "seed {seed}: output of batch {i}");
        }
        eprintln!("seed {seed}: killed at batches {resumed_from:?}, finished from {final_from:?}");
    }
    // A kill may come after a consumer finished (its timing varies with the machine's load):
    // as many kills as seeds must have hit one at work.
    assert!(
        killed_running >= tunings.len(),
        "only {killed_running} kills hit a running consumer"
    );
}
