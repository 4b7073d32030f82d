//! A dense column of one kernel's states, one entry per key (a slot), and the record each
//! entry is stored as.
//!
//! [`StateColumn`] is the type-erased interface a working set holds per kernel call;
//! [`Column`] implements it for every kernel. Its entries keep, next to the kernel's state,
//! the key's bookkeeping: rows applied, the last ORDER BY value applied, and the length of the
//! record the store held when the state was loaded.
//!
//! Record layout: rows applied (u64 LE); a tag byte whose bit 0 says a last ORDER BY value
//! follows and whose bits 1..7 hold the encoding version minus one; the last ORDER BY value
//! (i64 LE, zeros when unset); then the kernel's state fields (see [`super::fields`]). Records
//! of the first encoding have the tag 0 or 1, so they read as version 1.

use std::any::Any;
use std::fmt::Debug;

use super::def::KernelDef;
use super::fields::{ByteReader, Bytes, FieldSink};
use super::fold::{FoldInput, FoldOutput, LateRow, OneKey, fold_rows};
use super::kernel::Kernel;
use super::{KernelError, KernelResult};

/// Length of a record's header.
pub const HEADER_LEN: usize = 17;

/// No stored record.
const NOT_STORED: u32 = u32::MAX;

/// One key's state of one kernel, with its bookkeeping. Entries start at cache lines, so that
/// the fold's prefetch of an entry's lines covers all of it.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct Entry<S> {
    /// Rows applied to the state so far.
    pub rows: u64,
    /// The largest ORDER BY value applied; `i64::MIN` until a row is applied.
    pub last: i64,
    /// Length of the record the store held when the state was loaded, or `NOT_STORED`.
    stored: u32,
    pub state: S,
}

/// The header of a record: what every kernel's record starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub rows: u64,
    pub last_order: Option<i64>,
    pub version: u8,
}

/// Splits a record into its header and the kernel's state bytes.
pub fn decode_header(record: &[u8]) -> KernelResult<(RecordHeader, &[u8])> {
    if record.len() < HEADER_LEN {
        return Err(KernelError(format!(
            "damaged state record: {} byte(s), the header alone is {HEADER_LEN}",
            record.len()
        )));
    }
    let rows = u64::from_le_bytes(record[0..8].try_into().unwrap());
    let tag = record[8];
    let last_order = (tag & 1 == 1).then(|| i64::from_le_bytes(record[9..17].try_into().unwrap()));
    let header = RecordHeader {
        rows,
        last_order,
        version: (tag >> 1) + 1,
    };
    Ok((header, &record[HEADER_LEN..]))
}

