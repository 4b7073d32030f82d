//! State as tables: `fintech_pipelines()`, `fintech_states(pipeline)` and
//! `fintech_state(pipeline, state_id)`.

mod pipelines;
mod state;

use std::sync::Arc;

use datafusion::catalog::{Session, TableFunction};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;

use crate::config::FintechConfig;
use crate::state::{StateStore, StoreRegistry};

pub use pipelines::{PipelinesFunction, StatesFunction};
pub use state::{StateFunction, StateScanExec, StateTable};

/// Every table function, by SQL name.
pub fn all_table_functions(
    registry: Arc<StoreRegistry>,
) -> Vec<(&'static str, Arc<TableFunction>)> {
    let f = |name: &'static str, imp: Arc<dyn datafusion::catalog::TableFunctionImpl>| {
        (name, Arc::new(TableFunction::new(name.to_string(), imp)))
    };
    vec![
        f(
            "fintech_pipelines",
            Arc::new(PipelinesFunction::new(Arc::clone(&registry))),
        ),
        f(
            "fintech_states",
            Arc::new(StatesFunction::new(Arc::clone(&registry))),
        ),
        f("fintech_state", Arc::new(StateFunction::new(registry))),
    ]
}

/// The store the session's settings point at.
fn session_store(registry: &StoreRegistry, session: &dyn Session) -> Result<Arc<dyn StateStore>> {
    registry.open(&FintechConfig::from_session(session.config_options()))
}

/// The string literal argument `i` of a table function call.
fn string_arg(function: &str, usage: &str, exprs: &[Expr], i: usize) -> Result<String> {
    match exprs.get(i) {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _))
        | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _)) => Ok(s.clone()),
        Some(other) => Err(DataFusionError::Plan(format!(
            "{function}: argument {} must be a string literal, got {other}; usage: {usage}",
            i + 1
        ))),
        None => Err(DataFusionError::Plan(format!(
            "{function}: missing argument {}; usage: {usage}",
            i + 1
        ))),
    }
}

fn arity(function: &str, usage: &str, exprs: &[Expr], n: usize) -> Result<()> {
    if exprs.len() != n {
        return Err(DataFusionError::Plan(format!(
            "{function} takes {n} argument(s), got {}; usage: {usage}",
            exprs.len()
        )));
    }
    Ok(())
}
