//! Writing a RocksDB store: write batches of records in key order, the states' registration
//! and key counts, and the undo entries of staged writes.

use super::*;

impl RocksStore {
    pub(super) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        // A batch that would overfill the memtable goes into a fresh one, and the full one is
        // written to a table file in the background (on a core that a commit leaves idle):
        // RocksDB would flush it right after this write anyway, and a million keys inserted
        // among a million older ones cost ~2.5x as much as into an empty memtable. One that
        // holds little is kept: inserting among few keys is cheap, and a switch would leave
        // a small table file.
        let size = batch.size_in_bytes();
        if size >= SWITCH_BATCH_BYTES {
            let active = self
                .db
                .property_int_value("rocksdb.cur-size-active-mem-table")
                .map_err(|e| self.err("read the memtable size", e))?
                .unwrap_or(0) as usize;
            if active >= self.memtable_bytes / 8 && active + size > self.memtable_bytes {
                let mut flush = FlushOptions::default();
                flush.set_wait(false);
                self.db
                    .flush_opt(&flush)
                    .map_err(|e| self.err("flush", e))?;
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.err("write", e))
    }

    /// The state number of each state, registering new ones into `batch` (with undo entries
    /// when `undo` names the attempt, so that a rollback unregisters them).
    pub(super) fn register_states(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        pipeline: &str,
        states: &[StateInfo],
        undo: Option<u64>,
    ) -> Result<HashMap<String, StateMeta>> {
        let mut out = HashMap::default();
        let location = self.path.display().to_string();
        for info in states {
            let stored = self.state_meta(pipeline, &info.state_id)?;
            let meta = register(stored.clone(), info, &mut w.next_state, pipeline, &location)?;
            if stored.as_ref() != Some(&meta) {
                // New, or raised to a newer encoding version: written, with an undo entry
                // holding what it was (nothing, for a new state).
                let key = state_key(pipeline, &info.state_id);
                if let Some(attempt) = undo {
                    let p = w.pending.entry(attempt).or_default();
                    let before = match &stored {
                        Some(old) => [&[1u8][..], &old.encode()].concat(),
                        None => vec![0u8],
                    };
                    batch.put(undo_key(attempt, &key, p.seq), before);
                    p.seq += 1;
                }
                if stored.is_none() {
                    batch.put(meta_key("next_state"), w.next_state.to_le_bytes());
                }
                batch.put(&key, meta.encode());
            }
            out.insert(info.state_id.clone(), meta);
        }
        Ok(out)
    }