/// Appends a record header to `out`.
pub fn encode_header(header: &RecordHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(&header.rows.to_le_bytes());
    let version_bits = (header.version - 1) << 1;
    match header.last_order {
        None => {
            out.push(version_bits);
            out.extend_from_slice(&[0; 8]);
        }
        Some(v) => {
            out.push(version_bits | 1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A column of one kernel call's states, with the kernel's type erased.
pub trait StateColumn: Debug + Send + Sync {
    fn def(&self) -> &'static KernelDef;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends the state of a key that has seen no row.
    fn push_new(&mut self);
    /// Appends the state a stored record holds.
    fn push_record(&mut self, record: &[u8]) -> KernelResult<()>;
    /// Replaces the state of `slot` with the one a stored record holds.
    fn set_record(&mut self, slot: usize, record: &[u8]) -> KernelResult<()>;
    /// Appends a copy of slot `slot` of `other`, a column of the same kernel.
    fn push_copy(&mut self, other: &dyn StateColumn, slot: usize);
    /// Rows applied to the state of `slot`.
    fn rows(&self, slot: usize) -> u64;
    /// The last ORDER BY value applied to `slot`, if a row was.
    fn last_order(&self, slot: usize) -> Option<i64>;
    /// Length of the record the store held for `slot` when it was loaded (or last written).
    fn stored_len(&self, slot: usize) -> Option<usize>;
    /// Appends the record of `slot` to `out` and remembers its length as stored.
    fn encode(&mut self, slot: usize, out: &mut Vec<u8>);
    /// Appends the record of `slot` to `out`.
    fn record(&self, slot: usize, out: &mut Vec<u8>);
    /// Replaces the state of `slot` with a copy of slot `from` of `other`, a column of the
    /// same kernel.
    fn set_copy(&mut self, slot: usize, other: &dyn StateColumn, from: usize);
    /// Writes the state fields of `slot`, in the order of the kernel's fields.
    fn write_fields(&self, slot: usize, out: &mut dyn FieldSink);
    /// Heap memory the state of `slot` holds.
    fn heap_size(&self, slot: usize) -> usize;
    /// Memory of one entry, besides its heap.
    fn entry_size(&self) -> usize;
    /// Upper bound of how much one applied row grows a state's heap.
    fn growth_per_row(&self) -> usize;
    /// Folds a batch whose row `i` belongs to slot `slots[i]`, marking changed slots dirty.
    fn fold(
        &mut self,
        input: &FoldInput,
        slots: &[u32],
        dirty: &mut [bool],
        out: &mut FoldOutput,
    ) -> Result<(), LateRow>;
    /// Folds a batch whose rows all belong to slot 0.
    fn fold_one_key(&mut self, input: &FoldInput, out: &mut FoldOutput) -> Result<(), LateRow>;
    /// Keeps the slots whose `keep` is true, in order.
    fn retain(&mut self, keep: &[bool]);
    fn clear(&mut self);
    fn as_any(&self) -> &dyn Any;
}

/// The states of one kernel call, one entry per slot.
#[derive(Debug, Clone)]
pub struct Column<K: Kernel> {
    kernel: K,
    entries: Vec<Entry<K::State>>,
}

impl<K: Kernel> Column<K> {
    pub fn new(kernel: K) -> Self {
        Self {
            kernel,
            entries: Vec::new(),
        }
    }

    fn entry(&self, state: K::State) -> Entry<K::State> {
        Entry {
            rows: 0,
            last: i64::MIN,
            stored: NOT_STORED,
            state,
        }
    }

    /// The state a record holds, with its header.
    pub fn decode(&self, record: &[u8]) -> KernelResult<Entry<K::State>> {
        let def = K::DEF;
        let (header, bytes) = decode_header(record)?;
        let mut r = ByteReader::new(bytes);
        let state = if header.version == def.version {
            self.kernel.read(&mut r)?
        } else if header.version > def.version {
            return Err(KernelError(format!(
                "{} state record of encoding version {} is newer than this build, which \
                 reads versions {} to {}",
                def.name, header.version, def.reads_from, def.version
            )));
        } else if header.version < def.reads_from {
            return Err(KernelError(format!(
                "{} state record of encoding version {} is older than this build reads \
                 (versions {} to {})",
                def.name, header.version, def.reads_from, def.version
            )));
        } else {
            self.kernel.read_legacy(header.version, &mut r)?
        };
        r.finish(def.name)?;
        Ok(Entry {
            rows: header.rows,
            last: header.last_order.unwrap_or(i64::MIN),
            stored: u32::try_from(record.len()).unwrap_or(NOT_STORED - 1),
            state,
        })
    }

    pub fn state(&self, slot: usize) -> &K::State {
        &self.entries[slot].state
    }

    /// `other` as a column of this kernel: columns are only combined with their own kind.
    fn same(other: &dyn StateColumn) -> &Self {
        other
            .as_any()
            .downcast_ref::<Self>()
            .expect("states copied between columns of one kernel")
    }
}

impl<K: Kernel> StateColumn for Column<K> {
    fn def(&self) -> &'static KernelDef {
        K::DEF
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn push_new(&mut self) {
        let e = self.entry(self.kernel.new_state());
        self.entries.push(e);
    }

    fn push_record(&mut self, record: &[u8]) -> KernelResult<()> {
        let e = self.decode(record)?;
        self.entries.push(e);
        Ok(())
    }

    fn set_record(&mut self, slot: usize, record: &[u8]) -> KernelResult<()> {
        self.entries[slot] = self.decode(record)?;
        Ok(())
    }

    fn push_copy(&mut self, other: &dyn StateColumn, slot: usize) {
        let other = Self::same(other);
        self.entries.push(other.entries[slot].clone());
    }

    fn rows(&self, slot: usize) -> u64 {
        self.entries[slot].rows
    }

    fn last_order(&self, slot: usize) -> Option<i64> {
        let e = &self.entries[slot];
        (e.rows > 0).then_some(e.last)
    }

    fn stored_len(&self, slot: usize) -> Option<usize> {
        let s = self.entries[slot].stored;
        (s != NOT_STORED).then_some(s as usize)
    }

    fn encode(&mut self, slot: usize, out: &mut Vec<u8>) {
        let start = out.len();
        self.record(slot, out);
        let len = out.len() - start;
        self.entries[slot].stored = u32::try_from(len).unwrap_or(NOT_STORED - 1);
    }

    fn record(&self, slot: usize, out: &mut Vec<u8>) {
        let e = &self.entries[slot];
        let header = RecordHeader {
            rows: e.rows,
            last_order: (e.rows > 0).then_some(e.last),
            version: K::DEF.version,
        };
        encode_header(&header, out);
        self.kernel.write(&e.state, &mut Bytes(out));
    }

    fn set_copy(&mut self, slot: usize, other: &dyn StateColumn, from: usize) {
        let other = Self::same(other);
        self.entries[slot].clone_from(&other.entries[from]);
    }

    fn write_fields(&self, slot: usize, out: &mut dyn FieldSink) {
        self.kernel.write(&self.entries[slot].state, out);
    }

    fn heap_size(&self, slot: usize) -> usize {
        K::heap_size(&self.entries[slot].state)
    }

    fn entry_size(&self) -> usize {
        std::mem::size_of::<Entry<K::State>>()
    }

    fn growth_per_row(&self) -> usize {
        K::GROWTH_PER_ROW
    }

    fn fold(
        &mut self,
        input: &FoldInput,
        slots: &[u32],
        dirty: &mut [bool],
        out: &mut FoldOutput,
    ) -> Result<(), LateRow> {
        fold_rows(
            &self.kernel,
            &mut self.entries,
            slots,
            input,
            Some(dirty),
            out,
        )
    }

    fn fold_one_key(&mut self, input: &FoldInput, out: &mut FoldOutput) -> Result<(), LateRow> {
        if self.entries.is_empty() {
            self.push_new();
        }
        fold_rows(&self.kernel, &mut self.entries, OneKey, input, None, out)
    }

    fn retain(&mut self, keep: &[bool]) {
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    fn clear(&mut self) {
        self.entries = Vec::new();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
