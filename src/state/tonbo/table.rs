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
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
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
    fn first_field(&self) -> usize {
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

/// A state's rows as one scan returned them, indexed by encoded key.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    batches: Vec<RecordBatch>,
    /// (batch, row) of every key.
    index: HashTable<(u32, u32)>,
    hasher: DefaultHashBuilder,
}

impl Loaded {
    /// Indexes `batches` (checked against `table`) by key.
    pub(super) fn new(
        table: &TableSchema,
        batches: Vec<RecordBatch>,
        location: &str,
    ) -> Result<Self> {
        let mut loaded = Self {
            batches,
            ..Default::default()
        };
        let rows: usize = loaded.batches.iter().map(|b| b.num_rows()).sum();
        loaded.index.reserve(rows, |_| 0);
        for (b, batch) in loaded.batches.iter().enumerate() {
            table.check(batch, location)?;
            let keys = batch.column(0).as_binary::<i32>();
            for row in 0..keys.len() {
                let hash = loaded.hasher.hash_one(keys.value(row));
                let (batches, hasher) = (&loaded.batches, &loaded.hasher);
                loaded
                    .index
                    .insert_unique(hash, (b as u32, row as u32), |&(b, r)| {
                        hasher.hash_one(
                            batches[b as usize]
                                .column(0)
                                .as_binary::<i32>()
                                .value(r as usize),
                        )
                    });
            }
        }
        Ok(loaded)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
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
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.batches {
            let reader = RowRecords::new(batch, table.first_field(), table.kernel.def())?;
            let keys = batch.column(0).as_binary::<i32>();
            for row in 0..batch.num_rows() {
                let mut record = Vec::new();
                reader.record(row, &mut record);
                out.push((keys.value(row).to_vec(), record));
            }
        }
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
