//! JSON logs for CloudWatch: one object per line, level from `RUST_LOG` (default info). Every
//! line carries the invocation's span (function, request id, event id, cluster, instance,
//! daemon, rollout) under `span`, and its own fields at the top level.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON log subscriber; a second call is a no-op.
pub fn init_logging() {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::registry()
        .with(json_layer(std::io::stdout))
        .with(filter)
        .try_init();
}

/// The functions' log format, written to `writer` (stdout in Lambda; the cost benchmark
/// counts its bytes).
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    // Lambda adds its own timestamps to every line; the JSON keeps ours for local runs.
    tracing_subscriber::fmt::layer()
        .json()
        .with_target(false)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_ansi(false)
        .with_writer(writer)
}

/// `RUST_LOG`'s `level` and `target=level` directives; info when unset or unreadable. `Targets` rather than `EnvFilter`:
/// the span-field filters of `EnvFilter` bring a regular-expression engine into every
/// function's bootstrap (about 0.1 MB) and no operator of this product filters on them.
fn log_filter(directives: Option<&str>) -> Targets {
    directives
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn log_filter_reads_levels_and_targets_and_falls_back_to_info() {
        let unset = log_filter(None);
        assert!(unset.would_enable("ecs_daemons", &Level::INFO));
        assert!(!unset.would_enable("ecs_daemons", &Level::DEBUG));

        let targeted = log_filter(Some("warn,ecs_daemons::engine=debug"));
        assert!(targeted.would_enable("ecs_daemons::engine::act", &Level::DEBUG));
        assert!(!targeted.would_enable("aws_smithy_runtime", &Level::INFO));
        assert!(targeted.would_enable("aws_smithy_runtime", &Level::WARN));

        let unreadable = log_filter(Some("ecs_daemons=loud"));
        assert!(unreadable.would_enable("ecs_daemons", &Level::INFO));
        assert!(!unreadable.would_enable("ecs_daemons", &Level::DEBUG));
    }
}
