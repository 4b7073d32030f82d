//! `FintechOrderedConcatExec`: one stream, in ORDER BY order, out of file groups that follow
//! each other in that order, each group decoded on a task of its own.
//!
//! DataFusion reads a large Parquet file on several cores by splitting it into byte ranges,
//! one file group each; to give a consumer that needs ORDER BY order one ordered stream again,
//! it merges the groups row by row (a sort-preserving merge, ~20 ns a row, plus copying every
//! row into new batches). When the groups are consecutive stretches of the input — ranges of
//! one file in file order, or files whose ORDER BY ranges follow each other — the ordered
//! stream is simply the groups one after the other. This node returns group 0's batches, then
//! group 1's, and so on, while the next groups (as many as `target_partitions`, counting the
//! one in its turn) are decoded ahead, each into a buffer of at most its share of
//! [`READ_AHEAD_BYTES`]: the decoding runs on every core without a merge, and the memory it
//! takes stays bounded (a full buffer pauses its group until its turn comes). The read-ahead
//! is reserved from the query's memory pool, at most an eighth of a limited pool.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::operator::with_batch_rows;

/// Memory the groups decoded ahead of their turn may take, all together. A few batches per
/// group keep the other cores decoding; more only holds fresh memory (10M rows from one file
/// in two pieces: peak RSS 142–168 MB with 32 MiB, 220–237 MB with 256 MiB, in the same time).
pub const READ_AHEAD_BYTES: usize = 32 << 20;

/// Largest batch the pieces are read in, by the widths of its columns (32 bytes a value for
/// columns of varying width), unless the session's batch size is larger.
const BATCH_BYTES: usize = 8 << 20;

/// Batches a group being read in its turn holds before the consumer takes them.
const IN_TURN_BATCHES: usize = 2;

/// Concatenates the partitions of its input, in partition order, into one partition.
#[derive(Debug)]
pub struct OrderedConcatExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl OrderedConcatExec {
    /// `input`'s partitions must follow each other in its ordering: the caller checks it.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            input.equivalence_properties().clone(),
            Partitioning::UnknownPartitioning(1),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for OrderedConcatExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FintechOrderedConcatExec: partitions={}, read_ahead_bytes={READ_AHEAD_BYTES}",
            self.input.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for OrderedConcatExec {
    fn name(&self) -> &str {
        "FintechOrderedConcatExec"
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
                "FintechOrderedConcatExec takes one input".into(),
            ));
        }
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "FintechOrderedConcatExec has one partition, asked for {partition}"
            )));
        }
        let groups = self.input.output_partitioning().partition_count();
        // Groups read at once: the one in its turn and those decoded ahead of theirs.
        let window = context
            .session_config()
            .target_partitions()
            .clamp(2, groups.max(2));
        // The read-ahead is reserved from the query's pool; under a limit it takes at most
        // an eighth of it, and where even that is refused, a group ahead of its turn holds
        // one batch at most.
        let pool = context.memory_pool();
        let mut wanted = READ_AHEAD_BYTES;
        if let MemoryLimit::Finite(limit) = pool.memory_limit() {
            wanted = wanted.min(limit / 8);
        }
        let reservation = MemoryConsumer::new("FintechOrderedConcatExec").register(pool);
        if reservation.try_grow(wanted).is_err() {
            wanted = 0;
        }
        let share = wanted / (window - 1);
        // A hash repartition deals each batch to `target_partitions` outputs; batches of that
        // many times the batch size leave each output a share its coalescer passes on
        // (shares up to half the batch size are copied into new batches). Wide rows keep the
        // session's batch size or batches of at most `BATCH_BYTES`.
        let config = context.session_config();
        let width: usize = self
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().primitive_width().unwrap_or(32))
            .sum();
        let rows = (config.batch_size() * config.target_partitions())
            .min(BATCH_BYTES / width.max(1))
            .max(config.batch_size());
        let input_context = with_batch_rows(&context, rows);
        let streams = (0..groups)
            .map(|g| self.input.execute(g, Arc::clone(&input_context)).map(Some))
            .collect::<Result<Vec<_>>>()?;
        let mut concat = ConcatStream {
            schema: self.schema(),
            streams,
            share,
            receivers: (0..groups).map(|_| None).collect(),
            current: 0,
            tasks: Vec::with_capacity(groups),
            _reservation: reservation,
        };
        for g in 0..window.min(groups) {
            concat.start(g);
        }
        Ok(Box::pin(concat))
    }
}

