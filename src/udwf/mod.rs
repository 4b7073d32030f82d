//! The kernels as SQL window functions.
//!
//! Each kernel is one [`KernelUdwf`]: it gives SQL the function's name, signature, result type
//! and documentation. The keyed-state operator ([`crate::exec`]) replaces the window node that
//! evaluates them; the [`PartitionEvaluator`] here is the plain, per-query path DataFusion uses
//! when the operator does not (for example with other window functions in the same window).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Builder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    DocSection, Documentation, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

use crate::kernels::{ALL_KERNELS, Kernel, KernelDef};

const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Financial time-series functions",
    description: Some("Stateful per-key kernels of datafusion-fintech"),
};

/// One kernel as a window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KernelUdwf {
    def: &'static KernelDef,
    signature: Signature,
}

impl KernelUdwf {
    pub fn new(def: &'static KernelDef) -> Self {
        Self {
            def,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    pub fn def(&self) -> &'static KernelDef {
        self.def
    }

    /// Binds the literal parameters found among `args` (the call's physical arguments).
    pub fn kernel(&self, args: &[Arc<dyn PhysicalExpr>]) -> Result<Kernel> {
        let def = self.def;
        let n_inputs = def.inputs.len();
        let mut params = Vec::with_capacity(def.params.len());
        for (i, name) in def.params.iter().enumerate() {
            let arg = args.get(n_inputs + i).ok_or_else(|| {
                DataFusionError::Plan(format!("{}: missing parameter {name}", def.name))
            })?;
            let value = arg
                .downcast_ref::<Literal>()
                .map(|l| l.value())
                .and_then(|v| match v {
                    ScalarValue::Float64(Some(f)) => Some(*f),
                    other => other
                        .cast_to(&DataType::Float64)
                        .ok()
                        .and_then(|v| match v {
                            ScalarValue::Float64(f) => f,
                            _ => None,
                        }),
                })
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "{}: parameter {name} must be a constant number, got {arg}",
                        def.name
                    ))
                })?;
            params.push(value);
        }
        Kernel::new(def.name, &params).map_err(|e| DataFusionError::Plan(e.0))
    }
}

fn documentation(def: &'static KernelDef) -> Documentation {
    let mut b = Documentation::builder(DOC_SECTION, def.description, def.example);
    for input in def.inputs {
        b = b.with_argument(
            *input,
            "Numeric column (cast to DOUBLE). A NULL skips the row.",
        );
    }
    for param in def.params {
        b = b.with_argument(*param, "Constant number.");
    }
    b.build()
}

static DOCS: LazyLock<Vec<Documentation>> =
    LazyLock::new(|| ALL_KERNELS.iter().map(|d| documentation(d)).collect());

impl WindowUDFImpl for KernelUdwf {
    fn name(&self) -> &str {
        self.def.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let def = self.def;
        let want = def.inputs.len() + def.params.len();
        if arg_types.len() != want {
            let names: Vec<_> = def.inputs.iter().chain(def.params).copied().collect();
            return Err(DataFusionError::Plan(format!(
                "{} takes {want} argument(s) ({}), got {}",
                def.name,
                names.join(", "),
                arg_types.len()
            )));
        }
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_numeric() || t == &DataType::Null {
                    Ok(DataType::Float64)
                } else {
                    let name = def
                        .inputs
                        .iter()
                        .chain(def.params)
                        .nth(i)
                        .copied()
                        .unwrap_or("?");
                    Err(DataFusionError::Plan(format!(
                        "{}: argument {name} must be numeric, got {t}",
                        def.name
                    )))
                }
            })
            .collect()
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        // Called during planning as well: validate, allocate nothing per key.
        Ok(Box::new(KernelEvaluator {
            kernel: self.kernel(args.input_exprs())?,
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        ALL_KERNELS
            .iter()
            .position(|d| d.name == self.def.name)
            .map(|i| &DOCS[i])
    }
}

/// The per-query path: folds one partition (one key) in the order DataFusion sorted it.
#[derive(Debug)]
struct KernelEvaluator {
    kernel: Kernel,
}

impl PartitionEvaluator for KernelEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let n_inputs = self.kernel.def().inputs.len();
        let cols: Vec<_> = values[..n_inputs]
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        let mut state = self.kernel.new_state();
        let mut out = Float64Builder::with_capacity(num_rows);
        let mut row = [0.0f64; 4];
        for i in 0..num_rows {
            if cols.iter().any(|c| c.is_null(i)) {
                out.append_null();
                continue;
            }
            for (slot, c) in row.iter_mut().zip(&cols) {
                *slot = c.value(i);
            }
            out.append_option(self.kernel.update(&mut state, &row[..n_inputs]));
        }
        Ok(Arc::new(out.finish()))
    }
}

/// Every kernel as a window function.
pub fn all_window_functions() -> Vec<Arc<WindowUDF>> {
    ALL_KERNELS
        .iter()
        .map(|d| Arc::new(WindowUDF::from(KernelUdwf::new(d))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_is_documented_and_named_once() {
        let fns = all_window_functions();
        let mut names: Vec<_> = fns.iter().map(|f| f.name().to_string()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), fns.len());
        for f in &fns {
            assert!(
                f.documentation().is_some(),
                "{} has no documentation",
                f.name()
            );
        }
    }
}
