//! The keyed-state operator: evaluates every fintech kernel of one window clause in a single
//! pass over its input, keeping one state per key and kernel.
//!
//! Per input batch: map every row to its key's slot ([`super::keys`]), load the states of keys
//! not seen yet in one store call per kernel, fold the batch into each kernel's column of
//! states (one tight loop per kernel, [`crate::kernels::fold`]), and append one output column
//! per kernel. When the input ends, the dirty states go to the [`QueryRun`], which commits the
//! whole query at once.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::{FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryLimit};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionMapping;
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::windows::{WindowAggExec, WindowExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    InputDistributionRequirements, PlanProperties,
};
use datafusion::prelude::SessionConfig;
use futures::{Stream, StreamExt};

use super::commit::{KeptSets, QueryRun};
use super::folder::{Folder, OperatorMetrics};
use super::working_set::WorkingSet;
use crate::config::FintechConfig;
use crate::kernels::BoundKernel;
use crate::state::{KeyType, StateInfo, StoreRegistry};

/// One kernel call of the window clause.
#[derive(Debug, Clone)]
pub struct KernelCall {
    pub kernel: BoundKernel,
    /// The column inputs (literal parameters are bound in `kernel`).
    pub inputs: Vec<Arc<dyn PhysicalExpr>>,
    pub info: StateInfo,
}

/// What the planner rule decided for one window clause of kernels.
#[derive(Debug, Clone)]
pub struct KeyedStatePlan {
    /// The window node's expressions, kept to derive output properties for a new input.
    pub window_exprs: Vec<Arc<dyn WindowExpr>>,
    pub calls: Vec<KernelCall>,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub key_types: Vec<KeyType>,
    pub order_by: Arc<dyn PhysicalExpr>,
    pub required_ordering: Option<OrderingRequirements>,
    pub required_distribution: InputDistributionRequirements,
    /// Rows arrive sorted by key (`fintech.fold_order`), with the position column
    /// ([`super::sequence`]) as the input's last column, which the output leaves out.
    pub by_key: bool,
    /// Settings at planning time, for EXPLAIN; execution reads the task's settings.
    pub planned: FintechConfig,
}

