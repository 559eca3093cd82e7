//! Configuration from the environment (as template.yaml sets it) and the production engine
//! built from it: the SDK adapters, each ECS call paced to the function's share.

use crate::ecs::SdkEcs;
use crate::engine::{Engine, EngineConfig};
use crate::pacing::{Paced, Pacing, SystemClock};
use crate::store::DynamoStore;

use super::FunctionError;

/// The SDK adapters, every ECS call paced to the function's share of ECS's rates.
pub type ProductionEngine = Engine<Paced<SdkEcs, SystemClock>, DynamoStore>;

/// Reads `TABLE_NAME` and `MANAGED_CLUSTERS` (comma-separated), as template.yaml sets them.
pub fn engine_config_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, EngineConfig), FunctionError> {
    let table = lookup("TABLE_NAME")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FunctionError::Config("TABLE_NAME is not set".into()))?;
    // Names or ARNs: events name clusters by ARN, invokes by name; both compare by name.
    let clusters: Vec<String> = list_from(&lookup, "MANAGED_CLUSTERS")
        .iter()
        .map(|c| crate::arn::cluster_name(c).to_string())
        .collect();
    if clusters.is_empty() {
        return Err(FunctionError::Config(
            "MANAGED_CLUSTERS names no cluster".into(),
        ));
    }
    let mut config = EngineConfig {
        clusters,
        ..EngineConfig::default()
    };
    if let Some(marker) = lookup("STARTED_BY").filter(|m| !m.is_empty()) {
        config.started_by = started_by_from(&marker)?;
    }
    config.holds = hold_settings_from(&lookup)?;
    config.daemon_families = list_from(&lookup, "DAEMON_FAMILIES");
    config.daemon_role_arns = list_from(&lookup, "DAEMON_ROLE_ARNS");
    if let Some(quota) = lookup("SERVICES_PER_CLUSTER_QUOTA").filter(|q| !q.trim().is_empty()) {
        config.services_per_cluster = quota
            .trim()
            .parse()
            .ok()
            .filter(|q: &usize| *q >= 2)
            .ok_or_else(|| {
                FunctionError::Config(format!(
                    "SERVICES_PER_CLUSTER_QUOTA {quota:?} is not a number of services (2 or more)"
                ))
            })?;
    }
    if let Some(name) = lookup("LIFECYCLE_HOOK_NAME").filter(|n| !n.trim().is_empty()) {
        config.hook_name = name.trim().to_string();
    }
    config.terminate_hook = terminate_hook_from(&lookup, &config.hook_name);
    if config.terminate_hook.is_some() {
        // Holds are kept only where groups are named: only then must their settings work.
        let rate = lookup("COVERAGE_CHECK_RATE").unwrap_or_else(|| "1 minute".into());
        let interval = rate_seconds(&rate).ok_or_else(|| {
            FunctionError::Config(format!(
                "COVERAGE_CHECK_RATE {rate:?} is not an EventBridge rate (1 minute, 2 to 59 minutes, 1 hour)"
            ))
        })?;
        crate::holds::check_hold_settings(
            config.holds.heartbeat_every * 2,
            config.holds.limit,
            chrono::Duration::seconds(interval),
        )
        .map_err(FunctionError::Config)?;
    }
    Ok((table, config))
}

