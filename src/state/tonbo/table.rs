//! One state's Tonbo table: its schema, the batch a commit ingests, and the state as a scan
//! returns it, indexed by key ([`Loaded`]).
//!
//! The table's columns are `__key` (the encoded key, Tonbo's key column: single-column keys
//! are what Tonbo prunes key ranges on) followed by the state's table as `fintech_state`
//! shows it ([`state_table_fields`]): the key columns, the kernel's state fields,
//! `rows_applied` and `last_applied`.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use tonbo::prelude::{Expr, ScalarValue as TonboScalar};

use super::POINT_READS;
use super::bridge::to_tonbo;
use crate::kernels::BoundKernel;
use crate::state::arrow::{RowRecords, state_rows, state_table_fields};
use crate::state::{KeyFilter, StateInfo};

/// The name of the encoded-key column.
pub(super) const KEY: &str = "__key";

/// What a state's table looks like to this build.
#[derive(Debug)]
pub(super) struct TableSchema {
    /// The state's registry entry, with each key column's type as the table stores it (the
    /// canonical type of its key type: Tonbo reads no view or dictionary types).
    pub(super) info: StateInfo,
    pub(super) kernel: BoundKernel,
    /// `__key` and the state table's columns.
    pub(super) schema: SchemaRef,
    /// The state table's columns alone, as `fintech_state` shows them.
    pub(super) rows: SchemaRef,
}

impl TableSchema {
    pub(super) fn new(info: &StateInfo) -> Result<Self> {
        let kernel = info.bind_kernel().map_err(DataFusionError::Execution)?;
        let mut info = info.clone();
        for c in info.key_columns.iter_mut() {
            c.data_type = c.key_type()?.canonical();
        }
        let fields = state_table_fields(&info, kernel.def());
        let rows = Arc::new(Schema::new(fields.clone()));
        let mut all = vec![Field::new(KEY, DataType::Binary, false)];
        all.extend(fields);
        Ok(Self {
            info,
            kernel,
            schema: Arc::new(Schema::new(all)),
            rows,
        })
    }

    /// An empty batch of the table in Tonbo's arrow: what names its schema there.
    pub(super) fn tonbo_empty(&self) -> Result<arrow57::RecordBatch> {
        to_tonbo(&RecordBatch::new_empty(Arc::clone(&self.schema)))
    }

    /// The rows of `(key, record)` pairs, as the table stores them.
    pub(super) fn batch<'a>(
        &self,
        pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Result<RecordBatch> {
        let keys = BinaryArray::from_iter_values(pairs.clone().map(|(k, _)| k));
        let rows = state_rows(&self.rows, &self.info, &self.kernel, pairs)?;
        let mut columns = vec![Arc::new(keys) as _];
        columns.extend(rows.columns().iter().cloned());
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Where the state fields start in a row of the table.
    pub(super) fn first_field(&self) -> usize {
        1 + self.info.key_columns.len()
    }

    /// Fails unless `batch` (read from the table at `location`) has this schema.
    pub(super) fn check(&self, batch: &RecordBatch, location: &str) -> Result<()> {
        let got = batch.schema();
        let same = got.fields().len() == self.schema.fields().len()
            && got
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same {
            return Ok(());
        }
        let describe = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(DataFusionError::Execution(format!(
            "the Tonbo table of state '{}' in {location} has columns [{}], but this build \
             stores the state as [{}]; it was left untouched",
            self.info.state_id,
            describe(&got),
            describe(&self.schema)
        )))
    }
}

/// `filters` as a condition of Tonbo's scan of `table`: each filter whose literal is of (or
/// casts to) its key column's stored type; others are left to the caller, who applies all
/// of them again. `IN` lists longer than [`POINT_READS`] are left too (Tonbo evaluates them
/// slowly).
pub(super) fn scan_filter(table: &TableSchema, filters: &[KeyFilter]) -> Option<Expr> {
    let column = |c: usize| &table.info.key_columns[c];
    let value = |c: usize, v: &ScalarValue| -> Option<TonboScalar> {
        match v.cast_to(&column(c).data_type).ok()? {
            ScalarValue::Utf8(Some(s)) => Some(TonboScalar::Utf8(Some(s))),
            ScalarValue::Int64(Some(i)) => Some(TonboScalar::Int64(Some(i))),
            ScalarValue::UInt64(Some(u)) => Some(TonboScalar::UInt64(Some(u))),
            ScalarValue::Boolean(Some(b)) => Some(TonboScalar::Boolean(Some(b))),
            _ => None,
        }
    };
    let exprs: Vec<Expr> = filters
        .iter()
        .filter_map(|f| match f {
            KeyFilter::Compare {
                column: c,
                op,
                value: v,
            } => {
                let (name, v) = (column(*c).name.clone(), value(*c, v)?);
                Some(match op {
                    Operator::Eq => Expr::eq(name, v),
                    Operator::Lt => Expr::lt(name, v),
                    Operator::LtEq => Expr::lt_eq(name, v),
                    Operator::Gt => Expr::gt(name, v),
                    Operator::GtEq => Expr::gt_eq(name, v),
                    _ => return None,
                })
            }
            KeyFilter::In { column: c, values } if values.len() <= POINT_READS => {
                let name = &column(*c).name;
                let eqs: Option<Vec<Expr>> = values
                    .iter()
                    .map(|v| Some(Expr::eq(name.clone(), value(*c, v)?)))
                    .collect();
                Some(Expr::or(eqs?))
            }
            KeyFilter::In { .. } => None,
        })
        .collect();
    (!exprs.is_empty()).then(|| Expr::and(exprs))
}

/// A state's rows as one scan returned them, indexed by encoded key, and the rows of the
/// commits since ([`Loaded::apply`]): the index points at each key's newest row.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    batches: Vec<RecordBatch>,
    /// (batch, row) of every key.
    index: HashTable<(u32, u32)>,
    hasher: DefaultHashBuilder,
    /// Rows of `batches`, the replaced ones included.
    rows: usize,
}

