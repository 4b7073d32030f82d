//! The keyed-state operator: evaluates every fintech kernel of one window clause in a single
//! pass over its input, keeping one state per key and kernel.
//!
//! Per input batch: encode the PARTITION BY values of every row, load the states of keys not
//! seen yet in one store call per kernel, fold the rows in input order, and append one output
//! column per kernel. When the input ends, the dirty states go to the [`QueryRun`], which
//! commits the whole query at once.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Float64Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::windows::{WindowAggExec, WindowExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
};
use futures::{Stream, StreamExt};

use super::commit::{KeptSets, QueryRun};
use super::working_set::{Held, WorkingSet};
use crate::config::{FintechConfig, LateRows};
use crate::kernels::Kernel;
use crate::state::codec::{EncodedKeys, RecordHeader, decode_record, encode_keys, encode_record};
use crate::state::{KeyType, Put, StateInfo, StoreRegistry};

/// Encoded bytes an eviction stages per store call.
const EVICTION_CHUNK_BYTES: usize = 4 << 20;

/// One kernel call of the window clause.
#[derive(Debug, Clone)]
pub struct KernelCall {
    pub kernel: Kernel,
    /// The column inputs (literal parameters are bound in `kernel`).
    pub inputs: Vec<Arc<dyn PhysicalExpr>>,
    pub info: StateInfo,
}

/// Replaces a window node whose functions are all fintech kernels.
#[derive(Debug)]
pub struct KeyedStateExec {
    input: Arc<dyn ExecutionPlan>,
    /// The window node's expressions, kept to derive output properties for a new input.
    window_exprs: Vec<Arc<dyn WindowExpr>>,
    calls: Vec<KernelCall>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<KeyType>,
    order_by: Arc<dyn PhysicalExpr>,
    required_ordering: Option<OrderingRequirements>,
    required_distribution: InputDistributionRequirements,
    /// Settings at planning time, for EXPLAIN; execution reads the task's settings.
    planned: FintechConfig,
    registry: Arc<StoreRegistry>,
    kept_sets: Arc<KeptSets>,
    /// False under a LIMIT: whether such a query reaches the end of its input depends on
    /// timing, so it reads the pipeline's state but never commits.
    commits: bool,
    /// The current run, until all its partitions have started.
    run: Mutex<Option<Arc<QueryRun>>>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl KeyedStateExec {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        window_exprs: Vec<Arc<dyn WindowExpr>>,
        calls: Vec<KernelCall>,
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<KeyType>,
        order_by: Arc<dyn PhysicalExpr>,
        required_ordering: Option<OrderingRequirements>,
        required_distribution: InputDistributionRequirements,
        planned: FintechConfig,
        registry: Arc<StoreRegistry>,
        kept_sets: Arc<KeptSets>,
    ) -> Result<Self> {
        // Output = input columns + one column per kernel, rows in input order: exactly what
        // DataFusion's window node derives. Only the emission differs (we stream).
        let properties = WindowAggExec::try_new(window_exprs.clone(), Arc::clone(&input), true)?
            .properties()
            .as_ref()
            .clone()
            .with_emission_type(EmissionType::Incremental);
        Ok(Self {
            input,
            window_exprs,
            calls,
            partition_by,
            key_types,
            order_by,
            required_ordering,
            required_distribution,
            planned,
            registry,
            kept_sets,
            commits: true,
            run: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        })
    }

    /// The same operator, reading its pipeline but never committing (used under a LIMIT).
    pub fn read_only(&self) -> Result<Self> {
        let mut exec = self.clone_with_input(Arc::clone(&self.input))?;
        exec.commits = false;
        Ok(exec)
    }

