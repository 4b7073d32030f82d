//! Exponentially weighted moving average, `adjust=False` form:
//! `y_0 = x_0`, `y_t = (1 - alpha) * y_{t-1} + alpha * x_t`.

use super::{
    KernelDef, KernelError, KernelResult, Reader, StateFieldType, StateValue, put_opt_f64,
};

pub const EWMA: KernelDef = KernelDef {
    name: "ewma",
    inputs: &["x"],
    params: &["alpha"],
    description: "Exponentially weighted moving average of x per key, seeded with the key's \
        first value: y = (1 - alpha) * y_prev + alpha * x. Same as pandas \
        ewm(alpha=alpha, adjust=False).mean().",
    example: "ewma(price, 0.06) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const STATE_FIELDS: &[(&str, StateFieldType)] = &[("ewma", StateFieldType::Float64)];

pub fn validate_alpha(alpha: f64) -> KernelResult<f64> {
    // `!(a > 0)` also rejects NaN.
    if !(alpha > 0.0 && alpha <= 1.0) {
        return Err(KernelError(format!(
            "ewma: alpha must be in (0, 1], got {alpha}"
        )));
    }
    Ok(alpha)
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EwmaState {
    /// `None` until the key's first value.
    pub value: Option<f64>,
}

impl EwmaState {
    #[inline]
    pub fn update(&mut self, alpha: f64, x: f64) -> f64 {
        let y = match self.value {
            None => x,
            Some(prev) => (1.0 - alpha) * prev + alpha * x,
        };
        self.value = Some(y);
        y
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_opt_f64(out, self.value);
    }

    pub fn decode(r: &mut Reader) -> KernelResult<Self> {
        Ok(Self {
            value: r.opt_f64()?,
        })
    }

    pub fn values(&self) -> Vec<StateValue> {
        vec![StateValue::Float64(self.value)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_pandas_ewm_adjust_false() {
        let data = read_csv(include_str!("../../tests/data/reference/ewma.csv"));
        for alpha in ["0.06", "0.5", "1"] {
            let mut s = EwmaState::default();
            let a: f64 = alpha.parse().unwrap();
            let got: Vec<_> = column(&data, "x")
                .iter()
                .map(|x| x.map(|x| s.update(a, x)))
                .collect();
            let want = column(&data, &format!("ewma_{alpha}"));
            // pandas divides by (old_wt + new_wt) and rebuilds alpha from com; the arithmetic
            // differs in the last bits, hence the relative tolerance.
            assert_close(&got, want, 1e-12, &format!("ewma alpha={alpha}"));
        }
    }

    #[test]
    fn first_value_seeds_and_alpha_one_tracks_input() {
        let mut s = EwmaState::default();
        assert_eq!(s.update(0.25, 8.0), 8.0);
        assert_eq!(s.update(0.25, 4.0), 7.0);
        let mut s = EwmaState::default();
        s.update(1.0, 3.0);
        assert_eq!(s.update(1.0, 5.0), 5.0);
    }

    #[test]
    fn nan_propagates() {
        let mut s = EwmaState::default();
        s.update(0.5, 1.0);
        assert!(s.update(0.5, f64::NAN).is_nan());
        assert!(s.update(0.5, 2.0).is_nan());
    }
}
