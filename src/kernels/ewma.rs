//! Exponentially weighted moving average, `adjust=False` form:
//! `y_0 = x_0`, `y_t = (1 - alpha) * y_{t-1} + alpha * x_t`.

use super::def::{FieldType, KernelDef, ParamKind, ParamSpec, StateField};
use super::fields::{FieldSink, FieldSource};
use super::{Kernel, KernelResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    alpha: f64,
}

impl Kernel for Ewma {
    /// The last average; `None` until the key's first value.
    type State = Option<f64>;
    type Input = f64;

    const DEF: &'static KernelDef = &KernelDef {
        name: "ewma",
        inputs: &["x"],
        params: &[ParamSpec {
            name: "alpha",
            label: "alpha",
            kind: ParamKind::Real {
                min: 0.0,
                min_open: true,
                max: 1.0,
                max_open: false,
            },
            default: None,
            description: "smoothing factor, the weight of the newest value",
        }],
        fields: &[StateField::new("ewma", FieldType::OptF64)],
        version: 1,
        reads_from: 1,
        description: "Exponentially weighted moving average of x per key, seeded with the \
            key's first value: y = (1 - alpha) * y_prev + alpha * x. Same as pandas \
            ewm(alpha=alpha, adjust=False).mean().",
        example: "ewma(price, 0.06) OVER (PARTITION BY symbol ORDER BY ts)",
    };

    fn bind(params: &[f64]) -> KernelResult<Self> {
        Ok(Self { alpha: params[0] })
    }

    fn new_state(&self) -> Option<f64> {
        None
    }

    #[inline(always)]
    fn update(&self, state: &mut Option<f64>, x: f64) -> Option<f64> {
        let y = match *state {
            None => x,
            Some(prev) => (1.0 - self.alpha) * prev + self.alpha * x,
        };
        *state = Some(y);
        Some(y)
    }

    fn write<S: FieldSink + ?Sized>(&self, state: &Option<f64>, out: &mut S) {
        out.opt_f64(*state);
    }

    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<Option<f64>> {
        src.opt_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn run(alpha: f64, xs: &[Option<f64>]) -> Vec<Option<f64>> {
        let k = Ewma { alpha };
        let mut s = k.new_state();
        xs.iter()
            .map(|x| x.and_then(|x| k.update(&mut s, x)))
            .collect()
    }

    #[test]
    fn matches_pandas_ewm_adjust_false() {
        let data = read_csv(include_str!("../../tests/data/reference/ewma.csv"));
        for alpha in ["0.06", "0.5", "1"] {
            let got = run(alpha.parse().unwrap(), column(&data, "x"));
            let want = column(&data, &format!("ewma_{alpha}"));
            // pandas divides by (old_wt + new_wt) and rebuilds alpha from com; the arithmetic
            // differs in the last bits, hence the relative tolerance.
            assert_close(&got, want, 1e-12, &format!("ewma alpha={alpha}"));
        }
    }

    #[test]
    fn first_value_seeds_and_alpha_one_tracks_input() {
        assert_eq!(
            run(0.25, &[Some(8.0), Some(4.0)]),
            vec![Some(8.0), Some(7.0)]
        );
        assert_eq!(run(1.0, &[Some(3.0), Some(5.0)])[1], Some(5.0));
    }

    #[test]
    fn nan_propagates() {
        let out = run(0.5, &[Some(1.0), Some(f64::NAN), Some(2.0)]);
        assert!(out[1].unwrap().is_nan() && out[2].unwrap().is_nan());
    }
}
