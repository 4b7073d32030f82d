//! What one partition of the keyed-state operator does with its input: it folds each input
//! batch into its working set and, at the end, hands the dirty states to the run that commits
//! them.
//!
//! Per batch: map every row to its key's slot ([`super::keys`]), load the states of the keys
//! not seen yet in one store call per kernel, then fold the batch into each kernel's column of
//! states, one tight loop per kernel ([`crate::kernels::fold`]), and append one output column
//! per kernel.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{Count, Time};

use super::batch::{KernelInputs, output_array};
use super::commit::QueryRun;
use super::operator::KernelCall;
use super::working_set::WorkingSet;
use crate::kernels::{BoundKernel, FoldOutput, LateRow, LateRows};
use crate::state::Put;

/// Encoded bytes an eviction stages per store call.
const EVICTION_CHUNK_BYTES: usize = 4 << 20;

pub struct OperatorMetrics {
    pub keys_loaded: Count,
    pub keys_stored: Count,
    pub bytes_loaded: Count,
    pub bytes_stored: Count,
    pub late_rows: Count,
    pub evictions: Count,
    /// Keys the stream started with, kept in memory from the pipeline's last query.
    pub keys_kept: Count,
    /// Reading states from the store.
    pub load_time: Time,
    /// Staging evicted states.
    pub stage_time: Time,
    /// Encoding the final states and, in the last stream, the store's commit.
    pub commit_time: Time,
    pub fold_time: Time,
}

/// The state of one stream of the operator.
pub struct Folder {
    pub partition: usize,
    /// Working-set budget of this stream when the store stages; `None`: unbounded.
    pub budget: Option<usize>,
    /// The working set's memory, reserved from the query's pool.
    pub reservation: MemoryReservation,
    /// The input's last column is the position column of a key-order fold, left out of the
    /// output.
    pub by_key: bool,
    pub calls: Vec<KernelCall>,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub order_by: Arc<dyn PhysicalExpr>,
    pub late_rows: LateRows,
    /// Estimated memory of a key's index entry and slot, besides the key and the states' heap.
    pub slot_size_hint: usize,
    /// Upper bound of how much one row grows its key's states.
    pub growth_per_row: usize,
    /// The keys seen and their states.
    pub set: WorkingSet,
    pub run: Arc<QueryRun>,
    pub metrics: OperatorMetrics,
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(batch)?.into_array(batch.num_rows())
}

/// A batch, ready to fold.
struct Prepared {
    /// The slot of every row.
    slots: Vec<u32>,
    order: ArrayRef,
    /// The arguments of each kernel call.
    inputs: Vec<KernelInputs>,
}

