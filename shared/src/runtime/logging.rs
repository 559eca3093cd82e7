//! What every invocation logs: its context on every line (the span), and what one engine run
//! saw and did, with its figures as embedded-metric lines.

use chrono::Utc;
use serde_json::Value;

use crate::engine::Outcome;

/// Logs what one engine run saw and did, and publishes its figures as EMF lines.
pub(super) fn log_outcome(function: &str, outcome: &Outcome) {
    log_lines(function, outcome);
    crate::metrics::publish(&crate::metrics::outcome_lines(
        metrics_namespace(),
        function,
        outcome,
        Utc::now(),
    ));
}

/// The log lines of one engine run (without its EMF lines).
pub fn log_lines(function: &str, outcome: &Outcome) {
    log_progress(function, outcome);
    log_changes(function, outcome);
    tracing::info!(
        function,
        cluster = %outcome.cluster,
        instance = outcome.instance.as_deref().unwrap_or(""),
        skipped = outcome.skipped.as_deref().unwrap_or(""),
        started = outcome.started.len(),
        start_failures = outcome.start_failures.len(),
        stopped = outcome.stopped.len(),
        ready_set = outcome.ready_set.len(),
        ready_cleared = outcome.ready_cleared.len(),
        rollouts_started = ?outcome.rollouts_started,
        conflicts = outcome.conflicts,
        errors = ?outcome.errors,
        "done"
    );
}

/// Coverage and rollout progress per daemon.
fn log_progress(function: &str, outcome: &Outcome) {
    for (daemon, coverage) in &outcome.coverage {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            instance = outcome.instance.as_deref().unwrap_or(""),
            daemon = %daemon,
            targeted = coverage.targeted,
            covered = coverage.covered,
            starting = coverage.starting,
            missing = coverage.missing,
            duplicates = coverage.duplicates,
            crash_looping = coverage.crash_looping,
            "coverage"
        );
    }
    for (daemon, counts) in &outcome.rollouts {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            daemon = %daemon,
            total = counts.total,
            done = counts.done,
            surging = counts.surging,
            settling = counts.settling,
            failures = counts.failures,
            threshold = counts.threshold,
            "rollout progress"
        );
    }
}

/// Instances covered, terminations held or let go, rollouts ended.
fn log_changes(function: &str, outcome: &Outcome) {
    for joined in &outcome.coverage_times {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            instance = %joined.instance_id,
            covered_seconds = joined.coverage_seconds(),
            ready_seconds = joined.ready_seconds(),
            "time to coverage"
        );
    }
    for report in &outcome.terminations {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            ec2_instance = %report.ec2_instance_id,
            instance = report.instance_id.as_deref().unwrap_or(""),
            group = %report.group,
            action = report.action,
            reason = ?report.reason,
            detail = %report.detail,
            "termination"
        );
    }
    for ended in &outcome.rollouts_ended {
        tracing::info!(
            function,
            cluster = %outcome.cluster,
            daemon = %ended.daemon,
            rollout = %ended.id,
            state = ?ended.state,
            reason = ended.reason.as_deref().unwrap_or(""),
            "rollout ended"
        );
    }
}

/// `METRICS_NAMESPACE` (template.yaml sets it), read once.
fn metrics_namespace() -> &'static str {
    static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| crate::metrics::DEFAULT_NAMESPACE.to_string())
    })
}

/// What an invocation is about, read from its raw payload before any parsing, so that every
/// log line of the invocation (the span's fields) names it even when parsing fails.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InvocationContext {
    pub event_id: Option<String>,
    pub cluster: Option<String>,
    pub instance: Option<String>,
    pub daemon: Option<String>,
    pub rollout: Option<String>,
}

impl InvocationContext {
    pub fn from_payload(payload: &Value) -> Self {
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
        let detail = payload.get("detail");
        let field = |name: &str| text(detail.and_then(|d| d.get(name)).or(payload.get(name)));
        let group_daemon = text(detail.and_then(|d| d.get("group")))
            .and_then(|g| g.strip_prefix("daemon:").map(str::to_string));
        let tag = |key: &str| {
            detail
                .and_then(|d| d.get("tags"))
                .and_then(Value::as_array)
                .and_then(|tags| {
                    tags.iter()
                        .find(|t| t.get("key").and_then(Value::as_str) == Some(key))
                })
                .and_then(|t| text(t.get("value")))
        };
        Self {
            event_id: detail.and(text(payload.get("id"))),
            cluster: field("clusterArn")
                .or_else(|| field("cluster"))
                .map(|c| crate::arn::cluster_name(&c).to_string()),
            instance: field("containerInstanceArn")
                .map(|i| crate::arn::resource_id(&i).to_string()),
            daemon: group_daemon.or_else(|| field("daemon")),
            rollout: tag(crate::engine::ROLLOUT_TAG),
        }
    }

    pub fn span(&self, function: &str, request_id: &str) -> tracing::Span {
        let shown = |v: &Option<String>| v.clone().unwrap_or_default();
        tracing::info_span!(
            "invocation",
            function,
            request_id,
            event_id = %shown(&self.event_id),
            cluster = %shown(&self.cluster),
            instance = %shown(&self.instance),
            daemon = %shown(&self.daemon),
            rollout = %shown(&self.rollout),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_log_line_names_what_the_invocation_is_about() {
        let task_event: Value =
            serde_json::from_str(include_str!("../../../events/task-running.json")).unwrap();
        let context = InvocationContext::from_payload(&task_event);
        assert_eq!(context.cluster.as_deref(), Some("prod"));
        assert!(context.event_id.is_some(), "{context:?}");
        assert!(
            context
                .instance
                .as_deref()
                .is_some_and(|i| !i.contains(':')),
            "{context:?}"
        );
        assert_eq!(context.daemon.as_deref(), Some("cloudwatch-agent-daemon"));

        let instance_event: Value =
            serde_json::from_str(include_str!("../../../events/instance-active.json")).unwrap();
        let context = InvocationContext::from_payload(&instance_event);
        assert_eq!(context.cluster.as_deref(), Some("prod"));
        assert!(
            context.instance.is_some() && context.daemon.is_none(),
            "{context:?}"
        );

        let deploy = serde_json::json!({"cluster": "prod", "daemon": "fluent-bit", "taskDefinition": "fb:3"});
        let context = InvocationContext::from_payload(&deploy);
        assert_eq!(
            context,
            InvocationContext {
                cluster: Some("prod".into()),
                daemon: Some("fluent-bit".into()),
                ..InvocationContext::default()
            }
        );
        // Whatever arrives, reading the context never fails.
        for odd in [
            serde_json::json!(null),
            serde_json::json!([1, 2]),
            serde_json::json!({"detail": 5, "cluster": 7}),
        ] {
            let _ = InvocationContext::from_payload(&odd);
        }
    }
}