/// Replaced rows a [`Loaded`] holds, beyond as many as it has keys, before it copies its
/// live rows into one batch.
const REPLACED_SLACK: usize = 4_096;

impl Loaded {
    /// Indexes `batches` (checked against `table`) by key.
    pub(super) fn new(
        table: &TableSchema,
        batches: Vec<RecordBatch>,
        location: &str,
    ) -> Result<Self> {
        let mut loaded = Self::default();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        loaded.index.reserve(rows, |_| 0);
        for batch in batches {
            table.check(&batch, location)?;
            loaded.push(batch);
        }
        Ok(loaded)
    }

    /// Adds `batch` and points the index at its rows.
    fn push(&mut self, batch: RecordBatch) {
        let b = self.batches.len() as u32;
        self.rows += batch.num_rows();
        self.batches.push(batch);
        let Self {
            batches,
            index,
            hasher,
            ..
        } = self;
        let key_of = |(b, r): (u32, u32)| {
            batches[b as usize]
                .column(0)
                .as_binary::<i32>()
                .value(r as usize)
        };
        let keys = batches[b as usize].column(0).as_binary::<i32>();
        for row in 0..keys.len() {
            let key = keys.value(row);
            let at = (b, row as u32);
            match index.entry(
                hasher.hash_one(key),
                |&old| key_of(old) == key,
                |&old| hasher.hash_one(key_of(old)),
            ) {
                Entry::Occupied(mut e) => *e.get_mut() = at,
                Entry::Vacant(e) => _ = e.insert(at),
            }
        }
    }

