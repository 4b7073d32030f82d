//! The RocksDB store's unit tests.

use super::*;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;

use crate::state::KeyColumn;

fn info(version: u32) -> StateInfo {
    StateInfo {
        state_id: "ewma(price,0.5)@symbol".into(),
        kernel: "ewma".into(),
        params: vec!["0.5".into()],
        inputs: vec!["price".into()],
        key_columns: vec![KeyColumn {
            name: "symbol".into(),
            data_type: DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        }],
        order_type: DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
        encoding_version: version,
        reads_from: version,
    }
}

/// A one-byte record for `key`; `exists`: the key holds a (one-byte) record already.
fn put(key: &str, value: u8, exists: bool) -> Put {
    Put {
        state_id: Arc::from("ewma(price,0.5)@symbol"),
        key: key.as_bytes().to_vec(),
        record: vec![value],
        replaces: exists.then_some(1),
    }
}

/// What a read of `keys` of pipeline `p` hands over, as one record (or none) per key.
fn records(store: &RocksStore, state_id: &str, keys: &[&[u8]], view: View) -> Vec<Option<Vec<u8>>> {
    let mut out = vec![None; keys.len()];
    store
        .read("p", state_id, keys, view, &mut |i, record| {
            assert!(out[i].is_none(), "key {i} was handed over twice");
            out[i] = Some(record.to_vec());
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn metadata_round_trips() {
    let m = StateMeta {
        state_no: 7,
        keys: 3,
        bytes: 99,
        info: info(1),
    };
    assert_eq!(StateMeta::decode(&m.encode()).unwrap(), m);
    let p = PipelineMeta {
        commits: 4,
        last_commit_micros: Some(-5),
        last_commit_tag: Some("t".into()),
        in_flight: Some(9),
    };
    assert_eq!(PipelineMeta::decode(&p.encode()).unwrap(), p);
    assert!(PipelineMeta::decode(&p.encode()[..5]).is_err());
}

/// Settings with a commit log budget: 0 writes every commit to its data keys, a huge one
/// never folds but when a stage or the test asks.
fn with_log(commit_log_bytes: usize) -> FintechConfig {
    FintechConfig {
        rocksdb_commit_log_bytes: commit_log_bytes,
        ..FintechConfig::default()
    }
}

const NEVER_FOLDS: usize = 1 << 50;

#[test]
fn staged_updates_roll_back_and_commit() {
    for budget in [0, NEVER_FOLDS] {
        staged_updates_roll_back_and_commit_with(budget);
    }
}

fn staged_updates_roll_back_and_commit_with(commit_log_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = RocksStore::open(path.to_str().unwrap(), &with_log(commit_log_bytes)).unwrap();
    let a = store.begin("p").unwrap();
    store
        .commit(
            "p",
            a,
            Commit {
                tag: Some("t1".into()),
                states: vec![info(1)],
                puts: vec![put("x", 1, false)],
                ..Default::default()
            },
        )
        .unwrap();

    // Stage over x and a new y, then roll back: x is 1 again, y is gone.
    let b = store.begin("p").unwrap();
    store
        .stage(
            "p",
            b,
            &[info(1)],
            vec![put("x", 2, true), put("y", 2, false)],
        )
        .unwrap();
    store
        .stage("p", b, &[info(1)], vec![put("x", 3, true)])
        .unwrap();
    let id = "ewma(price,0.5)@symbol";
    assert_eq!(
        records(&store, id, &[b"x", b"y"], View::Running),
        vec![Some(vec![3]), Some(vec![2])]
    );
    // Readers of the committed state (the state tables) do not see what is staged, by
    // lookup (both ways: walking the state and one lookup) or by scan.
    let committed = vec![Some(vec![1]), None];
    assert_eq!(store.get_many("p", id, &[b"x", b"y"]).unwrap(), committed);
    assert_eq!(
        store.get_many("p", id, &[b"x"]).unwrap(),
        vec![Some(vec![1])]
    );
    assert_eq!(
        store.get_many("p", id, &[b"y", b"x"]).unwrap(),
        vec![None, Some(vec![1])]
    );
    assert_eq!(store.scan("p", id).unwrap(), vec![(b"x".to_vec(), vec![1])]);
    store.rollback("p", b).unwrap();
    assert_eq!(
        store.get_many("p", id, &[b"x", b"y"]).unwrap(),
        vec![Some(vec![1]), None]
    );
    assert!(store.scan_prefix(&[UNDO]).unwrap().is_empty());

    // A staged attempt left in flight (a crash) is rolled back by the next begin.
    let c = store.begin("p").unwrap();
    store
        .stage("p", c, &[info(1)], vec![put("x", 4, true)])
        .unwrap();
    let d = store.begin("p").unwrap();
    assert_eq!(
        store.get_many("p", id, &[b"x"]).unwrap(),
        vec![Some(vec![1])]
    );

    // Staged and final writes commit together, with exact counts. A state first used by
    // the attempt is listed once the attempt commits.
    let other = StateInfo {
        state_id: "other".into(),
        ..info(1)
    };
    store
        .stage(
            "p",
            d,
            &[info(1), other.clone()],
            vec![
                put("y", 5, false),
                put("z", 5, false),
                Put {
                    state_id: Arc::from("other"),
                    ..put("o", 5, false)
                },
            ],
        )
        .unwrap();
    assert_eq!(store.states("p").unwrap().len(), 1);
    assert_eq!(store.scan("p", "other").unwrap(), vec![]);
    assert_eq!(
        records(&store, "other", &[b"o"], View::Running),
        vec![Some(vec![5])]
    );
    store
        .commit(
            "p",
            d,
            Commit {
                tag: Some("t2".into()),
                states: vec![info(1), other],
                puts: vec![put("x", 6, true)],
                ..Default::default()
            },
        )
        .unwrap();
    let states = store.states("p").unwrap();
    let s = states.iter().find(|s| s.info.state_id != "other").unwrap();
    assert_eq!((s.keys, s.bytes), (3, 6));
    assert_eq!(states.len(), 2);
    assert_eq!(
        store.scan("p", "other").unwrap(),
        vec![(b"o".to_vec(), vec![5])]
    );
    assert_eq!(store.pipeline("p").unwrap().unwrap().commits, 2);
    assert!(
        store
            .commit(
                "p",
                99,
                Commit {
                    tag: Some("t2".into()),
                    ..Default::default()
                }
            )
            .is_err()
    );

    // A different encoding version is refused, nothing changes.
    let e = store.begin("p").unwrap();
    let err = store
        .commit(
            "p",
            e,
            Commit {
                tag: None,
                states: vec![info(2)],
                puts: vec![put("x", 7, true)],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoding version 1, older than this build reads"),
        "{err}"
    );
    assert_eq!(
        store.get_many("p", id, &[b"x"]).unwrap(),
        vec![Some(vec![6])]
    );
}

#[test]
fn sweeps_and_lookups_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    // Without a commit log, so that reads go to RocksDB.
    let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(0)).unwrap();
    let id = "ewma(price,0.5)@symbol";
    // Keys k000..k399; every other one stored, with its number as the record.
    let key = |i: u32| format!("k{i:03}");
    let puts = (0..400u32)
        .step_by(2)
        .map(|i| Put {
            record: i.to_le_bytes().to_vec(),
            ..put(&key(i), 0, false)
        })
        .collect();
    commit(&store, puts);
    let expect = |i: u32| i.is_multiple_of(2).then(|| i.to_le_bytes().to_vec());
    // All keys (a sweep stepping through), a sparse few (lookups), and two runs far
    // apart (a sweep that seeks across the gap), in scrambled order.
    let cases: Vec<Vec<u32>> = vec![
        (0..400).rev().collect(),
        vec![7, 398, 14, 100, 3],
        (0..30).chain(370..400).rev().collect(),
    ];
    let read = |asked: &[u32], view: View| {
        let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
        let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        records(&store, id, &refs, view)
    };
    for asked in &cases {
        let want: Vec<_> = asked.iter().map(|&i| expect(i)).collect();
        assert_eq!(read(asked, View::Committed), want);
        assert_eq!(read(asked, View::Running), want);
    }

    // A running attempt stages every 7th key, over stored ones and new ones (k007): it
    // reads them as staged, committed readers as they were, through both read paths.
    let b = store.begin("p").unwrap();
    let staged: Vec<Put> = (0..400u32)
        .step_by(7)
        .map(|i| Put {
            record: vec![7],
            ..put(&key(i), 0, i.is_multiple_of(2))
        })
        .collect();
    store.stage("p", b, &[info(1)], staged).unwrap();
    for asked in &cases {
        let committed: Vec<_> = asked.iter().map(|&i| expect(i)).collect();
        let running: Vec<_> = asked
            .iter()
            .map(|&i| match i % 7 {
                0 => Some(vec![7]),
                _ => expect(i),
            })
            .collect();
        assert_eq!(read(asked, View::Committed), committed);
        assert_eq!(read(asked, View::Running), running);
    }
}

impl RocksStore {
    /// Records read ahead, over every state.
    fn read_ahead_keys(&self) -> usize {
        self.read_aheads()
            .values()
            .filter_map(|r| r.records.as_ref())
            .map(Records::len)
            .sum()
    }

    /// Values lent to read-aheads, over every state.
    fn lent_keys(&self) -> usize {
        self.read_aheads().values().map(|r| r.lent_len()).sum()
    }
}

#[test]
fn lent_values_become_undo_entries_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(0)).unwrap();
    let id = "ewma(price,0.5)@symbol";
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i:03}")).collect();
    commit(&store, keys.iter().map(|k| put(k, 1, false)).collect());
    // The last commit wrote few keys: the state is not read ahead at its first read.
    commit(&store, keys[..10].iter().map(|k| put(k, 1, true)).collect());
    let ten: Vec<&[u8]> = keys[..10].iter().map(|k| k.as_bytes()).collect();

    // Point reads of 10 of a thousand keys: not read ahead, lent.
    let a = store.begin("p").unwrap();
    assert_eq!(
        records(&store, id, &ten, View::Running),
        vec![Some(vec![1]); 10]
    );
    assert_eq!((store.read_ahead_keys(), store.lent_keys()), (0, 10));

    // A stage takes its undo entries' values from them.
    let staged = |v| -> Vec<Put> { keys[..10].iter().map(|k| put(k, v, true)).collect() };
    store.stage("p", a, &[info(1)], staged(2)).unwrap();
    assert_eq!(store.lent_keys(), 0);
    // Read back, the staged values are lent; staged again, they are written without a
    // second undo entry, and forgotten.
    assert_eq!(
        records(&store, id, &ten, View::Running),
        vec![Some(vec![2]); 10]
    );
    assert_eq!(store.lent_keys(), 10);
    store.stage("p", a, &[info(1)], staged(3)).unwrap();
    assert_eq!(store.lent_keys(), 0);
    assert_eq!(store.scan_prefix(&undo_prefix(a)).unwrap().len(), 10);
    assert_eq!(
        records(&store, id, &ten, View::Running),
        vec![Some(vec![3]); 10]
    );

    // Rolled back: every key holds what was committed, and nothing stays lent.
    store.rollback("p", a).unwrap();
    assert_eq!(store.lent_keys(), 0);
    assert_eq!(
        store.get_many("p", id, &ten).unwrap(),
        vec![Some(vec![1]); 10]
    );

    // An undo entry keeps the value lent (here one lent by hand), not one read again.
    let b = store.begin("p").unwrap();
    records(&store, id, &ten[..1], View::Running);
    let no = store.state_meta("p", id).unwrap().unwrap().state_no;
    let lent = [&7u64.to_le_bytes()[..], &[9]].concat();
    store.read_aheads().get_mut(&no).unwrap().lend(
        data_key(no, b"k000").into(),
        lent.clone().into(),
        usize::MAX,
    );
    store
        .stage("p", b, &[info(1)], vec![put("k000", 4, true)])
        .unwrap();
    let undo = store.scan_prefix(&undo_prefix(b)).unwrap();
    assert_eq!(undo.len(), 1);
    assert_eq!(undo[0].1[..], [&[1], &lent[..]].concat());
}

