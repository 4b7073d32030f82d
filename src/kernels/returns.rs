//! Log return against the key's previous value: `ln(x_t / x_{t-1})`.

use super::def::{FieldType, KernelDef, StateField};
use super::fields::{FieldSink, FieldSource};
use super::{Kernel, KernelResult};

#[derive(Debug, Clone, PartialEq)]
pub struct LogReturn;

impl Kernel for LogReturn {
    /// The previous price.
    type State = Option<f64>;
    type Input = f64;

    const DEF: &'static KernelDef = &KernelDef {
        name: "log_return",
        inputs: &["price"],
        params: &[],
        fields: &[StateField::new("prev_price", FieldType::OptF64)],
        version: 1,
        reads_from: 1,
        description: "Natural log of price over the key's previous price: ln(price / prev). \
            NULL on the key's first row.",
        example: "log_return(price) OVER (PARTITION BY symbol ORDER BY ts)",
    };

    fn bind(_params: &[f64]) -> KernelResult<Self> {
        Ok(LogReturn)
    }

    fn new_state(&self) -> Option<f64> {
        None
    }

    #[inline(always)]
    fn update(&self, prev: &mut Option<f64>, price: f64) -> Option<f64> {
        let out = prev.map(|p| (price / p).ln());
        *prev = Some(price);
        out
    }

    fn write<S: FieldSink + ?Sized>(&self, prev: &Option<f64>, out: &mut S) {
        out.opt_f64(*prev);
    }

    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<Option<f64>> {
        src.opt_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_pandas_log_of_ratio() {
        let data = read_csv(include_str!("../../tests/data/reference/log_return.csv"));
        let mut s = None;
        let got: Vec<_> = column(&data, "price")
            .iter()
            .map(|p| LogReturn.update(&mut s, p.unwrap()))
            .collect();
        // numpy's log may differ from the platform libm in the last bit.
        assert_close(&got, column(&data, "log_return"), 1e-12, "log_return");
    }

    #[test]
    fn first_row_is_null() {
        let mut s = None;
        assert_eq!(LogReturn.update(&mut s, 100.0), None);
        assert_eq!(LogReturn.update(&mut s, 100.0), Some(0.0));
    }
}
