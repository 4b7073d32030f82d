//! Staged updates: the states a query evicts from its working set before it commits.
//!
//! They go to one Tonbo table of the store, `staged/` (`k Binary, v Binary`), as records
//! keyed by `attempt:u64 BE, state index:u32 BE, key` (the state's index in the query's
//! list of states). A query's loads find them there first ([`Store::staged_records`]): a
//! filter of the keys staged ([`StagedKeys`]) says which keys need the look. Nothing
//! committed changes while a query stages.
//!
//! - A commit names its attempt and the state number of each index in the ingest that is its
//!   commit point (the metadata row [`COMMIT_STAGED`]), then copies the staged rows into the
//!   state tables ([`Store::copy_staged`]) before it writes its own rows, so that a key's last
//!   update wins. Found on open, the row is applied again, like the redo record, and goes
//!   once the state tables hold everything.
//! - A rollback forgets the attempt. Staged rows are never deleted one by one: attempt
//!   numbers are never reused (they start at the time the store opened, in microseconds), so
//!   no later attempt reads them, and the next open removes the staged table whole (unless a
//!   commit still names it). Tonbo's deletions are not used here: deleting the rows of one
//!   attempt hid rows of the next (`docs/tonbo.md`).
//! - Writes to the table exclude scans of it (`Store::staged_io`): a scan that overlaps an
//!   ingest into its table can miss rows.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BinaryBuilder, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};
use hashbrown::DefaultHashBuilder;
use tonbo::prelude::{Expr, ScalarValue};

use super::bridge::to_tonbo;
use super::location::with_db;
use super::scan::{Forward, Scan, ScanSpec};
use super::table::TableSchema;
use super::{POINT_READS, Store, Table, lock, read_lock, write_lock};
use crate::state::meta::StateMeta;
use crate::state::{Put, StateInfo};

/// The staged table's name in the store's location.
pub(super) const STAGED: &str = "staged";
/// The metadata row that names the staged rows a commit includes.
pub(super) const COMMIT_STAGED: &str = "commit-staged";
/// Rows per state collected before they are written to a state table. Tonbo holds a table's
/// last 8 ingests in its memtable: at 65,536 rows of `rolling_mean(x, 100)` (~900 bytes each)
/// a copy held ~470 MB per table.
const COPY_ROWS: usize = 16_384;

/// The schema of the staged table.
fn staged_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Binary, false),
        Field::new("v", DataType::Binary, false),
    ]))
}

/// The start of the staged keys of `attempt` (and `index`).
fn prefix(attempt: u64, index: Option<u32>) -> Vec<u8> {
    let mut p = attempt.to_be_bytes().to_vec();
    if let Some(i) = index {
        p.extend_from_slice(&i.to_be_bytes());
    }
    p
}

/// The keys of `attempt` (or every key): a filter of the staged table's scan.
fn attempt_filter(attempt: Option<u64>) -> Option<Expr> {
    let a = attempt?;
    let bound = |a: u64| ScalarValue::Binary(Some(prefix(a, None)));
    let from = Expr::gt_eq("k", bound(a));
    Some(match a.checked_add(1) {
        Some(next) => Expr::and(vec![from, Expr::lt("k", bound(next))]),
        None => from,
    })
}

/// A Bloom filter of the (state index, key) pairs an attempt staged, in blocks of
/// [`StagedKeys::BLOCK_KEYS`] keys: no false negatives, about 1 in 100,000 false positives a
/// full block (3 MiB). A key that may be staged costs its load a scan of the staged table
/// (about 10 ms in the 5M-key larger-than-memory run, where a filter of 10 bits a key sent
/// most loads to one), so with millions of keys staged most loads still find none.
#[derive(Debug, Default)]
pub(super) struct StagedKeys {
    blocks: Vec<Vec<u64>>,
    /// Keys in the last block.
    in_last: usize,
    hasher: DefaultHashBuilder,
}

impl StagedKeys {
    const BLOCK_KEYS: usize = 1 << 20;
    /// Bits per key, and probes per key.
    const BITS: usize = 24;
    const PROBES: u64 = 16;

