//! Byte layouts of keys and records.
//!
//! Key: the PARTITION BY values of one row, column after column; each value is a tag byte
//! (0 NULL, 1 value) and then: strings as u32 little-endian length and UTF-8 bytes, signed
//! integers as i64 big-endian with the sign bit flipped, unsigned as u64 big-endian, booleans
//! as one byte. Fixed-width integers are big-endian so that byte order is value order.
//!
//! Records (a key's state of one kernel) are laid out by the kernel layer
//! ([`crate::kernels::column`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, StringBuilder, UInt64Builder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::error::{DataFusionError, Result};

/// How a PARTITION BY value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Utf8,
    Int64,
    UInt64,
    Boolean,
}

impl KeyType {
    /// The encoding for a column of type `dt`, or an error naming the column.
    pub fn of(name: &str, dt: &DataType) -> Result<KeyType> {
        Ok(match dt {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => KeyType::Utf8,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => KeyType::Int64,
            DataType::Timestamp(_, _) => KeyType::Int64,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                KeyType::UInt64
            }
            DataType::Boolean => KeyType::Boolean,
            DataType::Dictionary(_, value) => KeyType::of(name, value)?,
            other => {
                return Err(DataFusionError::Plan(format!(
                    "PARTITION BY column {name} has type {other}; fintech kernels partition by \
                     strings, integers, booleans, timestamps or dictionaries of those"
                )));
            }
        })
    }

    /// The type a key column of this key type is stored as.
    pub fn canonical(&self) -> DataType {
        match self {
            KeyType::Utf8 => DataType::Utf8,
            KeyType::Int64 => DataType::Int64,
            KeyType::UInt64 => DataType::UInt64,
            KeyType::Boolean => DataType::Boolean,
        }
    }
}

/// One PARTITION BY column: its name and its type as the query saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub data_type: DataType,
}

impl KeyColumn {
    pub fn key_type(&self) -> Result<KeyType> {
        KeyType::of(&self.name, &self.data_type)
    }
}

