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
    let clusters: Vec<String> = lookup("MANAGED_CLUSTERS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        // Names or ARNs: events name clusters by ARN, invokes by name; both compare by name.
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
        config.started_by = marker;
    }
    config.holds = hold_settings_from(&lookup)?;
    if let Some(name) = lookup("LIFECYCLE_HOOK_NAME").filter(|n| !n.trim().is_empty()) {
        config.hook_name = name.trim().to_string();
    }
    config.terminate_hook = terminate_hook_from(&lookup, &config.hook_name);
    Ok((table, config))
}

/// `AUTO_SCALING_GROUP_NAMES` (comma-separated, as template.yaml joins them) and
/// the hook (`LIFECYCLE_HOOK_NAME`) whose lost events the coverage check adopts.
fn terminate_hook_from(
    lookup: &impl Fn(&str) -> Option<String>,
    hook_name: &str,
) -> Option<crate::autoscaling::TerminateHook> {
    let groups: Vec<String> = lookup("AUTO_SCALING_GROUP_NAMES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
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
    Ok(if holds_terminations(function) {
        engine.with_autoscaling(std::sync::Arc::new(
            crate::autoscaling::SdkAutoScaling::from_config(&aws),
        ))
    } else {
        engine
    })
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