    /// The bits `(index, key)` sets in a block: hashed once, probed by double hashing.
    fn probes(&self, index: u32, key: &[u8]) -> impl Iterator<Item = usize> + Clone + use<> {
        let h = self.hasher.hash_one((index, key));
        let (h1, h2) = (h, h.rotate_left(32) | 1);
        let bits = (Self::BLOCK_KEYS * Self::BITS) as u64;
        (0..Self::PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    fn insert(&mut self, index: u32, key: &[u8]) {
        if self.blocks.is_empty() || self.in_last == Self::BLOCK_KEYS {
            self.blocks
                .push(vec![0; Self::BLOCK_KEYS * Self::BITS / 64]);
            self.in_last = 0;
        }
        self.in_last += 1;
        let probes = self.probes(index, key);
        let block = self.blocks.last_mut().expect("a block");
        for bit in probes {
            block[bit / 64] |= 1 << (bit % 64);
        }
    }

    /// Whether `(index, key)` may have been staged.
    fn may_hold(&self, index: u32, key: &[u8]) -> bool {
        let probes = self.probes(index, key);
        self.blocks.iter().any(|b| {
            probes
                .clone()
                .all(|bit| b[bit / 64] & (1 << (bit % 64)) != 0)
        })
    }
}

/// An attempt that staged updates and has neither committed nor rolled back.
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) pipeline: String,
    /// The query's states; a staged key names its state by index into this list.
    pub(super) states: Vec<StateInfo>,
    keys: StagedKeys,
    /// Per state id: the change in (keys, bytes) that the staged writes make.
    pub(super) deltas: HashMap<String, (i64, i64)>,
}

