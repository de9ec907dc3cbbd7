//! What an operator sees of the flow: metrics (feature `metrics`) and audit events.
//!
//! **Metrics** go through the [`metrics`](https://docs.rs/metrics) facade: the crate installs
//! no exporter, the application installs the recorder it wants (Prometheus, StatsD, ...), and
//! with none installed every emission is a no-op. Every name is a constant of [`metric`], and
//! [`metric::ALL`] lists them with their type, labels and meaning (the README's table is
//! checked against it). Label values are small fixed sets (never a client-supplied string):
//! per-client detail is what the audit events are for.
//!
//! **Audit events** ([`AuditEvent`]) go to the [`AuditSink`] set with
//! [`DeviceFlowBuilder::audit`](crate::DeviceFlowBuilder::audit): device authorized,
//! approved or denied (by whom), tokens issued, refreshed and revoked, refresh-token reuse,
//! wrong user codes and limits hit, each with the ids involved and the source address where
//! known, never a code, token or digest. They need no feature.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tower_device_flow::observe::{AuditAction, AuditEvent};
//! use tower_device_flow::{DeviceFlow, MemoryStore};
//!
//! let trail: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
//! let sink = trail.clone();
//! let flow = DeviceFlow::builder(MemoryStore::default())
//!     .issuer("https://auth.example.com")
//!     // Called on the request path: hand slow work (a database, a SIEM) to a channel.
//!     .audit(move |event: &AuditEvent| {
//!         if let Ok(mut trail) = sink.lock() {
//!             trail.push(event.clone());
//!         }
//!     })
//!     .build();
//! # let _ = (flow, AuditAction::name);
//! ```

mod audit;
pub mod metric;
pub(crate) mod record;

pub use audit::{AuditAction, AuditEvent, AuditSink, Limit, RevocationReason};
/// Hands every metric's description and unit ([`metric::ALL`]) to the installed recorder:
/// call it once after installing one, for the `# HELP` lines of a Prometheus exporter.
#[cfg(feature = "metrics")]
pub fn describe() {
    metrics::with_recorder(|r| {
        for m in metric::ALL {
            let unit = m
                .name
                .ends_with("_seconds")
                .then_some(metrics::Unit::Seconds);
            let (name, help) = (m.name.into(), m.help.into());
            match m.kind {
                metric::Kind::Counter => r.describe_counter(name, unit, help),
                metric::Kind::Gauge => r.describe_gauge(name, unit, help),
                metric::Kind::Histogram => r.describe_histogram(name, unit, help),
            }
        }
    });
}