/// A comma-separated variable (as template.yaml joins a list parameter), blanks dropped.
fn list_from(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Vec<String> {
    lookup(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Seconds between two runs of an EventBridge `rate()` body ("1 minute", "5 minutes", "1 hour").
pub fn rate_seconds(rate: &str) -> Option<i64> {
    let (value, unit) = rate.trim().split_once(' ')?;
    let value: i64 = value.parse().ok().filter(|v| *v >= 1)?;
    let unit_seconds = match (unit, value) {
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3600,
        ("day", 1) | ("days", 2..) => 86_400,
        _ => return None,
    };
    Some(value * unit_seconds)
}

/// `STARTED_BY`: ECS allows up to 36 letters, digits, hyphens, forward slashes and
/// underscores (API reference, StartTask `startedBy`).
fn started_by_from(marker: &str) -> Result<String, FunctionError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_');
    if marker.len() > crate::ecs::STARTED_BY_MAX_LEN || !marker.chars().all(allowed) {
        return Err(FunctionError::Config(format!(
            "STARTED_BY {marker:?} must be 1 to {} letters, digits, '-', '/' or '_' (ECS's startedBy)",
            crate::ecs::STARTED_BY_MAX_LEN
        )));
    }
    Ok(marker.to_string())
}

/// `AUTO_SCALING_GROUP_NAMES` (comma-separated, as template.yaml joins them) and
/// the hook (`LIFECYCLE_HOOK_NAME`) whose lost events the coverage check adopts.
fn terminate_hook_from(
    lookup: &impl Fn(&str) -> Option<String>,
    hook_name: &str,
) -> Option<crate::autoscaling::TerminateHook> {
    let groups = list_from(lookup, "AUTO_SCALING_GROUP_NAMES");
    if groups.is_empty() {
        return None;
    }
    Some(crate::autoscaling::TerminateHook {
        name: hook_name.into(),
        groups,
    })
}

/// `LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS` (the hook's heartbeat timeout) and
/// `DRAIN_LIMIT_SECONDS` (how long a drain may hold a termination), both optional.
fn hold_settings_from(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::holds::HoldSettings, FunctionError> {
    let defaults = crate::holds::HoldSettings::default();
    let seconds =
        |name: &str, default: i64, range: std::ops::RangeInclusive<i64>| match lookup(name)
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    FunctionError::Config(format!(
                        "{name} must be a whole number of seconds from {} to {}, got {text:?}",
                        range.start(),
                        range.end()
                    ))
                }),
        };
    // Auto Scaling's own bounds: a heartbeat timeout of 30 s to 7200 s, a wait of at most 48 h.
    let timeout = seconds(
        "LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS",
        (defaults.heartbeat_every * 2).num_seconds(),
        30..=7200,
    )?;
    let limit = seconds(
        "DRAIN_LIMIT_SECONDS",
        defaults.limit.num_seconds(),
        60..=172_800,
    )?;
    Ok(crate::holds::HoldSettings::new(
        chrono::Duration::seconds(timeout),
        chrono::Duration::seconds(limit),
    ))
}

/// The engine of one function's process: its pacing share (`Pacing::share`, or the
/// `ECS_*` environment), the SDK clients, the table.
pub async fn production_engine(function: &str) -> Result<ProductionEngine, FunctionError> {
    let (table, mut config) = engine_config_from(|name| std::env::var(name).ok())?;
    // Adopting lost terminations is the schedule's work (it alone may describe the groups);
    // deploy and rollback reconcile too, and must not call what their role does not allow.
    if function != "coverage-check" {
        config.terminate_hook = None;
    }
    let pacing = Pacing::from_env(Pacing::share(function), |name| std::env::var(name).ok())
        .map_err(|error| FunctionError::Config(error.to_string()))?;
    let aws = crate::aws::load_config().await;
    let engine = Engine::new(
        Paced::new(SdkEcs::from_config(&aws), SystemClock::default(), pacing),
        DynamoStore::from_config(&aws, table),
        config,
    );
    let engine = if holds_terminations(function) {
        engine.with_autoscaling(std::sync::Arc::new(
            crate::autoscaling::SdkAutoScaling::from_config(&aws),
        ))
    } else {
        engine
    };
    let cloudwatch = crate::alarms::CloudWatchAlarms::from_config(&aws)
        .filter(|_| reads_alarms(function))
        .map(std::sync::Arc::new);
    let engine = match cloudwatch {
        Some(cloudwatch) => engine.with_alarms(cloudwatch),
        None => engine,
    };
    let wakes = crate::wake::SqsWakeQueue::from_environment(&aws)
        .filter(|_| books_wakes(function))
        .map(std::sync::Arc::new);
    Ok(match wakes {
        Some(wakes) => engine.with_wakes(wakes),
        None => engine,
    })
}

