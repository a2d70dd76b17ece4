//! Ctrl-C: one handler for the process. It wakes a running query (which is then dropped, and
//! with it its scans) and tells the printing of a result to stop, so Ctrl-C is never ignored
//! whether the time goes into computing a result or into formatting it.
//!
//! Installed on first use; until then Ctrl-C keeps its default meaning (stop the process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The handler's state: a wake-up for queries and a count of presses for printing.
struct Handler {
    notify: Arc<tokio::sync::Notify>,
    presses: Arc<AtomicU64>,
}

fn handler() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let notify = Arc::new(tokio::sync::Notify::new());
        let presses = Arc::new(AtomicU64::new(0));
        let (n, p) = (notify.clone(), presses.clone());
        // If a handler cannot be installed (another one was, by an embedding program), Ctrl-C
        // keeps that handler's meaning, or the default one (stop the process): nothing to report
        // and nothing to stop.
        let _ = ctrlc::set_handler(move || {
            p.fetch_add(1, Ordering::SeqCst);
            n.notify_waiters();
        });
        Handler { notify, presses }
    })
}

/// The wake-up a running query waits on (`notified()` before the work starts).
pub fn wakeup() -> &'static Arc<tokio::sync::Notify> {
    &handler().notify
}

/// A moment to count Ctrl-C presses from: a long write asks it whether to stop.
#[derive(Debug, Clone, Copy)]
pub struct Since(u64);

impl Since {
    /// Now (installing the handler if it is not yet).
    pub fn now() -> Since {
        Since(handler().presses.load(Ordering::SeqCst))
    }

    /// Whether Ctrl-C was pressed since.
    pub fn pressed(&self) -> bool {
        handler().presses.load(Ordering::SeqCst) != self.0
    }
}