    fn clone_with_input(&self, input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let mut exec = KeyedStateExec::try_new(
            input,
            self.window_exprs.clone(),
            self.calls.clone(),
            self.partition_by.clone(),
            self.key_types.clone(),
            Arc::clone(&self.order_by),
            self.required_ordering.clone(),
            self.required_distribution.clone(),
            self.planned.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.kept_sets),
        )?;
        exec.commits = self.commits;
        Ok(exec)
    }

    pub fn calls(&self) -> &[KernelCall] {
        &self.calls
    }

    fn states(&self) -> Vec<StateInfo> {
        self.calls.iter().map(|c| c.info.clone()).collect()
    }

    /// The run this partition belongs to: the current one, or a new one if this partition
    /// was already started (the plan is executed again).
    ///
    /// The operator holds the run until every partition has claimed it: DataFusion may run
    /// partition 0 to its end before it even executes partition 1, and the run must outlive
    /// that gap or partition 1 would start a run of its own and neither would commit.
    fn run_for(&self, partition: usize, config: &FintechConfig) -> Result<Arc<QueryRun>> {
        // Another partition may be starting the run, waiting for the pipeline.
        let mut current = match self.run.try_lock() {
            Ok(current) => current,
            Err(_) => {
                crate::state::wait_in_place(|| self.run.lock()).unwrap_or_else(|e| e.into_inner())
            }
        };
        let run = match current.take() {
            Some(run) if run.claim(partition) => run,
            _ => {
                let partitions = self.properties.output_partitioning().partition_count();
                let run = Arc::new(QueryRun::start(
                    config,
                    &self.registry,
                    &self.kept_sets,
                    &self.states(),
                    partitions,
                    self.commits,
                )?);
                run.claim(partition);
                run
            }
        };
        if !run.all_claimed() {
            *current = Some(Arc::clone(&run));
        }
        Ok(run)
    }
}

impl DisplayAs for KeyedStateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let states: Vec<_> = self
            .calls
            .iter()
            .map(|c| c.info.state_id.as_str())
            .collect();
        let pipeline = if self.planned.has_pipeline() {
            let mode = if self.commits {
                ""
            } else {
                ", read-only under LIMIT"
            };
            format!(
                "{} ({}{mode})",
                self.planned.pipeline, self.planned.state_backend
            )
        } else {
            "none (per-query state)".to_string()
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "FintechKeyedStateExec: kernels=[{}], pipeline={pipeline}, late_rows={}",
                states.join(", "),
                self.planned.late_rows
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "kernels={}", states.join(", "))?;
                write!(f, "pipeline={pipeline}")
            }
        }
    }
}

