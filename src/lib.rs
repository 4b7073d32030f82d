//! # datafusion-fintech
//!
//! Stateful financial time-series kernels for Apache DataFusion: EWMA, rolling statistics,
//! VWAP, log returns and order-flow imbalance as SQL window functions whose per-key state can
//! carry across queries in a named *pipeline*.
//!
//! ```no_run
//! # async fn demo() -> datafusion::error::Result<()> {
//! use datafusion::prelude::*;
//! let ctx = SessionContext::new();
//! datafusion_fintech::register_all(&ctx)?;
//! ctx.sql("SET fintech.pipeline = 'ticks'").await?;
//! let df = ctx
//!     .sql("SELECT ts, symbol, ewma(price, 0.06) OVER (PARTITION BY symbol ORDER BY ts) FROM trades")
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Layers, each depending only on those below it:
//! - SQL surface: [`udwf`] (the kernels as window functions), [`table`] (state as tables),
//!   [`config`] (the `fintech.*` settings) and [`register_all`];
//! - [`exec`]: the keyed-state operator and the planner rule that installs it;
//! - [`state`]: the batched state store and its backends;
//! - [`kernels`]: the arithmetic, with no DataFusion or I/O.

pub mod config;
pub mod exec;
pub mod kernels;
pub mod state;
pub mod table;
pub mod udwf;

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::ensure_requirements::EnsureRequirements;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use config::{FintechConfig, LateRows};

use exec::{KeepInputOrder, KeyedStateRule};
use state::StoreRegistry;

/// Registers every kernel, the `fintech` settings, the state table functions and the planner
/// rule on an existing context.
pub fn register_all(ctx: &SessionContext) -> Result<()> {
    let mut builder = SessionStateBuilder::new_from_existing(ctx.state());
    builder = with_fintech(builder);
    *ctx.state_ref().write() = builder.build();
    Ok(())
}

/// Adds everything [`register_all`] registers to a [`SessionStateBuilder`], for applications
/// that build their own session state.
pub fn with_fintech(builder: SessionStateBuilder) -> SessionStateBuilder {
    let mut builder = builder;
    // Registering twice keeps the first registration (and the stores it opened).
    let registered = builder
        .physical_optimizers()
        .as_ref()
        .is_some_and(|o| o.rules.iter().any(|r| r.name() == exec::rule::RULE_NAME));
    if registered {
        return builder;
    }
    let registry = Arc::new(StoreRegistry::default());
    FintechConfig::register(builder.config().get_or_insert_with(SessionConfig::new));
    let mut window_functions = builder.window_functions().take().unwrap_or_default();
    window_functions.extend(udwf::all_window_functions());
    let mut rules = builder
        .physical_optimizers()
        .take()
        .map(|o| o.rules)
        .unwrap_or_else(|| PhysicalOptimizer::new().rules);
    // The rule goes right before EnsureRequirements, which then plans sorts and repartitions
    // for the keyed-state operator's own requirements; right after it, KeepInputOrder
    // replaces the sorts it planned over input that is already ordered.
    let rule = Arc::new(KeyedStateRule::new(Arc::clone(&registry)));
    let at = rules
        .iter()
        .position(|r| r.name() == EnsureRequirements::new().name())
        .unwrap_or(rules.len());
    rules.insert(at, rule);
    rules.insert((at + 2).min(rules.len()), Arc::new(KeepInputOrder));
    builder = builder
        .with_window_functions(window_functions)
        .with_physical_optimizer_rules(rules);
    let mut table_functions = builder.table_functions().take().unwrap_or_default();
    for (name, f) in table::all_table_functions(registry) {
        table_functions.insert(name.to_string(), f);
    }
    builder.with_table_functions(table_functions)
}
