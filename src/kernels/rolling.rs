//! Rolling mean and sample standard deviation (ddof = 1) over the key's last `n` values, in
//! O(1) amortized per row.
//!
//! The state is the window (a ring buffer of the last `n` values) and running sums of the
//! values, and of their squares, taken about a *shift* `k`: `S1 = Σ(x − k)`, `S2 = Σ(x − k)²`.
//! A new value adds its term, the value leaving the window subtracts the very same term (the
//! shift has not changed since it was added, so the same float is subtracted), and every sum
//! is compensated (Knuth's TwoSum), so the sums hold the window's terms to far below an ulp.
//! The mean is `k + S1/n` and the variance `(S2 − S1²/n) / (n − 1)`: with `k` near the
//! window's mean, `S2 − S1²/n` does not cancel, and the result is within a few ulps of the
//! exact value.
//!
//! When the window fills, and then every `max(n, 1024)` values, the sums are recomputed from
//! the window alone, oldest value first, with `k` set to the window's mean (the mean kernel:
//! its newest value): the shift
//! follows the data, and no error can build up over a series of any length (the compensation
//! terms keep the sums' rounding errors to far below an ulp over a thousand rows, so the
//! recomputation is a bound, not what the accuracy rests on; for small windows its two passes
//! over the window every `n` rows cost a fifth of the update). They are recomputed sooner
//! when the shift has drifted so far from the window (after a jump to another level) that the
//! result would lose more than about a thousand ulps: `S2` more than 1024 times the spread
//! `S2 − S1²/n`, or, for the mean, `|k|` more than 1024 times the mean and the newest value.
//! Right after a recomputation neither holds, and neither can come back within one row, so the
//! recomputations cost O(1) amortized per row. Everything the update keeps —
//! the window, `k`, the sums and their compensation terms, and the count of values since the
//! recomputation — is the stored state, so a reloaded state continues bit for bit.
//!
//! NaN and infinities are values: they are counted rather than summed, and while the window
//! holds one, the mean is what IEEE arithmetic gives for the window (NaN, or the infinity) and
//! the standard deviation is NaN. The counts are derived from the window when a state is read.

use super::def::{FieldType, KernelDef, ParamKind, ParamSpec, StateField};
use super::fields::{ByteReader, FieldSink, FieldSource};
use super::{Kernel, KernelError, KernelResult};

/// Largest accepted window: keeps one key's state under a megabyte.
pub const MAX_WINDOW: usize = 100_000;

/// Fewest values between two recomputations of the sums from the window.
const RECOMPUTE_EVERY: u64 = 1024;

/// How much precision the sums may lose before they are recomputed: a relative error of about
/// this many ulps. The variance loses `S2 / M2` ulps (squares about a shift away from the
/// window's mean), the mean `|k| / |mean|` (a shift far from the window's level).
const COND_LIMIT: f64 = 1024.0;

const WINDOW_PARAM: ParamSpec = ParamSpec {
    name: "n",
    label: "window size n",
    kind: ParamKind::Integer {
        min: 1,
        max: MAX_WINDOW as i64,
    },
    default: None,
    description: "number of values in the window",
};

/// The key's last `n` values, oldest first, in a ring buffer that never holds more than `n`.
#[derive(Debug, Clone)]
pub struct Window {
    n: usize,
    buf: Vec<f64>,
    /// Position of the oldest value once the window is full; 0 before.
    head: usize,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n
            && self.len() == other.len()
            && self
                .values()
                .zip(other.values())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Window {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            buf: Vec::new(),
            head: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() == self.n
    }

    /// Appends `x`; returns the value that left the window, if it was full.
    #[inline(always)]
    pub fn push(&mut self, x: f64) -> Option<f64> {
        if self.buf.len() < self.n {
            if self.buf.len() == self.buf.capacity() {
                // Doubling, but never past n: a key seen once costs a few values, not 2n.
                let more = self.buf.capacity().max(4).min(self.n - self.buf.len());
                self.buf.reserve_exact(more);
            }
            self.buf.push(x);
            return None;
        }
        Some(self.replace_oldest(x))
    }

    /// Replaces the oldest value of a full window with `x`; returns the oldest.
    #[inline(always)]
    fn replace_oldest(&mut self, x: f64) -> f64 {
        let old = std::mem::replace(&mut self.buf[self.head], x);
        self.head += 1;
        if self.head == self.n {
            self.head = 0;
        }
        old
    }

