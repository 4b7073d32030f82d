//! How a query reads the committed records of a state: whole, or forward.
//!
//! - **Whole**, when the state fits in what the store may keep (`fintech.working_set_bytes`,
//!   less the states kept already): one scan of its table, kept indexed by key
//!   ([`super::table::Loaded`]) across queries.
//! - **Forward**, otherwise: a scan of the table from the smallest key asked for, read in key
//!   order as the query asks for larger keys ([`Forward`]), so that the state is never held
//!   whole. A query that folds by key (`fintech.fold_order`, chosen by `auto` when the keys
//!   outgrow the working set) asks for its keys in ascending order of their encoding for
//!   integer keys, and each of its partitions then reads the table once. Keys asked for
//!   below where every scan of the state is start a new scan from there; the store keeps
//!   [`FORWARD_SCANS`] of them per state, until the pipeline's next begin, rollback or
//!   commit.

use datafusion::error::Result;
use tonbo::prelude::{Expr, ScalarValue};

use super::scan::{Forward, ScanSpec};
use super::table::KEY;
use super::{Store, lock};
use crate::state::arrow::RowRecords;
use crate::state::meta::StateMeta;

/// Forward scans the store keeps per state: one per partition of a query, usually.
const FORWARD_SCANS: usize = 8;

impl Store {
    /// Hands `found(i, record)` the committed record of each of `keys` not marked in `skip`
    /// that has one.
    pub(super) fn committed_records(
        &self,
        pipeline: &str,
        meta: &StateMeta,
        keys: &[&[u8]],
        skip: &[bool],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let asked: Vec<(usize, &[u8])> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip[*i])
            .map(|(i, k)| (i, *k))
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        if self.reads_whole(pipeline, meta) {
            let loaded = self.loaded(pipeline, meta)?;
            let table = self.table(meta)?;
            let only: Vec<&[u8]> = asked.iter().map(|(_, k)| *k).collect();
            return loaded.records(&table.schema, &only, &mut |j, record| {
                found(asked[j].0, record)
            });
        }
        self.read_forward(pipeline, meta, asked, found)
    }

    /// Whether `meta`'s state is read whole: it is already, or it fits beside the states
    /// kept.
    fn reads_whole(&self, pipeline: &str, meta: &StateMeta) -> bool {
        let loaded = lock(&self.loaded);
        if loaded.contains_key(&(pipeline.to_string(), meta.info.state_id.clone())) {
            return true;
        }
        let held: usize = loaded.values().map(|l| l.memory_size()).sum();
        // Columns take about twice the encoded bytes; the index, a few words per key.
        let estimate = 2 * meta.bytes as usize + 32 * meta.keys as usize;
        held + estimate <= self.keep_bytes
    }

    fn read_forward(
        &self,
        pipeline: &str,
        meta: &StateMeta,
        mut asked: Vec<(usize, &[u8])>,
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        asked.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let first = asked[0].1;
        let id = (pipeline.to_string(), meta.info.state_id.clone());
        let taken = {
            let mut forwards = lock(&self.forwards);
            let scans = forwards.entry(id.clone()).or_default();
            let best = scans
                .iter()
                .enumerate()
                .filter(|(_, f)| f.can_find(first))
                .max_by(|a, b| a.1.position().cmp(b.1.position()))
                .map(|(i, _)| i);
            best.map(|i| scans.swap_remove(i))
        };
        let table = {
            let _w = self.writer()?;
            self.table(meta)?
        };
        let mut forward = match taken {
            Some(f) => f,
            None => {
                let spec = ScanSpec {
                    filter: Some(Expr::gt_eq(KEY, ScalarValue::Binary(Some(first.to_vec())))),
                    projection: None,
                    what: format!(
                        "Tonbo store {}: read the table of state '{}'",
                        self.name, meta.info.state_id
                    ),
                };
                Forward::start(
                    std::sync::Arc::clone(&table.table),
                    spec,
                    &self.name,
                    first.to_vec(),
                )?
            }
        };
        let mut record = Vec::new();
        forward.find(&asked, &mut |batch, rows| {
            table.schema.check(batch, &self.name)?;
            let reader =
                RowRecords::new(batch, table.schema.first_field(), table.schema.kernel.def())?;
            for &(i, row) in rows {
                record.clear();
                reader.record(row, &mut record);
                found(i, &record)?;
            }
            Ok(())
        })?;
        let mut forwards = lock(&self.forwards);
        let scans = forwards.entry(id).or_default();
        if scans.len() >= FORWARD_SCANS {
            // The one furthest behind is the least likely to be asked again.
            if let Some(i) = scans
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.position().cmp(b.1.position()))
                .map(|(i, _)| i)
            {
                scans.swap_remove(i);
            }
        }
        scans.push(forward);
        Ok(())
    }

    /// Ends the forward scans of `pipeline`'s states: its committed state is about to change,
    /// or its query is over.
    pub(super) fn end_forward_reads(&self, pipeline: &str) {
        lock(&self.forwards).retain(|(p, _), _| p != pipeline);
    }
}
