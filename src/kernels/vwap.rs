//! Cumulative volume-weighted average price: `sum(price * qty) / sum(qty)` per key.

use super::{KernelDef, KernelResult, Reader, StateFieldType, StateValue, put_f64};

pub const VWAP: KernelDef = KernelDef {
    name: "vwap",
    inputs: &["price", "qty"],
    params: &[],
    description: "Cumulative volume-weighted average price per key: sum(price * qty) / \
        sum(qty) over all rows applied so far. A zero cumulative quantity gives NaN or \
        infinity, as IEEE division says.",
    example: "vwap(price, qty) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const STATE_FIELDS: &[(&str, StateFieldType)] = &[
    ("notional", StateFieldType::Float64),
    ("volume", StateFieldType::Float64),
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VwapState {
    /// Running sum of price * qty, accumulated in row order (as a cumulative sum would).
    pub notional: f64,
    /// Running sum of qty.
    pub volume: f64,
}

impl VwapState {
    #[inline]
    pub fn update(&mut self, price: f64, qty: f64) -> f64 {
        self.notional += price * qty;
        self.volume += qty;
        self.notional / self.volume
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_f64(out, self.notional);
        put_f64(out, self.volume);
    }

    pub fn decode(r: &mut Reader) -> KernelResult<Self> {
        Ok(Self {
            notional: r.f64()?,
            volume: r.f64()?,
        })
    }

    pub fn values(&self) -> Vec<StateValue> {
        vec![
            StateValue::Float64(Some(self.notional)),
            StateValue::Float64(Some(self.volume)),
        ]
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
            .map(|(p, q)| Some(s.update(p.unwrap(), q.unwrap())))
            .collect();
        // Same operations in the same order as (price * qty).cumsum() / qty.cumsum().
        assert_close(&got, column(&data, "vwap"), 0.0, "vwap");
    }

    #[test]
    fn zero_volume_is_ieee() {
        let mut s = VwapState::default();
        assert!(s.update(10.0, 0.0).is_nan());
        assert_eq!(s.update(10.0, 2.0), 10.0);
    }
}
