//! Cumulative volume-weighted average price: `sum(price * qty) / sum(qty)` per key.

use super::def::{FieldType, KernelDef, StateField};
use super::fields::{FieldSink, FieldSource};
use super::{Kernel, KernelResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Vwap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VwapState {
    /// Running sum of price * qty, accumulated in row order (as a cumulative sum would).
    pub notional: f64,
    /// Running sum of qty.
    pub volume: f64,
}

impl Kernel for Vwap {
    type State = VwapState;
    type Input = [f64; 2];

    const DEF: &'static KernelDef = &KernelDef {
        name: "vwap",
        inputs: &["price", "qty"],
        params: &[],
        fields: &[
            StateField::new("notional", FieldType::F64),
            StateField::new("volume", FieldType::F64),
        ],
        version: 1,
        reads_from: 1,
        description: "Cumulative volume-weighted average price per key: sum(price * qty) / \
            sum(qty) over all rows applied so far. A zero cumulative quantity gives NaN or \
            infinity, as IEEE division says.",
        example: "vwap(price, qty) OVER (PARTITION BY symbol ORDER BY ts)",
    };

    fn bind(_params: &[f64]) -> KernelResult<Self> {
        Ok(Vwap)
    }

    fn new_state(&self) -> VwapState {
        VwapState::default()
    }

    #[inline(always)]
    fn update(&self, s: &mut VwapState, [price, qty]: [f64; 2]) -> Option<f64> {
        s.notional += price * qty;
        s.volume += qty;
        Some(s.notional / s.volume)
    }

    fn write<S: FieldSink + ?Sized>(&self, s: &VwapState, out: &mut S) {
        out.f64(s.notional);
        out.f64(s.volume);
    }

    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<VwapState> {
        Ok(VwapState {
            notional: src.f64()?,
            volume: src.f64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_pandas_cumsum_ratio_bit_for_bit() {
        let data = read_csv(include_str!("../../tests/data/reference/vwap.csv"));
        let mut s = VwapState::default();
        let got: Vec<_> = column(&data, "price")
            .iter()
            .zip(column(&data, "qty"))
            .map(|(p, q)| Vwap.update(&mut s, [p.unwrap(), q.unwrap()]))
            .collect();
        // Same operations in the same order as (price * qty).cumsum() / qty.cumsum().
        assert_close(&got, column(&data, "vwap"), 0.0, "vwap");
    }

    #[test]
    fn zero_volume_is_ieee() {
        let mut s = VwapState::default();
        assert!(Vwap.update(&mut s, [10.0, 0.0]).unwrap().is_nan());
        assert_eq!(Vwap.update(&mut s, [10.0, 2.0]), Some(10.0));
    }
}
