//! Pure arithmetic of every kernel: a state struct, `update`, and a compact byte encoding.
//!
//! Nothing here knows about DataFusion, Arrow or I/O. Every execution path (the keyed-state
//! operator and the plain window evaluator) calls [`Kernel::update`], so there is exactly one
//! definition of every number.
//!
//! Null/NaN policy, the same for every kernel: a row with a NULL in any input is not applied
//! (the state is unchanged and the output is NULL); NaN is an ordinary value and propagates
//! as IEEE 754 arithmetic says.

pub mod ewma;
pub mod ofi;
pub mod returns;
pub mod rolling;
pub mod vwap;

use std::fmt;

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

/// The static description of a kernel: its SQL name, its column inputs and literal parameters.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct KernelDef {
    pub name: &'static str,
    /// Names of the column arguments, in call order.
    pub inputs: &'static [&'static str],
    /// Names of the literal parameters that follow the column arguments.
    pub params: &'static [&'static str],
    pub description: &'static str,
    pub example: &'static str,
}

/// Every kernel, in the order they are documented.
pub const ALL_KERNELS: &[&KernelDef] = &[
    &ewma::EWMA,
    &rolling::ROLLING_MEAN,
    &rolling::ROLLING_STD,
    &vwap::VWAP,
    &returns::LOG_RETURN,
    &ofi::OFI,
];

/// A kernel with its literal parameters bound and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    Ewma { alpha: f64 },
    RollingMean { n: usize },
    RollingStd { n: usize },
    Vwap,
    LogReturn,
    Ofi,
}

/// The per-key state of one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelState {
    Ewma(ewma::EwmaState),
    Rolling(rolling::RollingState),
    Vwap(vwap::VwapState),
    LogReturn(returns::LogReturnState),
    Ofi(ofi::OfiState),
}

/// The type of one field of a kernel's state, as shown by the state tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFieldType {
    Float64,
    Float64List,
}

/// The value of one field of a kernel's state.
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue {
    Float64(Option<f64>),
    Float64List(Vec<f64>),
}