impl ExecutionPlan for KeyedStateExec {
    fn name(&self) -> &str {
        "FintechKeyedStateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.required_distribution.clone()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.required_ordering.clone()]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let exprs = self
            .partition_by
            .iter()
            .chain(std::iter::once(&self.order_by))
            .chain(self.calls.iter().flat_map(|c| c.inputs.iter()));
        for e in exprs {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "FintechKeyedStateExec takes one input".into(),
            ));
        }
        Ok(Arc::new(self.clone_with_input(children.swap_remove(0))?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let config = FintechConfig::from_session(context.session_config().options());
        let run = self.run_for(partition, &config)?;
        let input = self.input.execute(partition, context)?;
        let metrics = OperatorMetrics {
            keys_loaded: MetricBuilder::new(&self.metrics).counter("keys_loaded", partition),
            keys_stored: MetricBuilder::new(&self.metrics).counter("keys_stored", partition),
            bytes_loaded: MetricBuilder::new(&self.metrics).counter("bytes_loaded", partition),
            bytes_stored: MetricBuilder::new(&self.metrics).counter("bytes_stored", partition),
            late_rows: MetricBuilder::new(&self.metrics).counter("late_rows", partition),
            evictions: MetricBuilder::new(&self.metrics).counter("evictions", partition),
            keys_kept: MetricBuilder::new(&self.metrics).counter("keys_kept", partition),
            load_time: MetricBuilder::new(&self.metrics).subset_time("load_time", partition),
            stage_time: MetricBuilder::new(&self.metrics).subset_time("stage_time", partition),
            commit_time: MetricBuilder::new(&self.metrics).subset_time("commit_time", partition),
            fold_time: MetricBuilder::new(&self.metrics).subset_time("fold_time", partition),
        };
        let set = run
            .take_working_set(partition)
            .unwrap_or_else(|| WorkingSet::new(self.calls.len()));
        metrics.keys_kept.add(set.len());
        Ok(Box::pin(KeyedStateStream {
            schema: self.schema(),
            input,
            folder: Folder {
                partition,
                budget: run.stages().then(|| {
                    config.working_set_bytes
                        / self
                            .properties
                            .output_partitioning()
                            .partition_count()
                            .max(1)
                }),
                calls: self.calls.clone(),
                partition_by: self.partition_by.clone(),
                key_types: self.key_types.clone(),
                order_by: Arc::clone(&self.order_by),
                late_rows: config.late_rows,
                // The index entry, key offset and dirty flag, and the states as held.
                slot_size_hint: 16 + std::mem::size_of::<Held>() * self.calls.len(),
                growth_per_row: self.calls.iter().map(|c| c.kernel.growth_per_row()).sum(),
                set,
                run,
                metrics,
            },
            done: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct OperatorMetrics {
    keys_loaded: Count,
    keys_stored: Count,
    bytes_loaded: Count,
    bytes_stored: Count,
    late_rows: Count,
    evictions: Count,
    /// Keys the partition started with, kept in memory from the pipeline's last query.
    keys_kept: Count,
    /// Reading states from the store.
    load_time: Time,
    /// Staging evicted states.
    stage_time: Time,
    /// Encoding the final states and, in the last partition, the store's commit.
    commit_time: Time,
    fold_time: Time,
}

/// The per-partition state of the operator.
struct Folder {
    partition: usize,
    /// Working-set budget of this partition when the store stages; `None`: unbounded.
    budget: Option<usize>,
    calls: Vec<KernelCall>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<KeyType>,
    order_by: Arc<dyn PhysicalExpr>,
    late_rows: LateRows,
    /// Estimated memory of a key's index entry and slot, besides the key and the states.
    slot_size_hint: usize,
    /// Upper bound of how much one row grows its key's states.
    growth_per_row: usize,
    /// The keys seen and their states.
    set: WorkingSet,
    run: Arc<QueryRun>,
    metrics: OperatorMetrics,
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

fn as_f64(array: ArrayRef) -> Result<Float64Array> {
    let array = if array.data_type() == &DataType::Float64 {
        array
    } else {
        cast(&array, &DataType::Float64)?
    };
    Ok(array.as_primitive::<Float64Type>().clone())
}

impl Folder {
    fn process(&mut self, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let key_arrays: Vec<ArrayRef> = self
            .partition_by
            .iter()
            .map(|e| evaluate(e, batch))
            .collect::<Result<_>>()?;
        let keys = encode_keys(&key_arrays, &self.key_types, n)?;

        let order = cast(&evaluate(&self.order_by, batch)?, &DataType::Int64)?;
        let order = order.as_primitive::<Int64Type>();
        if order.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "NULL in the ORDER BY column {} of a fintech kernel: every row needs an \
                 ORDER BY value to be placed in its key's sequence",
                self.order_by
            )));
        }
        let order = order.values();

        let inputs: Vec<Vec<Float64Array>> = self
            .calls
            .iter()
            .map(|c| {
                c.inputs
                    .iter()
                    .map(|e| as_f64(evaluate(e, batch)?))
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;

        // Map every row to its key's slot; collect keys never seen by this partition. Their
        // slots are numbered in the order of their first rows.
        let first_new = self.set.len();
        let mut row_slots = Vec::with_capacity(n);
        let mut new_rows: Vec<usize> = Vec::new();
        for i in 0..n {
            let key = keys.row(i);
            let (slot, new) = self.set.slot(key);
            if new {
                self.set.bytes += key.len() + self.slot_size_hint;
                new_rows.push(i);
            }
            row_slots.push(slot);
        }
        if !new_rows.is_empty() {
            self.load(&new_rows, &keys)?;
        }
        debug_assert_eq!(self.set.len(), first_new + new_rows.len());

        let _timer = self.metrics.fold_time.timer();
        let mut outputs: Vec<Float64Builder> = self
            .calls
            .iter()
            .map(|_| Float64Builder::with_capacity(n))
            .collect();
        let mut row = [0.0f64; 4];
        let mut late = 0usize;
        for i in 0..n {
            let (_, states, dirty) = self.set.slot_mut(row_slots[i] as usize);
            let ts = order[i];
            for (c, call) in self.calls.iter().enumerate() {
                let cols = &inputs[c];
                let out = &mut outputs[c];
                if cols.iter().any(|a| a.is_null(i)) {
                    out.append_null();
                    continue;
                }
                let Held { header, state, .. } = &mut states[c];
                if let Some(last) = header.last_order
                    && ts < last
                {
                    late += 1;
                    match self.late_rows {
                        LateRows::Skip => {
                            out.append_null();
                            continue;
                        }
                        LateRows::Error => {
                            return Err(late_row_error(&call.info.state_id, ts, last));
                        }
                        LateRows::Apply => {}
                    }
                }
                for (v, a) in row.iter_mut().zip(cols) {
                    *v = a.value(i);
                }
                out.append_option(call.kernel.update(state, &row[..cols.len()]));
                header.rows += 1;
                header.last_order = Some(header.last_order.map_or(ts, |l| l.max(ts)));
                *dirty = true;
            }
        }
        self.metrics.late_rows.add(late);
        self.set.bytes += n * self.growth_per_row;

        let mut columns = batch.columns().to_vec();
        columns.extend(outputs.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        drop(_timer);
        if self.budget.is_some_and(|b| self.set.bytes > b) {
            self.evict()?;
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Stages every dirty state in the store and forgets all cached keys; a key seen again
    /// is loaded again (the store returns what was staged).
    fn evict(&mut self) -> Result<()> {
        let stage_time = self.metrics.stage_time.clone();
        let _timer = stage_time.timer();
        // In chunks: what an eviction holds in flight stays small next to the working set.
        let run = Arc::clone(&self.run);
        self.dirty_puts(EVICTION_CHUNK_BYTES, &mut |puts| run.stage(puts))?;
        self.metrics.evictions.add(1);
        self.set.clear();
        Ok(())
    }

    /// Gives the keys first seen in this batch their states, from the pipeline's store in one
    /// call per kernel, or new. `first_rows` are the rows where they appear first, in the
    /// order of their slots, which have no states yet.
    fn load(&mut self, first_rows: &[usize], keys: &EncodedKeys) -> Result<()> {
        let load_time = self.metrics.load_time.clone();
        let _timer = load_time.timer();
        let calls = self.calls.len();
        // Row `j`'s state of call `c` at `j * calls + c`.
        let mut loaded: Vec<Option<Held>> = Vec::new();
        if let Some(p) = &self.run.pipeline {
            loaded.resize_with(first_rows.len() * calls, || None);
            let key_refs: Vec<&[u8]> = first_rows.iter().map(|&i| keys.row(i)).collect();
            for (c, call) in self.calls.iter().enumerate() {
                let id = &call.info.state_id;
                let (mut found, mut bytes) = (0, 0);
                p.store.load(&p.name, id, &key_refs, &mut |j, record| {
                    let (header, state) =
                        decode_record(record).map_err(|e| damaged(id, &e.to_string()))?;
                    let state = call.kernel.decode(state).map_err(|e| damaged(id, &e.0))?;
                    loaded[j * calls + c] = Some(Held {
                        header,
                        state,
                        stored_len: Some(record.len()),
                    });
                    found += 1;
                    bytes += record.len();
                    Ok(())
                })?;
                self.metrics.keys_loaded.add(found);
                self.metrics.bytes_loaded.add(bytes);
            }
        }
        let mut loaded = loaded.into_iter();
        let mut heap = 0;
        for _ in first_rows {
            self.set.push_states(self.calls.iter().map(|call| {
                let held = loaded.next().flatten().unwrap_or_else(|| Held {
                    header: RecordHeader::default(),
                    state: call.kernel.new_state(),
                    stored_len: None,
                });
                heap += call.kernel.heap_size(&held.state);
                held
            }));
        }
        self.set.bytes += heap;
        Ok(())
    }

    /// The dirty states of every key held, encoded as puts, handed to `sink` in chunks of
    /// about `chunk_bytes`, in slot order. The keys stay dirty.
    fn dirty_puts(
        &mut self,
        chunk_bytes: usize,
        sink: &mut dyn FnMut(Vec<Put>) -> Result<()>,
    ) -> Result<()> {
        if self.run.pipeline.is_none() {
            return Ok(());
        }
        // Sized once: with a million keys, growing the vectors copied them over and over.
        let most = self.set.len() * self.calls.len();
        let capacity = if chunk_bytes == usize::MAX {
            most
        } else {
            most.min(chunk_bytes / 64)
        };
        let mut puts = Puts::new(&self.calls, capacity);
        for s in 0..self.set.len() {
            let (key, states, dirty) = self.set.slot_mut(s);
            if *dirty {
                puts.add(&self.calls, states, key);
                puts.flush(chunk_bytes, sink)?;
            }
        }
        puts.flush(0, sink)?;
        self.metrics.keys_stored.add(puts.keys);
        self.metrics.bytes_stored.add(puts.bytes);
        Ok(())
    }

    /// Hands the dirty states to the run, which commits when every partition is done, and,
    /// when the run keeps working sets, the keys this partition updated: the working set the
    /// pipeline's next query starts from. Keys only read are left out, as a later query may
    /// send them to another partition, which would update them.
    fn finish(&mut self) -> Result<()> {
        // The final updates go into the commit itself, all at once.
        let commit_time = self.metrics.commit_time.clone();
        let _timer = commit_time.timer();
        let mut puts = Vec::new();
        let mut kept = None;
        if self.run.commits() {
            self.dirty_puts(usize::MAX, &mut |chunk| {
                if puts.is_empty() {
                    puts = chunk;
                } else {
                    puts.extend(chunk);
                }
                Ok(())
            })?;
            if self.run.keeps_working_sets() {
                let total = self.set.len().max(1);
                self.set.retain_dirty();
                self.set.bytes = self.set.bytes / total * self.set.len();
                let empty = WorkingSet::new(self.calls.len());
                kept = Some(std::mem::replace(&mut self.set, empty));
            }
        }
        self.run.finish_partition(self.partition, puts, kept)
    }
}

/// Puts being encoded by `Folder::dirty_puts`, handed on in chunks.
struct Puts {
    /// The state id of each kernel call.
    ids: Vec<Arc<str>>,
    /// Puts a chunk has room for.
    capacity: usize,
    puts: Vec<Put>,
    /// Key and record bytes of the chunk being built.
    chunk: usize,
    /// Puts and their bytes handed on so far.
    keys: usize,
    bytes: usize,
}

impl Puts {
    fn new(calls: &[KernelCall], capacity: usize) -> Self {
        Self {
            ids: calls
                .iter()
                .map(|c| Arc::from(c.info.state_id.as_str()))
                .collect(),
            capacity,
            puts: Vec::with_capacity(capacity),
            chunk: 0,
            keys: 0,
            bytes: 0,
        }
    }

    /// Encodes the updated states of `key`.
    fn add(&mut self, calls: &[KernelCall], states: &mut [Held], key: &[u8]) {
        for (held, (call, id)) in states.iter_mut().zip(calls.iter().zip(&self.ids)) {
            if held.header.rows == 0 {
                continue;
            }
            let mut record = Vec::with_capacity(32);
            encode_record(&held.header, &mut record);
            call.kernel.encode(&held.state, &mut record);
            let replaces = held.stored_len.replace(record.len());
            self.chunk += key.len() + record.len();
            self.puts.push(Put {
                state_id: Arc::clone(id),
                key: key.to_vec(),
                record,
                replaces,
            });
        }
    }

    /// Hands the chunk to `sink` once it holds `chunk_bytes` (0: whatever it holds).
    fn flush(
        &mut self,
        chunk_bytes: usize,
        sink: &mut dyn FnMut(Vec<Put>) -> Result<()>,
    ) -> Result<()> {
        if self.puts.is_empty() || self.chunk < chunk_bytes {
            return Ok(());
        }
        self.keys += self.puts.len();
        self.bytes += self.chunk;
        self.chunk = 0;
        sink(std::mem::replace(
            &mut self.puts,
            Vec::with_capacity(self.capacity),
        ))
    }
}

fn late_row_error(state_id: &str, ts: i64, last: i64) -> DataFusionError {
    DataFusionError::Execution(format!(
        "late row for state {state_id}: ORDER BY value {ts} is older than the key's last \
         applied value {last} (fintech.late_rows = 'error'; use 'skip' or 'apply' to accept it)"
    ))
}

fn damaged(state_id: &str, why: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "stored state of {state_id} cannot be decoded ({why}); the store is left as it is"
    ))
}

struct KeyedStateStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    folder: Folder,
    done: bool,
}

impl Stream for KeyedStateStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match this.input.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(batch))) => {
                let out = this.folder.process(&batch, &this.schema);
                if out.is_err() {
                    this.done = true;
                }
                Poll::Ready(Some(out))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                match this.folder.finish() {
                    Ok(()) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }
}

impl RecordBatchStream for KeyedStateStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