#[test]
fn a_state_its_last_commit_wrote_much_of_is_read_ahead_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let id = "ewma(price,0.5)@symbol";
    let key = |i: u32| format!("key{i}");
    let puts = |range: std::ops::Range<u32>, exists: bool| {
        range.map(|i| put(&key(i), 7, exists)).collect::<Vec<_>>()
    };
    // Whether one read of 10 keys (point reads: far from a quarter of the state) reads
    // the state ahead, in a store opened again.
    let reads_ahead_at_once = |commits: &[Vec<Put>]| {
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
        for c in commits {
            commit(&store, c.clone());
        }
        drop(store);
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
        let attempt = store.begin("p").unwrap();
        let names: Vec<String> = (0..10).map(key).collect();
        let refs: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
        let got = records(&store, id, &refs, View::Running);
        assert!(got.iter().all(|r| r.as_deref() == Some(&[7u8][..])));
        let read_ahead = store.read_ahead_keys();
        store.rollback("p", attempt).unwrap();
        read_ahead
    };
    // A commit of all 1,000 keys: the next query reads them ahead at its first read.
    assert_eq!(reads_ahead_at_once(&[puts(0..1000, false)]), 1000);
    // A commit of 100 of them (a tenth, less than an eighth): key by key again.
    assert_eq!(reads_ahead_at_once(&[puts(0..100, true)]), 0);
    // An eighth (125 keys) is much.
    assert_eq!(reads_ahead_at_once(&[puts(0..125, true)]), 1000);
}