impl Folder {
    /// Folds a batch; returns it with one output column per kernel.
    pub fn process(&mut self, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
        let p = self.prepare(batch)?;
        let n = batch.num_rows();
        let _timer = self.metrics.fold_time.timer();
        let order = p.order.as_primitive::<Int64Type>().values();
        let mut columns = batch.columns().to_vec();
        if self.by_key {
            columns.pop();
        }
        let mut late = 0;
        for (c, call) in self.calls.iter().enumerate() {
            let slices = p.inputs[c].slices();
            let input = p.inputs[c].fold_input(&slices, Some(order), self.late_rows);
            let mut out = FoldOutput::new(n);
            let (_, states, dirty) = self.set.parts_mut();
            states[c]
                .fold(&input, &p.slots, dirty, &mut out)
                .map_err(|e| late_row_error(&call.info.state_id, e))?;
            late += out.late;
            columns.push(output_array(out));
        }
        self.metrics.late_rows.add(late);
        self.set.bytes += n * self.growth_per_row;
        drop(_timer);
        if self.budget.is_some_and(|b| self.set.bytes > b) {
            self.evict()?;
        }
        self.reserve()?;
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Maps a batch's rows to slots (loading new keys) and evaluates its arguments.
    fn prepare(&mut self, batch: &RecordBatch) -> Result<Prepared> {
        let n = batch.num_rows();
        let key_arrays: Vec<ArrayRef> = self
            .partition_by
            .iter()
            .map(|e| evaluate(e, batch))
            .collect::<Result<_>>()?;
        let mut slots = Vec::new();
        let first_new = self.set.assign(&key_arrays, n, &mut slots)?;
        if first_new < self.set.len() {
            let new_keys: usize = (first_new..self.set.len())
                .map(|s| self.set.key(s).len())
                .sum();
            self.set.bytes += new_keys + (self.set.len() - first_new) * self.slot_size_hint;
            self.load(first_new)?;
        }
        let order = evaluate(&self.order_by, batch)?;
        let order = if order.data_type() == &DataType::Int64 {
            order
        } else {
            cast(&order, &DataType::Int64)?
        };
        if order.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "NULL in the ORDER BY column {} of a fintech kernel: every row needs an \
                 ORDER BY value to be placed in its key's sequence",
                self.order_by
            )));
        }
        let inputs = self
            .calls
            .iter()
            .map(|c| {
                let args: Vec<ArrayRef> = c
                    .inputs
                    .iter()
                    .map(|e| evaluate(e, batch))
                    .collect::<Result<_>>()?;
                KernelInputs::new(&args)
            })
            .collect::<Result<_>>()?;
        Ok(Prepared {
            slots,
            order,
            inputs,
        })
    }

    /// Resizes the reservation to what the working set holds. When the pool refuses, a disk
    /// backend stages the working set; the memory backend, which keeps everything, fails.
    fn reserve(&mut self) -> Result<()> {
        let Err(e) = self.reservation.try_resize(self.set.bytes) else {
            return Ok(());
        };
        if self.budget.is_none() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{e}; the fintech kernels hold every key's state of a query in memory with \
                 the memory backend: raise datafusion.runtime.memory_limit, or use a disk \
                 backend (fintech.state_backend = 'rocksdb'), which stages state beyond the \
                 limit"
            )));
        }
        self.evict()?;
        self.reservation.try_resize(self.set.bytes)?;
        Ok(())
    }

    /// Stages every dirty state in the store and forgets all cached keys; a key seen again
    /// is loaded again (the store returns what was staged).
    fn evict(&mut self) -> Result<()> {
        let stage_time = self.metrics.stage_time.clone();
        let _timer = stage_time.timer();
        // In chunks: what an eviction holds in flight stays small next to the working set.
        let run = Arc::clone(&self.run);
        self.dirty_puts(EVICTION_CHUNK_BYTES, &mut |puts| run.stage(puts))?;
        self.metrics.evictions.add(1);
        self.set.clear();
        Ok(())
    }

    /// Gives the slots from `first_new` on (keys first seen in this group) their states:
    /// from the pipeline's store, in one call per kernel, or new.
    fn load(&mut self, first_new: usize) -> Result<()> {
        let load_time = self.metrics.load_time.clone();
        let _timer = load_time.timer();
        self.set.push_states();
        if let Some(p) = &self.run.pipeline {
            let (keys, states, _) = self.set.parts_mut();
            let key_refs: Vec<&[u8]> = (first_new..keys.len()).map(|s| keys.row(s)).collect();
            for (c, call) in self.calls.iter().enumerate() {
                let id = &call.info.state_id;
                let column = &mut states[c];
                if p.store.keeps_decoded() {
                    let found =
                        p.store
                            .load_decoded(&p.name, id, &key_refs, column.as_mut(), first_new)?;
                    self.metrics.keys_loaded.add(found);
                    continue;
                }
                let (mut found, mut bytes) = (0, 0);
                p.store.load(&p.name, id, &key_refs, &mut |j, record| {
                    column
                        .set_record(first_new + j, record)
                        .map_err(|e| damaged(id, &e.0))?;
                    found += 1;
                    bytes += record.len();
                    Ok(())
                })?;
                self.metrics.keys_loaded.add(found);
                self.metrics.bytes_loaded.add(bytes);
            }
        }
        let heap: usize = (0..self.calls.len())
            .map(|c| {
                let column = self.set.column(c);
                (first_new..self.set.len())
                    .map(|s| column.heap_size(s))
                    .sum::<usize>()
            })
            .sum();
        self.set.bytes += heap;
        Ok(())
    }

    /// The dirty states of every key held, encoded as puts, handed to `sink` in chunks of
    /// about `chunk_bytes`, in slot order. The keys stay dirty.
    fn dirty_puts(
        &mut self,
        chunk_bytes: usize,
        sink: &mut dyn FnMut(Vec<Put>) -> Result<()>,
    ) -> Result<()> {
        if self.run.pipeline.is_none() {
            return Ok(());
        }
        // Sized once: with a million keys, growing the vectors copied them over and over.
        let most = self.set.len() * self.calls.len();
        let capacity = if chunk_bytes == usize::MAX {
            most
        } else {
            most.min(chunk_bytes / 64)
        };
        let mut puts = Puts::new(&self.calls, capacity);
        for s in 0..self.set.len() {
            if self.set.is_dirty(s) {
                puts.add(&mut self.set, s);
                puts.flush(chunk_bytes, sink)?;
            }
        }
        puts.flush(0, sink)?;
        self.metrics.keys_stored.add(puts.keys);
        self.metrics.bytes_stored.add(puts.bytes);
        Ok(())
    }

    /// Hands the dirty states to the run, which commits when every stream is done, and, when
    /// the run keeps working sets, the keys this stream updated: the working set the
    /// pipeline's next query starts from. Keys only read are left out, as a later query may
    /// send them to another stream, which would update them.
    pub fn finish(&mut self) -> Result<()> {
        // The final updates go into the commit itself, all at once.
        let commit_time = self.metrics.commit_time.clone();
        let _timer = commit_time.timer();
        let mut puts = Vec::new();
        let mut kept = None;
        let kernels: Vec<BoundKernel> = self.calls.iter().map(|c| Arc::clone(&c.kernel)).collect();
        let empty = || WorkingSet::new(&[], &kernels);
        if self.run.commits() && self.run.keeps_decoded() {
            // The states go to the store as they are, without being encoded.
            let set = std::mem::replace(&mut self.set, empty());
            let ids: Vec<Arc<str>> = self
                .calls
                .iter()
                .map(|c| Arc::from(c.info.state_id.as_str()))
                .collect();
            let decoded = set.into_decoded(&ids);
            let stored: usize = decoded
                .iter()
                .map(|d| {
                    d.slots
                        .iter()
                        .filter(|&&s| d.column.rows(s as usize) > 0)
                        .count()
                })
                .sum();
            self.metrics.keys_stored.add(stored);
            return self
                .run
                .finish_partition(self.partition, puts, decoded, None);
        }
        if self.run.commits() {
            self.dirty_puts(usize::MAX, &mut |chunk| {
                if puts.is_empty() {
                    puts = chunk;
                } else {
                    puts.extend(chunk);
                }
                Ok(())
            })?;
            if self.run.keeps_working_sets() {
                let total = self.set.len().max(1);
                self.set.retain_dirty();
                self.set.bytes = self.set.bytes / total * self.set.len();
                kept = Some(std::mem::replace(&mut self.set, empty()));
            }
        }
        self.run
            .finish_partition(self.partition, puts, Vec::new(), kept)
    }
}

