//! The kernels as SQL window functions.
//!
//! Each kernel is one [`KernelUdwf`]: it gives SQL the function's name, signature, result type
//! and documentation. The keyed-state operator ([`crate::exec`]) replaces the window node that
//! evaluates them; the [`PartitionEvaluator`] here is the plain, per-query path DataFusion uses
//! when the operator does not (for example with other window functions in the same window).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    DocSection, Documentation, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

use crate::exec::batch::{KernelInputs, output_array};
use crate::kernels::{ALL, BoundKernel, Factory, FoldOutput, KernelDef, LateRows, StateColumn};

const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Financial time-series functions",
    description: Some("Stateful per-key kernels of datafusion-fintech"),
};

/// One kernel as a window function.
#[derive(Debug)]
pub struct KernelUdwf {
    factory: &'static Factory,
    signature: Signature,
}

impl PartialEq for KernelUdwf {
    fn eq(&self, other: &Self) -> bool {
        self.factory.def.name == other.factory.def.name
    }
}

impl Eq for KernelUdwf {}

impl Hash for KernelUdwf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.factory.def.name.hash(state);
    }
}

impl KernelUdwf {
    pub fn new(factory: &'static Factory) -> Self {
        Self {
            factory,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    pub fn def(&self) -> &'static KernelDef {
        self.factory.def
    }

    /// Binds the literal parameters found among `args` (the call's physical arguments).
    pub fn kernel(&self, args: &[Arc<dyn PhysicalExpr>]) -> Result<BoundKernel> {
        let def = self.def();
        let n_inputs = def.inputs.len();
        let mut params = Vec::with_capacity(def.params.len());
        for (i, arg) in args.iter().enumerate().skip(n_inputs) {
            let name = def.params.get(i - n_inputs).map_or("?", |p| p.name);
            let value = arg
                .downcast_ref::<Literal>()
                .map(|l| l.value())
                .and_then(|v| match v.cast_to(&DataType::Float64) {
                    Ok(ScalarValue::Float64(f)) => f,
                    _ => None,
                })
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "{}: parameter {name} must be a constant number, got {arg}",
                        def.name
                    ))
                })?;
            params.push(value);
        }
        self.factory
            .bind(&params)
            .map_err(|e| DataFusionError::Plan(e.0))
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
        b = b.with_argument(param.name, KernelDef::param_doc(param));
    }
    b.build()
}

static DOCS: LazyLock<Vec<Documentation>> =
    LazyLock::new(|| ALL.iter().map(|f| documentation(f.def)).collect());

impl WindowUDFImpl for KernelUdwf {
    fn name(&self) -> &str {
        self.def().name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let def = self.def();
        let (fewest, most) = def.arity();
        if arg_types.len() < fewest || arg_types.len() > most {
            let want = if fewest == most {
                fewest.to_string()
            } else {
                format!("{fewest} to {most}")
            };
            return Err(DataFusionError::Plan(format!(
                "{} takes {want} argument(s) ({}), got {}",
                def.name,
                def.argument_names().join(", "),
                arg_types.len()
            )));
        }
        let names = def.argument_names();
        arg_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_numeric() || t == &DataType::Null {
                    Ok(DataType::Float64)
                } else {
                    let name = names.get(i).copied().unwrap_or("?");
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
        ALL.iter()
            .position(|f| f.def.name == self.def().name)
            .map(|i| &DOCS[i])
    }
}

/// The per-query path: folds one partition (one key) in the order DataFusion sorted it.
#[derive(Debug)]
struct KernelEvaluator {
    kernel: BoundKernel,
}

impl PartitionEvaluator for KernelEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let inputs = KernelInputs::new(&values[..self.kernel.def().inputs.len()])?;
        let slices = inputs.slices();
        let mut column: Box<dyn StateColumn> = self.kernel.new_column();
        let mut out = FoldOutput::new(num_rows);
        column
            .fold_one_key(&inputs.fold_input(&slices, None, LateRows::Apply), &mut out)
            .map_err(|_| {
                DataFusionError::Internal("a fold without ORDER BY values met a late row".into())
            })?;
        Ok(output_array(out))
    }
}

/// Every kernel as a window function.
pub fn all_window_functions() -> Vec<Arc<WindowUDF>> {
    ALL.iter()
        .map(|f| Arc::new(WindowUDF::from(KernelUdwf::new(f))))
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
