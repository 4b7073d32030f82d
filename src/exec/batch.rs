//! Between Arrow and the kernels: a kernel call's arguments of one batch as float slices and
//! one validity bitmap, and a fold's outputs as a Float64 column.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::error::Result;

use crate::kernels::{Bits, FoldInput, FoldOutput, LateRows};

/// The column arguments of one kernel call over one batch.
pub struct KernelInputs {
    arrays: Vec<Float64Array>,
    /// Rows where every argument is non-NULL; `None`: all rows.
    valid: Option<NullBuffer>,
}

impl KernelInputs {
    /// The arguments, cast to DOUBLE.
    pub fn new(arrays: &[ArrayRef]) -> Result<Self> {
        let arrays: Vec<Float64Array> = arrays
            .iter()
            .map(|a| {
                let a = if a.data_type() == &DataType::Float64 {
                    Arc::clone(a)
                } else {
                    cast(a, &DataType::Float64)?
                };
                Ok(a.as_primitive::<Float64Type>().clone())
            })
            .collect::<Result<_>>()?;
        let valid = arrays
            .iter()
            .fold(None, |acc: Option<NullBuffer>, a| {
                NullBuffer::union(acc.as_ref(), a.nulls())
            })
            .filter(|n| n.null_count() > 0);
        Ok(Self { arrays, valid })
    }

    pub fn slices(&self) -> Vec<&[f64]> {
        self.arrays.iter().map(|a| a.values().as_ref()).collect()
    }

    /// The fold's view of these arguments, with `columns` from [`KernelInputs::slices`].
    pub fn fold_input<'a>(
        &'a self,
        columns: &'a [&'a [f64]],
        order: Option<&'a [i64]>,
        late_rows: LateRows,
    ) -> FoldInput<'a> {
        FoldInput {
            columns,
            valid: self.valid.as_ref().map(|v| Bits {
                bytes: v.buffer().as_slice(),
                offset: v.offset(),
            }),
            order,
            late_rows,
        }
    }
}

/// A fold's outputs as a Float64 column, without copying the values.
pub fn output_array(out: FoldOutput) -> ArrayRef {
    let rows = out.values.len();
    let nulls = (out.set < rows)
        .then(|| NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(out.valid), 0, rows)));
    Arc::new(Float64Array::new(ScalarBuffer::from(out.values), nulls))
}
