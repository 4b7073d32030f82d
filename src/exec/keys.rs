//! Which key each row of a batch belongs to: a slot number per row, found through a hash
//! table over the key column(s) as they are.
//!
//! One integer, timestamp or string column — the usual `PARTITION BY symbol` — is hashed and
//! compared straight from the Arrow array, with no key bytes built per row; a dictionary
//! column maps each dictionary value once per batch and its rows through the dictionary.
//! Other keys (several columns, booleans) are encoded per batch ([`encode_keys`]) and hashed as
//! bytes. Only a key seen for the first time is encoded, once, into the working set's key
//! buffer: the form the stores keep (see [`crate::state::codec`]).

use std::hash::BuildHasher;

use datafusion::arrow::array::{
    Array, ArrayAccessor, ArrayRef, AsArray, DictionaryArray, PrimitiveArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowNativeType, DataType, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::error::{DataFusionError, Result};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::state::codec::{EncodedKeys, KeyType, encode_key_value, encode_keys};

/// How the keys of a batch are hashed and compared.
#[derive(Debug, Clone, PartialEq)]
enum KeyKind {
    /// No PARTITION BY: every row is one key.
    Single,
    /// One integer or timestamp column, compared as i64 (u64 bits for `UInt64`).
    Int(KeyType),
    /// One string column, compared as bytes.
    Str,
    /// Anything else, compared as encoded key bytes.
    Encoded(Vec<KeyType>),
}

/// The slot of every key a partition holds, found by hash.
#[derive(Debug)]
pub struct KeyIndex {
    kind: KeyKind,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The slot of the NULL key, for one-column kinds.
    null_slot: Option<u32>,
    /// Per slot, the key as an integer (the `Int` kind only; NULL's entry unused).
    ints: Vec<i64>,
    /// For the `Int` kind while the keys span a small range: the slot of each value of the
    /// range, found with one load instead of a hash probe.
    dense: Option<Dense>,
}

/// Slots of the integers `base..base + slots.len()`: slot + 1, or 0 for none yet.
#[derive(Debug, Default)]
struct Dense {
    base: i64,
    slots: Vec<u32>,
}

/// Widest range of integer keys kept dense: 4 MiB of slots.
const DENSE_RANGE: u64 = 1 << 20;

impl Dense {
    #[inline(always)]
    fn get(&self, v: i64) -> Option<u32> {
        let at = v.wrapping_sub(self.base) as u64 as usize;
        self.slots.get(at).filter(|&&s| s != 0).map(|&s| s - 1)
    }

    /// Records `v`'s slot, widening the range; false when the range would pass
    /// [`DENSE_RANGE`] (the caller then drops the dense index).
    fn set(&mut self, v: i64, slot: u32) -> bool {
        if self.slots.is_empty() {
            self.base = v;
        }
        let (lo, hi) = (
            self.base.min(v),
            self.base
                .max(v)
                .max(self.base + self.slots.len() as i64 - 1),
        );
        let width = (hi as i128 - lo as i128 + 1) as u64;
        if width > DENSE_RANGE {
            return false;
        }
        if lo < self.base {
            let mut wider = vec![0; (self.base - lo) as usize];
            wider.extend_from_slice(&self.slots);
            self.slots = wider;
            self.base = lo;
        }
        let at = (v - self.base) as usize;
        if at >= self.slots.len() {
            self.slots.resize(at + 1, 0);
        }
        self.slots[at] = slot + 1;
        true
    }
}

/// What an `assign` call found: the first slot it created (slots after it are new).
pub struct Assigned {
    pub first_new: usize,
}

impl KeyIndex {
    pub fn new(types: &[KeyType]) -> Self {
        let kind = match types {
            [] => KeyKind::Single,
            [t @ (KeyType::Int64 | KeyType::UInt64)] => KeyKind::Int(*t),
            [KeyType::Utf8] => KeyKind::Str,
            _ => KeyKind::Encoded(types.to_vec()),
        };
        let dense = matches!(kind, KeyKind::Int(_)).then(Dense::default);
        Self {
            kind,
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            null_slot: None,
            ints: Vec::new(),
            dense,
        }
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.table.clear();
        self.null_slot = None;
        self.ints.clear();
        if matches!(self.kind, KeyKind::Int(_)) {
            self.dense = Some(Dense::default());
        }
    }

    /// Rebuilds the index over `keys`, slot by slot (after slots were dropped).
    pub fn rebuild(&mut self, keys: &EncodedKeys) {
        self.clear();
        let one_column = matches!(self.kind, KeyKind::Int(_) | KeyKind::Str);
        let mut hashes = Vec::with_capacity(keys.len());
        for s in 0..keys.len() {
            let key = keys.row(s);
            if one_column && key.first() == Some(&0) {
                self.null_slot = Some(s as u32);
                self.ints.push(0);
                hashes.push(None);
                continue;
            }
            hashes.push(Some(match &self.kind {
                KeyKind::Single => 0,
                KeyKind::Int(t) => {
                    let v = decode_int(*t, key);
                    self.ints.push(v);
                    if self.dense.as_mut().is_some_and(|d| !d.set(v, s as u32)) {
                        self.dense = None;
                    }
                    self.hasher.hash_one(v)
                }
                KeyKind::Str => self.hasher.hash_one(&key[5..]),
                KeyKind::Encoded(_) => self.hasher.hash_one(key),
            }));
        }
        let rehash = |&s: &u32| hashes[s as usize].unwrap_or_default();
        self.table.reserve(keys.len(), rehash);
        for (s, h) in hashes.iter().enumerate() {
            if let Some(h) = h {
                self.table.insert_unique(*h, s as u32, rehash);
            }
        }
    }

    /// Maps every row of `columns` (the evaluated PARTITION BY values) to a slot, creating
    /// slots for keys not held yet: their encoded keys are appended to `keys`, in slot order.
    pub fn assign(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<Assigned> {
        let first_new = keys.len();
        slots.clear();
        slots.reserve(rows);
        match self.kind.clone() {
            KeyKind::Single => {
                if keys.is_empty() {
                    keys.push(&[]);
                }
                slots.resize(rows, 0);
            }
            KeyKind::Int(t) => self.assign_one(&columns[0], t, keys, slots)?,
            KeyKind::Str => self.assign_one(&columns[0], KeyType::Utf8, keys, slots)?,
            KeyKind::Encoded(types) => {
                let encoded = encode_keys(columns, &types, rows)?;
                for i in 0..rows {
                    let key = encoded.row(i);
                    let hash = self.hasher.hash_one(key);
                    slots.push(self.find_or_insert(hash, |k| k == key, key, keys));
                }
            }
        }
        Ok(Assigned { first_new })
    }

    /// One key column: dictionaries through their values, the rest by type.
    fn assign_one(
        &mut self,
        column: &ArrayRef,
        t: KeyType,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<()> {
        if let DataType::Dictionary(key_type, _) = column.data_type() {
            return match key_type.as_ref() {
                DataType::Int8 => self.assign_dict::<Int8Type>(column, t, keys, slots),
                DataType::Int16 => self.assign_dict::<Int16Type>(column, t, keys, slots),
                DataType::Int32 => self.assign_dict::<Int32Type>(column, t, keys, slots),
                DataType::Int64 => self.assign_dict::<Int64Type>(column, t, keys, slots),
                DataType::UInt8 => self.assign_dict::<UInt8Type>(column, t, keys, slots),
                DataType::UInt16 => self.assign_dict::<UInt16Type>(column, t, keys, slots),
                DataType::UInt32 => self.assign_dict::<UInt32Type>(column, t, keys, slots),
                DataType::UInt64 => self.assign_dict::<UInt64Type>(column, t, keys, slots),
                other => Err(DataFusionError::Internal(format!(
                    "dictionary key type {other}"
                ))),
            };
        }
        self.assign_values(column, t, keys, slots)
    }

    /// Maps the dictionary values the rows use, once each, then every row through them.
    fn assign_dict<K: ArrowDictionaryKeyType>(
        &mut self,
        column: &ArrayRef,
        t: KeyType,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<()> {
        let dict: &DictionaryArray<K> = column.as_dictionary();
        let values = dict.values();
        let indices = dict.keys();
        let mut used = vec![false; values.len()];
        for i in indices.iter().flatten() {
            used[i.as_usize()] = true;
        }
        // Only the values some row uses get a slot: a repartitioned batch keeps the whole
        // dictionary of its source.
        let used_values: Vec<u32> = (0..values.len() as u32)
            .filter(|&v| used[v as usize])
            .collect();
        let used_array = take(
            values.as_ref(),
            &UInt32Array::from(used_values.clone()),
            None,
        )?;
        let mut value_slots = Vec::with_capacity(used_values.len());
        self.assign_values(&used_array, t, keys, &mut value_slots)?;
        let mut slot_of_value = vec![u32::MAX; values.len()];
        for (v, s) in used_values.iter().zip(&value_slots) {
            slot_of_value[*v as usize] = *s;
        }
        if indices.null_count() > 0 {
            let null = self.null_slot(keys);
            slots.extend(indices.iter().map(|i| match i {
                Some(i) => slot_of_value[i.as_usize()],
                None => null,
            }));
        } else {
            slots.extend(indices.values().iter().map(|i| slot_of_value[i.as_usize()]));
        }
        Ok(())
    }

    fn assign_values(
        &mut self,
        column: &ArrayRef,
        t: KeyType,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<()> {
        match (t, column.data_type()) {
            (KeyType::Utf8, DataType::Utf8) => {
                self.assign_strings(column.as_string::<i32>(), keys, slots)
            }
            (KeyType::Utf8, DataType::LargeUtf8) => {
                self.assign_strings(column.as_string::<i64>(), keys, slots)
            }
            (KeyType::Utf8, DataType::Utf8View) => {
                self.assign_strings(column.as_string_view(), keys, slots)
            }
            (KeyType::Utf8, _) => {
                let c = cast(column, &DataType::Utf8)?;
                self.assign_strings(c.as_string::<i32>(), keys, slots)
            }
            (KeyType::Int64, DataType::Int64) => {
                self.assign_ints(column.as_primitive::<Int64Type>(), t, keys, slots)
            }
            (KeyType::UInt64, DataType::UInt64) => {
                // The bits of the u64, as the index compares and the encoding writes them.
                let c: PrimitiveArray<Int64Type> =
                    column.as_primitive::<UInt64Type>().unary(|v| v as i64);
                self.assign_ints(&c, t, keys, slots)
            }
            (KeyType::Int64, DataType::Timestamp(_, _)) => {
                let c = column.to_data().into_builder().data_type(DataType::Int64);
                let c = PrimitiveArray::<Int64Type>::from(c.build()?);
                self.assign_ints(&c, t, keys, slots)
            }
            (KeyType::Int64 | KeyType::UInt64, _) => {
                let target = if t == KeyType::Int64 {
                    DataType::Int64
                } else {
                    DataType::UInt64
                };
                self.assign_values(&cast(column, &target)?, t, keys, slots)
            }
            (KeyType::Boolean, _) => Err(DataFusionError::Internal(
                "boolean keys are encoded, not indexed as values".into(),
            )),
        }
    }

    fn null_slot(&mut self, keys: &mut EncodedKeys) -> u32 {
        *self.null_slot.get_or_insert_with(|| {
            keys.push(&[0]);
            if matches!(self.kind, KeyKind::Int(_)) {
                self.ints.push(0);
            }
            (keys.len() - 1) as u32
        })
    }

    fn assign_ints(
        &mut self,
        column: &PrimitiveArray<Int64Type>,
        t: KeyType,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<()> {
        let nulls = column.nulls().cloned();
        let values = column.values();
        // Rows whose keys all have a dense slot (the usual batch once the keys are known) take
        // one lookup each; the general loop takes over at the first row that does not.
        let mut known = 0;
        if let (None, Some(dense)) = (&nulls, &self.dense) {
            let start = slots.len();
            slots.resize(start + values.len(), 0);
            for (slot, &v) in slots[start..].iter_mut().zip(values.iter()) {
                let Some(s) = dense.get(v) else { break };
                *slot = s;
                known += 1;
            }
            slots.truncate(start + known);
        }
        for (i, &v) in values.iter().enumerate().skip(known) {
            if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                let s = self.null_slot(keys);
                slots.push(s);
                continue;
            }
            if let Some(s) = self.dense.as_ref().and_then(|d| d.get(v)) {
                slots.push(s);
                continue;
            }
            let hash = self.hasher.hash_one(v);
            let Self {
                table,
                hasher,
                ints,
                dense,
                ..
            } = self;
            let s = match table.find(hash, |&s| ints[s as usize] == v) {
                Some(&s) => s,
                None => {
                    let s = keys.len() as u32;
                    let mut buf = [0u8; 9];
                    keys.push(encode_key_value(t, v, &mut buf));
                    ints.push(v);
                    table.insert_unique(hash, s, |&s| hasher.hash_one(ints[s as usize]));
                    s
                }
            };
            if dense.as_mut().is_some_and(|d| !d.set(v, s)) {
                *dense = None;
            }
            slots.push(s);
        }
        Ok(())
    }

    /// Slots of a string column (`Utf8`, `LargeUtf8` or `Utf8View`).
    fn assign_strings<'a, A>(
        &mut self,
        column: A,
        keys: &mut EncodedKeys,
        slots: &mut Vec<u32>,
    ) -> Result<()>
    where
        A: ArrayAccessor<Item = &'a str> + Array,
    {
        for i in 0..column.len() {
            if column.is_null(i) {
                let s = self.null_slot(keys);
                slots.push(s);
                continue;
            }
            let s = self.str_slot(column.value(i).as_bytes(), keys);
            slots.push(s);
        }
        Ok(())
    }

    #[inline]
    fn str_slot(&mut self, bytes: &[u8], keys: &mut EncodedKeys) -> u32 {
        let hash = self.hasher.hash_one(bytes);
        let Self { table, hasher, .. } = self;
        if let Some(&s) = table.find(hash, |&s| {
            let k = keys.row(s as usize);
            k.len() == bytes.len() + 5 && &k[5..] == bytes
        }) {
            return s;
        }
        let s = keys.len() as u32;
        keys.push_parts(&[&[1], &(bytes.len() as u32).to_le_bytes(), bytes]);
        table.insert_unique(hash, s, |&s| hasher.hash_one(&keys.row(s as usize)[5..]));
        s
    }

    /// The slot of an encoded key, created if new.
    fn find_or_insert(
        &mut self,
        hash: u64,
        eq: impl Fn(&[u8]) -> bool,
        key: &[u8],
        keys: &mut EncodedKeys,
    ) -> u32 {
        let Self { table, hasher, .. } = self;
        if let Some(&s) = table.find(hash, |&s| eq(keys.row(s as usize))) {
            return s;
        }
        let s = keys.len() as u32;
        keys.push(key);
        table.insert_unique(hash, s, |&s| hasher.hash_one(keys.row(s as usize)));
        s
    }
}

/// The integer an encoded one-column integer key holds.
fn decode_int(t: KeyType, key: &[u8]) -> i64 {
    let bits = u64::from_be_bytes(key[1..9].try_into().expect("9-byte integer key"));
    match t {
        KeyType::Int64 => (bits ^ (1 << 63)) as i64,
        _ => bits as i64,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::Int32Type;

    fn assign(index: &mut KeyIndex, keys: &mut EncodedKeys, col: ArrayRef) -> (Vec<u32>, usize) {
        let mut slots = Vec::new();
        let n = col.len();
        let a = index.assign(&[col], n, keys, &mut slots).unwrap();
        (slots, a.first_new)
    }

    /// Every kind of key column gives the slots, and the key bytes, of the encoded path.
    #[test]
    fn fast_paths_agree_with_encoded_keys() {
        let strings: Vec<Option<&str>> = vec![Some("b"), Some("a"), None, Some("b"), Some("")];
        let dict: DictionaryArray<Int32Type> = strings.clone().into_iter().collect();
        let cases: Vec<(KeyType, ArrayRef)> = vec![
            // A range too wide to keep dense: the hash table takes over.
            (
                KeyType::Int64,
                Arc::new(Int64Array::from(vec![
                    Some(-5),
                    Some(1 << 40),
                    None,
                    Some(-5),
                    Some(7),
                ])),
            ),
            (KeyType::Utf8, Arc::new(StringArray::from(strings.clone()))),
            (
                KeyType::Utf8,
                Arc::new(StringViewArray::from(strings.clone())),
            ),
            (KeyType::Utf8, Arc::new(dict)),
            (
                KeyType::Int64,
                Arc::new(Int32Array::from(vec![
                    Some(-3),
                    Some(7),
                    None,
                    Some(-3),
                    Some(0),
                ])),
            ),
        ];
        for (t, col) in cases {
            let mut fast = KeyIndex::new(&[t]);
            let mut slow = KeyIndex {
                kind: KeyKind::Encoded(vec![t]),
                ..KeyIndex::new(&[t])
            };
            let (mut kf, mut ks) = (EncodedKeys::default(), EncodedKeys::default());
            let mut first = Vec::new();
            for round in 0..2 {
                let (sf, nf) = assign(&mut fast, &mut kf, Arc::clone(&col));
                let (ss, ns) = assign(&mut slow, &mut ks, Arc::clone(&col));
                assert_eq!((nf, ns), (round * 4, round * 4), "{t:?}");
                // The same key bytes for every row (slots may be numbered differently).
                for (f, s) in sf.iter().zip(&ss) {
                    assert_eq!(kf.row(*f as usize), ks.row(*s as usize), "{t:?}");
                }
                assert_eq!(sf[0], sf[3]);
                first = sf;
            }
            assert_eq!((kf.len(), ks.len()), (4, 4));
            // Rebuilt from its keys, the index finds the same slots.
            fast.rebuild(&kf);
            let (again, first_new) = assign(&mut fast, &mut kf, col);
            assert_eq!((again, first_new), (first, 4));
        }
    }

    #[test]
    fn unused_dictionary_values_get_no_slot() {
        let values = StringArray::from(vec!["x", "y", "z"]);
        let dict = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![2, 2, 0]),
            Arc::new(values),
        )
        .unwrap();
        let mut index = KeyIndex::new(&[KeyType::Utf8]);
        let mut keys = EncodedKeys::default();
        let (slots, _) = assign(&mut index, &mut keys, Arc::new(dict));
        assert_eq!(slots, vec![1, 1, 0]);
        assert_eq!(keys.len(), 2);
    }
}
