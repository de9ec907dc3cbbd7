//! The flow's observer: where the services report what happened, as metrics (feature
//! `metrics`) and as audit events for the application's [`AuditSink`]. Shared by the
//! configuration and the limiter, so a limit reports its own refusals.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::ids::{ClientId, Subject};
use crate::observe::record;
use crate::observe::{AuditAction, AuditEvent, AuditSink, Limit};

/// Reports events; cheap to clone.
#[derive(Clone)]
pub(crate) struct Observer {
    sink: Option<Arc<dyn AuditSink>>,
    pending: Arc<PendingGauge>,
}

/// When the pending-grants gauge was last read from the store.
struct PendingGauge {
    every: Option<Duration>,
    /// Unix milliseconds of the last refresh, or 0 for never.
    last: AtomicU64,
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("audit", &self.sink.is_some())
            .field("pending_grants_every", &self.pending.every)
            .finish()
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new(None, None)
    }
}

impl Observer {
    pub(crate) fn new(sink: Option<Arc<dyn AuditSink>>, pending_every: Option<Duration>) -> Self {
        Observer {
            sink,
            pending: Arc::new(PendingGauge {
                every: pending_every,
                last: AtomicU64::new(0),
            }),
        }
    }

    /// True when an audit sink takes events.
    pub(crate) fn is_auditing(&self) -> bool {
        self.sink.is_some()
    }

    /// Hands the event `action()` to the audit sink; builds nothing when there is none.
    pub(crate) fn audit(
        &self,
        at: Timestamp,
        source: Option<IpAddr>,
        action: impl FnOnce() -> AuditAction,
    ) {
        if let Some(sink) = &self.sink {
            sink.record(&AuditEvent::new(at, source, action()));
        }
    }

    /// A request refused by `limit`: counted, and audited with who it counted.
    pub(crate) fn limit_hit(
        &self,
        limit: Limit,
        at: Timestamp,
        source: Option<IpAddr>,
        client_id: Option<&ClientId>,
        subject: Option<&Subject>,
    ) {
        record::limit_refused(limit);
        self.audit(at, source, || AuditAction::LimitHit {
            limit,
            client_id: client_id.cloned(),
            subject: subject.cloned(),
        });
    }

    /// True when the pending-grants gauge is due for a refresh at `now`, claiming the refresh
    /// (one caller among concurrent ones gets `true`). Always false without the `metrics`
    /// feature: nobody would read the gauge.
    pub(crate) fn pending_due(&self, now: Timestamp) -> bool {
        if !cfg!(feature = "metrics") {
            return false;
        }
        let Some(every) = self.pending.every else {
            return false;
        };
        let now_ms = now.as_unix_millis().max(1);
        let last = self.pending.last.load(Ordering::Relaxed);
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now_ms < last.saturating_add(every_ms) {
            return false;
        }
        self.pending
            .last
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}
