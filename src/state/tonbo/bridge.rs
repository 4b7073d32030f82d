//! Record batches between DataFusion's arrow (59) and Tonbo's (57), through the Arrow C Data
//! Interface: the columns' buffers change hands, nothing is copied.
//!
//! Both arrow versions declare the interface's two structs (`FFI_ArrowArray`,
//! `FFI_ArrowSchema`) as `#[repr(C)]` copies of the one C ABI, so a struct one version exports
//! is imported by the other; its release callback, the exporter's, frees the buffers once the
//! importer's arrays are dropped. Field metadata survives, schema-level metadata does not.

use datafusion::arrow::array::{Array, RecordBatch, StructArray};
use datafusion::arrow::ffi as ffi59;
use datafusion::error::{DataFusionError, Result};

/// A record batch of Tonbo's arrow.
pub type TonboBatch = arrow57::RecordBatch;

fn arrow57_error(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `batch` as a batch of Tonbo's arrow, on the same buffers.
pub fn to_tonbo(batch: &RecordBatch) -> Result<TonboBatch> {
    let (array, schema) = ffi59::to_ffi(&StructArray::from(batch.clone()).to_data())?;
    // SAFETY: both structs are the C Data Interface's, laid out alike in both versions
    // (`#[repr(C)]`, same fields); ownership of the exported array passes to the importer.
    let array: arrow57::ffi::FFI_ArrowArray = unsafe { std::mem::transmute(array) };
    let schema: arrow57::ffi::FFI_ArrowSchema = unsafe { std::mem::transmute(schema) };
    // SAFETY: `array` and `schema` were exported together, just above.
    let data = unsafe { arrow57::ffi::from_ffi(array, &schema) }.map_err(arrow57_error)?;
    Ok(arrow57::RecordBatch::from(arrow57::StructArray::from(data)))
}

/// `batch`, a batch of Tonbo's arrow, as one of DataFusion's, on the same buffers.
pub fn from_tonbo(batch: TonboBatch) -> Result<RecordBatch> {
    let data = arrow57::Array::to_data(&arrow57::StructArray::from(batch));
    let (array, schema) = arrow57::ffi::to_ffi(&data).map_err(arrow57_error)?;
    // SAFETY: as in `to_tonbo`, the other way round.
    let array: ffi59::FFI_ArrowArray = unsafe { std::mem::transmute(array) };
    let schema: ffi59::FFI_ArrowSchema = unsafe { std::mem::transmute(schema) };
    // SAFETY: `array` and `schema` were exported together, just above.
    let data = unsafe { ffi59::from_ffi(array, &schema) }?;
    Ok(RecordBatch::from(StructArray::from(data)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Float64Array, Float64Builder, Int64Array, ListBuilder, StringArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Columns of the kinds a state table has: an integer and a string key, a nullable float,
    /// a list of floats with NULL lists and NULL items, sliced so that offsets are not zero.
    fn sample(rows: usize) -> RecordBatch {
        let mut window = ListBuilder::new(Float64Builder::new());
        for i in 0..rows {
            if i % 7 == 3 {
                window.append_null();
                continue;
            }
            for j in 0..i % 5 {
                if (i + j) % 11 == 0 {
                    window.values().append_null();
                } else {
                    window.values().append_value(i as f64 + j as f64 / 8.0);
                }
            }
            window.append(true);
        }
        let list_type = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("sum", DataType::Float64, true),
            Field::new("window", list_type, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then(|| format!("s{i}"))),
                )),
                Arc::new(Float64Array::from_iter(
                    (0..rows).map(|i| (i % 4 != 0).then_some(i as f64 * 0.5)),
                )),
                Arc::new(window.finish()),
            ],
        )
        .unwrap()
        .slice(3, rows - 5)
    }

    #[test]
    fn batches_cross_both_ways_unchanged_and_uncopied() {
        let batch = sample(1000);
        let theirs = to_tonbo(&batch).unwrap();
        assert_eq!(theirs.num_rows(), batch.num_rows());
        assert_eq!(theirs.num_columns(), 4);
        let back = from_tonbo(theirs).unwrap();
        assert_eq!(back, batch);
        // The floats are the very buffer the original holds.
        let ptr = |b: &RecordBatch| {
            let a = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            a.values().as_ptr()
        };
        assert_eq!(ptr(&back), ptr(&batch));
    }
}