    /// The (state number, key) of each put; per state number, the change in keys and bytes
    /// that the puts make (from what each replaces), and how many keys they write.
    pub(super) fn keys_and_deltas<'a>(
        metas: &HashMap<String, StateMeta>,
        puts: &'a [Put],
    ) -> Result<(StateKeys<'a>, Deltas, Written)> {
        let mut keys = Vec::with_capacity(puts.len());
        // A query's puts share one `Arc` per state (per partition): a state is found by
        // pointer among the few seen, else by its id, and not by hashing its id for every
        // put. Per state seen: its id as last met, its number and its change in keys and bytes;
        // and, alongside, its puts.
        let mut seen: Vec<(&Arc<str>, u32, (i64, i64))> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for put in puts {
            let at = match seen
                .iter()
                .position(|(id, ..)| Arc::ptr_eq(id, &put.state_id))
            {
                Some(at) => at,
                None => match seen
                    .iter()
                    .position(|(id, ..)| id.as_ref() == put.state_id.as_ref())
                {
                    Some(at) => {
                        seen[at].0 = &put.state_id;
                        at
                    }
                    None => {
                        let meta = metas.get(put.state_id.as_ref()).ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "write to unregistered state {}",
                                put.state_id
                            ))
                        })?;
                        seen.push((&put.state_id, meta.state_no, (0, 0)));
                        counts.push(0);
                        seen.len() - 1
                    }
                },
            };
            counts[at] += 1;
            let (_, state_no, d) = &mut seen[at];
            put.count(d);
            keys.push((*state_no, put.key.as_slice()));
        }
        let deltas = seen.iter().map(|(_, n, d)| (*n, *d)).collect();
        let written = seen
            .iter()
            .zip(counts)
            .map(|((_, n, _), c)| (*n, c))
            .collect();
        Ok((keys, deltas, written))
    }

    /// Writes `puts` of `attempt` into `batch`, in key order, and returns per state number the
    /// change in keys and bytes; with `undo`, the first write of a key in the attempt also
    /// records the value it replaces. What was read ahead of the keys is forgotten.
    pub(super) fn write_puts(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        metas: &HashMap<String, StateMeta>,
        puts: &[Put],
        attempt: u64,
        undo: bool,
    ) -> Result<Deltas> {
        let (keys, deltas, _) = Self::keys_and_deltas(metas, puts)?;
        // In key order: RocksDB's memtable inserts a run of ascending keys several times
        // faster than the same keys in hash order. A stored value is the attempt that wrote
        // the record (so that a later stage of the same attempt knows the key's undo entry
        // exists), then the record.
        let keys = DataKeys::sorted(
            &keys,
            |i| 8 + puts[i].record.len(),
            |i, out| {
                out[..8].copy_from_slice(&attempt.to_le_bytes());
                out[8..].copy_from_slice(&puts[i].record);
            },
        );
        if undo {
            self.write_undo(w, batch, puts, &keys, attempt)?;
        }
        // What was read ahead of these keys is stale once the batch is written (the undo
        // entries above took their values from it first).
        if self.reads_ahead() {
            self.forget_keys(w, keys.iter().map(|(_, k, _)| k));
        }
        for (_, datakey, value) in keys.iter() {
            batch.put(datakey, value);
        }
        Ok(deltas)
    }

    /// Adds to `batch` the undo entries of the keys that `attempt` writes for the first time:
    /// the value each held before, or that it held none.
    fn write_undo(
        &self,
        w: &mut Writer,
        batch: &mut WriteBatch,
        puts: &[Put],
        keys: &DataKeys,
        attempt: u64,
    ) -> Result<()> {
        // A key that had no record when the attempt read it has none now (the attempt is the
        // pipeline's only writer, and what it stages it reads back). Keys that had one are
        // read: this attempt may have written them already (then the undo entry exists).
        let existing: Vec<&[u8]> = keys
            .iter()
            .filter(|(i, _, _)| puts[*i].replaces.is_some())
            .map(|(_, k, _)| k)
            .collect();
        let mut previous = self.stored_values(&existing)?.into_iter();
        let p = w.pending.entry(attempt).or_default();
        let mut entries = Vec::new();
        for (i, datakey, _) in keys.iter() {
            let entry = match puts[i].replaces {
                None => vec![0],
                Some(_) => match previous.next().flatten() {
                    None => vec![0],
                    Some(old) => {
                        if self.unwrap_value(&old)?.0 == attempt {
                            continue;
                        }
                        let mut entry = Vec::with_capacity(1 + old.len());
                        entry.push(1);
                        entry.extend_from_slice(&old);
                        entry
                    }
                },
            };
            entries.push((undo_key(attempt, datakey, p.seq), entry));
            p.seq += 1;
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in entries {
            batch.put(k, v);
        }
        Ok(())
    }
}

/// `batch`'s writes followed by those of `runs`, as one batch. RocksDB's batch format is a
/// header of 12 bytes (a sequence number, then the number of writes as a little-endian u32)
/// followed by the writes, so batches join by appending their writes and adding their counts
/// (RocksDB's own `WriteBatchInternal::Append`, which its C API does not offer).
pub(super) fn joined(batch: WriteBatch, runs: Vec<WriteBatch>) -> Result<WriteBatch> {
    const HEADER: usize = 12;
    if runs.is_empty() {
        return Ok(batch);
    }
    let count = batch.len() + runs.iter().map(WriteBatch::len).sum::<usize>();
    let count = u32::try_from(count).map_err(|_| {
        DataFusionError::Execution(format!(
            "a commit of {count} writes is too large for RocksDB"
        ))
    })?;
    let size = batch.data().len() + runs.iter().map(|r| r.data().len() - HEADER).sum::<usize>();
    let mut data = Vec::with_capacity(size);
    data.extend_from_slice(batch.data());
    drop(batch);
    for run in runs {
        data.extend_from_slice(&run.data()[HEADER..]);
    }
    data[8..HEADER].copy_from_slice(&count.to_le_bytes());
    Ok(WriteBatch::from_data(&data))
}

/// About the size of a write batch holding `puts`, so that it is allocated once.
pub(super) fn batch_bytes(puts: &[Put]) -> usize {
    let per_put = 7 + 8 + 16; // key prefix, writer attempt, batch framing
    4096 + puts
        .iter()
        .map(|p| per_put + p.key.len() + p.record.len())
        .sum::<usize>()
}