    /// Takes in the rows a commit wrote to the state (`batch`, checked against `table`): each
    /// replaces its key's row. Once replaced rows outnumber the keys (and
    /// [`REPLACED_SLACK`]), the live rows are copied into one batch.
    pub(super) fn apply(
        &mut self,
        table: &TableSchema,
        batch: RecordBatch,
        location: &str,
    ) -> Result<()> {
        table.check(&batch, location)?;
        self.push(batch);
        if self.rows > 2 * self.index.len() + REPLACED_SLACK {
            let mut live: Vec<(usize, usize)> = self
                .index
                .iter()
                .map(|&(b, r)| (b as usize, r as usize))
                .collect();
            live.sort_unstable();
            let columns = (0..table.schema.fields().len())
                .map(|c| {
                    let arrays: Vec<&dyn Array> =
                        self.batches.iter().map(|b| b.column(c).as_ref()).collect();
                    interleave(&arrays, &live)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let live = RecordBatch::try_new(Arc::clone(&table.schema), columns)?;
            *self = Self::default();
            self.index.reserve(live.num_rows(), |_| 0);
            self.push(live);
        }
        Ok(())
    }

    /// The memory the batches take.
    pub(super) fn memory_size(&self) -> usize {
        self.batches.iter().map(|b| b.get_array_memory_size()).sum()
    }

    fn key(&self, (b, r): (u32, u32)) -> &[u8] {
        self.batches[b as usize]
            .column(0)
            .as_binary::<i32>()
            .value(r as usize)
    }

    /// Where `key`'s row is.
    fn find(&self, key: &[u8]) -> Option<(u32, u32)> {
        self.index
            .find(self.hasher.hash_one(key), |&at| self.key(at) == key)
            .copied()
    }

    /// Hands `found(i, record)` the record of each of `keys` that has a row.
    pub(super) fn records(
        &self,
        table: &TableSchema,
        keys: &[&[u8]],
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut readers: Vec<Option<RowRecords>> = (0..self.batches.len()).map(|_| None).collect();
        let mut record = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let Some((b, r)) = self.find(key) else {
                continue;
            };
            let reader = match &mut readers[b as usize] {
                Some(reader) => reader,
                slot => slot.insert(RowRecords::new(
                    &self.batches[b as usize],
                    table.first_field(),
                    table.kernel.def(),
                )?),
            };
            record.clear();
            reader.record(r as usize, &mut record);
            found(i, &record)?;
        }
        Ok(())
    }

    /// Every (key, record) pair, in key order.
    pub(super) fn pairs(&self, table: &TableSchema) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let readers = self
            .batches
            .iter()
            .map(|b| RowRecords::new(b, table.first_field(), table.kernel.def()))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = self
            .index
            .iter()
            .map(|&(b, r)| {
                let mut record = Vec::new();
                readers[b as usize].record(r as usize, &mut record);
                (self.key((b, r)).to_vec(), record)
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, UInt64Array};

    use super::*;
    use crate::state::KeyColumn;

    fn info(kernel: &str, params: &[&str]) -> StateInfo {
        StateInfo {
            state_id: format!("{kernel}(price)@symbol"),
            kernel: kernel.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
            inputs: vec!["price".into()],
            key_columns: vec![KeyColumn {
                name: "symbol".into(),
                data_type: DataType::Utf8View,
            }],
            order_type: DataType::Int64,
            encoding_version: 1,
            reads_from: 1,
        }
    }

    /// Commits applied to a state read whole leave what a scan of the result would: each
    /// key's newest row, with replaced rows copied out once they outnumber the keys.
    #[test]
    fn applied_commits_replace_rows_and_compact() {
        use datafusion::arrow::compute::take;
        let table = TableSchema::new(&info("ewma", &["0.5"])).unwrap();
        let n = 10_000usize;
        let mut states = table.kernel.new_column();
        states.push_new();
        let mut record = Vec::new();
        states.record(0, &mut record);
        let names: Vec<String> = (0..n).map(|i| format!("K{i:05}")).collect();
        let keys = crate::state::codec::encode_keys(
            &[Arc::new(datafusion::arrow::array::StringArray::from(names)) as _],
            &[crate::state::KeyType::Utf8],
            n,
        )
        .unwrap();
        let base = table
            .batch((0..n).map(|i| (keys.row(i), record.as_slice())))
            .unwrap();
        let applied = table.schema.index_of("rows_applied").unwrap();
        // `base`'s rows `rows`, each with rows_applied = `value(row)`.
        let commit = |rows: &[u32], value: &dyn Fn(usize) -> u64| {
            let indices = datafusion::arrow::array::UInt32Array::from(rows.to_vec());
            let mut columns = base
                .columns()
                .iter()
                .map(|c| take(c, &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()
                .unwrap();
            columns[applied] = Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|&r| value(r as usize)),
            ));
            RecordBatch::try_new(Arc::clone(&table.schema), columns).unwrap()
        };
        let all: Vec<u32> = (0..n as u32).collect();
        let mut loaded = Loaded::new(&table, vec![base.clone()], "/x").unwrap();
        let mut expected = vec![0u64; n];
        for c in 1..=20u64 {
            let rows: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&r| (r as u64 + c).is_multiple_of(3))
                .collect();
            for &r in &rows {
                expected[r as usize] = c;
            }
            loaded.apply(&table, commit(&rows, &|_| c), "/x").unwrap();
        }
        assert!(
            loaded.batches.len() < 10,
            "{} batches",
            loaded.batches.len()
        );
        assert!(loaded.rows <= 2 * n + REPLACED_SLACK);
        let scanned = Loaded::new(&table, vec![commit(&all, &|r| expected[r])], "/x").unwrap();
        assert_eq!(
            loaded.pairs(&table).unwrap(),
            scanned.pairs(&table).unwrap()
        );
    }

    #[test]
    fn rows_round_trip_and_a_foreign_table_is_named() {
        let table = TableSchema::new(&info("ewma", &["0.5"])).unwrap();
        // Key columns are stored as their canonical type.
        assert_eq!(table.schema.field(1).data_type(), &DataType::Utf8);
        // Records -> rows -> records.
        let mut states = table.kernel.new_column();
        states.push_new();
        let mut record = Vec::new();
        states.record(0, &mut record);
        let key = crate::state::codec::encode_keys(
            &[Arc::new(datafusion::arrow::array::StringArray::from(vec!["A"])) as _],
            &[crate::state::KeyType::Utf8],
            1,
        )
        .unwrap();
        let batch = table
            .batch(std::iter::once((key.row(0), record.as_slice())))
            .unwrap();
        let loaded = Loaded::new(&table, vec![batch.clone()], "/x").unwrap();
        let mut got = Vec::new();
        loaded
            .records(&table, &[key.row(0), b"missing"], &mut |i, r| {
                got.push((i, r.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(got, vec![(0, record)]);

        // A table of vwap's columns read as ewma's state.
        let other = TableSchema::new(&info("vwap", &[])).unwrap();
        let foreign = RecordBatch::try_new(
            Arc::clone(&other.schema),
            vec![
                Arc::new(BinaryArray::from_iter_values([b"k"])),
                Arc::new(datafusion::arrow::array::StringArray::from(vec!["A"])),
                Arc::new(Float64Array::from(vec![1.0])),
                Arc::new(Float64Array::from(vec![1.0])),
                Arc::new(UInt64Array::from(vec![1])),
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![Some(1)])),
            ],
        );
        let foreign = foreign.unwrap();
        let err = Loaded::new(&table, vec![foreign], "/state/dir")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("state 'ewma(price)@symbol'") && err.contains("/state/dir"),
            "{err}"
        );
    }
}