#[test]
fn partitions_reading_a_state_at_once_share_its_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
    let id = "ewma(price,0.5)@symbol";
    // Enough keys for a span per core (up to 3).
    let n = 100_000u32;
    let key = |i: u32| format!("key{i}");
    commit(
        &store,
        (0..n)
            .map(|i| Put {
                record: i.to_le_bytes().to_vec(),
                ..put(&key(i), 0, false)
            })
            .collect(),
    );
    store.begin("p").unwrap();
    // Two partitions, each asking for its half 500 keys at a time: past an eighth of the
    // state, one reads it ahead while the other waits for it, or reads key by key before.
    std::thread::scope(|s| {
        for half in 0..2u32 {
            let store = &store;
            s.spawn(move || {
                let mine: Vec<u32> = (0..n).filter(|i| i % 2 == half).collect();
                for asked in mine.chunks(500) {
                    let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
                    let refs: Vec<&[u8]> = names.iter().map(|k| k.as_bytes()).collect();
                    let got = records(store, id, &refs, View::Running);
                    for (&i, record) in asked.iter().zip(got) {
                        assert_eq!(record, Some(i.to_le_bytes().to_vec()), "key {i}");
                    }
                }
            });
        }
    });
    assert_eq!(
        store.read_ahead_keys(),
        n as usize,
        "every key is read ahead"
    );
}