impl Kernel {
    /// Binds literal parameters to the kernel named `name`, validating them.
    pub fn new(name: &str, params: &[f64]) -> KernelResult<Kernel> {
        let def = ALL_KERNELS
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| KernelError(format!("unknown fintech kernel '{name}'")))?;
        if params.len() != def.params.len() {
            return Err(KernelError(format!(
                "{name} takes {} literal parameter(s) ({}), got {}",
                def.params.len(),
                def.params.join(", "),
                params.len()
            )));
        }
        Ok(match name {
            "ewma" => Kernel::Ewma {
                alpha: ewma::validate_alpha(params[0])?,
            },
            "rolling_mean" => Kernel::RollingMean {
                n: rolling::validate_window(name, params[0])?,
            },
            "rolling_std" => Kernel::RollingStd {
                n: rolling::validate_window(name, params[0])?,
            },
            "vwap" => Kernel::Vwap,
            "log_return" => Kernel::LogReturn,
            "ofi" => Kernel::Ofi,
            _ => unreachable!("ALL_KERNELS and Kernel::new disagree on {name}"),
        })
    }

    pub fn def(&self) -> &'static KernelDef {
        match self {
            Kernel::Ewma { .. } => &ewma::EWMA,
            Kernel::RollingMean { .. } => &rolling::ROLLING_MEAN,
            Kernel::RollingStd { .. } => &rolling::ROLLING_STD,
            Kernel::Vwap => &vwap::VWAP,
            Kernel::LogReturn => &returns::LOG_RETURN,
            Kernel::Ofi => &ofi::OFI,
        }
    }

    pub fn name(&self) -> &'static str {
        self.def().name
    }

    /// The literal parameters in canonical text form (shortest round-trip for floats), as
    /// they appear in state ids.
    pub fn params(&self) -> Vec<String> {
        match self {
            Kernel::Ewma { alpha } => vec![format!("{alpha}")],
            Kernel::RollingMean { n } | Kernel::RollingStd { n } => vec![n.to_string()],
            Kernel::Vwap | Kernel::LogReturn | Kernel::Ofi => vec![],
        }
    }

    /// The version of this kernel's state encoding. Bump when `encode` changes.
    pub fn encoding_version(&self) -> u32 {
        1
    }

    /// Heap memory a state holds (for working-set accounting).
    pub fn heap_size(&self, state: &KernelState) -> usize {
        match state {
            KernelState::Rolling(s) => s.heap_size(),
            _ => 0,
        }
    }

    /// At most how much a state's heap grows per row applied, amortized (a rolling window's
    /// buffer until it reaches its final size).
    pub fn growth_per_row(&self) -> usize {
        match self {
            Kernel::RollingMean { .. } | Kernel::RollingStd { .. } => 24,
            _ => 0,
        }
    }

    pub fn new_state(&self) -> KernelState {
        match self {
            Kernel::Ewma { .. } => KernelState::Ewma(ewma::EwmaState::default()),
            Kernel::RollingMean { n } | Kernel::RollingStd { n } => {
                KernelState::Rolling(rolling::RollingState::new(*n))
            }
            Kernel::Vwap => KernelState::Vwap(vwap::VwapState::default()),
            Kernel::LogReturn => KernelState::LogReturn(returns::LogReturnState::default()),
            Kernel::Ofi => KernelState::Ofi(ofi::OfiState::default()),
        }
    }

    /// Applies one row (no NULLs: the caller skips rows with a NULL input) and returns the
    /// output for that row, `None` meaning SQL NULL.
    #[inline]
    pub fn update(&self, state: &mut KernelState, inputs: &[f64]) -> Option<f64> {
        match (self, state) {
            (Kernel::Ewma { alpha }, KernelState::Ewma(s)) => Some(s.update(*alpha, inputs[0])),
            (Kernel::RollingMean { .. }, KernelState::Rolling(s)) => s.update_mean(inputs[0]),
            (Kernel::RollingStd { .. }, KernelState::Rolling(s)) => s.update_std(inputs[0]),
            (Kernel::Vwap, KernelState::Vwap(s)) => Some(s.update(inputs[0], inputs[1])),
            (Kernel::LogReturn, KernelState::LogReturn(s)) => s.update(inputs[0]),
            (Kernel::Ofi, KernelState::Ofi(s)) => {
                s.update([inputs[0], inputs[1], inputs[2], inputs[3]])
            }
            (k, s) => unreachable!("state {s:?} does not belong to kernel {k:?}"),
        }
    }

    /// Names and types of the state fields, as columns of `fintech_state`.
    pub fn state_fields(&self) -> &'static [(&'static str, StateFieldType)] {
        match self {
            Kernel::Ewma { .. } => ewma::STATE_FIELDS,
            Kernel::RollingMean { .. } | Kernel::RollingStd { .. } => rolling::STATE_FIELDS,
            Kernel::Vwap => vwap::STATE_FIELDS,
            Kernel::LogReturn => returns::STATE_FIELDS,
            Kernel::Ofi => ofi::STATE_FIELDS,
        }
    }

    pub fn encode(&self, state: &KernelState, out: &mut Vec<u8>) {
        match state {
            KernelState::Ewma(s) => s.encode(out),
            KernelState::Rolling(s) => s.encode(out),
            KernelState::Vwap(s) => s.encode(out),
            KernelState::LogReturn(s) => s.encode(out),
            KernelState::Ofi(s) => s.encode(out),
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> KernelResult<KernelState> {
        let mut r = Reader::new(bytes);
        let state = match self {
            Kernel::Ewma { .. } => KernelState::Ewma(ewma::EwmaState::decode(&mut r)?),
            Kernel::RollingMean { n } | Kernel::RollingStd { n } => {
                KernelState::Rolling(rolling::RollingState::decode(*n, &mut r)?)
            }
            Kernel::Vwap => KernelState::Vwap(vwap::VwapState::decode(&mut r)?),
            Kernel::LogReturn => KernelState::LogReturn(returns::LogReturnState::decode(&mut r)?),
            Kernel::Ofi => KernelState::Ofi(ofi::OfiState::decode(&mut r)?),
        };
        r.finish(self.name())?;
        Ok(state)
    }

    /// The state's field values, in the order of [`Kernel::state_fields`].
    pub fn state_values(&self, state: &KernelState) -> Vec<StateValue> {
        match state {
            KernelState::Ewma(s) => s.values(),
            KernelState::Rolling(s) => s.values(),
            KernelState::Vwap(s) => s.values(),
            KernelState::LogReturn(s) => s.values(),
            KernelState::Ofi(s) => s.values(),
        }
    }
}

/// Little-endian byte reader used by the state decoders.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> KernelResult<&'a [u8]> {
        if self.pos + n > self.bytes.len() {
            return Err(KernelError(format!(
                "state bytes truncated: need {n} byte(s) at offset {}, have {}",
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> KernelResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> KernelResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> KernelResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn i64(&mut self) -> KernelResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn f64(&mut self) -> KernelResult<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// An optional f64 written by [`put_opt_f64`].
    pub fn opt_f64(&mut self) -> KernelResult<Option<f64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.f64()?)),
            t => Err(KernelError(format!("bad option tag {t} in state bytes"))),
        }
    }

    pub fn finish(&self, what: &str) -> KernelResult<()> {
        if self.pos != self.bytes.len() {
            return Err(KernelError(format!(
                "{} trailing byte(s) after {what} state",
                self.bytes.len() - self.pos
            )));
        }
        Ok(())
    }
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

pub fn put_opt_f64(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_f64(out, v);
        }
    }
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
    fn kernel_names_are_unique() {
        let mut names: Vec<_> = ALL_KERNELS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL_KERNELS.len());
    }

    #[test]
    fn every_kernel_round_trips_its_state() {
        let kernels = [
            Kernel::new("ewma", &[0.5]).unwrap(),
            Kernel::new("rolling_mean", &[3.0]).unwrap(),
            Kernel::new("rolling_std", &[3.0]).unwrap(),
            Kernel::new("vwap", &[]).unwrap(),
            Kernel::new("log_return", &[]).unwrap(),
            Kernel::new("ofi", &[]).unwrap(),
        ];
        for k in kernels {
            let mut s = k.new_state();
            let mut bytes = Vec::new();
            k.encode(&s, &mut bytes);
            assert_eq!(k.decode(&bytes).unwrap(), s, "{} empty", k.name());
            for i in 0..5 {
                let x = 100.0 + i as f64;
                k.update(&mut s, &[x, 10.0 + x, x + 0.5, 7.0]);
            }
            bytes.clear();
            k.encode(&s, &mut bytes);
            assert_eq!(k.decode(&bytes).unwrap(), s, "{} after updates", k.name());
            assert!(k.decode(&bytes[..bytes.len() - 1]).is_err());
            bytes.push(0);
            assert!(k.decode(&bytes).is_err(), "{} trailing byte", k.name());
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(Kernel::new("ewma", &[0.0]).unwrap_err().0.contains("alpha"));
        assert!(Kernel::new("ewma", &[1.5]).is_err());
        assert!(Kernel::new("ewma", &[f64::NAN]).is_err());
        assert!(Kernel::new("ewma", &[1.0]).is_ok());
        assert!(
            Kernel::new("rolling_mean", &[0.0])
                .unwrap_err()
                .0
                .contains("n")
        );
        assert!(Kernel::new("rolling_std", &[2.5]).is_err());
        assert!(Kernel::new("vwap", &[1.0]).is_err());
        assert!(Kernel::new("nope", &[]).is_err());
    }
}
