//! `fintech_state(pipeline, state_id)`: one row per key, with the PARTITION BY columns under
//! their own names and types, the kernel's state fields, rows applied and the last ORDER BY
//! value applied. Equality and IN filters that fix every key column become point reads.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use super::{arity, session_store, string_arg};
use crate::kernels::BoundKernel;
use crate::state::arrow::{state_rows, state_table_fields};
use crate::state::codec::encode_keys;
use crate::state::{KeyFilter, StateInfo, StateStore, StoreRegistry};

const USAGE: &str = "fintech_state('pipeline', 'state_id')";

/// The value of `e`, if it is a literal other than NULL.
fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        _ => None,
    }
}

#[derive(Debug)]
pub struct StateFunction {
    registry: Arc<StoreRegistry>,
}

impl StateFunction {
    pub fn new(registry: Arc<StoreRegistry>) -> Self {
        Self { registry }
    }
}

impl TableFunctionImpl for StateFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("fintech_state", USAGE, args.exprs(), 2)?;
        let pipeline = string_arg("fintech_state", USAGE, args.exprs(), 0)?;
        let state_id = string_arg("fintech_state", USAGE, args.exprs(), 1)?;
        let store = session_store(&self.registry, args.session())?;
        let info = store.state_info(&pipeline, &state_id)?.ok_or_else(|| {
            let known = store
                .states(&pipeline)
                .map(|s| {
                    s.iter()
                        .map(|s| s.info.state_id.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            DataFusionError::Plan(format!(
                "fintech_state: pipeline '{pipeline}' has no state '{state_id}' in {} \
                 (states: [{known}]); SELECT * FROM fintech_states('{pipeline}') lists them",
                store.location()
            ))
        })?;
        Ok(Arc::new(StateTable::try_new(store, pipeline, info)?))
    }
}

/// One state of one pipeline as a table.
#[derive(Debug, Clone)]
pub struct StateTable {
    store: Arc<dyn StateStore>,
    pipeline: String,
    info: StateInfo,
    kernel: BoundKernel,
    schema: SchemaRef,
}

impl StateTable {
    pub fn try_new(store: Arc<dyn StateStore>, pipeline: String, info: StateInfo) -> Result<Self> {
        let kernel = info.bind_kernel().map_err(DataFusionError::Execution)?;
        let schema = Arc::new(Schema::new(state_table_fields(&info, kernel.def())));
        Ok(Self {
            store,
            pipeline,
            info,
            kernel,
            schema,
        })
    }

    /// The key column `e` is, if it is one.
    fn key_column(&self, e: &Expr) -> Option<usize> {
        match e {
            Expr::Column(c) => self.info.key_columns.iter().position(|k| k.name == c.name),
            _ => None,
        }
    }

    /// Literal values a filter allows for key column `col`, if the filter fixes it.
    fn key_values(&self, filter: &Expr) -> Option<(usize, Vec<ScalarValue>)> {
        match self.key_filters(filter)?.as_slice() {
            [
                KeyFilter::Compare {
                    column,
                    op: Operator::Eq,
                    value,
                },
            ] => Some((*column, vec![value.clone()])),
            [KeyFilter::In { column, values }] => Some((*column, values.clone())),
            _ => None,
        }
    }

    /// The condition `filter` sets on one key column, if it is one a store can apply while it
    /// reads (a comparison with a literal, `BETWEEN` two literals, `IN` a list of literals).
    fn key_filters(&self, filter: &Expr) -> Option<Vec<KeyFilter>> {
        let col_index = |e: &Expr| self.key_column(e);
        let compare = |column, op, value| Some(vec![KeyFilter::Compare { column, op, value }]);
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    let mut both = self.key_filters(left)?;
                    both.extend(self.key_filters(right)?);
                    return Some(both);
                }
                if !matches!(
                    op,
                    Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) {
                    return None;
                }
                match (col_index(left), literal(right)) {
                    (Some(i), Some(v)) => compare(i, *op, v),
                    _ => match (col_index(right), literal(left)) {
                        (Some(i), Some(v)) => compare(i, op.swap()?, v),
                        _ => None,
                    },
                }
            }
            Expr::Between(b) if !b.negated => {
                let i = col_index(&b.expr)?;
                Some(vec![
                    KeyFilter::Compare {
                        column: i,
                        op: Operator::GtEq,
                        value: literal(&b.low)?,
                    },
                    KeyFilter::Compare {
                        column: i,
                        op: Operator::LtEq,
                        value: literal(&b.high)?,
                    },
                ])
            }
            Expr::InList(list) if !list.negated => {
                let column = col_index(&list.expr)?;
                let values: Option<Vec<_>> = list.list.iter().map(literal).collect();
                Some(vec![KeyFilter::In {
                    column,
                    values: values?,
                }])
            }
            _ => None,
        }
    }

    /// The keys to read when `filters` fix every key column, else `None` (full scan).
    fn lookup_keys(&self, filters: &[&Expr]) -> Result<Option<Vec<Vec<u8>>>> {
        let n = self.info.key_columns.len();
        if n == 0 {
            return Ok(None);
        }
        let mut per_col: Vec<Option<Vec<ScalarValue>>> = vec![None; n];
        for f in filters {
            if let Some((i, values)) = self.key_values(f) {
                // Two filters on one column: keep the values both allow.
                per_col[i] = Some(match per_col[i].take() {
                    None => values,
                    Some(prev) => prev.into_iter().filter(|v| values.contains(v)).collect(),
                });
            }
        }
        let Some(per_col) = per_col.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        // Every combination of the allowed values, one column at a time.
        let mut combos: Vec<Vec<ScalarValue>> = vec![vec![]];
        for values in &per_col {
            combos = combos
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push(v.clone());
                        c
                    })
                })
                .collect();
        }
        let mut columns = Vec::with_capacity(n);
        for (i, col) in self.info.key_columns.iter().enumerate() {
            let values: Vec<ScalarValue> = combos.iter().map(|c| c[i].clone()).collect();
            let array = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(&col.data_type)
            } else {
                ScalarValue::iter_to_array(values)?
            };
            // A literal that cannot be the column's type matches no key.
            match cast(&array, &col.data_type) {
                Ok(a) => columns.push(a),
                Err(_) => return Ok(Some(vec![])),
            }
        }
        let types: Vec<_> = self
            .info
            .key_columns
            .iter()
            .map(|c| c.key_type())
            .collect::<Result<_>>()?;
        let keys = encode_keys(&columns, &types, combos.len())?;
        let mut out: Vec<Vec<u8>> = (0..keys.len()).map(|i| keys.row(i).to_vec()).collect();
        out.sort();
        out.dedup();
        Ok(Some(out))
    }
}

