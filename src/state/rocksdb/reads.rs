//! Reading a RocksDB store: records of keys by batched lookups or by walking a state's keys,
//! as committed or as the running attempt sees them, and whole states read ahead.

use super::*;

impl RocksStore {
    /// The stored values of `keys` (sorted data keys, about to be written): from what was
    /// read ahead or lent where it has them, the others in one batched read.
    pub(super) fn stored_values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        let (mut missing, mut at) = (Vec::new(), Vec::new());
        {
            let mut all = self.read_aheads();
            for (i, key) in keys.iter().enumerate() {
                let r = state_no_of(key).and_then(|n| all.get_mut(&n));
                let value = r.and_then(|r| match r.records.as_ref().and_then(|x| x.get(key)) {
                    Some(value) => Some(value.to_vec()),
                    None => r.take_lent(key).map(Vec::from),
                });
                match value {
                    Some(value) => out[i] = Some(value),
                    None => {
                        missing.push(*key);
                        at.push(i);
                    }
                }
            }
        }
        for (i, value) in at.into_iter().zip(self.multi_get_sorted(&missing, None)?) {
            out[i] = value.map(|v| v.to_vec());
        }
        Ok(out)
    }

    /// Reads `keys` (sorted data keys, as `snapshot` sees them) in one batched read.
    /// `found(i, data key, value)` takes each stored value.
    fn multi_get_each(
        &self,
        keys: &[(usize, &[u8])],
        snapshot: Option<&Snapshot>,
        mut found: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        // Sorted, RocksDB reads the keys of a memtable or table block in one sweep.
        let sorted: Vec<&[u8]> = keys.iter().map(|(_, k)| *k).collect();
        for ((i, key), value) in keys.iter().zip(self.multi_get_sorted(&sorted, snapshot)?) {
            if let Some(value) = value {
                found(*i, key, &value)?;
            }
        }
        Ok(())
    }

    /// Values of `keys`, which must be sorted, in one batched read (as `snapshot` saw them).
    fn multi_get_sorted(
        &self,
        keys: &[&[u8]],
        snapshot: Option<&Snapshot>,
    ) -> Result<Vec<Option<DBPinnableSlice<'_>>>> {
        let family = self.family(DEFAULT_COLUMN_FAMILY_NAME)?;
        self.db
            .batched_multi_get_cf_opt(family, keys, true, &read_options(snapshot))
            .into_iter()
            .map(|r| r.map_err(|e| self.err("read", e)))
            .collect()
    }

    /// Reads `keys` (of state `state_no`, as `snapshot` sees them) by walking the state's key
    /// range in order: a step to the next stored key while it is near, a seek when it is not.
    /// `found(i, data key, value)` takes each stored value.
    pub(super) fn sweep(
        &self,
        keys: &[(usize, &[u8])],
        state_no: u32,
        snapshot: Option<&Snapshot>,
        mut found: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let prefix = data_prefix(state_no);
        let mut opts = read_options(snapshot);
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let mut it = self.db.raw_iterator_opt(opts);
        let mut positioned = false;
        for &(i, key) in keys {
            let mut steps = 0;
            loop {
                if !positioned || steps == SWEEP_STEPS {
                    it.seek(key);
                    positioned = true;
                    break;
                }
                match it.key() {
                    Some(k) if k < key => {
                        it.next();
                        steps += 1;
                    }
                    _ => break,
                }
            }
            if it.key() == Some(key) {
                found(i, key, it.value().unwrap_or_default())?;
            }
        }
        it.status().map_err(|e| self.err("read", e))
    }

    /// The attempt in flight on `pipeline`, as `snapshot` saw it.
    pub(super) fn in_flight(&self, snapshot: &Snapshot, pipeline: &str) -> Result<Option<u64>> {
        Ok(self
            .pipeline_meta_at(pipeline, Some(snapshot))?
            .and_then(|m| m.in_flight))
    }

    /// The first undo entry `attempt` wrote for `key`, as `snapshot` saw it: `Some(None)` if
    /// the key had no value before the attempt, `None` if the attempt did not write the key.
    pub(super) fn undo_entry(
        &self,
        snapshot: &Snapshot,
        attempt: u64,
        key: &[u8],
    ) -> Result<Option<Option<Vec<u8>>>> {
        let mut prefix = undo_prefix(attempt);
        prefix.extend_from_slice(&(key.len() as u32).to_be_bytes());
        prefix.extend_from_slice(key);
        let mut opts = read_options(Some(snapshot));
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(&prefix);
        let entry = match it.value() {
            Some([1, old @ ..]) => Some(Some(old.to_vec())),
            Some(_) => Some(None),
            None => None,
        };
        it.status().map_err(|e| self.err("read", e))?;
        Ok(entry)
    }

    /// The stored value `datakey` had before `attempt` staged it (`None`: it had none).
    fn before_attempt(
        &self,
        snapshot: &Snapshot,
        attempt: u64,
        datakey: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        self.undo_entry(snapshot, attempt, datakey)?.ok_or_else(|| {
            DataFusionError::Execution(format!(
                "damaged state in {}: a record staged by attempt {attempt} has no undo entry",
                self.path.display()
            ))
        })
    }

    /// The committed record of a stored value read from `snapshot`, given the attempt then
    /// in flight on the value's pipeline (`staging`): a record that attempt staged reads as
    /// the record it replaced.
    pub(super) fn committed_record(
        &self,
        snapshot: &Snapshot,
        staging: Option<u64>,
        datakey: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (attempt, record) = self.unwrap_value(value)?;
        if staging != Some(attempt) {
            return Ok(Some(record.to_vec()));
        }
        match self.before_attempt(snapshot, attempt, datakey)? {
            Some(old) => Ok(Some(self.unwrap_value(&old)?.1.to_vec())),
            None => Ok(None),
        }
    }

    /// Records of `keys` of a state, each handed to `found(i, record)`: committed ones, or
    /// also what the pipeline's running attempt staged. Committed ones are read from one
    /// snapshot, so that a staged record and its undo entry are read together.
    pub(super) fn read(
        &self,
        pipeline: &str,
        state_id: &str,
        keys: &[&[u8]],
        view: View,
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(meta) = self.state_meta(pipeline, state_id)? else {
            return Ok(());
        };
        let count = keys.len();
        let keys: Vec<(u32, &[u8])> = keys.iter().map(|k| (meta.state_no, *k)).collect();
        // Sorted only for what is left for RocksDB.
        let keys = DataKeys::in_input_order(&keys, |_, _| {});
        // The commit log first: it holds the newest records of the keys it has (committed
        // ones: staging folds the log first).
        let mut rest: Vec<(usize, &[u8])> = Vec::with_capacity(count);
        {
            let log = self.log();
            for (i, key, _) in keys.iter() {
                match log.get(key) {
                    Some(value) => found(i, self.unwrap_value(value)?.1)?,
                    None => rest.push((i, key)),
                }
            }
        }
        // Much of the committed state is asked for (the first batch of a query over few
        // symbols): one pass over the state's keys costs less than a lookup per key.
        let sweep = meta.keys > 0 && rest.len() as u64 * SWEEP_RATIO >= meta.keys;
        if view == View::Running && !rest.is_empty() {
            rest = self.read_ahead_first(pipeline, &meta, rest, !sweep, found)?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        rest.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let snapshot = (view == View::Committed).then(|| self.db.snapshot());
        let staging = match &snapshot {
            Some(snapshot) => self.in_flight(snapshot, pipeline)?,
            None => None,
        };
        // What the running attempt reads from RocksDB is lent to the state's read-ahead, for
        // the undo entries of a stage; not copied at all while the budget is spent.
        let lends = view == View::Running && read_ahead::held() < self.read_ahead_bytes;
        let mut lent = Vec::new();
        let mut stored = |i: usize, key: &[u8], value: &[u8]| -> Result<()> {
            match &snapshot {
                Some(snapshot) => match self.committed_record(snapshot, staging, key, value)? {
                    Some(record) => found(i, &record),
                    None => Ok(()),
                },
                None => {
                    if lends {
                        lent.push((Box::from(key), Box::from(value)));
                    }
                    found(i, self.unwrap_value(value)?.1)
                }
            }
        };
        let read = if sweep {
            self.sweep(&rest, meta.state_no, snapshot.as_ref(), &mut stored)
        } else {
            self.multi_get_each(&rest, snapshot.as_ref(), &mut stored)
        };
        if !lent.is_empty()
            && let Some(r) = self.read_aheads().get_mut(&meta.state_no)
            && r.records.is_none()
        {
            for (key, value) in lent {
                r.lend(key, value, self.read_ahead_bytes);
            }
        }
        read
    }

    /// For the running attempt: answers what it can of `rest` (keys of the state `meta`) from
    /// the state's read-ahead. When the keys are to be looked up one by one (`lookups`), they
    /// count as point reads, and once those have come to cost about one scan, the state is
    /// read ahead first ([`read_ahead`]). Returns the keys left to read.
    fn read_ahead_first<'k>(
        &self,
        pipeline: &str,
        meta: &StateMeta,
        rest: Vec<(usize, &'k [u8])>,
        lookups: bool,
        found: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<Vec<(usize, &'k [u8])>> {
        if self.read_ahead_bytes == 0 {
            return Ok(rest);
        }
        // The state's first read in this attempt: did its last commit write much of it?
        let hinted = !self.read_aheads().contains_key(&meta.state_no)
            && self.get(&read_ahead_key(meta.state_no))?.is_some();
        let read_ahead = {
            let mut all = self.read_aheads();
            // While another partition reads the state ahead, on every core, this one waits for
            // it instead of reading key by key. A state with no committed keys (yet) is read
            // key by key.
            while lookups && all.get(&meta.state_no).is_some_and(|r| r.filling) {
                all = self.filled.wait(all).unwrap_or_else(|e| e.into_inner());
            }
            let r = all.entry(meta.state_no).or_insert_with(|| {
                let mut r = ReadAhead::new(pipeline);
                r.hinted = hinted;
                r
            });
            if r.records.is_none() && lookups && !r.too_big && !r.filling && meta.keys > 0 {
                r.point_reads += rest.len() as u64;
                r.filling = r.hinted || r.point_reads * READ_AHEAD_RATIO >= meta.keys;
                r.filling
            } else {
                false
            }
        };
        if read_ahead {
            self.fill_read_ahead(pipeline, meta)?;
        }
        let all = self.read_aheads();
        let Some(records) = all.get(&meta.state_no).and_then(|r| r.records.as_ref()) else {
            return Ok(rest);
        };
        let mut left = Vec::new();
        for (i, key) in rest {
            match records.get(key) {
                Some(value) => found(i, self.unwrap_value(value)?.1)?,
                None => left.push((i, key)),
            }
        }
        Ok(left)
    }

    /// Reads the state `meta` ahead: all its records, if they fit the budget. Under the writer
    /// lock, so that nothing writes the state's keys meanwhile; partitions that wait for the
    /// records are woken at the end, whatever happened.
    fn fill_read_ahead(&self, pipeline: &str, meta: &StateMeta) -> Result<()> {
        let w = self.writer();
        let filled = self.fill_locked(pipeline, meta);
        drop(w);
        self.filled.notify_all();
        filled
    }

    fn fill_locked(&self, pipeline: &str, meta: &StateMeta) -> Result<()> {
        // The pipeline's attempt ended meanwhile, and its read-aheads with it.
        if self.read_aheads().get(&meta.state_no).is_none() {
            return Ok(());
        }
        let (keys, bytes) = (meta.keys as usize, meta.bytes as usize);
        let records =
            if read_ahead::held() + Records::estimate(keys, bytes) <= self.read_ahead_bytes {
                self.scan_records(meta.state_no, keys, bytes)
            } else {
                Ok(None)
            };
        let mut all = self.read_aheads();
        let r = all
            .entry(meta.state_no)
            .or_insert_with(|| ReadAhead::new(pipeline));
        r.filling = false;
        r.records = records?;
        r.too_big = r.records.is_none();
        if !r.too_big {
            r.drop_lent();
        }
        Ok(())
    }

    /// Every record of state `state_no` (of about `keys` keys and `bytes` bytes), or `None`
    /// if they do not fit the read-ahead budget after all: a span of its buckets per core.
    fn scan_records(&self, state_no: u32, keys: usize, bytes: usize) -> Result<Option<Records>> {
        let spans = Records::spans(threads_for(keys));
        let share = spans.len();
        let scans =
            on_threads(spans.into_iter().map(|buckets| {
                move || self.scan_span(state_no, buckets, keys / share, bytes / share)
            }));
        let mut spans = Vec::with_capacity(share);
        for span in scans {
            match span? {
                Some(span) => spans.push(span),
                None => return Ok(None),
            }
        }
        Ok((read_ahead::held() <= self.read_ahead_bytes).then(|| Records::from_spans(spans)))
    }

    /// The records of the buckets `buckets` of state `state_no`, in one scan; about `keys`
    /// keys and `bytes` bytes.
    fn scan_span(
        &self,
        state_no: u32,
        buckets: std::ops::Range<usize>,
        keys: usize,
        bytes: usize,
    ) -> Result<Option<Span>> {
        // Where bucket `b`'s keys start; past the last bucket, past the state.
        let bound = |b: usize| {
            let prefix = data_prefix(state_no);
            if b < BUCKETS as usize {
                [&prefix[..], &(b as u16).to_be_bytes()].concat()
            } else {
                prefix_end(&prefix)
            }
        };
        let mut opts = read_options(None);
        opts.set_iterate_upper_bound(bound(buckets.end));
        // Every block of the state is read once: cached, they would push out other blocks.
        opts.fill_cache(false);
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(bound(buckets.start));
        let mut span = Span::new(keys, bytes);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            self.unwrap_value(v)?;
            if !span.push(k, v) {
                return Ok(None);
            }
            it.next();
        }
        it.status().map_err(|e| self.err("read", e))?;
        span.index();
        Ok(Some(span))
    }

    /// Splits a stored value into the attempt that wrote it and the record.
    pub(super) fn unwrap_value<'a>(&self, value: &'a [u8]) -> Result<(u64, &'a [u8])> {
        if value.len() < 8 {
            return Err(DataFusionError::Execution(format!(
                "damaged record in {}: {} byte(s)",
                self.path.display(),
                value.len()
            )));
        }
        let attempt = u64::from_le_bytes(value[..8].try_into().unwrap());
        Ok((attempt, &value[8..]))
    }
}
