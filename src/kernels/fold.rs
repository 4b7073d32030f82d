//! Folding a batch of rows into a column of states: the one loop every kernel runs in.
//!
//! The caller has mapped every row to its key's slot and split the inputs into plain float
//! slices; [`fold_rows`] then walks the rows in input order, applies each to its key's state
//! and writes the outputs into one preallocated buffer. It is generic over the kernel, so the
//! kernel's `update` is inlined into it, and it is instantiated once per combination of "some
//! inputs are NULL" and "rows are checked for lateness", so that neither costs a branch per
//! row when it does not apply.

use std::fmt;

use super::column::Entry;
use super::kernel::{Kernel, Row};

/// What to do with a row whose ORDER BY value is older than its key's last applied one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LateRows {
    /// Leave the state untouched and output NULL.
    #[default]
    Skip,
    /// Apply the row anyway.
    Apply,
    /// Fail the query (nothing is committed).
    Error,
}

impl LateRows {
    pub fn as_str(&self) -> &'static str {
        match self {
            LateRows::Skip => "skip",
            LateRows::Apply => "apply",
            LateRows::Error => "error",
        }
    }
}

impl fmt::Display for LateRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row bitmap, least significant bit first (Arrow's validity layout).
#[derive(Debug, Clone, Copy)]
pub struct Bits<'a> {
    pub bytes: &'a [u8],
    /// Bit offset of row 0.
    pub offset: usize,
}

impl Bits<'_> {
    #[inline(always)]
    pub fn get(&self, i: usize) -> bool {
        let i = i + self.offset;
        self.bytes[i >> 3] & (1 << (i & 7)) != 0
    }
}

/// The rows of one batch, as one kernel call reads them.
#[derive(Debug, Clone, Copy)]
pub struct FoldInput<'a> {
    /// One slice per column argument, each at least as long as the batch.
    pub columns: &'a [&'a [f64]],
    /// The rows whose inputs are all non-NULL; `None`: every row.
    pub valid: Option<Bits<'a>>,
    /// The ORDER BY value of every row; `None`: rows are not checked for lateness (DataFusion
    /// sorted them).
    pub order: Option<&'a [i64]>,
    pub late_rows: LateRows,
}

/// The outputs of one batch: a value and a validity bit per row.
#[derive(Debug)]
pub struct FoldOutput {
    pub values: Vec<f64>,
    /// Validity bitmap, least significant bit first; a row's bit is set when it has a value.
    pub valid: Vec<u8>,
    /// Rows that have a value.
    pub set: usize,
    /// Late rows met (skipped or applied).
    pub late: usize,
}

impl FoldOutput {
    pub fn new(rows: usize) -> Self {
        Self {
            values: vec![0.0; rows],
            valid: vec![0; rows.div_ceil(8)],
            set: 0,
            late: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A late row under `fintech.late_rows = 'error'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateRow {
    pub order: i64,
    pub last: i64,
}

/// Where the rows of a batch go: a slot per row, or one key for all rows.
pub trait Slots: Copy {
    /// Whether consecutive rows go to scattered slots, whose entries the fold fetches ahead.
    const SCATTERED: bool;
    fn slot(self, row: usize) -> usize;
}

impl Slots for &[u32] {
    const SCATTERED: bool = true;

    #[inline(always)]
    fn slot(self, row: usize) -> usize {
        self[row] as usize
    }
}

/// Every row belongs to slot 0.
#[derive(Debug, Clone, Copy)]
pub struct OneKey;

impl Slots for OneKey {
    const SCATTERED: bool = false;

    #[inline(always)]
    fn slot(self, _row: usize) -> usize {
        0
    }
}

/// Rows ahead whose entries the fold fetches into the cache, and rows ahead whose states it
/// asks the kernel to fetch the data of ([`Kernel::prefetch`]): by then their entries are in.
const ENTRY_AHEAD: usize = 16;
const STATE_AHEAD: usize = 8;

/// Asks the CPU to fetch the cache line at `p` (a hint: no effect on results, no fault on any
/// address).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Folds `input` into `entries`, row by row in input order, marking the slots whose state
/// changed in `dirty` (when given). A late row under `LateRows::Error` stops the fold with
/// the states of earlier rows applied; the query fails, so nothing of it is committed.
pub fn fold_rows<K: Kernel, S: Slots>(
    kernel: &K,
    entries: &mut [Entry<K::State>],
    slots: S,
    input: &FoldInput,
    dirty: Option<&mut [bool]>,
    out: &mut FoldOutput,
) -> Result<(), LateRow> {
    assert!(
        input.columns.iter().all(|c| c.len() >= out.len())
            && input.order.is_none_or(|o| o.len() >= out.len())
    );
    let mut scratch = [];
    let dirty = dirty.unwrap_or(&mut scratch);
    match (input.valid.is_some(), input.order.is_some()) {
        (false, false) => fold::<K, S, false, false>(kernel, entries, slots, input, dirty, out),
        (true, false) => fold::<K, S, true, false>(kernel, entries, slots, input, dirty, out),
        (false, true) => fold::<K, S, false, true>(kernel, entries, slots, input, dirty, out),
        (true, true) => fold::<K, S, true, true>(kernel, entries, slots, input, dirty, out),
    }
}

#[inline(always)]
fn fold<K: Kernel, S: Slots, const NULLS: bool, const ORDERED: bool>(
    kernel: &K,
    entries: &mut [Entry<K::State>],
    slots: S,
    input: &FoldInput,
    dirty: &mut [bool],
    out: &mut FoldOutput,
) -> Result<(), LateRow> {
    let columns = K::Input::columns(input.columns);
    let order = input.order.unwrap_or(&[]);
    let valid = input.valid;
    let track_dirty = !dirty.is_empty();
    let (mut set, mut late) = (0, 0);
    let values = &mut out.values[..];
    let bits = &mut out.valid[..];
    let mut result = Ok(());
    let rows = values.len();
    for i in 0..rows {
        // With thousands of keys, a row's entry and state are cache misses: fetching those
        // of the rows ahead overlaps them (rolling_std over 10k keys: 2x).
        if S::SCATTERED {
            if i + ENTRY_AHEAD < rows {
                let e: *const Entry<K::State> = &entries[slots.slot(i + ENTRY_AHEAD)];
                prefetch(e);
                prefetch(e.cast::<u8>().wrapping_add(64));
            }
            if i + STATE_AHEAD < rows {
                kernel.prefetch(&entries[slots.slot(i + STATE_AHEAD)].state);
            }
        }
        if NULLS && !valid.is_some_and(|v| v.get(i)) {
            continue;
        }
        let s = slots.slot(i);
        let e = &mut entries[s];
        if ORDERED {
            let ts = order[i];
            if ts < e.last {
                late += 1;
                match input.late_rows {
                    LateRows::Skip => continue,
                    LateRows::Error => {
                        result = Err(LateRow {
                            order: ts,
                            last: e.last,
                        });
                        break;
                    }
                    LateRows::Apply => {}
                }
            } else {
                e.last = ts;
            }
        }
        let y = kernel.update(&mut e.state, K::Input::get(columns, i));
        e.rows += 1;
        if track_dirty {
            dirty[s] = true;
        }
        if let Some(y) = y {
            values[i] = y;
            bits[i >> 3] |= 1 << (i & 7);
            set += 1;
        }
    }
    out.set += set;
    out.late += late;
    result
}