pub fn describe_key_columns(cols: &[KeyColumn]) -> String {
    cols.iter()
        .map(|c| format!("{} {}", c.name, c.data_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encoded keys, one after another: row `i` is `bytes[offsets[i]..offsets[i + 1]]`.
#[derive(Debug)]
pub struct EncodedKeys {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl Default for EncodedKeys {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            offsets: vec![0],
        }
    }
}

impl EncodedKeys {
    /// Appends `key` as the next row.
    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.offsets.push(self.bytes.len());
    }

    /// Appends the concatenation of `parts` as the next row.
    pub fn push_parts(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.offsets.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn row(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// The encoded key of a one-column integer key: `v` as an `Int64` value, or the bits of a
/// `UInt64` one, written into `buf`.
pub fn encode_key_value(t: KeyType, v: i64, buf: &mut [u8; 9]) -> &[u8] {
    buf[0] = 1;
    let bits = match t {
        KeyType::UInt64 => v as u64,
        _ => (v as u64) ^ (1 << 63),
    };
    buf[1..].copy_from_slice(&bits.to_be_bytes());
    &buf[..]
}

/// Encodes the key of every row of `columns` (already cast or castable to their key types).
pub fn encode_keys(
    columns: &[ArrayRef],
    types: &[KeyType],
    num_rows: usize,
) -> Result<EncodedKeys> {
    let canon: Vec<ArrayRef> = columns
        .iter()
        .zip(types)
        .map(|(c, t)| {
            let dt = t.canonical();
            if c.data_type() == &dt {
                Ok(Arc::clone(c))
            } else {
                cast(c, &dt).map_err(DataFusionError::from)
            }
        })
        .collect::<Result<_>>()?;
    let mut out = EncodedKeys {
        bytes: Vec::with_capacity(num_rows * 16),
        offsets: Vec::with_capacity(num_rows + 1),
    };
    out.offsets.push(0);
    for row in 0..num_rows {
        for (col, t) in canon.iter().zip(types) {
            if col.is_null(row) {
                out.bytes.push(0);
                continue;
            }
            out.bytes.push(1);
            match t {
                KeyType::Utf8 => {
                    let s = col.as_string::<i32>().value(row).as_bytes();
                    out.bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.bytes.extend_from_slice(s);
                }
                KeyType::Int64 => {
                    let v = col.as_primitive::<Int64Type>().value(row);
                    out.bytes
                        .extend_from_slice(&encode_key_value(*t, v, &mut [0; 9])[1..]);
                }
                KeyType::UInt64 => {
                    let v = col.as_primitive::<UInt64Type>().value(row) as i64;
                    out.bytes
                        .extend_from_slice(&encode_key_value(*t, v, &mut [0; 9])[1..]);
                }
                KeyType::Boolean => out.bytes.push(col.as_boolean().value(row) as u8),
            }
        }
        out.offsets.push(out.bytes.len());
    }
    Ok(out)
}

fn corrupt_key(what: &str) -> DataFusionError {
    DataFusionError::Execution(format!("damaged state key: {what}"))
}

/// Decodes keys back into one array per key column, with the columns' original types.
pub fn decode_keys(keys: &[&[u8]], columns: &[KeyColumn]) -> Result<Vec<ArrayRef>> {
    enum B {
        S(StringBuilder),
        I(Int64Builder),
        U(UInt64Builder),
        Bo(BooleanBuilder),
    }
    let types: Vec<KeyType> = columns
        .iter()
        .map(|c| c.key_type())
        .collect::<Result<_>>()?;
    let mut builders: Vec<B> = types
        .iter()
        .map(|t| match t {
            KeyType::Utf8 => B::S(StringBuilder::new()),
            KeyType::Int64 => B::I(Int64Builder::new()),
            KeyType::UInt64 => B::U(UInt64Builder::new()),
            KeyType::Boolean => B::Bo(BooleanBuilder::new()),
        })
        .collect();
    for key in keys {
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = key
                .get(pos..pos + n)
                .ok_or_else(|| corrupt_key("truncated"))?;
            pos += n;
            Ok(s)
        };
        for b in builders.iter_mut() {
            let is_value = take(1)?[0] == 1;
            match b {
                B::S(b) if is_value => {
                    let len = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
                    let s =
                        std::str::from_utf8(take(len)?).map_err(|_| corrupt_key("bad UTF-8"))?;
                    b.append_value(s)
                }
                B::I(b) if is_value => {
                    let v = u64::from_be_bytes(take(8)?.try_into().unwrap()) ^ (1 << 63);
                    b.append_value(v as i64)
                }
                B::U(b) if is_value => {
                    b.append_value(u64::from_be_bytes(take(8)?.try_into().unwrap()))
                }
                B::Bo(b) if is_value => b.append_value(take(1)?[0] != 0),
                B::S(b) => b.append_null(),
                B::I(b) => b.append_null(),
                B::U(b) => b.append_null(),
                B::Bo(b) => b.append_null(),
            }
        }
        if pos != key.len() {
            return Err(corrupt_key("trailing bytes"));
        }
    }
    builders
        .into_iter()
        .zip(columns)
        .map(|(b, col)| {
            let a: ArrayRef = match b {
                B::S(mut b) => Arc::new(b.finish()),
                B::I(mut b) => Arc::new(b.finish()),
                B::U(mut b) => Arc::new(b.finish()),
                B::Bo(mut b) => Arc::new(b.finish()),
            };
            if a.data_type() == &col.data_type {
                Ok(a)
            } else {
                cast(&a, &col.data_type).map_err(DataFusionError::from)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Int32Array, UInt8Array};
    use datafusion::arrow::datatypes::Int32Type;

    #[test]
    fn keys_round_trip_with_their_types() {
        let dict: DictionaryArray<Int32Type> =
            vec![Some("AAPL"), None, Some("MSFT")].into_iter().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(dict),
            Arc::new(Int32Array::from(vec![Some(-5), Some(7), None])),
            Arc::new(UInt8Array::from(vec![1, 2, 255])),
        ];
        let key_cols: Vec<KeyColumn> = cols
            .iter()
            .zip(["sym", "venue", "lane"])
            .map(|(c, n)| KeyColumn {
                name: n.into(),
                data_type: c.data_type().clone(),
            })
            .collect();
        let types: Vec<_> = key_cols.iter().map(|c| c.key_type().unwrap()).collect();
        let enc = encode_keys(&cols, &types, 3).unwrap();
        let rows: Vec<&[u8]> = (0..3).map(|i| enc.row(i)).collect();
        let back = decode_keys(&rows, &key_cols).unwrap();
        for (a, b) in back.iter().zip(&cols) {
            assert_eq!(a.as_ref(), b.as_ref());
        }
        assert!(decode_keys(&[&rows[0][..3]], &key_cols).is_err());
    }

    #[test]
    fn signed_keys_sort_by_value() {
        let col: ArrayRef = Arc::new(Int32Array::from(vec![-3, -1, 0, 2]));
        let enc = encode_keys(&[col], &[KeyType::Int64], 4).unwrap();
        for i in 0..3 {
            assert!(enc.row(i) < enc.row(i + 1));
        }
    }
}