/// Replaces a window node whose functions are all fintech kernels.
#[derive(Debug)]
pub struct KeyedStateExec {
    input: Arc<dyn ExecutionPlan>,
    plan: KeyedStatePlan,
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
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        plan: KeyedStatePlan,
        registry: Arc<StoreRegistry>,
        kept_sets: Arc<KeptSets>,
    ) -> Result<Self> {
        let properties = if plan.by_key {
            key_order_properties(&plan.window_exprs, &input)?
        } else {
            // Output = input columns + one column per kernel, rows in input order: exactly
            // what DataFusion's window node derives. Only the emission differs (we stream).
            WindowAggExec::try_new(plan.window_exprs.clone(), Arc::clone(&input), true)?
                .properties()
                .as_ref()
                .clone()
                .with_emission_type(EmissionType::Incremental)
        };
        Ok(Self {
            input,
            plan,
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
            self.plan.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.kept_sets),
        )?;
        exec.commits = self.commits;
        Ok(exec)
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn calls(&self) -> &[KernelCall] {
        &self.plan.calls
    }

    /// Whether rows arrive sorted by key (`fintech.fold_order`).
    pub fn by_key(&self) -> bool {
        self.plan.by_key
    }

    fn states(&self) -> Vec<StateInfo> {
        self.plan.calls.iter().map(|c| c.info.clone()).collect()
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
            .plan
            .calls
            .iter()
            .map(|c| c.info.state_id.as_str())
            .collect();
        let pipeline = if self.plan.planned.has_pipeline() {
            let mode = if self.commits {
                ""
            } else {
                ", read-only under LIMIT"
            };
            format!(
                "{} ({}{mode})",
                self.plan.planned.pipeline, self.plan.planned.state_backend
            )
        } else {
            "none (per-query state)".to_string()
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "FintechKeyedStateExec: kernels=[{}], pipeline={pipeline}, late_rows={}{}",
                states.join(", "),
                self.plan.planned.late_rows,
                if self.plan.by_key {
                    ", fold_order=key"
                } else {
                    ""
                }
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
        self.plan.required_distribution.clone()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.plan.required_ordering.clone()]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let exprs = self
            .plan
            .partition_by
            .iter()
            .chain(std::iter::once(&self.plan.order_by))
            .chain(self.plan.calls.iter().flat_map(|c| c.inputs.iter()));
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
        let partitions = self
            .properties
            .output_partitioning()
            .partition_count()
            .max(1);
        // What the working set holds is reserved from the query's memory pool; with a
        // limit, a disk backend stages instead of exceeding it.
        let reservation = MemoryConsumer::new(format!("FintechKeyedStateExec[{partition}]"))
            .with_can_spill(run.stages())
            .register(context.memory_pool());
        let input_context = if self.plan.by_key {
            // Room for the sorts' merges (a reservation each) and their buffers.
            let merges = context
                .session_config()
                .options()
                .execution
                .sort_spill_reservation_bytes;
            spill_bounded(
                &context,
                config.working_set_bytes.max(4 * partitions * merges),
            )?
        } else if self.input.boundedness().is_unbounded() {
            // A stream's batches come as its source sends them: larger batches would only
            // wait longer for rows.
            Arc::clone(&context)
        } else {
            with_batch_rows(&context, BOUNDED_BATCH_ROWS)
        };
        // Its own task reads (decodes) the input while this one folds.
        let input = self.input.execute(partition, input_context)?;
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
        let kernels: Vec<BoundKernel> = self
            .plan
            .calls
            .iter()
            .map(|c| Arc::clone(&c.kernel))
            .collect();
        let set = run
            .take_working_set(partition)
            .unwrap_or_else(|| WorkingSet::new(&self.plan.key_types, &kernels));
        metrics.keys_kept.add(set.len());
        Ok(Box::pin(KeyedStateStream {
            schema: self.schema(),
            input,
            folder: Folder {
                partition,
                budget: run
                    .stages()
                    .then_some(config.working_set_bytes / partitions),
                reservation,
                by_key: self.plan.by_key,
                calls: self.plan.calls.clone(),
                partition_by: self.plan.partition_by.clone(),
                order_by: Arc::clone(&self.plan.order_by),
                late_rows: config.late_rows,
                // The index entry, key offset and dirty flag, and the states' entries.
                slot_size_hint: 16
                    + (0..self.plan.calls.len())
                        .map(|c| set.column(c).entry_size())
                        .sum::<usize>(),
                growth_per_row: (0..self.plan.calls.len())
                    .map(|c| set.column(c).growth_per_row())
                    .sum(),
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

/// Rows per batch, at least, in which a bounded input is read in time order: four times
/// DataFusion's default cuts what the scan, the repartition and the fold spend per batch (10M
/// rows of `rolling_std(price, 100)` over 10k keys from Parquet: 0.66 s in batches of 8,192,
/// 0.51 s in batches of 32,768, best of four). A key-order fold's sort keeps the session's
/// batch size, which its memory budget is sized for.
pub const BOUNDED_BATCH_ROWS: usize = 32_768;

/// `context` with batches of at least `rows` rows.
pub(crate) fn with_batch_rows(context: &Arc<TaskContext>, rows: usize) -> Arc<TaskContext> {
    let config = context.session_config();
    if config.batch_size() >= rows {
        return Arc::clone(context);
    }
    derived(
        context,
        config.clone().with_batch_size(rows),
        context.runtime_env(),
    )
}

/// The task context of a key-order fold's input: where the query's memory pool has no
/// limit, one of `bytes`, so that the sort below spills to disk instead of holding the input.
fn spill_bounded(context: &Arc<TaskContext>, bytes: usize) -> Result<Arc<TaskContext>> {
    let runtime = context.runtime_env();
    if matches!(runtime.memory_pool.memory_limit(), MemoryLimit::Finite(_)) {
        return Ok(Arc::clone(context));
    }
    let mut builder = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
        .with_object_store_registry(Arc::clone(&runtime.object_store_registry));
    builder.disk_manager = Some(Arc::clone(&runtime.disk_manager));
    Ok(derived(
        context,
        context.session_config().clone(),
        Arc::new(builder.build()?),
    ))
}

/// `context` with another session config and runtime: the same task and functions.
fn derived(
    context: &TaskContext,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> Arc<TaskContext> {
    Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        runtime,
    ))
}

/// The output properties of a key-order fold: the input's without its position column (the
/// last), then one column per kernel.
fn key_order_properties(
    window_exprs: &[Arc<dyn WindowExpr>],
    input: &Arc<dyn ExecutionPlan>,
) -> Result<PlanProperties> {
    let in_schema = input.schema();
    let kept = in_schema.fields().len() - 1;
    let mut fields: Vec<FieldRef> = in_schema.fields()[..kept].to_vec();
    for w in window_exprs {
        fields.push(w.field()?);
    }
    let schema = Arc::new(Schema::new(fields));
    let columns = (0..kept).map(|i| {
        let name = in_schema.field(i).name().clone();
        (
            Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
            name,
        )
    });
    let mapping = ProjectionMapping::try_new(columns, &in_schema)?;
    let eq = input.equivalence_properties().project(&mapping, schema);
    Ok(PlanProperties::new(
        eq,
        input.output_partitioning().clone(),
        EmissionType::Incremental,
        input.boundedness(),
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