    /// The window in two parts, oldest first.
    pub fn parts(&self) -> [&[f64]; 2] {
        [&self.buf[self.head..], &self.buf[..self.head]]
    }

    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let [a, b] = self.parts();
        a.iter().chain(b).copied()
    }

    /// Where the next value goes.
    #[inline(always)]
    fn next_slot(&self) -> *const f64 {
        let at = if self.is_full() {
            self.head
        } else {
            self.buf.len()
        };
        self.buf.as_ptr().wrapping_add(at)
    }

    fn newest_finite(&self) -> Option<f64> {
        let [a, b] = self.parts();
        b.iter()
            .rev()
            .chain(a.iter().rev())
            .copied()
            .find(|v| v.is_finite())
    }

    pub fn heap_size(&self) -> usize {
        self.buf.capacity() * 8
    }
}

/// A compensated sum: `s + c` is the sum of the terms added, to far below an ulp of `s`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sum {
    s: f64,
    c: f64,
}

impl Sum {
    /// Knuth's TwoSum: the rounding error of `s + t`, exactly, goes into `c`.
    #[inline(always)]
    fn add(&mut self, t: f64) {
        let s = self.s + t;
        let bp = s - self.s;
        self.c += (self.s - (s - bp)) + (t - bp);
        self.s = s;
    }

    #[inline(always)]
    fn value(&self) -> f64 {
        self.s + self.c
    }
}

/// The state of `rolling_mean` and `rolling_std` (the mean leaves `sum_sq` at zero).
#[derive(Debug, Clone, PartialEq)]
pub struct RollingState {
    window: Window,
    /// The shift `k` the sums are taken about.
    shift: f64,
    /// `Σ(x − k)` over the window's finite values.
    sum: Sum,
    /// `Σ(x − k)²` over the window's finite values.
    sum_sq: Sum,
    /// Values pushed since the sums were last recomputed from the window.
    since: u64,
    /// The window's NaNs, +infinities and −infinities (derived from the window).
    nan: u32,
    pos_inf: u32,
    neg_inf: u32,
}

