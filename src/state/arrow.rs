//! A kernel's state fields as Arrow columns: the schema `fintech_state` shows and a columnar
//! store keeps ([`state_table_fields`]), a [`FieldSink`] that appends states to it row by row,
//! and the conversions between records and such rows ([`state_rows`], [`RowRecords`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, ListBuilder, RecordBatch, TimestampNanosecondArray,
    TimestampNanosecondBuilder, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampNanosecondType,
    UInt64Type,
};
use datafusion::error::{DataFusionError, Result};

use super::StateInfo;
use super::codec::decode_keys;
use crate::kernels::column::{RecordHeader, encode_header};
use crate::kernels::fields::{Bytes, FieldSink};
use crate::kernels::{BoundKernel, FieldType, KernelDef};

/// The Arrow type of a state field.
pub fn data_type(t: FieldType) -> DataType {
    match t {
        FieldType::F64 | FieldType::OptF64 => DataType::Float64,
        FieldType::I64 => DataType::Int64,
        FieldType::Bool => DataType::Boolean,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        FieldType::ListF64 => DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
    }
}

/// The columns of a kernel's state fields.
pub fn state_fields(def: &KernelDef) -> Vec<Field> {
    def.fields
        .iter()
        .map(|f| {
            let nullable = matches!(f.ty, FieldType::OptF64 | FieldType::Timestamp);
            Field::new(f.name, data_type(f.ty), nullable)
        })
        .collect()
}

/// The columns of a state's table: the key columns under their own names, the state fields,
/// `rows_applied` and `last_applied` (the last ORDER BY value, of the ORDER BY type).
pub fn state_table_fields(info: &StateInfo, def: &KernelDef) -> Vec<Field> {
    let mut fields: Vec<Field> = info
        .key_columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    fields.extend(state_fields(def));
    fields.push(Field::new("rows_applied", DataType::UInt64, false));
    fields.push(Field::new("last_applied", info.order_type.clone(), true));
    fields
}

/// The rows of a state's table (`schema`, of [`state_table_fields`]) for `(key, record)`
/// pairs.
pub fn state_rows<'a>(
    schema: &SchemaRef,
    info: &StateInfo,
    kernel: &BoundKernel,
    pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<RecordBatch> {
    let n = pairs.len();
    let mut keys = Vec::with_capacity(n);
    let mut states = kernel.new_column();
    let mut builders = FieldBuilders::new(kernel.def());
    let mut rows = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    for (slot, (key, record)) in pairs.enumerate() {
        keys.push(key);
        states.push_record(record).map_err(|e| {
            DataFusionError::Execution(format!(
                "stored state of {} cannot be decoded ({e})",
                info.state_id
            ))
        })?;
        states.write_fields(slot, &mut builders);
        rows.push(states.rows(slot));
        last.push(states.last_order(slot));
    }
    let mut columns = decode_keys(&keys, &info.key_columns)?;
    columns.extend(builders.finish());
    columns.push(Arc::new(UInt64Array::from(rows)));
    let last: ArrayRef = Arc::new(Int64Array::from(last));
    columns.push(cast(&last, &info.order_type)?);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The records of the rows of a batch of a state's table: its state-field columns from
/// `first_field` on, then `rows_applied` and `last_applied`.
pub struct RowRecords<'a> {
    def: &'static KernelDef,
    /// The state-field columns, each as its field type's array.
    fields: Vec<FieldColumn<'a>>,
    rows: &'a UInt64Array,
    last: Int64Array,
}

