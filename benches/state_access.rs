//! The cost of state access per key, through the `StateStore` API alone: a stream of
//! micro-batch commits, each writing every key once, and reads of every key.
//!
//! `cargo bench --bench state_access` (release profile). Defaults: 1,000 keys with 26-byte
//! records (an EWMA state), 2,000 commits, fsync on. Change with FINTECH_BENCH_KEYS,
//! FINTECH_BENCH_COMMITS and FINTECH_BENCH_NO_SYNC. Cases: the memory store, RocksDB with its
//! commit log (default settings), and RocksDB writing every commit to its keys
//! (`fintech.rocksdb.commit_log_bytes = 0`).
//!
//! Printed per case: write ns/key, the mean over every commit of the stream (folds of the
//! commit log included); the median commit; read ns/key, the mean of a `get_many` of every
//! key after every 10th commit; the time to open the store again at the end (RocksDB replays
//! its WAL, the commit log is read back); read ns/key from RocksDB's tables, a `get_many` of
//! every key after a commit that folded the log, first (block cache cold) and fifth (RocksDB
//! cases); peak RSS of the process (cases run in order, so it only grows).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{env_usize, peak_rss_mib};
use datafusion::arrow::datatypes::DataType;
use datafusion_fintech::FintechConfig;
use datafusion_fintech::state::memory::MemoryStore;
use datafusion_fintech::state::rocksdb::RocksStore;
use datafusion_fintech::state::{Commit, Put, StateInfo, StateStore};

/// Bytes of an ewma record: rows applied, the last ORDER BY value, the average.
const RECORD: usize = 26;

/// The ewma record of a key after `rows` rows, the last at ORDER BY `rows`, average `v`.
fn record(rows: u64, v: f64) -> Vec<u8> {
    let mut r = rows.to_le_bytes().to_vec();
    r.push(1);
    r.extend_from_slice(&(rows as i64).to_le_bytes());
    r.push(1);
    r.extend_from_slice(&v.to_le_bytes());
    debug_assert_eq!(r.len(), RECORD);
    r
}

fn info() -> StateInfo {
    StateInfo {
        state_id: "ewma(price,0.06)@symbol".into(),
        kernel: "ewma".into(),
        params: vec!["0.06".into()],
        inputs: vec!["price".into()],
        key_columns: vec![],
        order_type: DataType::Int64,
        encoding_version: 1,
        reads_from: 1,
    }
}

struct Figures {
    write_ns: f64,
    median_commit_us: f64,
    read_ns: f64,
    reopen_ms: f64,
    table_read_ns: [f64; 5],
}

/// Opens a case's store: with `log` false, a RocksDB store without a commit log.
type Open = Box<dyn Fn(bool) -> Arc<dyn StateStore>>;

fn run(open: &Open, keys: &[Vec<u8>], commits: usize) -> Figures {
    let store = open(true);
    let info = info();
    let id: Arc<str> = Arc::from(info.state_id.as_str());
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let (mut commit_ns, mut read_ns, mut reads) = (Vec::with_capacity(commits), 0.0, 0);
    for c in 0..commits {
        let puts: Vec<Put> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Put {
                state_id: Arc::clone(&id),
                key: k.clone(),
                record: record(c as u64 + 1, (i + c) as f64),
                replaces: (c > 0).then_some(RECORD),
            })
            .collect();
        let attempt = store.begin("bench").unwrap();
        let commit = Commit {
            tag: None,
            states: vec![info.clone()],
            puts,
            ..Default::default()
        };
        let start = Instant::now();
        store.commit("bench", attempt, commit).unwrap();
        commit_ns.push(start.elapsed().as_nanos() as f64);
        if c % 10 == 9 {
            let start = Instant::now();
            let got = store.get_many("bench", &info.state_id, &refs).unwrap();
            read_ns += start.elapsed().as_nanos() as f64;
            reads += 1;
            assert!(got.iter().all(|r| r.as_ref().map(Vec::len) == Some(RECORD)));
        }
    }
    drop(store);
    let start = Instant::now();
    let store = open(false);
    let reopen_ms = start.elapsed().as_secs_f64() * 1e3;
    // Without a commit log, a commit writes its keys, folding what the log holds first.
    let put = Put {
        state_id: Arc::clone(&id),
        key: keys[0].clone(),
        record: record(1, 0.0),
        replaces: Some(RECORD),
    };
    let attempt = store.begin("bench").unwrap();
    let commit = Commit {
        tag: None,
        states: vec![info.clone()],
        puts: vec![put],
        ..Default::default()
    };
    store.commit("bench", attempt, commit).unwrap();
    // The first read loads the table blocks into the block cache; the fifth finds them there.
    let mut table_read_ns = [0.0; 5];
    for ns in table_read_ns.iter_mut() {
        let start = Instant::now();
        let got = store.get_many("bench", &info.state_id, &refs).unwrap();
        *ns = start.elapsed().as_nanos() as f64 / keys.len() as f64;
        assert!(got.iter().all(Option::is_some));
    }
    let total: f64 = commit_ns.iter().sum();
    commit_ns.sort_by(f64::total_cmp);
    Figures {
        write_ns: total / (commits * keys.len()) as f64,
        median_commit_us: commit_ns[commits / 2] / 1e3,
        read_ns: read_ns / (reads.max(1) * keys.len()) as f64,
        reopen_ms,
        table_read_ns,
    }
}

fn main() {
    let n = env_usize("FINTECH_BENCH_KEYS", 1_000);
    let commits = env_usize("FINTECH_BENCH_COMMITS", 2_000);
    let sync = std::env::var_os("FINTECH_BENCH_NO_SYNC").is_none();
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("SYM{i:07}").into_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "workload: {n} keys x {commits} commits, {RECORD}-byte records, fsync {}",
        if sync { "on" } else { "off" }
    );
    println!(
        "{:<24} {:>12} {:>14} {:>11} {:>10} {:>24} {:>8}",
        "case",
        "write ns/key",
        "median commit",
        "read ns/key",
        "reopen",
        "table read ns/key: 1st/5th",
        "RSS MiB"
    );
    // The memory store cannot be reopened: its "reopen" is the same store.
    let memory: Arc<dyn StateStore> = Arc::new(MemoryStore::new("bench"));
    let rocks = |name: &'static str, log: bool| -> Open {
        let path = dir.path().join(name);
        Box::new(move |log_now: bool| -> Arc<dyn StateStore> {
            let settings = FintechConfig {
                rocksdb_sync: sync,
                rocksdb_commit_log_bytes: if log && log_now {
                    FintechConfig::default().rocksdb_commit_log_bytes
                } else {
                    0
                },
                ..FintechConfig::default()
            };
            Arc::new(RocksStore::open(path.to_str().unwrap(), &settings).unwrap())
        })
    };
    let cases: Vec<(&str, Open)> = vec![
        ("memory", Box::new(move |_| Arc::clone(&memory))),
        ("rocksdb, commit log", rocks("log", true)),
        ("rocksdb, no commit log", rocks("nolog", false)),
    ];
    for (name, open) in cases {
        let f = run(&open, &keys, commits);
        let memory = name == "memory";
        println!(
            "{name:<24} {:>12.0} {:>11.0} µs {:>11.0} {:>7.1} ms {:>24} {:>8.1}",
            f.write_ns,
            f.median_commit_us,
            f.read_ns,
            f.reopen_ms,
            if memory {
                "-".to_string()
            } else {
                format!("{:.0} / {:.0}", f.table_read_ns[0], f.table_read_ns[4])
            },
            peak_rss_mib()
        );
    }
}
