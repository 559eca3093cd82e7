//! JSON logs for CloudWatch: one object per line, level from `RUST_LOG` (default info). Every
//! line carries the invocation's span (function, request id, event id, cluster, instance,
//! daemon, rollout) under `span`, and its own fields at the top level.

use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber; a second call is a no-op.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Lambda adds its own timestamps to every line; the JSON keeps ours for local runs.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_ansi(false)
        .try_init();
}