#[test]
fn read_ahead_reads_what_lookups_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let id = "ewma(price,0.5)@symbol";
    let key = |i: u32| format!("k{i:03}");
    let record = |i: u32, v: u32| Put {
        record: (i * 1000 + v).to_le_bytes().to_vec(),
        ..put(&key(i), 0, v > 0)
    };
    // Every other key of k000..k399 is written to its data key (no commit log), then
    // every 10th, in a store with a commit log, is updated in the log.
    let store = RocksStore::open(path, &with_log(0)).unwrap();
    commit(&store, (0..400).step_by(2).map(|i| record(i, 0)).collect());
    drop(store);
    let store = RocksStore::open(path, &with_log(1 << 20)).unwrap();
    commit(&store, (0..400).step_by(10).map(|i| record(i, 1)).collect());
    let expect = |i: u32| match (i % 10, i % 2) {
        (0, _) => Some((i * 1000 + 1).to_le_bytes().to_vec()),
        (_, 0) => Some((i * 1000).to_le_bytes().to_vec()),
        _ => None,
    };
    // Keys asked for five at a time, in a scrambled order: point reads (not sweeps), until
    // they add up to an eighth of the state and it is read ahead.
    let order: Vec<u32> = (0..400).map(|i| (i * 137) % 400).collect();
    let read_all = |store: &RocksStore, view: View, staged: &dyn Fn(u32) -> Option<Vec<u8>>| {
        for asked in order.chunks(5) {
            let names: Vec<String> = asked.iter().map(|&i| key(i)).collect();
            let refs: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            let want: Vec<_> = asked
                .iter()
                .map(|&i| match view {
                    View::Running => staged(i).or_else(|| expect(i)),
                    View::Committed => expect(i),
                })
                .collect();
            assert_eq!(records(store, id, &refs, view), want, "{asked:?}");
        }
    };
    let b = store.begin("p").unwrap();
    read_all(&store, View::Running, &|_| None);
    // The state's 200 keys minus the 40 the log holds, minus the point reads before.
    assert!(
        store.read_ahead_keys() >= 100,
        "{}",
        store.read_ahead_keys()
    );
    // Staging every 7th key folds the log into the data keys and writes the staged
    // records: the read-ahead forgets both, and reads find them in RocksDB.
    let staged = |i: u32| i.is_multiple_of(7).then(|| vec![7]);
    let puts = (0..400u32)
        .step_by(7)
        .map(|i| Put {
            record: vec![7],
            ..put(&key(i), 0, expect(i).is_some())
        })
        .collect();
    store.stage("p", b, &[info(1)], puts).unwrap();
    assert!(store.read_ahead_keys() > 0);
    read_all(&store, View::Running, &staged);
    read_all(&store, View::Committed, &staged);
    // The end of the attempt drops what it read.
    store.rollback("p", b).unwrap();
    assert_eq!(store.read_ahead_keys(), 0);
    let c = store.begin("p").unwrap();
    read_all(&store, View::Running, &|_| None);
    store.rollback("p", c).unwrap();

    // A state larger than the budget is read key by key.
    drop(store);
    let small = FintechConfig {
        rocksdb_read_ahead_bytes: 100,
        ..FintechConfig::default()
    };
    let store = RocksStore::open(path, &small).unwrap();
    let d = store.begin("p").unwrap();
    read_all(&store, View::Running, &|_| None);
    assert_eq!(store.read_ahead_keys(), 0);
    store.rollback("p", d).unwrap();
}

