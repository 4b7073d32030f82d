//! Rolling mean and sample standard deviation (ddof = 1) over the key's last `n` values.
//!
//! The state is the window itself (a sliding buffer), and every output is computed from the
//! window alone, two-pass, with a summation order fixed by the values' positions in the
//! window. So an output never depends on rows that left the window, and state that was stored
//! and reloaded gives bit-identical results.

use super::{KernelDef, KernelError, KernelResult, Reader, StateFieldType, StateValue, put_f64};

pub const ROLLING_MEAN: KernelDef = KernelDef {
    name: "rolling_mean",
    inputs: &["x"],
    params: &["n"],
    description: "Mean of the key's last n values. NULL until the key has n values, like \
        pandas rolling(n).mean().",
    example: "rolling_mean(price, 100) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const ROLLING_STD: KernelDef = KernelDef {
    name: "rolling_std",
    inputs: &["x"],
    params: &["n"],
    description: "Sample standard deviation (ddof = 1) of the key's last n values. NULL until \
        the key has n values, like pandas rolling(n).std(); n = 1 gives NaN.",
    example: "rolling_std(price, 100) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const STATE_FIELDS: &[(&str, StateFieldType)] = &[("window", StateFieldType::Float64List)];

/// Largest accepted window: keeps one key's state well under a megabyte.
pub const MAX_WINDOW: usize = 100_000;

pub fn validate_window(name: &str, n: f64) -> KernelResult<usize> {
    if !(n >= 1.0 && n.fract() == 0.0 && n <= MAX_WINDOW as f64) {
        return Err(KernelError(format!(
            "{name}: window size n must be an integer in [1, {MAX_WINDOW}], got {n}"
        )));
    }
    Ok(n as usize)
}

#[derive(Debug, Clone)]
pub struct RollingState {
    n: usize,
    /// The window is `buf[start..]`, oldest first, at most `n` values. The buffer grows to
    /// `2n` before the window is moved back to the front, so the window is always one
    /// contiguous slice and a push costs O(1) amortized.
    buf: Vec<f64>,
    start: usize,
}

impl PartialEq for RollingState {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.window() == other.window()
    }
}