#[async_trait]
impl TableProvider for StateTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let point = self.lookup_keys(filters)?.is_some();
        let streams = self.store.streams_tables();
        Ok(filters
            .iter()
            .map(|f| {
                if point && self.key_values(f).is_some() {
                    TableProviderFilterPushDown::Exact
                } else if streams && self.key_filters(f).is_some() {
                    // The store applies it while it reads; DataFusion applies it again.
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filters: Vec<&Expr> = filters.iter().collect();
        let lookup = self.lookup_keys(&filters)?;
        let key_filters = match (&lookup, self.store.streams_tables()) {
            (None, true) => filters
                .iter()
                .filter_map(|f| self.key_filters(f))
                .flatten()
                .collect(),
            _ => Vec::new(),
        };
        let projection = projection.cloned();
        let schema = match &projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        Ok(Arc::new(StateScanExec {
            table: self.clone(),
            lookup,
            key_filters,
            projection,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&schema)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
        }))
    }
}

/// Reads one state from the store: point reads of the filtered keys, or a full scan.
#[derive(Debug)]
pub struct StateScanExec {
    table: StateTable,
    lookup: Option<Vec<Vec<u8>>>,
    /// Conditions a store that streams tables applies while it reads.
    key_filters: Vec<KeyFilter>,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl StateScanExec {
    fn read(&self) -> Result<RecordBatch> {
        let t = &self.table;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = match &self.lookup {
            Some(keys) => {
                let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                let records = t.store.get_many(&t.pipeline, &t.info.state_id, &refs)?;
                keys.iter()
                    .cloned()
                    .zip(records)
                    .filter_map(|(k, r)| r.map(|r| (k, r)))
                    .collect()
            }
            None => t.store.scan(&t.pipeline, &t.info.state_id)?,
        };
        let batch = state_rows(
            &t.schema,
            &t.info,
            &t.kernel,
            pairs.iter().map(|(k, r)| (k.as_slice(), r.as_slice())),
        )?;
        match &self.projection {
            Some(p) => Ok(batch.project(p)?),
            None => Ok(batch),
        }
    }
}

impl DisplayAs for StateScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let lookup = match &self.lookup {
            Some(keys) => format!("point lookup of {} key(s)", keys.len()),
            None if self.table.store.streams_tables() => format!(
                "streamed from {}, {} key filter(s) pushed down",
                self.table.store.backend(),
                self.key_filters.len()
            ),
            None => "full scan".to_string(),
        };
        write!(
            f,
            "FintechStateScanExec: pipeline={}, state_id={}, {lookup}",
            self.table.pipeline, self.table.info.state_id
        )
    }
}

impl ExecutionPlan for StateScanExec {
    fn name(&self) -> &str {
        "FintechStateScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "FintechStateScanExec has no inputs".into(),
            ));
        }
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let t = &self.table;
        if self.lookup.is_none() && t.store.streams_tables() {
            let stream = t.store.stream_table(
                &t.pipeline,
                &t.info.state_id,
                self.projection.as_deref(),
                &self.key_filters,
            )?;
            return match stream {
                Some(stream) => Ok(stream),
                None => {
                    let schema = self.properties.eq_properties.schema();
                    Ok(Box::pin(MemoryStream::try_new(
                        vec![],
                        Arc::clone(schema),
                        None,
                    )?))
                }
            };
        }
        let batch = self.read()?;
        let schema = batch.schema();
        Ok(Box::pin(MemoryStream::try_new(vec![batch], schema, None)?))
    }
}