/// Kibibytes, rounded up, as semaphore permits (at most `u32::MAX`).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).clamp(1, u32::MAX as usize)
}

/// What a group's reading task sends: a batch (with the read-ahead it takes), then the end
/// of the group, so that a task that died is not taken for a group that ended.
enum Item {
    Batch(Result<RecordBatch>, Option<OwnedSemaphorePermit>),
    End,
}

struct ConcatStream {
    schema: SchemaRef,
    /// The groups' streams, until their reading task starts.
    streams: Vec<Option<SendableRecordBatchStream>>,
    /// Read-ahead bytes of each group decoded ahead of its turn.
    share: usize,
    /// The channel of each group whose reading task started.
    receivers: Vec<Option<mpsc::Receiver<Item>>>,
    /// The group whose turn it is.
    current: usize,
    /// The reading tasks, aborted when the stream is dropped.
    tasks: Vec<SpawnedTask<()>>,
    _reservation: MemoryReservation,
}

impl ConcatStream {
    /// Starts the task reading group `g`, if it has not started.
    fn start(&mut self, g: usize) {
        let Some(mut stream) = self.streams.get_mut(g).and_then(Option::take) else {
            return;
        };
        // The group in its turn goes through a channel of a few batches. A group ahead of
        // its turn buffers up to its share of the read-ahead (at least one batch) and waits.
        let share = self.share;
        let budget = (g > self.current).then(|| Arc::new(Semaphore::new(kib(share))));
        let capacity = if budget.is_some() {
            1 << 16
        } else {
            IN_TURN_BATCHES
        };
        let (tx, rx) = mpsc::channel(capacity);
        self.receivers[g] = Some(rx);
        self.tasks.push(SpawnedTask::spawn(async move {
            while let Some(item) = stream.next().await {
                let permit = match (&budget, &item) {
                    (Some(budget), Ok(batch)) => {
                        let want = kib(batch.get_array_memory_size()).min(kib(share));
                        match Arc::clone(budget).acquire_many_owned(want as u32).await {
                            Ok(permit) => Some(permit),
                            Err(_) => return,
                        }
                    }
                    _ => None,
                };
                let failed = item.is_err();
                if tx.send(Item::Batch(item, permit)).await.is_err() || failed {
                    return;
                }
            }
            let _ = tx.send(Item::End).await;
        }));
    }
}

impl Stream for ConcatStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while this.current < this.receivers.len() {
            let g = this.current;
            if this.receivers[g].is_none() {
                this.start(g);
            }
            let Some(receiver) = this.receivers[g].as_mut() else {
                return Poll::Ready(Some(Err(DataFusionError::Internal(format!(
                    "FintechOrderedConcatExec lost input partition {g}"
                )))));
            };
            match receiver.poll_recv(cx) {
                // The permit goes with the batch: its bytes are the consumer's now.
                Poll::Ready(Some(Item::Batch(item, _permit))) => return Poll::Ready(Some(item)),
                Poll::Ready(Some(Item::End)) => {
                    // The group's place in the window goes to the next group not started.
                    this.receivers[g] = None;
                    this.current += 1;
                    if let Some(next) = this.streams.iter().position(Option::is_some) {
                        this.start(next);
                    }
                }
                Poll::Ready(None) => {
                    this.current = this.receivers.len();
                    return Poll::Ready(Some(Err(DataFusionError::Execution(format!(
                        "the task reading input partition {g} ended before its last batch"
                    )))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(None)
    }
}

impl RecordBatchStream for ConcatStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
