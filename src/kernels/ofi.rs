//! Event order-flow imbalance of Cont, Kukanov & Stoikov (2014):
//! `e_n = 1{Pb_n >= Pb_{n-1}} qb_n - 1{Pb_n <= Pb_{n-1}} qb_{n-1}
//!      - 1{Pa_n <= Pa_{n-1}} qa_n + 1{Pa_n >= Pa_{n-1}} qa_{n-1}`.

use super::def::{FieldType, KernelDef, StateField};
use super::fields::{ByteReader, FieldSink, FieldSource};
use super::{Kernel, KernelResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Ofi;

impl Kernel for Ofi {
    /// The previous quote: bid price, bid size, ask price, ask size.
    type State = Option<[f64; 4]>;
    type Input = [f64; 4];

    const DEF: &'static KernelDef = &KernelDef {
        name: "ofi",
        inputs: &["bid_px", "bid_sz", "ask_px", "ask_sz"],
        params: &[],
        fields: &[
            StateField::new("prev_bid_px", FieldType::OptF64),
            StateField::new("prev_bid_sz", FieldType::OptF64),
            StateField::new("prev_ask_px", FieldType::OptF64),
            StateField::new("prev_ask_sz", FieldType::OptF64),
        ],
        // Version 1 was a tag byte and the four values; version 2 is the four fields.
        version: 2,
        reads_from: 1,
        description: "Event order-flow imbalance (Cont, Kukanov & Stoikov 2014) of a \
            top-of-book update against the key's previous quote. NULL on the key's first row.",
        example: "ofi(bid_px, bid_sz, ask_px, ask_sz) OVER (PARTITION BY symbol ORDER BY ts)",
    };

    fn bind(_params: &[f64]) -> KernelResult<Self> {
        Ok(Ofi)
    }

    fn new_state(&self) -> Option<[f64; 4]> {
        None
    }

    #[inline(always)]
    fn update(&self, prev: &mut Option<[f64; 4]>, quote: [f64; 4]) -> Option<f64> {
        let [bp, bq, ap, aq] = quote;
        let out = prev.map(|[pbp, pbq, pap, paq]| {
            let ind = |c: bool| if c { 1.0 } else { 0.0 };
            ind(bp >= pbp) * bq - ind(bp <= pbp) * pbq - ind(ap <= pap) * aq + ind(ap >= pap) * paq
        });
        *prev = Some(quote);
        out
    }

    fn write<S: FieldSink + ?Sized>(&self, prev: &Option<[f64; 4]>, out: &mut S) {
        for i in 0..4 {
            out.opt_f64(prev.map(|q| q[i]));
        }
    }

    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<Option<[f64; 4]>> {
        let q = [
            src.opt_f64()?,
            src.opt_f64()?,
            src.opt_f64()?,
            src.opt_f64()?,
        ];
        Ok(match q {
            [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
            _ => None,
        })
    }

    fn read_legacy(&self, _version: u8, src: &mut ByteReader) -> KernelResult<Option<[f64; 4]>> {
        Ok(match src.u8()? {
            0 => None,
            _ => Some([src.f64()?, src.f64()?, src.f64()?, src.f64()?]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::Bytes;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn matches_reference_vectors() {
        let data = read_csv(include_str!("../../tests/data/reference/ofi.csv"));
        let mut s = None;
        let cols: Vec<_> = ["bid_px", "bid_sz", "ask_px", "ask_sz"]
            .iter()
            .map(|c| column(&data, c))
            .collect();
        let got: Vec<_> = (0..cols[0].len())
            .map(|i| Ofi.update(&mut s, [0, 1, 2, 3].map(|c| cols[c][i].unwrap())))
            .collect();
        assert_close(&got, column(&data, "ofi"), 0.0, "ofi");
    }

    #[test]
    fn cases_of_the_paper() {
        let mut s = None;
        assert_eq!(Ofi.update(&mut s, [10.0, 5.0, 11.0, 7.0]), None);
        // Bid up: the whole new bid size counts; ask unchanged: size change counts.
        assert_eq!(
            Ofi.update(&mut s, [10.5, 3.0, 11.0, 4.0]),
            Some(3.0 - 4.0 + 7.0)
        );
        // Bid down: the whole previous bid size leaves; ask down: new ask size counts.
        assert_eq!(Ofi.update(&mut s, [10.0, 2.0, 10.8, 6.0]), Some(-3.0 - 6.0));
        // Unchanged prices: change in sizes.
        assert_eq!(
            Ofi.update(&mut s, [10.0, 5.0, 10.8, 1.0]),
            Some(5.0 - 2.0 - 1.0 + 6.0)
        );
    }

    #[test]
    fn version_1_bytes_read_as_the_same_quote() {
        // Version 1: a tag byte, then the four values.
        let mut v1 = vec![1u8];
        for v in [10.0f64, 5.0, 11.0, 7.0] {
            v1.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let got = Ofi.read_legacy(1, &mut ByteReader::new(&v1)).unwrap();
        assert_eq!(got, Some([10.0, 5.0, 11.0, 7.0]));
        assert_eq!(
            Ofi.read_legacy(1, &mut ByteReader::new(&[0])).unwrap(),
            None
        );
        let mut v2 = Vec::new();
        Ofi.write(&got, &mut Bytes(&mut v2));
        assert_eq!(Ofi.read(&mut ByteReader::new(&v2)).unwrap(), got);
    }
}
