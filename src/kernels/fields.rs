//! A state as a sequence of typed fields, written and read through one visitor.
//!
//! A kernel writes its state field by field into a [`FieldSink`] and reads it back from a
//! [`FieldSource`], in the order of its [`super::StateField`]s. The same two functions serve
//! every representation: the compact byte encoding the stores keep ([`Bytes`],
//! [`ByteReader`]), and the Arrow columns of the state tables and of a columnar store
//! (implemented above this layer).
//!
//! Byte encoding, per field type, little-endian: `F64` 8 bytes; `OptF64` a tag byte (0 unset,
//! 1 set) and 8 bytes when set; `I64` 8 bytes; `Bool` one byte; `Timestamp` as `OptF64` with an
//! i64; `ListF64` a u32 length and the values.

use super::{KernelError, KernelResult};

/// Where a state's fields go, in field order.
pub trait FieldSink {
    fn f64(&mut self, v: f64);
    fn opt_f64(&mut self, v: Option<f64>);
    fn i64(&mut self, v: i64);
    fn bool(&mut self, v: bool);
    fn timestamp(&mut self, v: Option<i64>);
    /// A list given in consecutive parts (a ring buffer's two halves), oldest first.
    fn list_f64(&mut self, parts: &[&[f64]]);
}

/// Where a state's fields come from, in field order.
pub trait FieldSource {
    fn f64(&mut self) -> KernelResult<f64>;
    fn opt_f64(&mut self) -> KernelResult<Option<f64>>;
    fn i64(&mut self) -> KernelResult<i64>;
    fn bool(&mut self) -> KernelResult<bool>;
    fn timestamp(&mut self) -> KernelResult<Option<i64>>;
    /// Appends the list's values to `out`.
    fn list_f64(&mut self, out: &mut Vec<f64>) -> KernelResult<()>;
}

/// The byte encoding of a state: a [`FieldSink`] appending to a buffer.
pub struct Bytes<'a>(pub &'a mut Vec<u8>);

impl FieldSink for Bytes<'_> {
    #[inline]
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    #[inline]
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.f64(v);
            }
        }
    }

    #[inline]
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }

    #[inline]
    fn timestamp(&mut self, v: Option<i64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.i64(v);
            }
        }
    }

    fn list_f64(&mut self, parts: &[&[f64]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.0.extend_from_slice(&(len as u32).to_le_bytes());
        self.0.reserve(len * 8);
        for v in parts.iter().flat_map(|p| p.iter()) {
            self.f64(*v);
        }
    }
}

/// Reads the byte encoding back: a [`FieldSource`] over a byte slice.
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
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

    fn tag(&mut self) -> KernelResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(KernelError(format!("bad option tag {t} in state bytes"))),
        }
    }

    /// Fails unless every byte was read.
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

impl FieldSource for ByteReader<'_> {
    #[inline]
    fn f64(&mut self) -> KernelResult<f64> {
        Ok(f64::from_bits(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap(),
        )))
    }

    fn opt_f64(&mut self) -> KernelResult<Option<f64>> {
        Ok(if self.tag()? { Some(self.f64()?) } else { None })
    }

    fn i64(&mut self) -> KernelResult<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn bool(&mut self) -> KernelResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(KernelError(format!("bad boolean {t} in state bytes"))),
        }
    }

    fn timestamp(&mut self) -> KernelResult<Option<i64>> {
        Ok(if self.tag()? { Some(self.i64()?) } else { None })
    }

    fn list_f64(&mut self, out: &mut Vec<f64>) -> KernelResult<()> {
        let len = self.u32()? as usize;
        let bytes = self.take(len * 8)?;
        out.reserve(len);
        out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_bits(u64::from_le_bytes(c.try_into().unwrap()))),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_type_round_trips_and_damage_is_an_error() {
        let mut buf = Vec::new();
        let mut w = Bytes(&mut buf);
        w.f64(-0.0);
        w.opt_f64(None);
        w.opt_f64(Some(f64::NAN));
        w.i64(i64::MIN);
        w.bool(true);
        w.timestamp(Some(-5));
        w.list_f64(&[&[1.0, 2.0], &[], &[3.0]]);
        let mut r = ByteReader::new(&buf);
        assert_eq!(r.f64().unwrap().to_bits(), (-0.0f64).to_bits());
        assert_eq!(r.opt_f64().unwrap(), None);
        assert!(r.opt_f64().unwrap().unwrap().is_nan());
        assert_eq!(r.i64().unwrap(), i64::MIN);
        assert!(r.bool().unwrap());
        assert_eq!(r.timestamp().unwrap(), Some(-5));
        let mut list = Vec::new();
        r.list_f64(&mut list).unwrap();
        assert_eq!(list, vec![1.0, 2.0, 3.0]);
        r.finish("test").unwrap();

        // Cut short, the last field fails to read.
        let mut r = ByteReader::new(&buf[..buf.len() - 1]);
        r.f64().unwrap();
        r.opt_f64().unwrap();
        r.opt_f64().unwrap();
        r.i64().unwrap();
        r.bool().unwrap();
        r.timestamp().unwrap();
        assert!(r.list_f64(&mut Vec::new()).is_err());
        assert!(ByteReader::new(&[7]).opt_f64().is_err());
        assert!(ByteReader::new(&[1, 0]).opt_f64().is_err());
        assert!(ByteReader::new(&[0]).finish("x").is_err());
    }
}
