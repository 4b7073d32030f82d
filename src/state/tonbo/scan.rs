//! Scans of a Tonbo table that run on a thread of their own and hand their batches over a
//! few at a time: to a stream (`fintech_state`), or to a caller that waits for each batch
//! ([`Scan`]: a load, a commit copying staged rows).
//!
//! Tonbo's scan streams are not `Send`, so a scan is driven by a thread that blocks on the
//! store's runtime; the channel between it and the reader holds [`SCAN_BATCHES`] batches, so
//! a scan of any size holds a few batches at a time. The thread ends when the scan does or
//! when the reader drops its end.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::error::{DataFusionError, Result};
use futures::{FutureExt, StreamExt};
use tonbo::prelude::{Expr, ScalarValue};

use super::Table;
use super::bridge::from_tonbo;
use super::directory::io_error;
use super::location::with_db;
use super::runtime;

/// Batches a scan holds between Tonbo and its reader.
pub(super) const SCAN_BATCHES: usize = 2;

/// Where a scan's batches go.
pub(super) enum Sink {
    Stream(tokio::sync::mpsc::Sender<Result<RecordBatch>>),
    Blocking(SyncSender<Result<RecordBatch>>),
}

impl Sink {
    /// Hands `batch` over; false once the reader is gone.
    async fn send(&self, batch: Result<RecordBatch>) -> bool {
        match self {
            Self::Stream(tx) => tx.send(batch).await.is_ok(),
            Self::Blocking(tx) => tx.send(batch).is_ok(),
        }
    }
}

/// What a scan reads.
pub(super) struct ScanSpec {
    /// Rows that Tonbo's scan filters to (all without one).
    pub(super) filter: Option<Expr>,
    /// The columns read, as an empty batch of Tonbo's arrow (all without one).
    pub(super) projection: Option<arrow57::RecordBatch>,
    /// What the scan is, for errors: "Tonbo store <location>: read ...".
    pub(super) what: String,
}

thread_local! {
    /// A fault for the next scan this thread starts: it panics after handing over this many
    /// more batches, once. Only tests set it ([`inject_fault`]).
    static FAULT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Makes the next scan started from this thread panic after `batches` batches, once.
#[cfg(test)]
pub(super) fn inject_fault(batches: usize) {
    FAULT.with(|f| f.set(Some(batches)));
}

/// How many times a scan is started again after it fails.
const RETRIES: u32 = 4;

/// Starts a scan of `table` on a thread of its own, sending its batches (in key order) to
/// `sink`.
///
/// A scan that fails, or panics, is started again from the key after the last one it
/// handed over, up to [`RETRIES`] times: Tonbo plans a scan over the files of its snapshot,
/// and a compaction running in the background can remove one of them before the scan opens
/// it ("Path not found"). The batches handed over are whole and in key order, so the reader
/// sees each row once. The last failure is handed over as the scan's error.
pub(super) fn spawn(
    table: Arc<Table>,
    spec: ScanSpec,
    location: &str,
    sink: Sink,
) -> Result<JoinHandle<()>> {
    let handle = runtime()
        .map_err(|e| io_error(Path::new(location), "start a runtime for", e))?
        .handle()
        .clone();
    let fault = FAULT.with(|f| f.take());
    super::malloc::working();
    let thread = std::thread::Builder::new()
        .name("fintech-tonbo-scan".into())
        .spawn(move || {
            handle.block_on(async move {
                let mut fault = fault;
                let mut after: Option<(String, ScalarValue)> = None;
                let mut tries = 0;
                loop {
                    let once =
                        AssertUnwindSafe(scan_once(&table, &spec, &mut after, &sink, &mut fault))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|panic| Err(panic_message(panic.as_ref())));
                    match once {
                        Ok(()) => return,
                        Err(_) if tries < RETRIES => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(10 << tries)).await;
                        }
                        Err(e) => {
                            let e = DataFusionError::Execution(format!("{}: {e}", spec.what));
                            _ = sink.send(Err(e)).await;
                            return;
                        }
                    }
                }
            })
        })
        .map_err(|e| io_error(Path::new(location), "start a thread to read", e))?;
    Ok(thread)
}

