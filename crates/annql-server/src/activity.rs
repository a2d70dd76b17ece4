//! What a connection is doing, as the listener's watchdog and a CancelRequest see it: the
//! statement running (with its cancel token), when the last one finished, whether the client
//! has authenticated; and the registry that routes a CancelRequest's key to its connection.
//!
//! A room of its own below the listener, the startup handler and the connection, which all
//! three share, so none of them needs another to reach it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use tokio_util::sync::CancellationToken;

/// What the watchdog and the cancel handler need to know about a connection.
#[derive(Debug, Default)]
pub struct Activity {
    /// The running statement, if one runs.
    current: Mutex<Option<Running>>,
    next: AtomicU64,
    /// When the connection last finished a statement (or connected).
    last: Mutex<Option<Instant>>,
    /// Whether authentication finished.
    pub authenticated: AtomicBool,
}

impl Activity {
    /// A fresh token for a statement that starts now.
    pub(crate) fn start(&self) -> Running {
        let running = Running {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            token: CancellationToken::new(),
        };
        if let Ok(mut c) = self.current.lock() {
            *c = Some(running.clone());
        }
        running
    }

    /// Cancels the running statement, if any (CancelRequest, client gone).
    pub fn cancel(&self) {
        if let Ok(c) = self.current.lock()
            && let Some(r) = c.as_ref()
        {
            r.token.cancel();
        }
    }

    /// Whether a statement is running.
    pub fn busy(&self) -> bool {
        self.current
            .lock()
            .map(|c| c.as_ref().is_some_and(|r| !r.token.is_cancelled()))
            .unwrap_or(false)
    }

    /// Time since the last statement finished or the connection opened.
    pub fn idle_for(&self, opened: Instant) -> std::time::Duration {
        // A poisoned lock still holds the last time written (every write is one assignment).
        let last = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(opened);
        last.elapsed()
    }

    /// Marks `running` as done (its rows are all sent, or it failed, or it was dropped).
    pub(crate) fn finish(&self, running: &Running) {
        if let Ok(mut c) = self.current.lock()
            && c.as_ref().is_some_and(|r| r.id == running.id)
        {
            *c = None;
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
    }
}

/// A statement that runs: its id and cancel token.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    id: u64,
    /// Cancelled by a CancelRequest, the client leaving, or the end of the statement's rows.
    pub(crate) token: CancellationToken,
}

/// A backend's cancel key: its process id and secret.
type CancelKey = (i32, Vec<u8>);

/// Routes CancelRequests to the connection whose key they carry.
#[derive(Debug, Default)]
pub struct Cancels(Mutex<HashMap<CancelKey, Weak<Activity>>>);

impl Cancels {
    /// Routes a later CancelRequest with this key to `activity`.
    pub(crate) fn register(&self, pid: i32, key: Vec<u8>, activity: &Arc<Activity>) {
        if let Ok(mut c) = self.0.lock() {
            c.retain(|_, a| a.strong_count() > 0);
            c.insert((pid, key), Arc::downgrade(activity));
        }
    }

    /// Cancels the statement running on the connection with this key, if any.
    pub(crate) fn cancel(&self, pid: i32, key: &[u8]) {
        // A panic elsewhere while holding the lock leaves the map whole (every change is one
        // call), so a cancel still finds its connection.
        let target = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pid, key.to_vec()))
            .and_then(Weak::upgrade);
        if let Some(activity) = target {
            activity.cancel();
        }
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.cancel(request.pid, &request.secret_key.to_bytes());
    }
}