/// Puts being encoded by `Folder::dirty_puts`, handed on in chunks.
struct Puts {
    /// The state id of each kernel call.
    ids: Vec<Arc<str>>,
    /// Puts a chunk has room for.
    capacity: usize,
    puts: Vec<Put>,
    /// Key and record bytes of the chunk being built.
    chunk: usize,
    /// Puts and their bytes handed on so far.
    keys: usize,
    bytes: usize,
}

impl Puts {
    fn new(calls: &[KernelCall], capacity: usize) -> Self {
        Self {
            ids: calls
                .iter()
                .map(|c| Arc::from(c.info.state_id.as_str()))
                .collect(),
            capacity,
            puts: Vec::with_capacity(capacity),
            chunk: 0,
            keys: 0,
            bytes: 0,
        }
    }

    /// Encodes the updated states of `slot`.
    fn add(&mut self, set: &mut WorkingSet, slot: usize) {
        let (keys, states, _) = set.parts_mut();
        let key = keys.row(slot);
        for (column, id) in states.iter_mut().zip(&self.ids) {
            if column.rows(slot) == 0 {
                continue;
            }
            let replaces = column.stored_len(slot);
            let mut record = Vec::with_capacity(32);
            column.encode(slot, &mut record);
            self.chunk += key.len() + record.len();
            self.puts.push(Put {
                state_id: Arc::clone(id),
                key: key.to_vec(),
                record,
                replaces,
            });
        }
    }

    /// Hands the chunk to `sink` once it holds `chunk_bytes` (0: whatever it holds).
    fn flush(
        &mut self,
        chunk_bytes: usize,
        sink: &mut dyn FnMut(Vec<Put>) -> Result<()>,
    ) -> Result<()> {
        if self.puts.is_empty() || self.chunk < chunk_bytes {
            return Ok(());
        }
        self.keys += self.puts.len();
        self.bytes += self.chunk;
        self.chunk = 0;
        sink(std::mem::replace(
            &mut self.puts,
            Vec::with_capacity(self.capacity),
        ))
    }
}

fn late_row_error(state_id: &str, late: LateRow) -> DataFusionError {
    let LateRow { order, last } = late;
    DataFusionError::Execution(format!(
        "late row for state {state_id}: ORDER BY value {order} is older than the key's last \
         applied value {last} (fintech.late_rows = 'error'; use 'skip' or 'apply' to accept it)"
    ))
}

fn damaged(state_id: &str, why: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "stored state of {state_id} cannot be decoded ({why}); the store is left as it is"
    ))
}
