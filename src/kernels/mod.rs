//! Pure arithmetic of every kernel: a state, `update`, and a compact, versioned encoding.
//!
//! Nothing here knows about DataFusion, Arrow or I/O. A kernel is one [`Kernel`]
//! implementation in its family's file ([`ewma`], [`rolling`], ...): its definition (SQL name,
//! column inputs, literal parameters with their ranges and defaults, typed state fields), its
//! state type, its per-row `update`, and how its state is written and read field by field
//! (kernels over one state may share a generic implementation: [`rolling::Rolling`]). Adding
//! one is that implementation and one line in [`ALL`].
//!
//! Around the kernels, written once for all of them:
//! - [`def`]: the [`KernelDef`] that error messages, documentation and state tables use;
//! - [`fields`]: a state as typed fields, and its byte encoding;
//! - [`column`]: a dense column of one kernel's states (one per key) and its records;
//! - [`fold`]: the loop that folds a batch of rows into a column of states.
//!
//! Every execution path (the keyed-state operator and the plain window evaluator) folds
//! through [`fold`], so there is exactly one definition of every number.
//!
//! Null/NaN policy, the same for every kernel: a row with a NULL in any input is not applied
//! (the state is unchanged and the output is NULL); NaN is an ordinary value and propagates
//! as IEEE 754 arithmetic says.

pub mod column;
pub mod def;
pub mod ewma;
pub mod fields;
pub mod fold;
pub mod kernel;
pub mod ofi;
pub mod returns;
pub mod rolling;
pub mod vwap;

use std::fmt;

pub use column::{RecordHeader, StateColumn};
pub use def::{FieldType, KernelDef, ParamKind, ParamSpec, StateField};
pub use fold::{Bits, FoldInput, FoldOutput, LateRow, LateRows};
pub use kernel::{BoundKernel, DynKernel, Factory, Kernel};

/// Error for bad kernel parameters or undecodable state bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

pub type KernelResult<T> = Result<T, KernelError>;

/// Every kernel, in the order they are documented.
pub static ALL: &[Factory] = &[
    Factory::of::<ewma::Ewma>(),
    Factory::of::<rolling::RollingMean>(),
    Factory::of::<rolling::RollingStd>(),
    Factory::of::<vwap::Vwap>(),
    Factory::of::<returns::LogReturn>(),
    Factory::of::<ofi::Ofi>(),
];

/// The kernel named `name`.
pub fn find(name: &str) -> KernelResult<&'static Factory> {
    ALL.iter()
        .find(|f| f.def.name == name)
        .ok_or_else(|| KernelError(format!("unknown fintech kernel '{name}'")))
}