/// One run of a scan: its rows after the key `after` (all at first), handed to `sink`;
/// `after` follows the last key handed over. Ends without error when the reader is gone.
async fn scan_once(
    table: &Table,
    spec: &ScanSpec,
    after: &mut Option<(String, ScalarValue)>,
    sink: &Sink,
    fault: &mut Option<usize>,
) -> std::result::Result<(), String> {
    let resume = after.clone().map(|(column, key)| Expr::gt(column, key));
    let filter = match (spec.filter.clone(), resume) {
        (Some(f), Some(r)) => Some(Expr::and(vec![f, r])),
        (f, r) => f.or(r),
    };
    with_db!(&table.db, db => {
        let scan = db.scan();
        let scan = match &spec.projection {
            Some(p) => scan.projection(p.schema()),
            None => scan,
        };
        let scan = match filter {
            Some(f) => scan.filter(f),
            None => scan,
        };
        let stream = scan.stream().await.map_err(|e| e.to_string())?;
        let mut stream = std::pin::pin!(stream);
        while let Some(batch) = stream.next().await {
            let batch = from_tonbo(batch.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            let batch = rows_after(batch, after.as_ref().map(|(_, k)| k));
            if batch.num_rows() == 0 {
                continue;
            }
            let last = last_key(&batch);
            if !sink.send(Ok(batch)).await {
                return Ok(());
            }
            *after = Some(last);
            match fault.take() {
                Some(0) => panic!("a fault injected after a batch"),
                left => *fault = left.map(|n| n - 1),
            }
        }
        Ok(())
    })
}

/// The key column's name and the last key of `batch` (its first column, Binary or Utf8).
fn last_key(batch: &RecordBatch) -> (String, ScalarValue) {
    let name = batch.schema().field(0).name().clone();
    let column = batch.column(0);
    let i = batch.num_rows() - 1;
    let key = match column.as_binary_opt::<i32>() {
        Some(k) => ScalarValue::Binary(Some(k.value(i).to_vec())),
        None => ScalarValue::Utf8(Some(column.as_string::<i32>().value(i).to_string())),
    };
    (name, key)
}

/// The rows of `batch` whose keys are above `after` (a filter Tonbo's scan did not apply
/// exactly would otherwise hand a row over twice after a retry).
fn rows_after(batch: RecordBatch, after: Option<&ScalarValue>) -> RecordBatch {
    let column = batch.column(0);
    let above = |i: usize| match after {
        None => true,
        Some(ScalarValue::Binary(Some(a))) => column.as_binary::<i32>().value(i) > a.as_slice(),
        Some(ScalarValue::Utf8(Some(a))) => column.as_string::<i32>().value(i) > a.as_str(),
        Some(_) => true,
    };
    let first = (0..batch.num_rows())
        .find(|&i| above(i))
        .unwrap_or(batch.num_rows());
    batch.slice(first, batch.num_rows() - first)
}

/// What a panic says.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    format!("the scan panicked: {text}")
}

/// A scan read by a caller that waits for each batch. Dropped, it waits for its thread to
/// end: no part of the scan is still running when the caller goes on (to write the table,
/// say: Tonbo lost an ingest that ran while a scan of its table was under way).
pub(super) struct Scan {
    rx: Option<Receiver<Result<RecordBatch>>>,
    thread: Option<JoinHandle<()>>,
}

impl Scan {
    pub(super) fn start(table: Arc<Table>, spec: ScanSpec, location: &str) -> Result<Self> {
        let (tx, rx) = sync_channel(SCAN_BATCHES);
        let thread = spawn(table, spec, location, Sink::Blocking(tx))?;
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// The next batch; `None` at the end.
    pub(super) fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let rx = self.rx.as_ref()?;
        crate::state::wait_in_place(|| rx.recv().ok())
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        // The thread ends at its next batch once nothing receives it.
        self.rx = None;
        if let Some(thread) = self.thread.take() {
            crate::state::wait_in_place(|| _ = thread.join());
        }
    }
}

/// What [`Forward::find`] hands the rows it finds to: a batch and its rows `(i, row)`.
pub(super) type Found<'a> = dyn FnMut(&RecordBatch, &[(usize, usize)]) -> Result<()> + 'a;

/// A scan read forward in key order, asked for sorted keys: each row whose key is asked for
/// is handed on, the others are passed over. The table's first column is its key.
pub(super) struct Forward {
    scan: Scan,
    batch: Option<RecordBatch>,
    /// The next row of `batch` not passed over.
    row: usize,
    ended: bool,
    /// The scan read no key before this one.
    from: Vec<u8>,
    /// The largest key asked for so far: the scan has passed every row up to it.
    asked: Option<Vec<u8>>,
}

impl Forward {
    /// A scan of `table` from `from` on (`spec`'s filter starts there).
    pub(super) fn start(
        table: Arc<Table>,
        spec: ScanSpec,
        location: &str,
        from: Vec<u8>,
    ) -> Result<Self> {
        Ok(Self {
            scan: Scan::start(table, spec, location)?,
            batch: None,
            row: 0,
            ended: false,
            from,
            asked: None,
        })
    }

    /// Whether keys from `key` on can still be found: the scan has not passed it.
    pub(super) fn can_find(&self, key: &[u8]) -> bool {
        match &self.asked {
            Some(asked) => key > asked.as_slice(),
            None => key >= self.from.as_slice(),
        }
    }

    /// How far the scan is: the largest key asked for.
    pub(super) fn position(&self) -> &[u8] {
        self.asked.as_deref().unwrap_or(&self.from)
    }

    /// Hands `found(batch, rows)` the rows `(i, row)` of `batch` whose keys are among
    /// `keys` (`(i, key)`, ascending, all findable: [`Forward::can_find`]), one batch at a
    /// time.
    pub(super) fn find(&mut self, keys: &[(usize, &[u8])], found: &mut Found<'_>) -> Result<()> {
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for &(i, key) in keys {
            while !self.ended {
                let Some(batch) = &self.batch else {
                    self.batch = match self.scan.next_batch() {
                        None => {
                            self.ended = true;
                            None
                        }
                        Some(batch) => Some(batch?),
                    };
                    self.row = 0;
                    continue;
                };
                let keys_of = batch.column(0).as_binary::<i32>();
                // Keys ascend within a batch: jump to the first not below `key`.
                let (mut lo, mut hi) = (self.row, batch.num_rows());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if keys_of.value(mid) < key {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                self.row = lo;
                if self.row == batch.num_rows() {
                    if !rows.is_empty() {
                        found(batch, &rows)?;
                        rows.clear();
                    }
                    self.batch = None;
                    continue;
                }
                if keys_of.value(self.row) == key {
                    rows.push((i, self.row));
                    self.row += 1;
                }
                break;
            }
        }
        if let Some(&(_, last)) = keys.last() {
            self.asked = Some(last.to_vec());
        }
        if let (Some(batch), false) = (&self.batch, rows.is_empty()) {
            found(batch, &rows)?;
        }
        Ok(())
    }
}