/// The functions whose role may send to the wake queue (template.yaml's WakeQueueSendPolicy):
/// those whose reconciles leave timed steps behind (a copy settling after its RUNNING event,
/// a restart backoff, the next poll of a rollout). Deploy and rollback leave their first
/// wave to the coverage check, whose reconcile books what follows.
pub fn books_wakes(function: &str) -> bool {
    matches!(
        function,
        "coverage-check" | "task-events" | "instance-events"
    )
}

/// The functions whose role may read the rollout alarms (template.yaml's AlarmReadPolicy):
/// deploy checks `rollout.alarms`; it, rollback and the coverage check run the full
/// reconciles that watch them. Event reconciles never advance a rollout.
pub fn reads_alarms(function: &str) -> bool {
    matches!(function, "deploy" | "rollback" | "coverage-check")
}

/// The functions whose role may heartbeat and complete lifecycle actions (template.yaml's
/// LifecycleActionsPolicy): they alone hold terminations. Deploy, rollback and status run
/// without an Auto Scaling client, so their reconciles leave holds to these.
pub fn holds_terminations(function: &str) -> bool {
    matches!(
        function,
        "lifecycle-hook" | "coverage-check" | "task-events" | "instance-events"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_comes_from_the_environment() {
        let env = |name: &str| match name {
            "TABLE_NAME" => Some("ecs-daemons".to_string()),
            "MANAGED_CLUSTERS" => {
                Some(" prod, arn:aws:ecs:us-east-1:1:cluster/staging ,".to_string())
            }
            _ => None,
        };
        let (table, config) = engine_config_from(env).unwrap();
        assert_eq!(table, "ecs-daemons");
        assert_eq!(config.clusters, vec!["prod", "staging"]);
        assert_eq!(config.started_by, "ecs-daemons");
        let missing = engine_config_from(|_| None).unwrap_err().to_string();
        assert!(missing.contains("TABLE_NAME"), "{missing}");
        let no_clusters = engine_config_from(|n| (n == "TABLE_NAME").then(|| "t".to_string()))
            .unwrap_err()
            .to_string();
        assert!(no_clusters.contains("MANAGED_CLUSTERS"), "{no_clusters}");
    }

    #[test]
    fn rates_are_read_as_eventbridge_writes_them() {
        assert_eq!(rate_seconds("1 minute"), Some(60));
        assert_eq!(rate_seconds("5 minutes"), Some(300));
        assert_eq!(rate_seconds("1 hour"), Some(3600));
        for bad in [
            "1 minutes",
            "5 minute",
            "0 minutes",
            "minute",
            "x minutes",
            "",
        ] {
            assert_eq!(rate_seconds(bad), None, "{bad}");
        }
    }

    fn with_groups(
        extra: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<String> {
        move |name: &str| match name {
            "TABLE_NAME" => Some("t".to_string()),
            "MANAGED_CLUSTERS" => Some("prod".to_string()),
            "AUTO_SCALING_GROUP_NAMES" => Some("asg".to_string()),
            other => extra
                .iter()
                .find(|(key, _)| *key == other)
                .map(|(_, value)| value.to_string()),
        }
    }

    #[test]
    fn a_raised_services_quota_is_read_and_nonsense_refused() {
        let (_, config) = engine_config_from(with_groups(&[])).unwrap();
        assert_eq!(
            config.services_per_cluster,
            crate::ecs::SERVICES_PER_CLUSTER
        );
        let (_, raised) =
            engine_config_from(with_groups(&[("SERVICES_PER_CLUSTER_QUOTA", "8000")])).unwrap();
        assert_eq!(raised.services_per_cluster, 8000);
        for bad in ["lots", "1", "-5"] {
            let lookup = move |name: &str| match name {
                "SERVICES_PER_CLUSTER_QUOTA" => Some(bad.to_string()),
                other => with_groups(&[])(other),
            };
            let error = engine_config_from(lookup).unwrap_err().to_string();
            assert!(
                error.contains("SERVICES_PER_CLUSTER_QUOTA"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn hold_settings_auto_scaling_cannot_serve_are_refused_with_the_fix() {
        // 100 x a 300 s heartbeat timeout is 30,000 s: a drain limit of 40,000 s never comes.
        let error = engine_config_from(with_groups(&[
            ("LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS", "300"),
            ("DRAIN_LIMIT_SECONDS", "40000"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("at most 30000 s") && error.contains("DrainLimitSeconds"),
            "{error}"
        );
        // A 150 s timeout with a 2-minute schedule: the hook times out between two runs.
        let error = engine_config_from(with_groups(&[
            ("LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS", "150"),
            ("COVERAGE_CHECK_RATE", "2 minutes"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("at least 240 s"), "{error}");
        // The defaults, and the longest wait Auto Scaling allows, are fine.
        assert!(engine_config_from(with_groups(&[])).is_ok());
        assert!(engine_config_from(with_groups(&[
            ("LIFECYCLE_HEARTBEAT_TIMEOUT_SECONDS", "7200"),
            ("DRAIN_LIMIT_SECONDS", "172800"),
        ]))
        .is_ok());
        // Without groups no hold is kept, and nothing is refused for them.
        let no_groups = |name: &str| match name {
            "TABLE_NAME" => Some("t".to_string()),
            "MANAGED_CLUSTERS" => Some("prod".to_string()),
            "DRAIN_LIMIT_SECONDS" => Some("172800".to_string()),
            _ => None,
        };
        assert!(engine_config_from(no_groups).is_ok());
    }

    #[test]
    fn a_started_by_override_must_be_what_ecs_accepts() {
        for bad in [
            "ecs daemons",
            "ecs-daemons!",
            "é",
            "a-very-long-marker-that-ecs-would-refuse-x",
        ] {
            let env = move |name: &str| match name {
                "TABLE_NAME" => Some("t".to_string()),
                "MANAGED_CLUSTERS" => Some("prod".to_string()),
                "STARTED_BY" => Some(bad.to_string()),
                _ => None,
            };
            let error = engine_config_from(env).unwrap_err().to_string();
            assert!(error.contains("STARTED_BY"), "{bad}: {error}");
        }
        let env = |name: &str| match name {
            "TABLE_NAME" => Some("t".to_string()),
            "MANAGED_CLUSTERS" => Some("prod".to_string()),
            "STARTED_BY" => Some("platform/ecs_daemons-2".to_string()),
            _ => None,
        };
        assert_eq!(
            engine_config_from(env).unwrap().1.started_by,
            "platform/ecs_daemons-2"
        );
    }

    #[test]
    fn the_hook_name_comes_from_the_environment_for_every_function() {
        let env = |hook: Option<&'static str>, groups: Option<&'static str>| {
            move |name: &str| match name {
                "TABLE_NAME" => Some("t".to_string()),
                "MANAGED_CLUSTERS" => Some("prod".to_string()),
                "LIFECYCLE_HOOK_NAME" => hook.map(str::to_string),
                "AUTO_SCALING_GROUP_NAMES" => groups.map(str::to_string),
                _ => None,
            }
        };
        let (_, config) = engine_config_from(env(None, None)).unwrap();
        assert_eq!(config.hook_name, crate::autoscaling::DEFAULT_HOOK_NAME);
        assert_eq!(config.terminate_hook, None, "no groups: nothing to adopt");
        let (_, config) = engine_config_from(env(Some(" drain-for-agents "), Some("a,b"))).unwrap();
        assert_eq!(config.hook_name, "drain-for-agents");
        let hook = config.terminate_hook.unwrap();
        assert_eq!(hook.name, "drain-for-agents");
        assert_eq!(hook.groups, ["a", "b"]);
    }
}
