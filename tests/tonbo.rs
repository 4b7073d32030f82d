//! The `tonbo` crate as this build links it: a batch of state rows, moved to Tonbo's arrow by
//! the bridge, is stored on local disk, survives reopening, and comes back from a key-range
//! scan unchanged.
#![cfg(feature = "tonbo")]

use std::sync::Arc;

use datafusion::arrow::array::{
    Float64Array, Float64Builder, Int64Array, ListBuilder, RecordBatch,
};
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion_fintech::state::tonbo::bridge::{from_tonbo, to_tonbo};
use tonbo::prelude::{DbBuilder, Expr, ScalarValue};

/// Rolling-state rows: key, rows applied, the window and a sum.
fn states(keys: i64) -> RecordBatch {
    let mut window = ListBuilder::new(Float64Builder::new());
    for k in 0..keys {
        for j in 0..(k % 4) {
            window.values().append_value(k as f64 + j as f64 * 0.25);
        }
        window.append(true);
    }
    let list_type = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("window", list_type, true),
        Field::new("sum", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..keys)),
            Arc::new(Int64Array::from_iter_values((0..keys).map(|k| k % 4))),
            Arc::new(window.finish()),
            Arc::new(Float64Array::from_iter_values(
                (0..keys).map(|k| k as f64 / 3.0),
            )),
        ],
    )
    .unwrap()
}

fn sorted_by_key(batches: Vec<RecordBatch>) -> RecordBatch {
    let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
    let order = sort_to_indices(batch.column(0), None, None).unwrap();
    take_record_batch(&batch, &order).unwrap()
}

// Tonbo's file system layer needs a multi-threaded runtime (it blocks in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_rows_round_trip_through_tonbo_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let batch = states(1000);
    let theirs = to_tonbo(&batch).unwrap();
    let schema = theirs.schema();
    let open = || async {
        DbBuilder::from_schema_key_name(Arc::clone(&schema), "k")
            .unwrap()
            .on_disk(dir.path())
            .unwrap()
            .open()
            .await
            .unwrap()
    };
    open().await.ingest(theirs).await.unwrap();
    let db = open().await;
    let range = Expr::and(vec![
        Expr::gt_eq("k", ScalarValue::from(100_i64)),
        Expr::lt("k", ScalarValue::from(200_i64)),
    ]);
    let scan = |filter: Expr| {
        let db = &db;
        async move {
            let batches = db.scan().filter(filter).collect().await.unwrap();
            sorted_by_key(
                batches
                    .into_iter()
                    .map(|b| from_tonbo(b).unwrap())
                    .collect(),
            )
        }
    };
    assert_eq!(scan(range).await, batch.slice(100, 100));
    assert_eq!(scan(Expr::is_not_null("k")).await, batch);
}
