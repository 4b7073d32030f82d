//! The physical optimizer rule that installs [`KeyedStateExec`] in place of DataFusion's window
//! node wherever a window clause evaluates fintech kernels. It runs just before DataFusion's
//! EnsureRequirements, so that the sorts and repartitions are planned for the operator's own
//! requirements rather than the window node's.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{WindowFrame, WindowFrameBound};
use datafusion::physical_expr::expressions::{CastExpr, Column, TryCastExpr};
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::{
    LexRequirement, OrderingRequirements, PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::windows::{
    BoundedWindowAggExec, WindowAggExec, WindowExpr, WindowUDFExpr,
};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, StatisticsArgs, StatisticsContext,
};

use super::commit::KeptSets;
use super::operator::{KernelCall, KeyedStateExec, KeyedStatePlan};
use super::sequence::{SEQUENCE_COLUMN, SequenceExec};
use crate::config::{FintechConfig, FoldOrder};
use crate::kernels::KernelDef;
use crate::state::{KeyColumn, KeyType, StateInfo, StoreRegistry};
use crate::udwf::KernelUdwf;

/// The rule's name in DataFusion's optimizer list.
pub const RULE_NAME: &str = "fintech_keyed_state";

/// Replaces window nodes of fintech kernels with the keyed-state operator.
#[derive(Debug)]
pub struct KeyedStateRule {
    registry: Arc<StoreRegistry>,
    /// Working sets kept between the queries of this registration.
    kept_sets: Arc<KeptSets>,
}

impl KeyedStateRule {
    pub fn new(registry: Arc<StoreRegistry>) -> Self {
        Self {
            registry,
            kept_sets: Arc::default(),
        }
    }
}