impl RollingState {
    pub fn new(n: usize) -> Self {
        Self {
            window: Window::new(n),
            shift: 0.0,
            sum: Sum::default(),
            sum_sq: Sum::default(),
            since: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
        }
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    #[inline(always)]
    fn count(&mut self, x: f64, by: i32) {
        if x.is_nan() {
            self.nan = self.nan.wrapping_add_signed(by);
        } else if x > 0.0 {
            self.pos_inf = self.pos_inf.wrapping_add_signed(by);
        } else {
            self.neg_inf = self.neg_inf.wrapping_add_signed(by);
        }
    }

    /// Adds `x` to the window and the sums; when the window fills and every `max(n, 1024)`
    /// values, recomputes the sums.
    #[inline(always)]
    fn push<const SQ: bool>(&mut self, x: f64) {
        if self.window.is_empty() && x.is_finite() {
            self.shift = x;
        }
        let old = self.window.push(x);
        if x.is_finite() {
            let d = x - self.shift;
            self.sum.add(d);
            if SQ {
                self.sum_sq.add(d * d);
            }
        } else {
            self.count(x, 1);
        }
        if let Some(o) = old {
            if o.is_finite() {
                let d = o - self.shift;
                self.sum.add(-d);
                if SQ {
                    self.sum_sq.add(-(d * d));
                }
            } else {
                self.count(o, -1);
            }
        }
        self.since += 1;
        // The window just filled: its sums were taken about its first value.
        let filled = old.is_none() && self.window.is_full();
        if filled || self.since >= self.recompute_period() {
            self.recompute::<SQ>();
        }
    }

    /// Values between two recomputations of the sums from the window.
    #[inline(always)]
    fn recompute_period(&self) -> u64 {
        (self.window.n as u64).max(RECOMPUTE_EVERY)
    }

    /// [`Self::push`] for the common row, with the sums on locals: the window full of finite
    /// values, `x` finite and no recomputation due. Returns the new sums, or `None` (having
    /// changed nothing) when the row needs the general path. The arithmetic is the general
    /// path's, term for term.
    #[inline(always)]
    fn push_steady<const SQ: bool>(&mut self, x: f64) -> Option<(Sum, Sum)> {
        let steady = self.window.is_full()
            && x.is_finite()
            && self.nan + self.pos_inf + self.neg_inf == 0
            && self.since + 1 < self.recompute_period();
        if !steady {
            return None;
        }
        let o = self.window.replace_oldest(x);
        let (mut sum, mut sum_sq) = (self.sum, self.sum_sq);
        let d = x - self.shift;
        sum.add(d);
        if SQ {
            sum_sq.add(d * d);
        }
        let d = o - self.shift;
        sum.add(-d);
        if SQ {
            sum_sq.add(-(d * d));
        }
        self.sum = sum;
        self.sum_sq = sum_sq;
        self.since += 1;
        Some((sum, sum_sq))
    }

    /// The sums from the window alone, oldest value first, about a new shift: the window's
    /// newest finite value for the mean; for the standard deviation, the mean computed about
    /// that value, so that `S2` is a sum of squared deviations. A window of equal values sums
    /// to exactly zero either way.
    #[cold]
    fn recompute<const SQ: bool>(&mut self) {
        let k0 = self.window.newest_finite().unwrap_or(0.0);
        let finite = || self.window.values().filter(|v| v.is_finite());
        let mut s = Sum::default();
        let mut count = 0usize;
        for v in finite() {
            s.add(v - k0);
            count += 1;
        }
        let (mut sum, mut sum_sq) = (s, Sum::default());
        let mut shift = k0;
        if SQ && count > 0 {
            shift = k0 + s.value() / count as f64;
            sum = Sum::default();
            for v in finite() {
                let d = v - shift;
                sum.add(d);
                sum_sq.add(d * d);
            }
        }
        self.shift = shift;
        self.sum = sum;
        self.sum_sq = sum_sq;
        self.since = 0;
    }

    /// Recounts the window's non-finite values (after a read).
    fn recount(&mut self) {
        (self.nan, self.pos_inf, self.neg_inf) = (0, 0, 0);
        let odd: Vec<f64> = self.window.values().filter(|v| !v.is_finite()).collect();
        for v in odd {
            self.count(v, 1);
        }
    }

    fn mean(&self, r: &Reciprocals) -> f64 {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else {
            Self::mean_about(self.shift, self.sum, self.window.n, r)
        }
    }

    /// `k + (s + c)/n`: the mean of a window of finite values whose sum about the shift `k`
    /// is `s + c`.
    #[inline(always)]
    fn mean_about(shift: f64, sum: Sum, n: usize, r: &Reciprocals) -> f64 {
        // k + (s + c)/n, with the quotient and the addition carried in double-double,
        // rounded once at the end: the mean of (3, 5, 9) is 17/3 rounded, not 9 - 10/3
        // rounded twice. q = s·(1/n) is within an ulp or two of s/n, and the remainder
        // s − q·n is exact without FMA (which a baseline x86-64 build does not have): q is
        // split into halves of 26 bits, whose products with n (at most 17 bits) are exact,
        // and subtracting them from s, which they nearly equal, rounds nothing. The
        // remainder, scaled by 1/n, corrects q's error.
        let n_inv = r.n;
        let n = n as f64;
        let (s, c) = (sum.s, sum.c);
        let q = s * n_inv;
        let split = q * 134_217_729.0; // 2^27 + 1
        let q_hi = split - (split - q);
        let q_lo = q - q_hi;
        let low = ((s - q_hi * n) - q_lo * n + c) * n_inv;
        let m = shift + q;
        let bp = m - shift;
        let err = (shift - (m - bp)) + (q - bp);
        m + (err + low)
    }

    /// `(M2, S2)`: the sum of squared deviations from the mean, and the sum of squares about
    /// the shift it is computed from (NaN while the window holds a non-finite value).
    #[inline(always)]
    fn spread(&self, r: &Reciprocals) -> (f64, f64) {
        if self.nan + self.pos_inf + self.neg_inf > 0 {
            return (f64::NAN, f64::NAN);
        }
        Self::spread_of(self.sum, self.sum_sq, r)
    }

    /// `(M2, S2)` of a window of finite values with these sums.
    #[inline(always)]
    fn spread_of(sum: Sum, sum_sq: Sum, r: &Reciprocals) -> (f64, f64) {
        let s1 = sum.value();
        let s2 = sum_sq.value();
        (s2 - s1 * (s1 * r.n), s2)
    }

    #[inline(always)]
    fn std_of(m2: f64, r: &Reciprocals) -> f64 {
        // Rounding can leave a zero spread a hair below zero; NaN (n = 1) stays NaN.
        let m2 = if m2 < 0.0 { 0.0 } else { m2 };
        (m2 * r.n_minus_1).sqrt()
    }

    fn std(&self, r: &Reciprocals) -> f64 {
        Self::std_of(self.spread(r).0, r)
    }

    fn write<S: FieldSink + ?Sized, const SQ: bool>(&self, out: &mut S) {
        out.list_f64(&self.window.parts());
        out.f64(self.shift);
        out.f64(self.sum.s);
        out.f64(self.sum.c);
        if SQ {
            out.f64(self.sum_sq.s);
            out.f64(self.sum_sq.c);
        }
        out.i64(self.since as i64);
    }

    fn read_window<S: FieldSource + ?Sized>(n: usize, src: &mut S) -> KernelResult<Self> {
        let mut values = Vec::new();
        src.list_f64(&mut values)?;
        if values.len() > n {
            return Err(KernelError(format!(
                "rolling state holds {} values but the window size is {n}",
                values.len()
            )));
        }
        let mut state = Self::new(n);
        state.window.buf = values;
        Ok(state)
    }

    fn read<S: FieldSource + ?Sized, const SQ: bool>(n: usize, src: &mut S) -> KernelResult<Self> {
        let mut state = Self::read_window(n, src)?;
        state.shift = src.f64()?;
        state.sum = Sum {
            s: src.f64()?,
            c: src.f64()?,
        };
        if SQ {
            state.sum_sq = Sum {
                s: src.f64()?,
                c: src.f64()?,
            };
        }
        state.since = u64::try_from(src.i64()?)
            .map_err(|_| KernelError("rolling state: negative rows_since_recompute".into()))?;
        state.recount();
        Ok(state)
    }

    /// Version 1 kept the window alone: the sums are computed from it.
    fn read_v1<const SQ: bool>(n: usize, src: &mut ByteReader) -> KernelResult<Self> {
        let mut state = Self::read_window(n, src)?;
        state.recount();
        state.recompute::<SQ>();
        Ok(state)
    }
}

const MEAN_FIELDS: &[StateField] = &[
    StateField::new("window", FieldType::ListF64),
    StateField::new("shift", FieldType::F64),
    StateField::new("sum", FieldType::F64),
    StateField::new("sum_comp", FieldType::F64),
    StateField::new("rows_since_recompute", FieldType::I64),
];

const STD_FIELDS: &[StateField] = &[
    StateField::new("window", FieldType::ListF64),
    StateField::new("shift", FieldType::F64),
    StateField::new("sum", FieldType::F64),
    StateField::new("sum_comp", FieldType::F64),
    StateField::new("sum_sq", FieldType::F64),
    StateField::new("sum_sq_comp", FieldType::F64),
    StateField::new("rows_since_recompute", FieldType::I64),
];

const MEAN_DEF: KernelDef = KernelDef {
    name: "rolling_mean",
    inputs: &["x"],
    params: &[WINDOW_PARAM],
    fields: MEAN_FIELDS,
    // Version 1 kept the window alone.
    version: 2,
    reads_from: 1,
    description: "Mean of the key's last n values. NULL until the key has n values, like \
        pandas rolling(n).mean().",
    example: "rolling_mean(price, 100) OVER (PARTITION BY symbol ORDER BY ts)",
};

const STD_DEF: KernelDef = KernelDef {
    name: "rolling_std",
    inputs: &["x"],
    params: &[WINDOW_PARAM],
    fields: STD_FIELDS,
    // Version 1 kept the window alone.
    version: 2,
    reads_from: 1,
    description: "Sample standard deviation (ddof = 1) of the key's last n values. NULL \
        until the key has n values, like pandas rolling(n).std(); n = 1 gives NaN.",
    example: "rolling_std(price, 100) OVER (PARTITION BY symbol ORDER BY ts)",
};

/// The rolling kernels over one window state: the mean (`STD = false`, which leaves the sum
/// of squares out) and the standard deviation (`STD = true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rolling<const STD: bool> {
    n: usize,
    recip: Reciprocals,
}