/// Sum of `f(x)` over `xs` in four accumulators: element `i` always goes to accumulator
/// `i % 4`, so the result depends only on the values and their order, and the four dependency
/// chains run in parallel.
#[inline]
fn sum4(xs: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = xs.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        acc[0] += f(c[0]);
        acc[1] += f(c[1]);
        acc[2] += f(c[2]);
        acc[3] += f(c[3]);
    }
    for (a, x) in acc.iter_mut().zip(rest) {
        *a += f(*x);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

impl RollingState {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            // Grows with the window: a key seen once costs one value, not 2n.
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn heap_size(&self) -> usize {
        self.buf.capacity() * 8
    }

    /// The last (up to) n values, oldest first.
    #[inline]
    pub fn window(&self) -> &[f64] {
        &self.buf[self.start..]
    }

    #[inline]
    fn push(&mut self, x: f64) -> bool {
        if self.buf.len() - self.start == self.n {
            self.start += 1;
        }
        if self.buf.len() == 2 * self.n {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.push(x);
        self.buf.len() - self.start == self.n
    }

    #[inline]
    fn mean(&self) -> f64 {
        sum4(self.window(), |x| x) / self.n as f64
    }

    #[inline]
    pub fn update_mean(&mut self, x: f64) -> Option<f64> {
        self.push(x).then(|| self.mean())
    }

    #[inline]
    pub fn update_std(&mut self, x: f64) -> Option<f64> {
        if !self.push(x) {
            return None;
        }
        let m = self.mean();
        let ss = sum4(self.window(), |v| (v - m) * (v - m));
        Some((ss / (self.n as f64 - 1.0)).sqrt())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let window = self.window();
        out.extend_from_slice(&(window.len() as u32).to_le_bytes());
        for v in window {
            put_f64(out, *v);
        }
    }

    pub fn decode(n: usize, r: &mut Reader) -> KernelResult<Self> {
        let len = r.u32()? as usize;
        if len > n {
            return Err(KernelError(format!(
                "rolling state holds {len} values but the window size is {n}"
            )));
        }
        let mut s = Self::new(n);
        for _ in 0..len {
            s.buf.push(r.f64()?);
        }
        Ok(s)
    }

    pub fn values(&self) -> Vec<StateValue> {
        vec![StateValue::Float64List(self.window().to_vec())]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn run(n: usize, xs: &[Option<f64>], std: bool) -> Vec<Option<f64>> {
        let mut s = RollingState::new(n);
        xs.iter()
            .map(|x| {
                if std {
                    s.update_std(x.unwrap())
                } else {
                    s.update_mean(x.unwrap())
                }
            })
            .collect()
    }

    #[test]
    fn matches_pandas_rolling() {
        let data = read_csv(include_str!("../../tests/data/reference/rolling.csv"));
        let xs = column(&data, "x");
        for n in [1usize, 2, 5, 20] {
            let mean = run(n, xs, false);
            assert_close(&mean, column(&data, &format!("mean_{n}")), 1e-12, "mean");
            let std = run(n, xs, true);
            if n == 1 {
                // One value has no sample spread: 0 / 0, where pandas writes its NaN marker.
                assert!(std.iter().all(|v| v.unwrap().is_nan()));
                continue;
            }
            assert_close(
                &std,
                column(&data, &format!("std_{n}")),
                1e-9,
                "std vs pandas",
            );
            // pandas' online variance drifts a little on price-like data; the exact
            // (fractions-based) reference is the tight check.
            assert_close(
                &std,
                column(&data, &format!("std_exact_{n}")),
                1e-12,
                "std exact",
            );
        }
    }

    #[test]
    fn null_until_full() {
        let mut s = RollingState::new(3);
        assert_eq!(s.update_mean(1.0), None);
        assert_eq!(s.update_mean(2.0), None);
        assert_eq!(s.update_mean(3.0), Some(2.0));
        assert_eq!(s.update_mean(7.0), Some(4.0));
        let mut s = RollingState::new(2);
        assert_eq!(s.update_std(1.0), None);
        assert_eq!(s.update_std(3.0), Some(2f64.sqrt()));
    }

    #[test]
    fn nan_is_a_value_and_leaves_the_window() {
        let mut s = RollingState::new(2);
        s.update_mean(1.0);
        assert!(s.update_mean(f64::NAN).unwrap().is_nan());
        assert!(s.update_mean(2.0).unwrap().is_nan());
        assert_eq!(s.update_mean(4.0), Some(3.0));
    }

    #[test]
    fn result_does_not_depend_on_where_the_buffer_stands() {
        let xs: Vec<f64> = (0..37).map(|i| 100.0 + (i as f64 * 0.37).sin()).collect();
        let mut a = RollingState::new(9);
        for x in &xs {
            a.update_std(*x);
        }
        // A state decoded from bytes has its window at the buffer's front: same outputs.
        let mut bytes = Vec::new();
        a.encode(&mut bytes);
        let mut b = RollingState::decode(9, &mut crate::kernels::Reader::new(&bytes)).unwrap();
        for x in [1.5, 99.25, 100.125] {
            assert_eq!(
                a.update_std(x).map(f64::to_bits),
                b.update_std(x).map(f64::to_bits)
            );
            assert_eq!(a.mean().to_bits(), b.mean().to_bits());
        }
    }

    #[test]
    fn window_size_is_validated() {
        assert_eq!(validate_window("rolling_mean", 100.0), Ok(100));
        assert!(validate_window("rolling_mean", 0.0).is_err());
        assert!(validate_window("rolling_mean", -3.0).is_err());
        assert!(validate_window("rolling_mean", 1.5).is_err());
        assert!(validate_window("rolling_mean", f64::NAN).is_err());
        assert!(validate_window("rolling_mean", 1e9).is_err());
    }
}
