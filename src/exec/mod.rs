//! Execution: the keyed-state operator, the run that commits it, and the planner rule that
//! installs it.

pub mod batch;
pub mod commit;
pub mod folder;
pub mod input_order;
pub mod keys;
pub mod operator;
pub mod ordered_concat;
pub mod rule;
pub mod sequence;
pub mod working_set;

pub use input_order::KeepInputOrder;
pub use operator::KeyedStateExec;
pub use rule::KeyedStateRule;