/// `1/n` and `1/(n − 1)`, rounded: the update multiplies by them. Each adds at most an ulp of
/// rounding to the term it scales (the variance, and the correction `S1²/n`, which is far
/// smaller than `S2` with the shift near the mean), where a division would cost a row a
/// long-latency instruction.
#[derive(Debug, Clone, PartialEq)]
struct Reciprocals {
    n: f64,
    n_minus_1: f64,
}

pub type RollingMean = Rolling<false>;
pub type RollingStd = Rolling<true>;

impl<const STD: bool> Kernel for Rolling<STD> {
    type State = RollingState;
    type Input = f64;
    const GROWTH_PER_ROW: usize = 16;

    const DEF: &'static KernelDef = if STD { &STD_DEF } else { &MEAN_DEF };

    fn bind(params: &[f64]) -> KernelResult<Self> {
        let n = params[0] as usize;
        Ok(Self {
            n,
            recip: Reciprocals {
                n: 1.0 / n as f64,
                n_minus_1: 1.0 / (n as f64 - 1.0),
            },
        })
    }

    fn new_state(&self) -> RollingState {
        RollingState::new(self.n)
    }

    #[inline(always)]
    fn update(&self, s: &mut RollingState, x: f64) -> Option<f64> {
        let steady = s.push_steady::<STD>(x);
        if steady.is_none() {
            s.push::<STD>(x);
            if !s.window.is_full() {
                return None;
            }
        }
        if STD {
            let (m2, s2) = match steady {
                Some((sum, sum_sq)) => RollingState::spread_of(sum, sum_sq, &self.recip),
                None => s.spread(&self.recip),
            };
            // Squares about a shift far from the window's mean (a level it has left) lose
            // the spread: recompute about the mean.
            if s2 > COND_LIMIT * m2 && s.since > 0 {
                s.recompute::<true>();
                return Some(s.std(&self.recip));
            }
            Some(RollingState::std_of(m2, &self.recip))
        } else {
            let mean = match steady {
                Some((sum, _)) => RollingState::mean_about(s.shift, sum, self.n, &self.recip),
                None => s.mean(&self.recip),
            };
            // A shift far from the window (a level it has left) costs the sum its precision:
            // recompute about a value of the window.
            if s.shift.abs() > COND_LIMIT * mean.abs().max(x.abs()) && s.since > 0 {
                s.recompute::<false>();
                return Some(s.mean(&self.recip));
            }
            Some(mean)
        }
    }