fn commit(store: &RocksStore, puts: Vec<Put>) {
    let attempt = store.begin("p").unwrap();
    let commit = Commit {
        tag: None,
        states: vec![info(1)],
        puts,
        ..Default::default()
    };
    store.commit("p", attempt, commit).unwrap();
}

#[test]
fn commit_log_is_read_first_folded_and_read_back_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let path = path.to_str().unwrap();
    let id = "ewma(price,0.5)@symbol";
    let all: [&[u8]; 3] = [b"x", b"y", b"z"];
    let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
    commit(&store, vec![put("x", 1, false), put("y", 1, false)]);
    commit(&store, vec![put("x", 2, true)]);
    // Logged, not in the data keys.
    assert_eq!(store.scan_prefix(&[DATA]).unwrap(), vec![]);
    assert_eq!(store.log_entries().unwrap().len(), 2);
    let want = vec![Some(vec![2]), Some(vec![1]), None];
    assert_eq!(store.get_many("p", id, &all).unwrap(), want);
    let rows = vec![(b"x".to_vec(), vec![2]), (b"y".to_vec(), vec![1])];
    assert_eq!(store.scan("p", id).unwrap(), rows);

    // Read back when the store opens again.
    drop(store);
    let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
    assert_eq!(store.get_many("p", id, &all).unwrap(), want);
    assert_eq!(store.scan("p", id).unwrap(), rows);
    let s = &store.states("p").unwrap()[0];
    assert_eq!((s.keys, s.bytes), (2, 4));

    // A fold writes the newest records to the data keys and deletes the entries; a key
    // logged after it (y) is read from the log, the others (x) from RocksDB.
    store.fold(&mut store.writer()).unwrap();
    assert!(store.log().is_empty());
    assert_eq!(store.log_entries().unwrap(), vec![]);
    assert_eq!(store.scan_prefix(&[DATA]).unwrap().len(), 2);
    commit(&store, vec![put("y", 3, true), put("z", 3, false)]);
    let want = vec![Some(vec![2]), Some(vec![3]), Some(vec![3])];
    assert_eq!(store.get_many("p", id, &all).unwrap(), want);
    let rows = vec![
        (b"x".to_vec(), vec![2]),
        (b"y".to_vec(), vec![3]),
        (b"z".to_vec(), vec![3]),
    ];
    assert_eq!(store.scan("p", id).unwrap(), rows);

    // Staging folds first: the staged record is read, and a rollback restores what the
    // log held.
    let b = store.begin("p").unwrap();
    store
        .stage("p", b, &[info(1)], vec![put("y", 4, true)])
        .unwrap();
    assert!(store.log().is_empty());
    assert_eq!(
        records(&store, id, &all, View::Running),
        vec![Some(vec![2]), Some(vec![4]), Some(vec![3])]
    );
    assert_eq!(store.get_many("p", id, &all).unwrap(), want);
    store.rollback("p", b).unwrap();
    assert_eq!(store.get_many("p", id, &all).unwrap(), want);

    // A commit too big for the log is written to the data keys, after a fold.
    commit(&store, vec![put("z", 5, true)]);
    drop(store);
    let store = RocksStore::open(path, &with_log(0)).unwrap();
    assert!(!store.log().is_empty());
    commit(&store, vec![put("x", 6, true)]);
    assert!(store.log().is_empty());
    assert_eq!(
        store.get_many("p", id, &all).unwrap(),
        vec![Some(vec![6]), Some(vec![3]), Some(vec![5])]
    );
    let s = &store.states("p").unwrap()[0];
    assert_eq!((s.keys, s.bytes), (3, 6));
}