/// The staged rows a commit includes: its attempt and the state number of each index.
pub(super) fn encode_commit_staged(attempt: u64, state_nos: &[u32]) -> Vec<u8> {
    let mut out = attempt.to_le_bytes().to_vec();
    for n in state_nos {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

fn decode_commit_staged(bytes: &[u8]) -> Option<(u64, Vec<u32>)> {
    let attempt = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let rest = &bytes[8..];
    if !rest.len().is_multiple_of(4) {
        return None;
    }
    let nos = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    Some((attempt, nos))
}

impl Store {
    /// The staged table, opened on first use.
    pub(super) fn staged_table(&self) -> Result<Arc<Table>> {
        let mut staged = lock(&self.staged);
        if let Some(t) = staged.as_ref() {
            return Ok(Arc::clone(t));
        }
        let empty = to_tonbo(&RecordBatch::new_empty(staged_schema()))?;
        let db = self
            .run(|| self.location.open_db(STAGED, empty, "k"))
            .map_err(|e| super::damaged(&self.name, "its table of staged updates", e))?;
        let table = Arc::new(Table { db });
        *staged = Some(Arc::clone(&table));
        Ok(table)
    }

    /// Writes `puts` of `attempt` (a query of `pipeline` over `states`) to the staged table.
    /// Every record is decoded into its state's columns first: one that does not decode fails
    /// here, not in the commit.
    pub(super) fn stage(
        &self,
        pipeline: &str,
        attempt: u64,
        states: &[StateInfo],
        puts: Vec<Put>,
    ) -> Result<()> {
        if puts.is_empty() {
            return Ok(());
        }
        let index_of: HashMap<&str, u32> = states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.state_id.as_str(), i as u32))
            .collect();
        let mut by_state: HashMap<u32, Vec<usize>> = HashMap::default();
        for (p, put) in puts.iter().enumerate() {
            let i = *index_of.get(put.state_id.as_ref()).ok_or_else(|| {
                DataFusionError::Internal(format!("staged write to unknown state {}", put.state_id))
            })?;
            by_state.entry(i).or_default().push(p);
        }
        // In key order (the state's index, then its key), as the store's commits ingest.
        let mut by_state: Vec<(u32, Vec<usize>)> = by_state.into_iter().collect();
        by_state.sort_unstable_by_key(|(i, _)| *i);
        for (_, rows) in &mut by_state {
            rows.sort_by_key(|&p| puts[p].key.as_slice());
        }
        for (i, rows) in &by_state {
            TableSchema::new(&states[*i as usize])?.batch(
                rows.iter()
                    .map(|&p| (puts[p].key.as_slice(), puts[p].record.as_slice())),
            )?;
        }
        let bytes: usize = puts.iter().map(|p| p.key.len() + p.record.len()).sum();
        let mut staged_keys = BinaryBuilder::with_capacity(puts.len(), bytes);
        let mut records = BinaryBuilder::with_capacity(puts.len(), bytes);
        let mut key = Vec::new();
        for (i, rows) in &by_state {
            let start = prefix(attempt, Some(*i));
            for &p in rows {
                key.clear();
                key.extend_from_slice(&start);
                key.extend_from_slice(&puts[p].key);
                staged_keys.append_value(&key);
                records.append_value(&puts[p].record);
            }
        }
        let batch = RecordBatch::try_new(
            staged_schema(),
            vec![Arc::new(staged_keys.finish()), Arc::new(records.finish())],
        )?;
        let table = self.staged_table()?;
        let batch = to_tonbo(&batch)?;
        let _io = write_lock(&self.staged_io);
        self.run(|| async { with_db!(&table.db, db => db.ingest(batch).await) })
            .map_err(|e| self.tonbo_error("write the table of staged updates", e))?;
        let mut attempts = lock(&self.attempts);
        let entry = attempts.entry(attempt).or_insert_with(|| Attempt {
            pipeline: pipeline.to_string(),
            states: states.to_vec(),
            keys: StagedKeys::default(),
            deltas: HashMap::default(),
        });
        for (i, rows) in &by_state {
            let delta = entry
                .deltas
                .entry(states[*i as usize].state_id.clone())
                .or_default();
            for &p in rows {
                entry.keys.insert(*i, &puts[p].key);
                puts[p].count(delta);
            }
        }
        Ok(())
    }

    /// Hands `found(i, record)` what the running attempt of `pipeline` staged for `keys[i]`
    /// of `state_id`, and marks each key it found in `staged`.
    pub(super) fn staged_records(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        staged: &mut [bool],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut asked: Vec<(usize, Vec<u8>)> = {
            let attempts = lock(&self.attempts);
            let Some((&attempt, a)) = attempts.iter().find(|(_, a)| a.pipeline == pipeline) else {
                return Ok(());
            };
            let Some(index) = a.states.iter().position(|s| s.state_id == state_id) else {
                return Ok(());
            };
            let index = index as u32;
            let start = prefix(attempt, Some(index));
            keys.iter()
                .enumerate()
                .filter(|(_, k)| a.keys.may_hold(index, k))
                .map(|(i, k)| {
                    let mut full = start.clone();
                    full.extend_from_slice(k);
                    (i, full)
                })
                .collect()
        };
        if asked.is_empty() {
            return Ok(());
        }
        asked.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let bound = |k: &[u8]| ScalarValue::Binary(Some(k.to_vec()));
        let filter = if asked.len() <= POINT_READS {
            Expr::or(asked.iter().map(|(_, k)| Expr::eq("k", bound(k))).collect())
        } else {
            let (first, last) = (&asked[0].1, &asked[asked.len() - 1].1);
            Expr::and(vec![
                Expr::gt_eq("k", bound(first)),
                Expr::lt_eq("k", bound(last)),
            ])
        };
        let spec = ScanSpec {
            filter: Some(filter),
            projection: None,
            what: format!(
                "Tonbo store {}: read the staged updates of state '{state_id}'",
                self.name
            ),
        };
        let from = asked[0].1.clone();
        let _io = read_lock(&self.staged_io);
        let mut forward = Forward::start(self.staged_table()?, spec, &self.name, from)?;
        let sorted: Vec<(usize, &[u8])> = asked.iter().map(|(i, k)| (*i, k.as_slice())).collect();
        forward.find(&sorted, &mut |batch, rows| {
            let records = batch.column(1).as_binary::<i32>();
            for &(i, row) in rows {
                staged[i] = true;
                found(i, records.value(row))?;
            }
            Ok(())
        })
    }

    /// Writes the rows `attempt` staged into the state tables: state index `i` is state
    /// number `state_nos[i]` of `metas`.
    pub(super) fn copy_staged(
        &self,
        attempt: u64,
        state_nos: &[u32],
        metas: &HashMap<u32, StateMeta>,
    ) -> Result<()> {
        let spec = ScanSpec {
            filter: attempt_filter(Some(attempt)),
            projection: None,
            what: format!("Tonbo store {}: read the staged updates", self.name),
        };
        let _io = read_lock(&self.staged_io);
        let mut scan = Scan::start(self.staged_table()?, spec, &self.name)?;
        let schemas = state_nos
            .iter()
            .map(|n| {
                let meta = metas.get(n).ok_or_else(|| {
                    DataFusionError::Internal(format!("staged rows of unknown state {n}"))
                })?;
                Ok((meta.clone(), TableSchema::new(&meta.info)?))
            })
            .collect::<Result<Vec<_>>>()?;
        // Per state index: the (scan batch, row) of each staged row not written yet.
        let mut pending: Vec<Vec<(Arc<RecordBatch>, usize)>> = vec![Vec::new(); state_nos.len()];
        let flush = |i: usize, rows: &mut Vec<(Arc<RecordBatch>, usize)>| -> Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let (meta, schema) = &schemas[i];
            let batch = schema.batch(rows.iter().map(|(b, row)| {
                let (keys, records) = (
                    b.column(0).as_binary::<i32>(),
                    b.column(1).as_binary::<i32>(),
                );
                (&keys.value(*row)[12..], records.value(*row))
            }))?;
            rows.clear();
            self.ingest(vec![(meta.clone(), batch)])
        };
        while let Some(batch) = scan.next_batch() {
            let batch = Arc::new(batch?);
            let keys = batch.column(0).as_binary::<i32>();
            for row in 0..batch.num_rows() {
                let k = keys.value(row);
                let index = k
                    .get(8..12)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                    .filter(|&i| i < state_nos.len())
                    .ok_or_else(|| {
                        DataFusionError::Execution(format!(
                            "state directory {} is damaged: a staged update has the key {k:?}",
                            self.name
                        ))
                    })?;
                pending[index].push((Arc::clone(&batch), row));
                if pending[index].len() >= COPY_ROWS {
                    flush(index, &mut pending[index])?;
                }
            }
        }
        for (i, rows) in pending.iter_mut().enumerate() {
            flush(i, rows)?;
        }
        Ok(())
    }

    /// Undoes what `attempt` staged: its rows are never read again (attempt numbers are not
    /// reused), and the next open removes them.
    pub(super) fn roll_back(&self, attempt: u64) {
        lock(&self.attempts).remove(&attempt);
    }

    /// Applies the staged rows a commit left named in the metadata table ([`COMMIT_STAGED`]),
    /// if it did: the first step of finishing a commit.
    pub(super) fn finish_staged(&self, metas: &HashMap<u32, StateMeta>) -> Result<Option<u64>> {
        let Some(bytes) = lock(&self.rows).get(COMMIT_STAGED).cloned() else {
            return Ok(None);
        };
        let (attempt, state_nos) = decode_commit_staged(&bytes).ok_or_else(|| {
            super::damaged(
                &self.name,
                "the staged updates of its last commit",
                "unreadable",
            )
        })?;
        self.copy_staged(attempt, &state_nos, metas)?;
        Ok(Some(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_keys_have_no_false_negatives_and_few_false_positives() {
        let mut keys = StagedKeys::default();
        let n = StagedKeys::BLOCK_KEYS + 1_000;
        for i in 0..n as u64 {
            keys.insert((i % 3) as u32, &i.to_le_bytes());
        }
        assert_eq!(keys.blocks.len(), 2);
        assert!((0..n as u64).all(|i| keys.may_hold((i % 3) as u32, &i.to_le_bytes())));
        let false_positives = (0..100_000u64)
            .filter(|i| keys.may_hold(7, &i.to_le_bytes()))
            .count();
        // About 1 expected (1 in 100,000 for the full block).
        assert!(false_positives < 20, "{false_positives} of 100,000");
    }

    #[test]
    fn a_commits_staged_rows_round_trip() {
        let bytes = encode_commit_staged(u64::MAX - 3, &[4, 0, 9]);
        assert_eq!(
            decode_commit_staged(&bytes),
            Some((u64::MAX - 3, vec![4, 0, 9]))
        );
        assert_eq!(decode_commit_staged(&bytes[..10]), None);
    }
}
