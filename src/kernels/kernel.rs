//! The [`Kernel`] trait that every kernel implements, and its type-erased, bound form
//! ([`BoundKernel`]) that the rest of the crate holds.
//!
//! A kernel is a plain struct of its bound parameters with an associated state type and a
//! per-row `update`. Everything generic — folding a batch of rows, the dense column of
//! states a working set keeps, the record encoding — is written once over `Kernel` and
//! monomorphized per kernel, so the hot loop of every kernel is a direct, inlined call.

use std::fmt::Debug;
use std::sync::Arc;

use super::column::{Column, StateColumn};
use super::def::KernelDef;
use super::fields::{ByteReader, FieldSink, FieldSource};
use super::{KernelError, KernelResult};

/// A kernel's inputs for one row: one float per column argument.
pub trait Row: Copy + 'static {
    /// The columns a row is read from, split up front so that the hot loop indexes plain
    /// slices.
    type Columns<'a>: Copy;
    fn columns<'a>(columns: &[&'a [f64]]) -> Self::Columns<'a>;
    fn get(columns: Self::Columns<'_>, i: usize) -> Self;
}

impl Row for f64 {
    type Columns<'a> = &'a [f64];

    fn columns<'a>(columns: &[&'a [f64]]) -> &'a [f64] {
        columns[0]
    }

    #[inline(always)]
    fn get(columns: &[f64], i: usize) -> f64 {
        columns[i]
    }
}

impl<const N: usize> Row for [f64; N] {
    type Columns<'a> = [&'a [f64]; N];

    fn columns<'a>(columns: &[&'a [f64]]) -> [&'a [f64]; N] {
        std::array::from_fn(|c| columns[c])
    }

    #[inline(always)]
    fn get(columns: [&[f64]; N], i: usize) -> [f64; N] {
        std::array::from_fn(|c| columns[c][i])
    }
}

/// One kernel: its definition, its state, and how one row updates the state.
///
/// Adding a kernel is one implementation of this trait in its family's file and one line in
/// [`super::ALL`].
pub trait Kernel: Clone + Debug + Send + Sync + Sized + 'static {
    /// What the kernel keeps per key.
    type State: Clone + Debug + PartialEq + Send + Sync + 'static;
    /// The inputs of one row: `f64` for one column argument, `[f64; N]` for N.
    type Input: Row;

    const DEF: &'static KernelDef;

    /// At most how much a state's heap grows per row applied, amortized (a rolling window
    /// until it holds its n values).
    const GROWTH_PER_ROW: usize = 0;

    /// The kernel with its parameter values, already checked against `DEF.params`.
    fn bind(params: &[f64]) -> KernelResult<Self>;

    /// The state of a key that has seen no row.
    fn new_state(&self) -> Self::State;

    /// Applies one row (no NULL inputs: rows with a NULL are not applied) and returns the
    /// row's output, `None` meaning SQL NULL.
    fn update(&self, state: &mut Self::State, x: Self::Input) -> Option<f64>;

    /// Writes the state's fields, in the order of `DEF.fields`.
    fn write<S: FieldSink + ?Sized>(&self, state: &Self::State, out: &mut S);

    /// Reads a state written by [`Kernel::write`] of this version.
    fn read<S: FieldSource + ?Sized>(&self, src: &mut S) -> KernelResult<Self::State>;

    /// Reads the bytes of an older encoding version (`DEF.reads_from` to `DEF.version - 1`).
    fn read_legacy(&self, version: u8, _src: &mut ByteReader) -> KernelResult<Self::State> {
        Err(KernelError(format!(
            "{}: no reader for state encoding version {version}",
            Self::DEF.name
        )))
    }

    /// Fetches into the cache what `update` will touch of `state` besides the state itself
    /// (a rolling window's next slot), with [`super::fold::prefetch`]; a hint only.
    #[inline(always)]
    fn prefetch(&self, _state: &Self::State) {}

    /// Heap memory the state holds, for working-set accounting.
    fn heap_size(_state: &Self::State) -> usize {
        0
    }

    /// Heap memory a state holds once it has seen many rows (a full rolling window): what
    /// the planner estimates a key's state to take.
    fn full_heap_size(&self) -> usize {
        0
    }
}

/// A kernel bound to its parameters, with its type erased.
pub trait DynKernel: Debug + Send + Sync {
    fn def(&self) -> &'static KernelDef;
    /// The bound parameter values, defaults filled in.
    fn params(&self) -> &[f64];
    /// An empty column of this kernel's states.
    fn new_column(&self) -> Box<dyn StateColumn>;
    /// Memory a key's state takes once it has seen many rows, for the planner's estimates.
    fn state_size_hint(&self) -> usize;
}

/// A bound kernel as the operator, the window functions and the state tables hold it.
pub type BoundKernel = Arc<dyn DynKernel>;

#[derive(Debug)]
struct Bound<K> {
    kernel: K,
    params: Vec<f64>,
}

impl<K: Kernel> DynKernel for Bound<K> {
    fn def(&self) -> &'static KernelDef {
        K::DEF
    }

    fn params(&self) -> &[f64] {
        &self.params
    }

    fn new_column(&self) -> Box<dyn StateColumn> {
        Box::new(Column::new(self.kernel.clone()))
    }

    fn state_size_hint(&self) -> usize {
        std::mem::size_of::<super::column::Entry<K::State>>() + self.kernel.full_heap_size()
    }
}

/// How the list of all kernels names one: its definition and how to bind it.
#[derive(Debug, Clone, Copy)]
pub struct Factory {
    pub def: &'static KernelDef,
    bind: fn(Vec<f64>) -> KernelResult<BoundKernel>,
}

fn bind_dyn<K: Kernel>(params: Vec<f64>) -> KernelResult<BoundKernel> {
    let kernel = K::bind(&params)?;
    Ok(Arc::new(Bound { kernel, params }))
}

impl Factory {
    pub const fn of<K: Kernel>() -> Factory {
        Factory {
            def: K::DEF,
            bind: bind_dyn::<K>,
        }
    }

    /// Binds the literal parameters a call gave (checked, defaults filled in).
    pub fn bind(&self, given: &[f64]) -> KernelResult<BoundKernel> {
        (self.bind)(self.def.bind_params(given)?)
    }
}