    fn write<S: FieldSink + ?Sized>(&self, s: &RollingState, out: &mut S) {
        s.write::<S, STD>(out);
    }

    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<RollingState> {
        RollingState::read::<S, STD>(self.n, src)
    }

    fn read_legacy(&self, _version: u8, src: &mut ByteReader) -> KernelResult<RollingState> {
        RollingState::read_v1::<STD>(self.n, src)
    }

    #[inline(always)]
    fn prefetch(&self, s: &RollingState) {
        super::fold::prefetch(s.window.next_slot());
    }

    fn heap_size(s: &RollingState) -> usize {
        s.window.heap_size()
    }

    fn full_heap_size(&self) -> usize {
        self.n * 8
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::Bytes;
    use super::super::test_support::*;
    use super::*;

    fn mean_of(n: usize, xs: &[f64]) -> Vec<Option<f64>> {
        let k = RollingMean::bind(&[n as f64]).unwrap();
        let mut s = k.new_state();
        xs.iter().map(|x| k.update(&mut s, *x)).collect()
    }

    fn std_of(n: usize, xs: &[f64]) -> Vec<Option<f64>> {
        let k = RollingStd::bind(&[n as f64]).unwrap();
        let mut s = k.new_state();
        xs.iter().map(|x| k.update(&mut s, *x)).collect()
    }

    /// Double-double arithmetic (about 106 bits): the exact reference of the long tests.
    #[derive(Clone, Copy)]
    struct Dd(f64, f64);

    impl Dd {
        fn add(self, b: Dd) -> Dd {
            let s = self.0 + b.0;
            let bp = s - self.0;
            let e = (self.0 - (s - bp)) + (b.0 - bp) + self.1 + b.1;
            let hi = s + e;
            Dd(hi, e - (hi - s))
        }
        fn mul(self, b: Dd) -> Dd {
            let p = self.0 * b.0;
            let e = self.0.mul_add(b.0, -p) + self.0 * b.1 + self.1 * b.0;
            let hi = p + e;
            Dd(hi, e - (hi - p))
        }
        fn div(self, d: f64) -> Dd {
            let q = self.0 / d;
            let r = self.add(Dd(-q * d, -q.mul_add(d, -(q * d))));
            let q2 = r.0 / d;
            let hi = q + q2;
            Dd(hi, q2 - (hi - q))
        }
    }

    /// Mean and sample standard deviation of `w`, two-pass in double-double.
    fn exact(w: &[f64]) -> (f64, f64) {
        let n = w.len() as f64;
        let sum = w.iter().fold(Dd(0.0, 0.0), |a, &x| a.add(Dd(x, 0.0)));
        let mean = sum.div(n);
        let ss = w.iter().fold(Dd(0.0, 0.0), |a, &x| {
            let d = Dd(x, 0.0).add(Dd(-mean.0, -mean.1));
            a.add(d.mul(d))
        });
        (mean.0, ss.div(n - 1.0).0.sqrt())
    }

    fn rel(got: f64, want: f64) -> f64 {
        if got == want {
            0.0
        } else {
            (got - want).abs() / want.abs()
        }
    }

    #[test]
    fn matches_pandas_and_the_exact_reference() {
        let data = read_csv(include_str!("../../tests/data/reference/rolling.csv"));
        let xs: Vec<f64> = column(&data, "x").iter().map(|x| x.unwrap()).collect();
        for n in [1usize, 2, 5, 20] {
            assert_close(
                &mean_of(n, &xs),
                column(&data, &format!("mean_{n}")),
                1e-12,
                "mean",
            );
            let std = std_of(n, &xs);
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

    /// A random walk of 10M values (prices around 100 with cent-sized steps, drifting far
    /// from where they start), checked against the exact mean and standard deviation of the
    /// window at 1,000 places along it: the running sums never drift.
    #[test]
    fn no_drift_over_ten_million_rows() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut x = 100.0f64;
        let xs: Vec<f64> = (0..10_000_000)
            .map(|_| {
                x += ((next() % 2001) as f64 - 1000.0) * 1e-5;
                x
            })
            .collect();
        for n in [100usize, 1000] {
            let (km, ks) = (
                RollingMean::bind(&[n as f64]).unwrap(),
                RollingStd::bind(&[n as f64]).unwrap(),
            );
            let (mut sm, mut ss) = (km.new_state(), ks.new_state());
            let (mut worst_mean, mut worst_std) = (0.0f64, 0.0f64);
            for (i, &x) in xs.iter().enumerate() {
                let (m, s) = (km.update(&mut sm, x), ks.update(&mut ss, x));
                if i >= n && i % 9_973 == 0 {
                    let (em, es) = exact(&xs[i + 1 - n..=i]);
                    worst_mean = worst_mean.max(rel(m.unwrap(), em));
                    worst_std = worst_std.max(rel(s.unwrap(), es));
                }
            }
            assert!(worst_mean <= 1e-15, "n={n}: mean off by {worst_mean:e}");
            assert!(worst_std <= 1e-13, "n={n}: std off by {worst_std:e}");
        }
    }

    /// Hard windows: a jump far larger than the spread, a lone spike, a tiny spread far from
    /// zero, a trend, and windows of equal values (whose spread is exactly zero).
    #[test]
    fn hard_series_stay_exact() {
        let mut series: Vec<(&str, Vec<f64>)> = Vec::new();
        series.push((
            "jump",
            (0..600)
                .map(|i| {
                    if i < 300 {
                        1e-3 * (i % 7) as f64
                    } else {
                        1e6 + 1e-3 * (i % 5) as f64
                    }
                })
                .collect(),
        ));
        series.push((
            "jump down",
            (0..600)
                .map(|i| {
                    if i < 300 {
                        1e6 + 1e-3 * (i % 7) as f64
                    } else {
                        1e-3 * (i % 5) as f64 + 1e-4
                    }
                })
                .collect(),
        ));
        series.push((
            "spike",
            (0..600)
                .map(|i| {
                    if i == 250 {
                        1e9
                    } else {
                        3.0 + 1e-4 * (i % 3) as f64
                    }
                })
                .collect(),
        ));
        series.push((
            "tiny spread",
            (0..600)
                .map(|i| 1e7 + 1e-6 * ((i * 37) % 11) as f64)
                .collect(),
        ));
        series.push((
            "trend",
            (0..600)
                .map(|i| 0.5 * i as f64 + 1e-3 * (i % 3) as f64)
                .collect(),
        ));
        for (name, xs) in &series {
            for n in [2usize, 7, 64] {
                let std = std_of(n, xs);
                let mean = mean_of(n, xs);
                for i in n - 1..xs.len() {
                    let (em, es) = exact(&xs[i + 1 - n..=i]);
                    let (m, s) = (mean[i].unwrap(), std[i].unwrap());
                    assert!(
                        rel(m, em) <= 1e-15,
                        "{name} n={n} row {i}: mean {m} vs {em}"
                    );
                    assert!(rel(s, es) <= 1e-12, "{name} n={n} row {i}: std {s} vs {es}");
                }
            }
        }
        let flat = vec![0.1f64; 50];
        assert!(std_of(5, &flat)[4..].iter().all(|s| *s == Some(0.0)));
        assert!(mean_of(5, &flat)[4..].iter().all(|m| *m == Some(0.1)));
    }

    #[test]
    fn null_until_full() {
        assert_eq!(
            mean_of(3, &[1.0, 2.0, 3.0, 7.0]),
            vec![None, None, Some(2.0), Some(4.0)]
        );
        assert_eq!(std_of(2, &[1.0, 3.0]), vec![None, Some(2f64.sqrt())]);
    }

    #[test]
    fn nan_and_infinity_are_values_and_leave_the_window() {
        let m = mean_of(2, &[1.0, f64::NAN, 2.0, 4.0]);
        assert!(m[1].unwrap().is_nan() && m[2].unwrap().is_nan());
        assert_eq!(m[3], Some(3.0));
        let m = mean_of(
            2,
            &[
                1.0,
                f64::INFINITY,
                2.0,
                f64::NEG_INFINITY,
                f64::INFINITY,
                5.0,
                6.0,
            ],
        );
        assert_eq!(m[1], Some(f64::INFINITY));
        assert_eq!(m[2], Some(f64::INFINITY));
        assert_eq!(m[3], Some(f64::NEG_INFINITY));
        assert!(m[4].unwrap().is_nan());
        assert_eq!(m[6], Some(5.5));
        let s = std_of(2, &[1.0, f64::INFINITY, 2.0, 4.0]);
        assert!(s[1].unwrap().is_nan() && s[2].unwrap().is_nan());
        assert_eq!(s[3], Some(2f64.sqrt()));
    }

    /// A state written and read back mid-stream continues with the same bits, wherever the
    /// ring buffer and the recomputation stand.
    #[test]
    fn a_reloaded_state_continues_bit_for_bit() {
        let xs: Vec<f64> = (0..500).map(|i| 100.0 + (i as f64 * 0.37).sin()).collect();
        let k = RollingStd::bind(&[9.0]).unwrap();
        let mut a = k.new_state();
        for (i, x) in xs.iter().enumerate() {
            let mut bytes = Vec::new();
            k.write(&a, &mut Bytes(&mut bytes));
            let mut b = k.read(&mut ByteReader::new(&bytes)).unwrap();
            assert_eq!(a, b, "row {i}");
            let (ya, yb) = (k.update(&mut a, *x), k.update(&mut b, *x));
            assert_eq!(ya.map(f64::to_bits), yb.map(f64::to_bits), "row {i}");
        }
    }

    /// Version 1 stored the window alone; such a state reads and continues within the
    /// accuracy of the kernel.
    #[test]
    fn version_1_windows_read_and_continue() {
        let xs: Vec<f64> = (0..40)
            .map(|i| 50.0 + ((i * 7) % 13) as f64 * 0.25)
            .collect();
        let mut v1 = Vec::new();
        Bytes(&mut v1).list_f64(&[&xs[12..20]]);
        let k = RollingStd::bind(&[8.0]).unwrap();
        let mut s = k.read_legacy(1, &mut ByteReader::new(&v1)).unwrap();
        let want = std_of(8, &xs);
        for (i, x) in xs.iter().enumerate().skip(20) {
            let got = k.update(&mut s, *x).unwrap();
            assert!(rel(got, want[i].unwrap()) <= 1e-14, "row {i}");
        }
        let mut long = Vec::new();
        Bytes(&mut long).list_f64(&[&xs[..9]]);
        assert!(k.read_legacy(1, &mut ByteReader::new(&long)).is_err());
    }
}
