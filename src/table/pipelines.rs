//! `fintech_pipelines()` and `fintech_states(pipeline)`: what is stored, and how much.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;

use super::{arity, session_store, string_arg};
use crate::state::StoreRegistry;
use crate::state::codec::describe_key_columns;

#[derive(Debug)]
pub struct PipelinesFunction {
    registry: Arc<StoreRegistry>,
}

impl PipelinesFunction {
    pub fn new(registry: Arc<StoreRegistry>) -> Self {
        Self { registry }
    }
}

impl TableFunctionImpl for PipelinesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("fintech_pipelines", "fintech_pipelines()", args.exprs(), 0)?;
        let store = session_store(&self.registry, args.session())?;
        let pipelines = store.pipelines()?;
        let n = pipelines.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("pipeline", DataType::Utf8, false),
            Field::new("backend", DataType::Utf8, false),
            Field::new("location", DataType::Utf8, false),
            Field::new("commits", DataType::UInt64, false),
            Field::new(
                "last_commit_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("last_commit_tag", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                pipelines.iter().map(|p| &p.name),
            )),
            Arc::new(StringArray::from(vec![store.backend(); n])),
            Arc::new(StringArray::from(vec![store.location(); n])),
            Arc::new(UInt64Array::from_iter_values(
                pipelines.iter().map(|p| p.commits),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    pipelines
                        .iter()
                        .map(|p| p.last_commit_micros)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(
                pipelines
                    .iter()
                    .map(|p| p.last_commit_tag.clone())
                    .collect::<Vec<_>>(),
            )),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[derive(Debug)]
pub struct StatesFunction {
    registry: Arc<StoreRegistry>,
}

impl StatesFunction {
    pub fn new(registry: Arc<StoreRegistry>) -> Self {
        Self { registry }
    }
}

const STATES_USAGE: &str = "fintech_states('pipeline')";

impl TableFunctionImpl for StatesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("fintech_states", STATES_USAGE, args.exprs(), 1)?;
        let pipeline = string_arg("fintech_states", STATES_USAGE, args.exprs(), 0)?;
        let store = session_store(&self.registry, args.session())?;
        let states = store.states(&pipeline)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("pipeline", DataType::Utf8, false),
            Field::new("state_id", DataType::Utf8, false),
            Field::new("kernel", DataType::Utf8, false),
            Field::new("params", DataType::Utf8, false),
            Field::new("inputs", DataType::Utf8, false),
            Field::new("key_columns", DataType::Utf8, false),
            Field::new("order_type", DataType::Utf8, false),
            Field::new("encoding_version", DataType::UInt32, false),
            Field::new("keys", DataType::UInt64, false),
            Field::new("bytes", DataType::UInt64, false),
        ]));
        let text = |f: &dyn Fn(&crate::state::StateSummary) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(states.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            text(&|_| pipeline.clone()),
            text(&|s| s.info.state_id.clone()),
            text(&|s| s.info.kernel.clone()),
            text(&|s| s.info.params.join(", ")),
            text(&|s| s.info.inputs.join(", ")),
            text(&|s| describe_key_columns(&s.info.key_columns)),
            text(&|s| s.info.order_type.to_string()),
            Arc::new(UInt32Array::from_iter_values(
                states.iter().map(|s| s.info.encoding_version),
            )),
            Arc::new(UInt64Array::from_iter_values(states.iter().map(|s| s.keys))),
            Arc::new(UInt64Array::from_iter_values(
                states.iter().map(|s| s.bytes),
            )),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