/// Bytes in the write-ahead log files of the store at `path`.
fn wal_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_closed_store_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let id = "ewma(price,0.5)@symbol";
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    for budget in [0, NEVER_FOLDS] {
        let store = RocksStore::open(path.to_str().unwrap(), &with_log(budget)).unwrap();
        commit(
            &store,
            keys.iter().map(|k| put(k, 7, budget != 0)).collect(),
        );
        assert!(
            wal_bytes(&path) > 1000,
            "the commit is in the write-ahead log"
        );
        drop(store);
        assert_eq!(wal_bytes(&path), 0, "commit log budget {budget}");
    }
    let store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
    let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let stored = store.get_many("p", id, &keys).unwrap();
    assert!(stored.iter().all(|v| v.as_deref() == Some(&[7u8][..])));
}

#[test]
fn commit_log_folds_when_it_passes_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let id = "ewma(price,0.5)@symbol";
    // A one-put commit holds 81 bytes: logged while 2 x 81 <= 200. The budget is for the
    // whole process (other tests' stores too), so when folds happen varies, but this
    // store's own log never stays above it: three commits fold at least once.
    let store = RocksStore::open(dir.path().to_str().unwrap(), &with_log(200)).unwrap();
    for value in 1..=3 {
        commit(&store, vec![put("x", value, value > 1)]);
        assert!(store.log().held() <= 200);
        assert_eq!(
            store.get_many("p", id, &[b"x"]).unwrap(),
            vec![Some(vec![value])]
        );
    }
    let stored = store.get(&data_key(0, b"x")).unwrap().unwrap();
    assert!((1..=3).contains(&store.unwrap_value(&stored).unwrap().1[0]));
    // Too big for this budget: written to its key, not logged.
    commit(&store, vec![put("x", 4, true), put("y", 4, false)]);
    assert!(store.log().is_empty());
    assert_eq!(store.log_entries().unwrap(), vec![]);
    let stored = store.get(&data_key(0, b"y")).unwrap().unwrap();
    assert_eq!(store.unwrap_value(&stored).unwrap().1, [4]);
}

