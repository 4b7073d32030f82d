//! The store's metadata table, against what Tonbo 0.4.0-a2 does with deletes.

use super::*;

/// Rows cleared by writing them empty stay cleared, and rows written after them stay. With
/// Tonbo's deletes (`ingest_with_tombstones`) in place of the empty rows, this check failed
/// from about the tenth round on: some of the deleted rows came back in every later scan.
#[test]
fn cleared_metadata_rows_stay_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let opened = TonboStore::open(path.to_str().unwrap(), &FintechConfig::default()).unwrap();
    let store = &opened.store;
    for round in 0..60u32 {
        let n = 200 + (round as usize * 13) % 100;
        let puts: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("x{round:06}{i:04}"), vec![round as u8 + 1; 100]))
            .collect();
        let keys = puts.iter().map(|(k, _)| k.clone()).collect();
        store.write_meta(puts).unwrap();
        let scanned = store.scan_meta().unwrap();
        assert!(scanned == *lock(&store.rows), "round {round}, written");
        store.clear_meta(keys).unwrap();
        let scanned = store.scan_meta().unwrap();
        assert!(scanned == *lock(&store.rows), "round {round}, cleared");
    }
}

/// A scan that fails midway is started again after the last key it handed over: the rows
/// read are the rows of a scan that did not fail, each once.
#[test]
fn a_failed_scan_resumes_after_its_last_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let opened = TonboStore::open(path.to_str().unwrap(), &FintechConfig::default()).unwrap();
    let store = &opened.store;
    for part in 0..20u32 {
        let puts = (0..1_000u32)
            .map(|i| (format!("x{:08}", i * 20 + part), vec![part as u8 + 1; 10]))
            .collect();
        store.write_meta(puts).unwrap();
    }
    let spec = || ScanSpec {
        filter: None,
        projection: None,
        what: "the metadata table".into(),
    };
    let whole = store.collect(&store.meta, spec()).unwrap();
    assert!(
        whole.len() >= 3,
        "{} batches: too few to fail midway",
        whole.len()
    );
    let rows = |batches: &[RecordBatch]| -> Vec<(String, Vec<u8>)> {
        batches
            .iter()
            .flat_map(|b| {
                let (k, v) = (
                    b.column(0).as_string::<i32>(),
                    b.column(1).as_binary::<i32>(),
                );
                (0..b.num_rows()).map(|i| (k.value(i).to_string(), v.value(i).to_vec()))
            })
            .collect()
    };
    assert_eq!(rows(&whole).len(), 20_000);
    for after in [0, 1, whole.len() - 2] {
        scan::inject_fault(after);
        let resumed = store.collect(&store.meta, spec()).unwrap();
        let (resumed, whole) = (rows(&resumed), rows(&whole));
        assert_eq!(
            resumed.len(),
            whole.len(),
            "rows, failed after {after} batches"
        );
        assert!(
            resumed == whole,
            "rows differ, failed after {after} batches"
        );
    }
}
