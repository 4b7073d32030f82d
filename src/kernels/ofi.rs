//! Event order-flow imbalance of Cont, Kukanov & Stoikov (2014):
//! `e_n = 1{Pb_n >= Pb_{n-1}} qb_n - 1{Pb_n <= Pb_{n-1}} qb_{n-1}
//!      - 1{Pa_n <= Pa_{n-1}} qa_n + 1{Pa_n >= Pa_{n-1}} qa_{n-1}`.

use super::{KernelDef, KernelResult, Reader, StateFieldType, StateValue, put_opt_f64};

pub const OFI: KernelDef = KernelDef {
    name: "ofi",
    inputs: &["bid_px", "bid_sz", "ask_px", "ask_sz"],
    params: &[],
    description: "Event order-flow imbalance (Cont, Kukanov & Stoikov 2014) of a top-of-book \
        update against the key's previous quote. NULL on the key's first row.",
    example: "ofi(bid_px, bid_sz, ask_px, ask_sz) OVER (PARTITION BY symbol ORDER BY ts)",
};

pub const STATE_FIELDS: &[(&str, StateFieldType)] = &[
    ("prev_bid_px", StateFieldType::Float64),
    ("prev_bid_sz", StateFieldType::Float64),
    ("prev_ask_px", StateFieldType::Float64),
    ("prev_ask_sz", StateFieldType::Float64),
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfiState {
    /// Previous quote: bid price, bid size, ask price, ask size.
    pub prev: Option<[f64; 4]>,
}

impl OfiState {
    #[inline]
    pub fn update(&mut self, quote: [f64; 4]) -> Option<f64> {
        let [bp, bq, ap, aq] = quote;
        let out = self.prev.map(|[pbp, pbq, pap, paq]| {
            let ind = |c: bool| if c { 1.0 } else { 0.0 };
            ind(bp >= pbp) * bq - ind(bp <= pbp) * pbq - ind(ap <= pap) * aq + ind(ap >= pap) * paq
        });
        self.prev = Some(quote);
        out
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.prev {
            None => put_opt_f64(out, None),
            Some(q) => {
                out.push(1);
                for v in q {
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
    }

    pub fn decode(r: &mut Reader) -> KernelResult<Self> {
        let prev = match r.u8()? {
            0 => None,
            _ => Some([r.f64()?, r.f64()?, r.f64()?, r.f64()?]),
        };
        Ok(Self { prev })
    }

    pub fn values(&self) -> Vec<StateValue> {
        (0..4)
            .map(|i| StateValue::Float64(self.prev.map(|q| q[i])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_reference_vectors() {
        let data = read_csv(include_str!("../../tests/data/reference/ofi.csv"));
        let mut s = OfiState::default();
        let cols: Vec<_> = ["bid_px", "bid_sz", "ask_px", "ask_sz"]
            .iter()
            .map(|c| column(&data, c))
            .collect();
        let got: Vec<_> = (0..cols[0].len())
            .map(|i| s.update([0, 1, 2, 3].map(|c| cols[c][i].unwrap())))
            .collect();
        assert_close(&got, column(&data, "ofi"), 0.0, "ofi");
    }

    #[test]
    fn cases_of_the_paper() {
        let mut s = OfiState::default();
        assert_eq!(s.update([10.0, 5.0, 11.0, 7.0]), None);
        // Bid up: the whole new bid size counts; ask unchanged: size change counts.
        assert_eq!(s.update([10.5, 3.0, 11.0, 4.0]), Some(3.0 - 4.0 + 7.0));
        // Bid down: the whole previous bid size leaves; ask down: new ask size counts.
        assert_eq!(s.update([10.0, 2.0, 10.8, 6.0]), Some(-3.0 - 6.0));
        // Unchanged prices: change in sizes.
        assert_eq!(
            s.update([10.0, 5.0, 10.8, 1.0]),
            Some(5.0 - 2.0 - 1.0 + 6.0)
        );
    }
}
