//! Execution: the keyed-state operator, the run that commits it, and the planner rule that
//! installs it.

pub mod commit;
pub mod operator;
pub mod rule;
pub mod working_set;

pub use operator::KeyedStateExec;
pub use rule::KeyedStateRule;