impl PhysicalOptimizerRule for KeyedStateRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let settings = FintechConfig::from_session(config);
        let plan = plan
            .transform_up(|node| match self.rewrite(&node, &settings)? {
                Some(new) => Ok(Transformed::yes(new)),
                None => Ok(Transformed::no(node)),
            })
            .data()?;
        if settings.has_pipeline() {
            read_only_under_limits(plan, false)
        } else {
            Ok(plan)
        }
    }

    fn name(&self) -> &str {
        RULE_NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Makes every keyed-state operator below a LIMIT read-only: whether such a query consumes
/// all its input depends on timing, and a commit must not.
fn read_only_under_limits(
    plan: Arc<dyn ExecutionPlan>,
    under_limit: bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    let limits = under_limit
        || plan.fetch().is_some()
        || plan.downcast_ref::<GlobalLimitExec>().is_some()
        || plan.downcast_ref::<LocalLimitExec>().is_some();
    let plan = match plan.downcast_ref::<KeyedStateExec>() {
        Some(exec) if limits => Arc::new(exec.read_only()?) as Arc<dyn ExecutionPlan>,
        _ => plan,
    };
    let children = plan
        .children()
        .into_iter()
        .map(|c| read_only_under_limits(Arc::clone(c), limits))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

/// The kernel behind a window expression, if it is one of ours.
fn kernel_udwf(expr: &Arc<dyn WindowExpr>) -> Option<(&KernelUdwf, &WindowUDFExpr)> {
    let standard = expr.as_any().downcast_ref::<StandardWindowExpr>()?;
    let udf_expr = standard
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    let udwf = udf_expr.fun().inner().downcast_ref::<KernelUdwf>()?;
    Some((udwf, udf_expr))
}

/// A readable name for an expression: column names without their `@index`, casts removed.
pub fn expr_name(expr: &Arc<dyn PhysicalExpr>) -> String {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return c.name().to_string();
    }
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        return expr_name(c.expr());
    }
    if let Some(c) = expr.downcast_ref::<TryCastExpr>() {
        return expr_name(c.expr());
    }
    let text = expr.to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '@' && chars.peek().is_some_and(|c| c.is_ascii_digit()) {
            while chars.peek().is_some_and(|c| c.is_ascii_digit()) {
                chars.next();
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn is_running_frame(frame: &WindowFrame) -> bool {
    matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null())
        && matches!(frame.end_bound, WindowFrameBound::CurrentRow)
}

fn order_type_ok(dt: &DataType) -> bool {
    dt.is_integer() || matches!(dt, DataType::Timestamp(_, _))
}

impl KeyedStateRule {
    /// The keyed-state operator replacing `node`, if `node` is a window node of kernels.
    fn rewrite(
        &self,
        node: &Arc<dyn ExecutionPlan>,
        settings: &FintechConfig,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let (exprs, input) = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            (w.window_expr(), w.input())
        } else if let Some(w) = node.downcast_ref::<WindowAggExec>() {
            (w.window_expr(), w.input())
        } else {
            return Ok(None);
        };
        let ours: Vec<_> = exprs.iter().filter_map(kernel_udwf).collect();
        if ours.is_empty() {
            return Ok(None);
        }
        if ours.len() != exprs.len() {
            let names: Vec<_> = ours.iter().map(|(u, _)| u.def().name).collect();
            if settings.has_pipeline() {
                return Err(DataFusionError::Plan(format!(
                    "fintech kernels ({}) share a window clause with other window functions; \
                     with a pipeline set they must have a window clause of their own (use a \
                     different PARTITION BY or ORDER BY, or a subquery)",
                    names.join(", ")
                )));
            }
            // Per-query state: DataFusion's window node evaluates them with the same kernels.
            return Ok(None);
        }

        let first = &exprs[0];
        let name = ours[0].0.def().name;
        let schema = input.schema();
        let order_by = first.order_by();
        if order_by.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "{name} needs ORDER BY in its OVER clause: a kernel folds each key's rows in \
                 ORDER BY order, e.g. OVER (PARTITION BY symbol ORDER BY ts)"
            )));
        }
        if order_by.len() > 1 {
            return Err(DataFusionError::Plan(format!(
                "{name} takes exactly one ORDER BY column (a timestamp or integer), got {}",
                order_by.len()
            )));
        }
        let order = &order_by[0];
        if order.options.descending {
            return Err(DataFusionError::Plan(format!(
                "{name} needs an ascending ORDER BY: state moves forward in time"
            )));
        }
        let order_type = order.expr.data_type(&schema)?;
        if !order_type_ok(&order_type) {
            return Err(DataFusionError::Plan(format!(
                "{name}: ORDER BY {} has type {order_type}; use a timestamp or integer column",
                expr_name(&order.expr)
            )));
        }
        for e in exprs {
            if !is_running_frame(e.get_window_frame()) {
                return Err(DataFusionError::Plan(format!(
                    "{}: window frame {} is not supported; fintech kernels run over all rows \
                     of the key so far (the default frame, UNBOUNDED PRECEDING to CURRENT ROW)",
                    kernel_udwf(e).map_or("?", |(u, _)| u.def().name),
                    e.get_window_frame()
                )));
            }
        }

        let partition_by = first.partition_by().to_vec();
        let key_columns: Vec<KeyColumn> = partition_by
            .iter()
            .map(|e| {
                Ok(KeyColumn {
                    name: expr_name(e),
                    data_type: e.data_type(&schema)?,
                })
            })
            .collect::<Result<_>>()?;
        let key_types: Vec<KeyType> = key_columns
            .iter()
            .map(|c| c.key_type())
            .collect::<Result<_>>()?;
        let key_names: Vec<_> = key_columns.iter().map(|c| c.name.as_str()).collect();

        let mut calls = Vec::with_capacity(ours.len());
        for (udwf, udf_expr) in &ours {
            let kernel = udwf.kernel(udf_expr.args())?;
            let def = kernel.def();
            let inputs = udf_expr.args()[..def.inputs.len()].to_vec();
            let input_names: Vec<String> = inputs.iter().map(expr_name).collect();
            let params = KernelDef::param_text(kernel.params());
            let mut args = input_names.clone();
            args.extend(params.iter().cloned());
            let state_id = format!("{}({})@{}", def.name, args.join(","), key_names.join(","));
            let info = StateInfo {
                state_id,
                kernel: def.name.to_string(),
                params,
                inputs: input_names,
                key_columns: key_columns.clone(),
                order_type: order_type.clone(),
                encoding_version: def.version.into(),
                reads_from: def.reads_from.into(),
            };
            calls.push(KernelCall {
                kernel,
                inputs,
                info,
            });
        }
        let mut ids: Vec<_> = calls.iter().map(|c| &c.info.state_id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != calls.len() {
            // Two identical calls in one SELECT: one state would be updated twice per row.
            return Err(DataFusionError::Plan(format!(
                "the same fintech kernel call appears twice in one window clause ({}); \
                 compute it once and reuse the column",
                calls[0].info.state_id
            )));
        }

        let by_key = match settings.fold_order {
            FoldOrder::Time => false,
            FoldOrder::Key if input.boundedness().is_unbounded() => {
                return Err(DataFusionError::Plan(format!(
                    "fintech.fold_order = 'key' sorts the input by key before it folds it, \
                     which an unbounded input never lets it do; use 'time' or 'auto' for \
                     {name} over a stream"
                )));
            }
            FoldOrder::Key => true,
            FoldOrder::Auto => {
                self.keys_outgrow_working_set(settings, &calls, input, &partition_by)?
            }
        };
        let (input, required_ordering) = if by_key {
            // Sorted by key, then ORDER BY, then position in the input: each key's rows come
            // together, ties in input order, and each key's state is read and written once.
            let sequence = SequenceExec::try_new(Arc::clone(input))?;
            let position: Arc<dyn PhysicalExpr> =
                Arc::new(Column::new(SEQUENCE_COLUMN, sequence.column_index()));
            let requirement = partition_by
                .iter()
                .map(|e| PhysicalSortRequirement::new(Arc::clone(e), None))
                .chain([
                    PhysicalSortRequirement::new(Arc::clone(&order.expr), Some(order.options)),
                    PhysicalSortRequirement::new(position, Some(SortOptions::default())),
                ]);
            (
                Arc::new(sequence) as Arc<dyn ExecutionPlan>,
                LexRequirement::new(requirement).map(OrderingRequirements::new),
            )
        } else {
            // The operator needs each key's rows in ORDER BY order within its partition.
            // Asking for ORDER BY order alone (not PARTITION BY, ORDER BY as the window node
            // does) lets EnsureRequirements, which runs after this rule, leave input that is
            // already ordered (WITH ORDER, a stream) unsorted.
            let requirement =
                PhysicalSortRequirement::new(Arc::clone(&order.expr), Some(order.options));
            (
                Arc::clone(input),
                LexRequirement::new([requirement]).map(OrderingRequirements::new),
            )
        };
        let plan = KeyedStatePlan {
            window_exprs: exprs.to_vec(),
            calls,
            partition_by,
            key_types,
            order_by: Arc::clone(&order.expr),
            required_ordering,
            required_distribution: node.input_distribution_requirements(),
            by_key,
            planned: settings.clone(),
        };
        let exec = KeyedStateExec::try_new(
            input,
            plan,
            Arc::clone(&self.registry),
            Arc::clone(&self.kept_sets),
        )?;
        Ok(Some(Arc::new(exec)))
    }

    /// Whether the keys a query over `input` will hold are estimated to outgrow the working
    /// set, so that folding in time order would evict and reload them over and over: only
    /// for a bounded input and state in a disk backend. The estimate is the larger of the
    /// keys the pipeline's states hold already and, for one integer key column, the range of
    /// its values in the input's statistics (at most its row count).
    fn keys_outgrow_working_set(
        &self,
        settings: &FintechConfig,
        calls: &[KernelCall],
        input: &Arc<dyn ExecutionPlan>,
        partition_by: &[Arc<dyn PhysicalExpr>],
    ) -> Result<bool> {
        let on_disk = settings.state_backend != "memory"
            && (settings.has_pipeline() || !settings.state_path.is_empty());
        if !on_disk || input.boundedness().is_unbounded() {
            return Ok(false);
        }
        let mut keys = 0u64;
        if settings.has_pipeline() {
            let store = self.registry.open(settings)?;
            for s in store.states(&settings.pipeline)? {
                if calls.iter().any(|c| c.info.state_id == s.info.state_id) {
                    keys = keys.max(s.keys);
                }
            }
        }
        if let [key] = partition_by
            && let Some(column) = key.downcast_ref::<Column>()
        {
            let stats = StatisticsContext::new().compute(input.as_ref(), &StatisticsArgs::new())?;
            let range = stats.column_statistics.get(column.index()).and_then(|c| {
                let (min, max) = (c.min_value.get_value()?, c.max_value.get_value()?);
                let as_i128 = |v: &ScalarValue| {
                    v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                        ScalarValue::Int64(Some(v)) => Some(v as i128),
                        _ => None,
                    })
                };
                Some((as_i128(max)? - as_i128(min)? + 1).max(0) as u64)
            });
            let rows = stats.num_rows.get_value().map(|r| *r as u64);
            if let Some(range) = range {
                keys = keys.max(rows.map_or(range, |r| range.min(r)));
            }
        }
        let per_key: usize = 48
            + calls
                .iter()
                .map(|c| c.kernel.state_size_hint())
                .sum::<usize>();
        Ok(keys.saturating_mul(per_key as u64) > settings.working_set_bytes as u64)
    }
}