#[test]
fn damaged_log_and_unknown_layouts_are_refused_and_layout_1_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let path = path.to_str().unwrap();
    let reopen = |f: &dyn Fn(&DB)| {
        let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
        f(&store.db);
        drop(store);
        RocksStore::open(path, &with_log(NEVER_FOLDS))
    };
    fn layout(v: &'static [u8]) -> impl Fn(&DB) {
        move |db: &DB| db.put(meta_key("format"), v).unwrap()
    }
    let upgraded = reopen(&layout(FORMAT_1)).unwrap();
    assert_eq!(upgraded.get(&meta_key("format")).unwrap().unwrap(), FORMAT);
    drop(upgraded);
    let err = reopen(&layout(b"datafusion-fintech/9"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("has layout 'datafusion-fintech/9'"), "{err}");
    let err = RocksStore::open(path, &FintechConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("has layout"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let path = path.to_str().unwrap();
    let store = RocksStore::open(path, &with_log(NEVER_FOLDS)).unwrap();
    commit(&store, vec![put("x", 1, false)]);
    store
        .db
        .put_cf(
            store.family(LOG_FAMILY).unwrap(),
            log::entry_key(7),
            [1, 2, 3, 4, 5, 6, 7, 8, 9],
        )
        .unwrap();
    drop(store);
    let err = RocksStore::open(path, &with_log(NEVER_FOLDS))
        .unwrap_err()
        .to_string();
    assert!(err.contains("commit log entry 7 is damaged"), "{err}");
    assert!(err.contains(path), "{err}");
}

#[test]
fn data_keys_sort_as_rocksdb_compares() {
    // Keys sharing long prefixes, prefixes of one another, trailing zero bytes, and three
    // states: the order must be plain byte order of the full data keys.
    let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], b"ab".to_vec()];
    let mut x = 88172645463325252u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Lengths 0..24 over a 3-byte alphabet: equal 16-byte heads are common.
        let len = (x % 24) as usize;
        keys.push(
            (0..len)
                .map(|j| [0u8, 1, 0xff][(x >> (j + 5)) as usize % 3])
                .collect(),
        );
    }
    let input: Vec<(u32, &[u8])> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ([7, 0, 65536][i % 3], k.as_slice()))
        .collect();
    // Values of 0 to 2 bytes.
    let value = |i: usize| vec![i as u8; i % 3];
    let sorted = DataKeys::sorted(&input, |i| i % 3, |i, out| out.copy_from_slice(&value(i)));
    let mut expected: Vec<Vec<u8>> = input.iter().map(|(s, k)| data_key(*s, k)).collect();
    expected.sort();
    let got: Vec<Vec<u8>> = sorted.iter().map(|(_, k, _)| k.to_vec()).collect();
    assert_eq!(got, expected);
    for (i, k, v) in sorted.iter() {
        assert_eq!(k, data_key(input[i].0, input[i].1));
        assert_eq!(v, value(i));
    }
    // In runs, one after the other, the same (an empty run included: 3 states, 4 runs).
    let whole: Vec<(usize, Vec<u8>, Vec<u8>)> = sorted
        .iter()
        .map(|(i, k, v)| (i, k.to_vec(), v.to_vec()))
        .collect();
    for count in 1..=4 {
        let runs = DataKeys::sorted_runs(
            &input,
            count,
            |i| i % 3,
            |i, out| out.copy_from_slice(&value(i)),
            |run| {
                run.iter()
                    .map(|(i, k, v)| (i, k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>()
            },
        );
        assert_eq!(runs.len(), count);
        assert!(count == 1 || runs.iter().all(|r| r.len() < whole.len()));
        assert_eq!(runs.concat(), whole, "{count} runs");
    }
}

#[test]
fn joined_batches_are_the_batch_of_all_their_writes() {
    let mut all = WriteBatch::default();
    let mut head = WriteBatch::default();
    let mut runs = vec![
        WriteBatch::default(),
        WriteBatch::default(),
        WriteBatch::default(),
    ];
    for b in [&mut all, &mut head] {
        b.put(b"k1", b"v1");
        b.delete(b"k2");
    }
    for b in [&mut all, &mut runs[0]] {
        b.put(b"k3", [7u8; 300]);
    }
    for b in [&mut all, &mut runs[2]] {
        b.put(b"k4", b"");
        b.delete_range(b"a", b"b");
    }
    let one = joined(head, runs).unwrap();
    assert_eq!(one.len(), 5);
    assert_eq!(one.data(), all.data());
    let empty = joined(WriteBatch::default(), vec![WriteBatch::default()]).unwrap();
    assert_eq!(empty.data(), WriteBatch::default().data());
}

#[test]
fn large_commits_are_whole_and_switch_full_memtables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut store = RocksStore::open(path.to_str().unwrap(), &with_log(0)).unwrap();
    store.memtable_bytes = 8 << 20;
    let id = "ewma(price,0.5)@symbol";
    // ~6 MiB batches, built on two threads where there are two cores.
    let keys: Vec<String> = (0..70_000).map(|i| format!("key{i}")).collect();
    for (round, value) in [(0, 7u8), (1, 8)] {
        let mut puts: Vec<Put> = keys.iter().map(|k| put(k, value, round > 0)).collect();
        for p in &mut puts {
            p.record.resize(50, value);
        }
        commit(&store, puts);
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let stored = store.get_many("p", id, &keys).unwrap();
        assert!(
            stored
                .iter()
                .all(|v| v.as_deref() == Some(&[value; 50][..])),
            "round {round}"
        );
        // Round 0 goes into the nearly empty memtable; round 1 would overfill it with
        // round 0's writes, so it goes into a fresh one, which holds its writes alone.
        let active = store
            .db
            .property_int_value("rocksdb.num-entries-active-mem-table")
            .unwrap()
            .unwrap() as usize;
        assert!(
            (keys.len()..keys.len() + 100).contains(&active),
            "round {round}: {active} writes in the memtable"
        );
    }
    let summary = &store.states("p").unwrap()[0];
    assert_eq!(summary.keys, keys.len() as u64);
}

#[test]
fn data_has_the_configured_table_options() {
    // RocksDB writes the options it runs with to OPTIONS-* files: the state's column
    // family must have bloom filters and LZ4, not RocksDB's defaults.
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path().to_str().unwrap(), &FintechConfig::default()).unwrap();
    drop(store);
    let options: String = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("OPTIONS-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for want in [
        "compression=kLZ4Compression",
        "filter_policy=bloomfilter",
        "cache_index_and_filter_blocks=true",
        "partition_filters=true",
        "index_type=kTwoLevelIndexSearch",
    ] {
        assert!(options.contains(want), "{want} missing from:\n{options}");
    }
}

#[test]
fn buckets_are_stable() {
    // Changing the hash would scatter stored keys: pin it.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(&data_key(1, b"a")[..5], &[DATA, 0, 0, 0, 1]);
}
