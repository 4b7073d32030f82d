//! `FintechSequenceExec`: appends the position of every row in its input stream, so that a
//! sort by (key, ORDER BY, position) keeps rows with equal ORDER BY values in input order
//! (DataFusion's sort is not stable).
//!
//! The position is `partition << 40 | row number within the partition`: unique across
//! partitions, and ordered like the streams a sort-preserving merge of the partitions would
//! take ties from.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{Stream, StreamExt};

/// The name of the appended column.
pub const SEQUENCE_COLUMN: &str = "__fintech_seq";

/// Bits of a position taken by the row number within a partition.
const ROW_BITS: u32 = 40;

#[derive(Debug)]
pub struct SequenceExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl SequenceExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let mut fields = input.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(
            SEQUENCE_COLUMN,
            DataType::UInt64,
            false,
        )));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input.schema().metadata().clone(),
        ));
        let seq: Arc<dyn PhysicalExpr> =
            Arc::new(Column::new(SEQUENCE_COLUMN, schema.fields().len() - 1));
        // The input's orderings still hold, and each partition is ordered by position.
        let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
        let input_eq = input.equivalence_properties();
        eq.add_orderings(input_eq.oeq_class().iter().cloned());
        eq.add_ordering(
            LexOrdering::new([PhysicalSortExpr::new_default(seq)])
                .into_iter()
                .flatten(),
        );
        let properties = PlanProperties::new(
            eq,
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Ok(Self {
            input,
            schema,
            properties: Arc::new(properties),
        })
    }

    /// The index of the position column.
    pub fn column_index(&self) -> usize {
        self.schema.fields().len() - 1
    }
}

impl DisplayAs for SequenceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FintechSequenceExec: {SEQUENCE_COLUMN}")
    }
}

impl ExecutionPlan for SequenceExec {
    fn name(&self) -> &str {
        "FintechSequenceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // A round-robin repartition below would deal consecutive batches to different
        // partitions, and positions would no longer follow the input.
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "FintechSequenceExec takes one input".into(),
            ));
        }
        Ok(Arc::new(Self::try_new(children.swap_remove(0))?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(SequenceStream {
            input: self.input.execute(partition, context)?,
            schema: Arc::clone(&self.schema),
            next: (partition as u64) << ROW_BITS,
        }))
    }
}

struct SequenceStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    next: u64,
}

impl Stream for SequenceStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.input.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let n = batch.num_rows() as u64;
                let seq: ArrayRef =
                    Arc::new(UInt64Array::from_iter_values(this.next..this.next + n));
                this.next += n;
                let mut columns = batch.columns().to_vec();
                columns.push(seq);
                Poll::Ready(Some(
                    RecordBatch::try_new(Arc::clone(&this.schema), columns).map_err(Into::into),
                ))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for SequenceStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