/// Binds the kernel named `name` to the literal parameters a call gave.
pub fn bind(name: &str, params: &[f64]) -> KernelResult<BoundKernel> {
    find(name)?.bind(params)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Reference vectors produced by `scripts/reference_vectors.py` (pandas).

    /// Parses a CSV with a header; empty cells are `None`.
    pub fn read_csv(text: &str) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        let mut cols = vec![Vec::new(); header.len()];
        for line in lines.filter(|l| !l.is_empty()) {
            for (i, cell) in line.split(',').enumerate() {
                cols[i].push(if cell.is_empty() {
                    None
                } else {
                    Some(cell.parse::<f64>().unwrap())
                });
            }
        }
        (header, cols)
    }

    pub fn column<'a>(
        data: &'a (Vec<String>, Vec<Vec<Option<f64>>>),
        name: &str,
    ) -> &'a [Option<f64>] {
        let i = data.0.iter().position(|h| h == name).unwrap();
        &data.1[i]
    }

    /// Asserts `got` matches `want` within `rel` relative error (NULLs and NaNs must match).
    pub fn assert_close(got: &[Option<f64>], want: &[Option<f64>], rel: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            match (g, w) {
                (None, None) => {}
                (Some(g), Some(w)) if g.is_nan() && w.is_nan() => {}
                (Some(g), Some(w)) => {
                    let err = (g - w).abs() / w.abs().max(f64::MIN_POSITIVE);
                    assert!(
                        err <= rel || g == w,
                        "{what}: row {i}: got {g:e}, want {w:e} (relative error {err:e})"
                    );
                }
                _ => panic!("{what}: row {i}: got {g:?}, want {w:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_unique_and_fields_named_once() {
        let mut names: Vec<_> = ALL.iter().map(|f| f.def.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for f in ALL {
            let mut fields: Vec<_> = f.def.fields.iter().map(|f| f.name).collect();
            fields.sort();
            fields.dedup();
            assert_eq!(fields.len(), f.def.fields.len(), "{}", f.def.name);
            assert!(f.def.reads_from >= 1 && f.def.reads_from <= f.def.version);
            assert!(
                f.def.version < 128,
                "the record tag holds 7 bits of version"
            );
        }
    }

    /// Binds every kernel with its example's parameters.
    fn every_kernel() -> Vec<BoundKernel> {
        let params: &[(&str, &[f64])] = &[
            ("ewma", &[0.5]),
            ("rolling_mean", &[3.0]),
            ("rolling_std", &[3.0]),
        ];
        ALL.iter()
            .map(|f| {
                let p = params
                    .iter()
                    .find(|(n, _)| *n == f.def.name)
                    .map_or(&[][..], |(_, p)| p);
                f.bind(p).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_kernel_round_trips_its_records() {
        for k in every_kernel() {
            let name = k.def().name;
            let mut col = k.new_column();
            col.push_new();
            let inputs: Vec<Vec<f64>> = (0..k.def().inputs.len())
                .map(|c| (0..5).map(|i| 100.0 + i as f64 + c as f64).collect())
                .collect();
            let slices: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
            let order = [1i64, 2, 2, 5, 9];
            let input = FoldInput {
                columns: &slices,
                valid: None,
                order: Some(&order),
                late_rows: LateRows::Skip,
            };
            let mut out = FoldOutput::new(5);
            let mut dirty = [false];
            col.fold(&input, &[0; 5], &mut dirty, &mut out).unwrap();
            assert!(dirty[0], "{name}");
            let mut record = Vec::new();
            col.encode(0, &mut record);
            col.push_record(&record).unwrap();
            let mut again = Vec::new();
            col.encode(1, &mut again);
            assert_eq!(record, again, "{name}");
            assert_eq!((col.rows(1), col.last_order(1)), (5, Some(9)), "{name}");
            let (header, _) = column::decode_header(&record).unwrap();
            assert_eq!(header.version, k.def().version, "{name}");
            assert!(
                col.push_record(&record[..record.len() - 1]).is_err(),
                "{name}"
            );
            let mut longer = record.clone();
            longer.push(0);
            assert!(col.push_record(&longer).is_err(), "{name} trailing byte");
        }
    }

    #[test]
    fn records_of_other_versions_are_refused_by_name() {
        for k in every_kernel() {
            let mut col = k.new_column();
            col.push_new();
            let mut record = Vec::new();
            col.encode(0, &mut record);
            record[8] = k.def().version << 1;
            let err = col.push_record(&record).unwrap_err().0;
            assert!(err.contains("newer than this build"), "{err}");
            assert!(err.contains(k.def().name), "{err}");
        }
    }

    #[test]
    fn late_rows_follow_the_setting() {
        let k = bind("ewma", &[0.5]).unwrap();
        let xs = [1.0, 3.0, 100.0, 5.0];
        let order = [10i64, 20, 15, 20];
        for (late_rows, want) in [
            (LateRows::Skip, vec![Some(1.0), Some(2.0), None, Some(3.5)]),
            (
                LateRows::Apply,
                vec![Some(1.0), Some(2.0), Some(51.0), Some(28.0)],
            ),
        ] {
            let mut col = k.new_column();
            col.push_new();
            let mut out = FoldOutput::new(4);
            let input = FoldInput {
                columns: &[&xs],
                valid: None,
                order: Some(&order),
                late_rows,
            };
            col.fold(&input, &[0; 4], &mut [false], &mut out).unwrap();
            let got: Vec<_> = (0..4)
                .map(|i| (out.valid[0] & (1 << i) != 0).then_some(out.values[i]))
                .collect();
            assert_eq!((got, out.late), (want, 1), "{late_rows}");
            assert_eq!(col.last_order(0), Some(20));
        }
        let mut col = k.new_column();
        col.push_new();
        let input = FoldInput {
            columns: &[&xs],
            valid: None,
            order: Some(&order),
            late_rows: LateRows::Error,
        };
        let err = col
            .fold(&input, &[0; 4], &mut [false], &mut FoldOutput::new(4))
            .unwrap_err();
        assert_eq!(
            err,
            LateRow {
                order: 15,
                last: 20
            }
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(bind("ewma", &[0.0]).unwrap_err().0.contains("alpha"));
        assert!(bind("ewma", &[1.5]).is_err());
        assert!(bind("ewma", &[f64::NAN]).is_err());
        assert!(bind("ewma", &[1.0]).is_ok());
        assert!(
            bind("rolling_mean", &[0.0])
                .unwrap_err()
                .0
                .contains("window size n")
        );
        assert!(bind("rolling_std", &[2.5]).is_err());
        assert!(bind("vwap", &[1.0]).is_err());
        assert!(bind("nope", &[]).is_err());
    }
}
