//! The examples' log output: `tracing` events to stderr, filtered by `RUST_LOG`.
//!
//! Stderr, so that stdout keeps only what the examples promise to print there (the demo
//! contract's "listening" line, the device client's token JSON). Without `RUST_LOG` the
//! crate's own events at `info` (grants, tokens, refusals) and every other crate's warnings
//! are shown; `RUST_LOG=tower_device_flow=debug` shows each poll too, `RUST_LOG=off` nothing.

use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`.
const DEFAULT_FILTER: &str = "warn,tower_device_flow=info";

/// Installs the subscriber; a second call (or one after another subscriber) does nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // An unset or unparsable RUST_LOG falls back to the default rather than silence.
        EnvFilter::new(DEFAULT_FILTER)
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
