//! What a kernel is to SQL and to the state tables: its name, its column inputs, its literal
//! parameters (type, default, allowed range) and its typed state fields. The error messages,
//! the documentation and the state tables' columns are all derived from a [`KernelDef`].

use std::fmt::{self, Write};

use super::{KernelError, KernelResult};

/// The static description of a kernel.
#[derive(Debug)]
pub struct KernelDef {
    /// The SQL function name.
    pub name: &'static str,
    /// Names of the column arguments, in call order.
    pub inputs: &'static [&'static str],
    /// The literal parameters that follow the column arguments, in call order.
    pub params: &'static [ParamSpec],
    /// The fields of the kernel's state, in encoding order: the columns of `fintech_state`.
    pub fields: &'static [StateField],
    /// Version of the state encoding this build writes; bump it when the encoding changes.
    pub version: u8,
    /// Oldest encoding version this build still reads (see [`super::Kernel::read_legacy`]).
    pub reads_from: u8,
    pub description: &'static str,
    pub example: &'static str,
}

/// One literal parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    /// How error messages call it (`alpha`, `window size n`).
    pub label: &'static str,
    pub kind: ParamKind,
    /// The value when the call leaves the parameter out; `None`: the parameter is required.
    pub default: Option<f64>,
    pub description: &'static str,
}

/// The type and allowed range of a literal parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamKind {
    /// A real number between `min` and `max`; an open end excludes its bound.
    Real {
        min: f64,
        min_open: bool,
        max: f64,
        max_open: bool,
    },
    /// A whole number in `[min, max]`.
    Integer { min: i64, max: i64 },
}

impl ParamKind {
    fn allows(&self, v: f64) -> bool {
        match *self {
            ParamKind::Real {
                min,
                min_open,
                max,
                max_open,
            } => {
                // Written so that NaN fails every comparison.
                let above = if min_open { v > min } else { v >= min };
                let below = if max_open { v < max } else { v <= max };
                above && below
            }
            ParamKind::Integer { min, max } => {
                v.fract() == 0.0 && v >= min as f64 && v <= max as f64
            }
        }
    }
}

impl fmt::Display for ParamKind {
    /// `in (0, 1]`, `an integer in [1, 100000]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParamKind::Real {
                min,
                min_open,
                max,
                max_open,
            } => write!(
                f,
                "in {}{min}, {max}{}",
                if min_open { '(' } else { '[' },
                if max_open { ')' } else { ']' }
            ),
            ParamKind::Integer { min, max } => write!(f, "an integer in [{min}, {max}]"),
        }
    }
}

/// The type of one state field, as the state tables show it and a columnar store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// A float that is always set.
    F64,
    /// A float that may be unset (shown as NULL).
    OptF64,
    I64,
    Bool,
    /// Nanoseconds since the Unix epoch, or unset.
    Timestamp,
    /// A list of floats (a rolling window, oldest first).
    ListF64,
}

/// One field of a kernel's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateField {
    pub name: &'static str,
    pub ty: FieldType,
}

impl StateField {
    pub const fn new(name: &'static str, ty: FieldType) -> Self {
        Self { name, ty }
    }
}

impl KernelDef {
    /// Checks literal parameters against the specs and fills in defaults: the values a kernel
    /// is bound with. `given` are the parameters the call wrote, in order.
    pub fn bind_params(&self, given: &[f64]) -> KernelResult<Vec<f64>> {
        let required = self.params.iter().filter(|p| p.default.is_none()).count();
        if given.len() < required || given.len() > self.params.len() {
            return Err(KernelError(format!(
                "{} takes {} literal parameter(s) ({}), got {}",
                self.name,
                self.param_count_text(),
                self.param_names().join(", "),
                given.len()
            )));
        }
        self.params
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let v = given.get(i).copied().or(spec.default).ok_or_else(|| {
                    KernelError(format!("{}: missing parameter {}", self.name, spec.name))
                })?;
                if !spec.kind.allows(v) {
                    return Err(KernelError(format!(
                        "{}: {} must be {}, got {v}",
                        self.name, spec.label, spec.kind
                    )));
                }
                Ok(v)
            })
            .collect()
    }

    /// `2` or `1 to 2`: how many literal parameters a call may give.
    pub fn param_count_text(&self) -> String {
        let required = self.params.iter().filter(|p| p.default.is_none()).count();
        if required == self.params.len() {
            required.to_string()
        } else {
            format!("{required} to {}", self.params.len())
        }
    }

    /// Number of SQL arguments a call may give: fewest, most.
    pub fn arity(&self) -> (usize, usize) {
        let required = self.params.iter().filter(|p| p.default.is_none()).count();
        (
            self.inputs.len() + required,
            self.inputs.len() + self.params.len(),
        )
    }

    pub fn param_names(&self) -> Vec<&'static str> {
        self.params.iter().map(|p| p.name).collect()
    }

    /// The names of every argument, columns first.
    pub fn argument_names(&self) -> Vec<&'static str> {
        self.inputs
            .iter()
            .copied()
            .chain(self.params.iter().map(|p| p.name))
            .collect()
    }

    /// Canonical text of bound parameter values, as they appear in state ids: the shortest
    /// decimal that reads back to the same float (`0.06`, `100`).
    pub fn param_text(values: &[f64]) -> Vec<String> {
        values.iter().map(|v| format!("{v}")).collect()
    }

    /// The parameter's line in the documentation: its range and default.
    pub fn param_doc(spec: &ParamSpec) -> String {
        let mut s = format!("Constant: {}; must be {}", spec.description, spec.kind);
        if let Some(d) = spec.default {
            let _ = write!(s, "; default {d}");
        }
        s.push('.');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: KernelDef = KernelDef {
        name: "k",
        inputs: &["x"],
        params: &[
            ParamSpec {
                name: "alpha",
                label: "alpha",
                kind: ParamKind::Real {
                    min: 0.0,
                    min_open: true,
                    max: 1.0,
                    max_open: false,
                },
                default: None,
                description: "weight",
            },
            ParamSpec {
                name: "n",
                label: "window size n",
                kind: ParamKind::Integer { min: 1, max: 10 },
                default: Some(3.0),
                description: "rows",
            },
        ],
        fields: &[],
        version: 1,
        reads_from: 1,
        description: "",
        example: "",
    };

    #[test]
    fn parameters_are_checked_and_defaulted() {
        assert_eq!(DEF.bind_params(&[0.5]).unwrap(), vec![0.5, 3.0]);
        assert_eq!(DEF.bind_params(&[1.0, 10.0]).unwrap(), vec![1.0, 10.0]);
        let err = |given: &[f64]| DEF.bind_params(given).unwrap_err().0;
        assert_eq!(err(&[0.0]), "k: alpha must be in (0, 1], got 0");
        assert_eq!(err(&[f64::NAN]), "k: alpha must be in (0, 1], got NaN");
        assert_eq!(
            err(&[0.5, 2.5]),
            "k: window size n must be an integer in [1, 10], got 2.5"
        );
        assert!(err(&[0.5, 11.0]).contains("[1, 10]"));
        assert_eq!(
            err(&[]),
            "k takes 1 to 2 literal parameter(s) (alpha, n), got 0"
        );
        assert_eq!(DEF.arity(), (2, 3));
        assert_eq!(KernelDef::param_text(&[0.06, 100.0]), vec!["0.06", "100"]);
    }
}
