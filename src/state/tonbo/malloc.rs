//! Returning to the system the memory that Tonbo's work freed.
//!
//! Tonbo's runtime workers, the threads its scans and calls run on ([`super::block`],
//! [`super::scan`]) and DataFusion's workers each allocate from a glibc arena of their own,
//! and glibc keeps in each arena what its threads free. Tonbo's memory comes and goes in large
//! pieces (a commit's records, its log encoding, compaction merges), so without help the
//! process keeps far more than it uses: a 1M-key query over a 128 MiB working set peaks at
//! 3.9 GiB of RSS on a heap of under 1 GiB without this, and at 1.6 GiB with it
//! (docs/tonbo.md, "Memory").
//!
//! So while Tonbo works — from each call into it until [`QUIET`] after the last, which covers
//! the flushes and compactions that run after an ingest — a thread of the process returns the
//! free pages of every arena to the system once a second (`malloc_trim`). Elsewhere than glibc
//! it does nothing.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the free pages are returned while Tonbo works.
const EVERY: Duration = Duration::from_secs(1);

/// How long after the last call into Tonbo it is still taken to be working.
const QUIET: Duration = Duration::from_secs(30);

/// When the last call into Tonbo started, in milliseconds from [`epoch`].
static LAST_WORK: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_millis() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Notes a call into Tonbo, and starts the thread that returns freed memory if it is not
/// running.
pub(super) fn working() {
    LAST_WORK.store(now_millis(), Ordering::Relaxed);
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        // Without the thread the process only keeps more memory.
        _ = std::thread::Builder::new()
            .name("fintech-tonbo-malloc".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(EVERY);
                    let idle = now_millis().saturating_sub(LAST_WORK.load(Ordering::Relaxed));
                    if idle <= QUIET.as_millis() as u64 {
                        release();
                    }
                }
            });
    });
}

/// Returns the free pages of every arena to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim takes no pointers; glibc locks each arena while it trims it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}
