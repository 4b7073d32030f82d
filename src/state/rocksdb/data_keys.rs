//! Data keys built in RocksDB's order, in one buffer, on every core.

use super::layout::{BUCKETS, DATA, bucket, push_data_key};

/// Keys per thread, at least, when a commit builds its batch or a read-ahead scans a state on
/// several threads.
pub(super) const PARALLEL_KEYS: usize = 32_768;

/// Data keys, each with an optional value, in RocksDB's order and in one buffer.
///
/// Built reading each input once, in sequence: with a million scattered inputs, reading them
/// in sorted order instead costs a cache miss per input, which dominated a commit.
pub(super) struct DataKeys {
    bytes: Vec<u8>,
    /// In key order.
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    key_end: usize,
    end: usize,
    /// Position in the input.
    input: usize,
}

impl DataKeys {
    /// The data keys of `(state number, key)` pairs, sorted, each followed by the value of
    /// its input `i`: `value_len(i)` bytes, which `value(i, out)` writes.
    pub(super) fn sorted(
        keys: &[(u32, &[u8])],
        value_len: impl Fn(usize) -> usize + Sync,
        value: impl Fn(usize, &mut [u8]) + Sync,
    ) -> Self {
        let mut runs = Self::sorted_runs(keys, 1, value_len, value, |keys| keys);
        runs.pop().unwrap_or(Self {
            bytes: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// As [`DataKeys::sorted`], in `runs` runs of consecutive data keys of about the same
    /// size, each built and handed to `each` on a thread of its own: the results, one after
    /// the other, are in key order. A commit of a million keys builds its batch on every core
    /// instead of one, while the partitions that finished first wait for it.
    ///
    /// A counting sort on (state number, bucket), the data key's first bytes: it reads the
    /// inputs once, in order, and writes each to its group, so that only the keys of one group
    /// (a few hundred even with a million keys) are sorted together, in a stretch of memory
    /// that stays in the CPU's caches. Sorting all entries at once and writing them in that
    /// order cost a cache miss per comparison and per key written. A run is a range of
    /// groups.
    pub(super) fn sorted_runs<T: Send>(
        keys: &[(u32, &[u8])],
        runs: usize,
        value_len: impl Fn(usize) -> usize + Sync,
        value: impl Fn(usize, &mut [u8]) + Sync,
        each: impl Fn(Self) -> T + Sync,
    ) -> Vec<T> {
        let runs = runs.max(1);
        let mut state_nos: Vec<u32> = keys.iter().map(|(s, _)| *s).collect();
        state_nos.sort_unstable();
        state_nos.dedup();
        let buckets = BUCKETS as usize;
        let group_count = state_nos.len() * buckets;
        // Each input's group, and per group its entries and bytes: a share of the inputs per
        // thread, then the counts added up.
        let mut groups = vec![0u32; keys.len()];
        let share = keys.len().div_ceil(runs).max(1);
        let counts = on_threads(
            keys.chunks(share)
                .zip(groups.chunks_mut(share))
                .enumerate()
                .map(|(c, (keys, groups))| {
                    let (state_nos, value_len) = (&state_nos, &value_len);
                    move || {
                        let mut entries = vec![0usize; group_count];
                        let mut bytes = vec![0usize; group_count];
                        for (j, ((state_no, key), group)) in keys.iter().zip(groups).enumerate() {
                            let rank = state_nos.binary_search(state_no).unwrap_or_default();
                            let g = rank * buckets + bucket(key) as usize;
                            *group = g as u32;
                            entries[g] += 1;
                            bytes[g] += 7 + key.len() + value_len(c * share + j);
                        }
                        (entries, bytes)
                    }
                }),
        );
        // Per group: where its entries and bytes start.
        let mut first_entry = vec![0usize; group_count + 1];
        let mut first_byte = first_entry.clone();
        for (entries, bytes) in &counts {
            for g in 0..group_count {
                first_entry[g + 1] += entries[g];
                first_byte[g + 1] += bytes[g];
            }
        }
        drop(counts);
        for g in 1..first_entry.len() {
            first_entry[g] += first_entry[g - 1];
            first_byte[g] += first_byte[g - 1];
        }
        // Runs end where the bytes pass their share of the total.
        let total = first_byte[group_count];
        let mut ends: Vec<usize> = (1..runs)
            .map(|r| first_byte.partition_point(|&b| b < total / runs * r))
            .collect();
        ends.push(group_count);
        // The groups `from..to`, with their positions and bytes counted from the run's start.
        let run = |from: usize, to: usize| -> Self {
            let (entry0, byte0) = (first_entry[from], first_byte[from]);
            let mut next_entry: Vec<usize> =
                first_entry[from..=to].iter().map(|e| e - entry0).collect();
            let mut next_byte: Vec<usize> =
                first_byte[from..=to].iter().map(|b| b - byte0).collect();
            let mut bytes = vec![0u8; next_byte[to - from]];
            let mut entries = vec![
                Entry {
                    start: 0,
                    key_end: 0,
                    end: 0,
                    input: 0,
                };
                next_entry[to - from]
            ];
            for (i, ((state_no, key), g)) in keys.iter().zip(&groups).enumerate() {
                let g = *g as usize;
                if g < from || g >= to {
                    continue;
                }
                let at = g - from;
                let (start, key_end) = (next_byte[at], next_byte[at] + 7 + key.len());
                let end = key_end + value_len(i);
                let out = &mut bytes[start..end];
                out[0] = DATA;
                out[1..5].copy_from_slice(&state_no.to_be_bytes());
                out[5..7].copy_from_slice(&((g % buckets) as u16).to_be_bytes());
                out[7..key_end - start].copy_from_slice(key);
                value(i, &mut out[key_end - start..]);
                entries[next_entry[at]] = Entry {
                    start,
                    key_end,
                    end,
                    input: i,
                };
                next_entry[at] += 1;
                next_byte[at] = end;
            }
            let mut group_start = 0;
            for (g, group_end) in next_entry.iter().enumerate().take(to - from) {
                // Within a group the keys share their first 7 bytes.
                let group_end = *group_end;
                entries[group_start..group_end].sort_unstable_by(|x, y| {
                    bytes[x.start + 7..x.key_end].cmp(&bytes[y.start + 7..y.key_end])
                });
                group_start = group_end;
                debug_assert_eq!(group_end, first_entry[from + g + 1] - entry0);
            }
            Self { bytes, entries }
        };
        let (run, each) = (&run, &each);
        let starts = std::iter::once(0).chain(ends.iter().copied());
        on_threads(
            starts
                .zip(ends.iter().copied())
                .map(|(from, to)| move || each(run(from, to))),
        )
    }

    /// The data keys of `(state number, key)` pairs, in input order; `value(i, out)` as for
    /// [`DataKeys::sorted`].
    pub(super) fn in_input_order(
        keys: &[(u32, &[u8])],
        mut value: impl FnMut(usize, &mut Vec<u8>),
    ) -> Self {
        let mut bytes = Vec::with_capacity(keys.iter().map(|(_, k)| 7 + k.len()).sum());
        let mut entries = Vec::with_capacity(keys.len());
        for (i, (state_no, key)) in keys.iter().enumerate() {
            let start = bytes.len();
            push_data_key(&mut bytes, *state_no, key);
            let key_end = bytes.len();
            value(i, &mut bytes);
            entries.push(Entry {
                start,
                key_end,
                end: bytes.len(),
                input: i,
            });
        }
        Self { bytes, entries }
    }

    /// About the bytes of a `WriteBatch` that puts every key with its value.
    pub(super) fn batch_bytes(&self) -> usize {
        self.bytes.len() + 8 * self.entries.len()
    }

    /// (position in the input, data key, value), in the order built (key order if sorted).
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &[u8], &[u8])> {
        self.entries.iter().map(|e| {
            (
                e.input,
                &self.bytes[e.start..e.key_end],
                &self.bytes[e.key_end..e.end],
            )
        })
    }
}

/// Threads to work on `keys` keys with: one per core, each with at least `PARALLEL_KEYS`.
pub(super) fn threads_for(keys: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(keys / PARALLEL_KEYS)
        .max(1)
}

/// The results of `jobs`, in order, each run on a thread of its own (the first on this one).
pub(super) fn on_threads<T: Send>(
    mut jobs: impl Iterator<Item = impl FnOnce() -> T + Send>,
) -> Vec<T> {
    std::thread::scope(|s| {
        let Some(first) = jobs.next() else {
            return Vec::new();
        };
        let others: Vec<_> = jobs.map(|job| s.spawn(job)).collect();
        let mut out = vec![first()];
        for h in others {
            out.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        out
    })
}
