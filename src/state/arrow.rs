//! A kernel's state fields as Arrow columns: the schema `fintech_state` shows and a columnar
//! store keeps, and a [`FieldSink`] that appends states to it row by row.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

use crate::kernels::fields::FieldSink;
use crate::kernels::{FieldType, KernelDef};

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
