//! Log return against the key's previous value: `ln(x_t / x_{t-1})`.

use super::{KernelDef, KernelResult, Reader, StateFieldType, StateValue, put_opt_f64};

pub const LOG_RETURN: KernelDef = KernelDef {
    name: "log_return",
    inputs: &["price"],
    params: &[],
    description: "Natural log of price over the key's previous price: ln(price / prev). \
        NULL on the key's first row.",
    example: "log_return(price) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const STATE_FIELDS: &[(&str, StateFieldType)] = &[("prev_price", StateFieldType::Float64)];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogReturnState {
    pub prev: Option<f64>,
}

impl LogReturnState {
    #[inline]
    pub fn update(&mut self, price: f64) -> Option<f64> {
        let out = self.prev.map(|prev| (price / prev).ln());
        self.prev = Some(price);
        out
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_opt_f64(out, self.prev);
    }

    pub fn decode(r: &mut Reader) -> KernelResult<Self> {
        Ok(Self { prev: r.opt_f64()? })
    }

    pub fn values(&self) -> Vec<StateValue> {
        vec![StateValue::Float64(self.prev)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_pandas_log_of_ratio() {
        let data = read_csv(include_str!("../../tests/data/reference/log_return.csv"));
        let mut s = LogReturnState::default();
        let got: Vec<_> = column(&data, "price")
            .iter()
            .map(|p| s.update(p.unwrap()))
            .collect();
        // numpy's log may differ from the platform libm in the last bit.
        assert_close(&got, column(&data, "log_return"), 1e-12, "log_return");
    }

    #[test]
    fn first_row_is_null() {
        let mut s = LogReturnState::default();
        assert_eq!(s.update(100.0), None);
        assert_eq!(s.update(100.0), Some(0.0));
    }
}