/// A state-field column, downcast once for all its rows.
enum FieldColumn<'a> {
    F64(&'a Float64Array),
    OptF64(&'a Float64Array),
    I64(&'a Int64Array),
    Bool(&'a BooleanArray),
    Timestamp(&'a TimestampNanosecondArray),
    /// A list's offsets and the values they index.
    List(&'a [i32], &'a [f64]),
}

impl<'a> RowRecords<'a> {
    pub fn new(
        batch: &'a RecordBatch,
        first_field: usize,
        def: &'static KernelDef,
    ) -> Result<Self> {
        let n = def.fields.len();
        let columns = batch.columns();
        if columns.len() != first_field + n + 2 {
            return Err(DataFusionError::Internal(format!(
                "a {} state row has {} columns, expected {}",
                def.name,
                columns.len(),
                first_field + n + 2
            )));
        }
        let fields = def
            .fields
            .iter()
            .zip(&columns[first_field..first_field + n])
            .map(|(field, column)| match field.ty {
                FieldType::F64 => FieldColumn::F64(column.as_primitive::<Float64Type>()),
                FieldType::OptF64 => FieldColumn::OptF64(column.as_primitive::<Float64Type>()),
                FieldType::I64 => FieldColumn::I64(column.as_primitive::<Int64Type>()),
                FieldType::Bool => FieldColumn::Bool(column.as_boolean()),
                FieldType::Timestamp => {
                    FieldColumn::Timestamp(column.as_primitive::<TimestampNanosecondType>())
                }
                FieldType::ListF64 => {
                    let list = column.as_list::<i32>();
                    FieldColumn::List(
                        list.value_offsets(),
                        list.values().as_primitive::<Float64Type>().values(),
                    )
                }
            })
            .collect();
        let last = cast(&columns[first_field + n + 1], &DataType::Int64)?;
        Ok(Self {
            def,
            fields,
            rows: columns[first_field + n].as_primitive::<UInt64Type>(),
            last: last.as_primitive::<Int64Type>().clone(),
        })
    }

    /// Appends the record of row `row` to `out`, in the encoding this build writes.
    pub fn record(&self, row: usize, out: &mut Vec<u8>) {
        let header = RecordHeader {
            rows: self.rows.value(row),
            last_order: self.last.is_valid(row).then(|| self.last.value(row)),
            version: self.def.version,
        };
        encode_header(&header, out);
        let mut sink = Bytes(out);
        for column in &self.fields {
            match column {
                FieldColumn::F64(a) => sink.f64(a.value(row)),
                FieldColumn::OptF64(a) => sink.opt_f64(a.is_valid(row).then(|| a.value(row))),
                FieldColumn::I64(a) => sink.i64(a.value(row)),
                FieldColumn::Bool(a) => sink.bool(a.value(row)),
                FieldColumn::Timestamp(a) => sink.timestamp(a.is_valid(row).then(|| a.value(row))),
                FieldColumn::List(offsets, values) => {
                    let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                    sink.list_f64(&[&values[from..to]]);
                }
            }
        }
    }
}

enum Builder {
    F64(Float64Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampNanosecondBuilder),
    List(ListBuilder<Float64Builder>),
}

/// Builds the state-field columns of a kernel, one state (row) at a time: write each state's
/// fields through [`crate::kernels::StateColumn::write_fields`], then [`FieldBuilders::finish`].
pub struct FieldBuilders {
    builders: Vec<Builder>,
    /// The field the next value is for.
    next: usize,
}

impl FieldBuilders {
    pub fn new(def: &KernelDef) -> Self {
        let builders = def
            .fields
            .iter()
            .map(|f| match f.ty {
                FieldType::F64 | FieldType::OptF64 => Builder::F64(Float64Builder::new()),
                FieldType::I64 => Builder::I64(Int64Builder::new()),
                FieldType::Bool => Builder::Bool(BooleanBuilder::new()),
                FieldType::Timestamp => Builder::Timestamp(TimestampNanosecondBuilder::new()),
                FieldType::ListF64 => Builder::List(ListBuilder::new(Float64Builder::new())),
            })
            .collect();
        Self { builders, next: 0 }
    }

    fn builder(&mut self) -> &mut Builder {
        let i = self.next;
        self.next = (self.next + 1) % self.builders.len().max(1);
        &mut self.builders[i]
    }

    pub fn finish(self) -> Vec<ArrayRef> {
        self.builders
            .into_iter()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::F64(mut b) => Arc::new(b.finish()),
                    Builder::I64(mut b) => Arc::new(b.finish()),
                    Builder::Bool(mut b) => Arc::new(b.finish()),
                    Builder::Timestamp(mut b) => Arc::new(b.finish()),
                    Builder::List(mut b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

/// A kernel wrote a field of another type than its definition declares: a bug in the
/// kernel, caught by the state-table tests of every kernel.
fn mismatch(what: &str) -> ! {
    panic!("kernel wrote a {what} where its definition declares another field type")
}

impl FieldSink for FieldBuilders {
    fn f64(&mut self, v: f64) {
        match self.builder() {
            Builder::F64(b) => b.append_value(v),
            _ => mismatch("float"),
        }
    }

    fn opt_f64(&mut self, v: Option<f64>) {
        match self.builder() {
            Builder::F64(b) => b.append_option(v),
            _ => mismatch("float"),
        }
    }

    fn i64(&mut self, v: i64) {
        match self.builder() {
            Builder::I64(b) => b.append_value(v),
            _ => mismatch("integer"),
        }
    }

    fn bool(&mut self, v: bool) {
        match self.builder() {
            Builder::Bool(b) => b.append_value(v),
            _ => mismatch("boolean"),
        }
    }

    fn timestamp(&mut self, v: Option<i64>) {
        match self.builder() {
            Builder::Timestamp(b) => b.append_option(v),
            _ => mismatch("timestamp"),
        }
    }

    fn list_f64(&mut self, parts: &[&[f64]]) {
        match self.builder() {
            Builder::List(b) => {
                for p in parts {
                    b.values().append_slice(p);
                }
                b.append(true);
            }
            _ => mismatch("list"),
        }
    }
}
