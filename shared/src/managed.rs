//! A daemon on ECS Managed Instances capacity providers. ECS runs it as a native managed
//! daemon (CreateDaemon, UpdateDaemon): it places every copy, starts it before application
//! tasks, drains it last and rolls revisions out by draining and replacing instances.
//! ecs-daemons declares it, keeps its history in the same rollout records as on EC2, rolls it
//! back by hand, and reports it beside the EC2 copies (DESIGN.md, "Placements": native).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ecs::{DaemonDeploymentSettings, DaemonDeploymentStatus, CLIENT_TOKEN_MAX_LEN};
use crate::rollout::{Amount, RolloutConfig, RolloutState};
use crate::store::{ItemKey, Record, RecordKind};

/// ECS's default `drainPercent` (*Creating and managing daemons*: "Default: 25").
pub const ECS_DEFAULT_DRAIN_PERCENT: f64 = 25.0;

/// The declaration of a daemon's Managed Instances part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDaemon {
    pub cluster: String,
    pub daemon: String,
    /// Pinned `family:revision` of a daemon task definition.
    pub daemon_task_definition: String,
    /// Managed Instances capacity providers, by name.
    pub capacity_providers: Vec<String>,
    /// A failed copy drains and replaces its instance (ECS's `critical`, default true).
    pub critical: bool,
    pub rollout: RolloutConfig,
    /// How ECS launches its copies (`launch` without the environment, which ECS's managed
    /// daemon does not take).
    #[serde(
        default,
        skip_serializing_if = "crate::launch::LaunchOptions::is_default"
    )]
    pub launch: crate::launch::LaunchOptions,
    /// ECS's daemon, once CreateDaemon has answered.
    #[serde(default)]
    pub daemon_arn: Option<String>,
    /// The rollout whose CreateDaemon or UpdateDaemon was decided but not yet confirmed by
    /// ECS: the next deploy sends it again with the same client token, so ECS never creates
    /// two (status shows it meanwhile).
    #[serde(default)]
    pub pending_rollout: Option<String>,
    /// ECS's deployment of the last confirmed change.
    #[serde(default)]
    pub deployment_arn: Option<String>,
    /// The last revision whose deployment succeeded: where a rollback goes.
    #[serde(default)]
    pub last_good: Option<String>,
    /// The good revision before it: a rollback's target once the current one succeeded.
    #[serde(default)]
    pub previous_good: Option<String>,
    #[serde(default)]
    pub active_rollout: Option<String>,
    /// ECS's latest reports of copies that could not start (`DAEMON_TASK_START_IMPAIRED`),
    /// oldest first, at most [`IMPAIRED_STARTS_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub impaired_starts: Vec<ImpairedStart>,
    /// When the daemon was undeployed (ECS's DeleteDaemon): kept with its history, no longer
    /// covered, drifted or rolled back; a deploy starts it afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl ManagedDaemon {
    /// A declaration not yet sent to ECS (a `deploy` fills in what it declares).
    pub fn new(cluster: &str, daemon: &str, now: DateTime<Utc>) -> Self {
        Self {
            cluster: cluster.into(),
            daemon: daemon.into(),
            daemon_task_definition: String::new(),
            capacity_providers: Vec::new(),
            critical: true,
            rollout: RolloutConfig::default(),
            launch: crate::launch::LaunchOptions::default(),
            daemon_arn: None,
            pending_rollout: None,
            deployment_arn: None,
            last_good: None,
            previous_good: None,
            active_rollout: None,
            impaired_starts: Vec::new(),
            retired_at: None,
            updated_at: now,
        }
    }
}

/// How many impaired starts a daemon's record keeps (the newest).
pub const IMPAIRED_STARTS_KEPT: usize = 20;

/// A copy ECS could not start, with ECS's own reason (*Daemon events*:
/// `DAEMON_TASK_START_IMPAIRED`; `TASK_FAILED_TO_RUN` names the task, `TASK_CREATION_FAILED`
/// has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImpairedStart {
    /// EventBridge's event id: a redelivered event is recorded once.
    pub event_id: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub failure_type: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub container_instance_id: Option<String>,
    #[serde(default)]
    pub task_arn: Option<String>,
    #[serde(default)]
    pub capacity_provider: Option<String>,
    /// `family:revision` of the daemon task definition that failed.
    #[serde(default)]
    pub daemon_task_definition: Option<String>,
}

impl ImpairedStart {
    /// The report of one `DAEMON_TASK_START_IMPAIRED` event (`at`: its time, else `now`).
    pub fn of_event(
        event_id: &str,
        time: Option<DateTime<Utc>>,
        detail: &crate::events::DaemonEventDetail,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id: event_id.to_string(),
            at: detail.created_at.or(time).unwrap_or(now),
            failure_type: detail.failure_type.clone(),
            reason: detail.reason.clone(),
            container_instance_id: detail
                .container_instance_arn
                .as_deref()
                .map(|arn| crate::arn::resource_id(arn).to_string()),
            task_arn: detail.task_arn.clone(),
            capacity_provider: detail.capacity_provider_name.clone(),
            daemon_task_definition: detail
                .daemon_task_definition_arn
                .as_deref()
                .map(|arn| crate::arn::resource_id(arn).to_string()),
        }
    }

    /// Whether the report is about `record`'s daemon: by the daemon's name in the event, else
    /// by its daemon task definition's family.
    pub fn concerns(&self, daemon_name: Option<&str>, record: &ManagedDaemon) -> bool {
        match daemon_name {
            Some(name) => name == record.daemon,
            None => self
                .daemon_task_definition
                .as_deref()
                .is_some_and(|definition| {
                    family(definition) == family(&record.daemon_task_definition)
                }),
        }
    }
}

fn family(pinned: &str) -> &str {
    pinned.rsplit_once(':').map_or(pinned, |(family, _)| family)
}

/// The record with `starts` added (each once, oldest dropped past [`IMPAIRED_STARTS_KEPT`]),
/// or `None` when every one was recorded already.
pub fn record_impaired_starts(
    record: &ManagedDaemon,
    starts: &[ImpairedStart],
    now: DateTime<Utc>,
) -> Option<ManagedDaemon> {
    let mut next = record.clone();
    for start in starts {
        if !next
            .impaired_starts
            .iter()
            .any(|s| s.event_id == start.event_id)
        {
            next.impaired_starts.push(start.clone());
        }
    }
    if next.impaired_starts.len() == record.impaired_starts.len() {
        return None;
    }
    next.impaired_starts.sort_by_key(|s| s.at);
    let excess = next
        .impaired_starts
        .len()
        .saturating_sub(IMPAIRED_STARTS_KEPT);
    next.impaired_starts.drain(..excess);
    next.updated_at = now;
    Some(next)
}

/// Drift: ECS's latest deployment is not the one ecs-daemons started and rolls out (or back
/// to) another daemon task definition than the declared one, so someone updated the daemon
/// outside ecs-daemons. `in_force` is that deployment's `family:revision`. A change decided
/// and not yet confirmed (`pending_rollout`) is not drift.
pub fn drift_of(
    record: &ManagedDaemon,
    latest_deployment_arn: Option<&str>,
    in_force: Option<&str>,
) -> Option<String> {
    if latest_deployment_arn.is_none()
        || latest_deployment_arn == record.deployment_arn.as_deref()
        || record.pending_rollout.is_some()
    {
        return None;
    }
    let pinned = in_force?;
    (pinned != record.daemon_task_definition).then(|| {
        format!(
            "ECS's latest deployment rolls out {pinned}, but ecs-daemons declared {declared}: the daemon was \
             updated outside ecs-daemons; deploy {declared} to set it back, or deploy {pinned} to adopt the change",
            declared = record.daemon_task_definition
        )
    })
}

/// Drift when ECS has no daemon at all.
pub fn deleted_drift(daemon_arn: &str) -> String {
    format!(
        "ECS has no daemon {daemon_arn}: it was deleted outside ecs-daemons; deploy again to create it"
    )
}

impl ItemKey {
    pub fn managed_daemon(cluster: &str, daemon: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, daemon),
            sk: RecordKind::ManagedDaemon.prefix().into(),
        }
    }
}

impl Record for ManagedDaemon {
    const KIND: RecordKind = RecordKind::ManagedDaemon;
    fn key(&self) -> ItemKey {
        ItemKey::managed_daemon(&self.cluster, &self.daemon)
    }
    fn cluster_index(&self) -> Option<&str> {
        Some(&self.cluster)
    }
}

/// ECS's deployment settings from the daemon's rollout settings: `maxParallel` as the share of
/// instances drained at once, `minHealthySeconds` as the bake time after each step (whole
/// minutes, rounded up, so a copy is never judged sooner than asked).
pub fn deployment_settings(config: &RolloutConfig, instances: usize) -> DaemonDeploymentSettings {
    let drain_percent = match config.max_parallel {
        Amount::Percent(percent) => f64::from(percent),
        Amount::Count(_) if instances == 0 => ECS_DEFAULT_DRAIN_PERCENT,
        Amount::Count(count) => 100.0 * f64::from(count) / instances as f64,
    };
    DaemonDeploymentSettings {
        drain_percent: Some(drain_percent.clamp(1.0, 100.0)),
        bake_time_in_minutes: Some(config.min_healthy_seconds.div_ceil(60) as i32),
        // ECS watches them itself and rolls its deployment back (DaemonAlarmConfiguration).
        alarm_names: config.alarms.clone(),
    }
}

/// The settings ECS's managed daemons cannot honour, each as a warning that says what ECS
/// does instead (they still apply to the daemon's EC2 providers).
pub fn unsupported_settings(config: &RolloutConfig) -> Vec<String> {
    let defaults = RolloutConfig::default();
    let mut warnings = Vec::new();
    if config.canary.is_some() {
        warnings.push(
            "rollout.canary does not apply on Managed Instances: ECS's deployment has no canary step; \
             a small maxParallel (drainPercent) makes its first step the smallest"
                .to_string(),
        );
    }
    if config.failure_threshold != defaults.failure_threshold {
        warnings.push(
            "rollout.failureThreshold does not apply on Managed Instances: ECS's daemon circuit breaker \
             sets its own threshold"
                .to_string(),
        );
    }
    if !config.auto_rollback {
        warnings.push(
            "rollout.autoRollback false does not apply on Managed Instances: ECS rolls a deployment back \
             when its circuit breaker trips"
                .to_string(),
        );
    }
    warnings
}

/// The client token of a rollout's CreateDaemon: the rollout id, cut to ECS's 36 ASCII
/// characters. One rollout, one token: a retry of the same call never creates a second daemon.
pub fn client_token(rollout_id: &str) -> String {
    rollout_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(CLIENT_TOKEN_MAX_LEN)
        .collect()
}

/// Where a rollout stands, from ECS's deployment status. A rollback ECS ran itself is a
/// failed rollout (its breaker or an alarm tripped), as on EC2.
pub fn rollout_state(status: &DaemonDeploymentStatus) -> RolloutState {
    match status {
        DaemonDeploymentStatus::Successful => RolloutState::Succeeded,
        DaemonDeploymentStatus::RollbackSuccessful
        | DaemonDeploymentStatus::RollbackFailed
        | DaemonDeploymentStatus::Stopped => RolloutState::Failed,
        _ => RolloutState::InProgress,
    }
}

/// What ECS's deployment says of a rollout in flight: the rollout and the declaration as they
/// should be recorded now, or `None` when nothing changed. `rolled_back_to` is the revision
/// (`family:revision`) ECS's own rollback returned to, when it ran one; `instances` is how
/// many instances the daemon's providers hold.
pub fn follow_deployment(
    record: &ManagedDaemon,
    rollout: &crate::rollout::Rollout,
    deployment: &crate::ecs::DaemonDeployment,
    rolled_back_to: Option<&str>,
    instances: u32,
    now: DateTime<Utc>,
) -> Option<(ManagedDaemon, crate::rollout::Rollout)> {
    let mut next_rollout = rollout.clone();
    let breaker = deployment.circuit_breaker.clone().unwrap_or_default();
    next_rollout.counts.total = instances;
    next_rollout.counts.done = deployment.target_running.max(0) as u32;
    next_rollout.counts.settling = deployment.target_draining.max(0) as u32;
    next_rollout.counts.failures = breaker.failure_count.max(0) as u32;
    next_rollout.counts.threshold = breaker.threshold.max(0) as u32;
    // ECS names the alarms that failed its deployment (API reference, *DaemonDeploymentAlarms*).
    if !deployment.triggered_alarm_names.is_empty() {
        next_rollout.alarm_watch.triggered_alarm_names = deployment.triggered_alarm_names.clone();
    }
    let state = rollout_state(&deployment.status);
    let mut next_record = record.clone();
    if state != RolloutState::InProgress {
        next_rollout.state = state;
        next_rollout.finished_at = Some(deployment.finished_at.unwrap_or(now));
        next_record.active_rollout = None;
        next_record.updated_at = now;
        match state {
            RolloutState::Succeeded => {
                if record.last_good.as_deref() != Some(&record.daemon_task_definition) {
                    next_record.previous_good = record.last_good.clone();
                }
                next_record.last_good = Some(record.daemon_task_definition.clone());
                next_rollout.reason = None;
            }
            _ => {
                let status = deployment.status.as_str();
                let why = deployment
                    .status_reason
                    .as_deref()
                    .unwrap_or("no reason given");
                next_rollout.reason = Some(match rolled_back_to {
                    Some(previous) => {
                        // ECS runs the revision it returned to: the declaration follows it, so
                        // deploying the failed revision again is a new rollout.
                        next_record.daemon_task_definition = previous.to_string();
                        format!("ECS's deployment ended {status} ({why}); ECS rolled back to {previous}")
                    }
                    None => format!("ECS's deployment ended {status} ({why})"),
                });
            }
        }
    }
    if next_rollout == *rollout {
        return None;
    }
    next_rollout.updated_at = now;
    Some((next_record, next_rollout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_settings_become_ecs_deployment_settings() {
        let config = RolloutConfig {
            max_parallel: Amount::Count(3),
            min_healthy_seconds: 90,
            ..RolloutConfig::default()
        };
        let settings = deployment_settings(&config, 12);
        assert_eq!(settings.drain_percent, Some(25.0));
        assert_eq!(
            settings.bake_time_in_minutes,
            Some(2),
            "90 s rounds up to 2 minutes"
        );
        assert_eq!(
            deployment_settings(&RolloutConfig::default(), 0).drain_percent,
            Some(25.0)
        );
        let zero_wait = RolloutConfig {
            min_healthy_seconds: 0,
            max_parallel: Amount::Count(500),
            ..RolloutConfig::default()
        };
        let settings = deployment_settings(&zero_wait, 10);
        assert_eq!(
            (settings.drain_percent, settings.bake_time_in_minutes),
            (Some(100.0), Some(0))
        );
    }

    #[test]
    fn client_tokens_are_the_rollout_id_within_ecs_limits() {
        assert_eq!(
            client_token("20261127T080250123Z-abc123"),
            "20261127T080250123Z-abc123"
        );
        assert_eq!(client_token(&"x".repeat(80)).len(), 36);
        assert_eq!(client_token("a b:c"), "abc");
    }

    #[test]
    fn ecs_deployment_statuses_map_to_rollout_states() {
        use DaemonDeploymentStatus as S;
        assert_eq!(rollout_state(&S::Successful), RolloutState::Succeeded);
        assert_eq!(rollout_state(&S::RollbackSuccessful), RolloutState::Failed);
        assert_eq!(rollout_state(&S::Stopped), RolloutState::Failed);
        assert_eq!(rollout_state(&S::InProgress), RolloutState::InProgress);
        assert_eq!(
            rollout_state(&S::Other("NEW".into())),
            RolloutState::InProgress
        );
    }

    fn deployment(status: DaemonDeploymentStatus) -> crate::ecs::DaemonDeployment {
        crate::ecs::DaemonDeployment {
            deployment_arn: "dep-2".into(),
            status,
            status_reason: Some("Circuit breaker triggered.".into()),
            target_revision_arn: Some("rev-2".into()),
            target_running: 3,
            target_without_daemon: 0,
            target_draining: 1,
            circuit_breaker: Some(crate::ecs::DaemonCircuitBreaker {
                status: "MONITORING".into(),
                failure_count: 0,
                threshold: 3,
            }),
            rollback: None,
            triggered_alarm_names: Vec::new(),
            created_at: None,
            finished_at: None,
        }
    }

    fn records() -> (ManagedDaemon, crate::rollout::Rollout) {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let record = ManagedDaemon {
            cluster: "prod".into(),
            daemon: "agent".into(),
            daemon_task_definition: "agent-daemon:2".into(),
            capacity_providers: vec!["mi".into()],
            critical: true,
            rollout: RolloutConfig::default(),
            launch: Default::default(),
            daemon_arn: Some("daemon".into()),
            pending_rollout: None,
            deployment_arn: Some("dep-2".into()),
            last_good: Some("agent-daemon:1".into()),
            previous_good: None,
            active_rollout: Some("r2".into()),
            impaired_starts: Vec::new(),
            retired_at: None,
            updated_at: now,
        };
        let rollout = crate::rollout::Rollout {
            cluster: "prod".into(),
            daemon: "agent".into(),
            id: "r2".into(),
            kind: crate::rollout::RolloutKind::Update,
            from_task_definition: Some("agent-daemon:1".into()),
            to_task_definition: "agent-daemon:2".into(),
            config: RolloutConfig::default(),
            state: RolloutState::InProgress,
            counts: Default::default(),
            failures: Vec::new(),
            reason: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
            managed_instances: true,
            deployment_arn: Some("dep-2".into()),
            control: Default::default(),
            alarm_watch: Default::default(),
        };
        (record, rollout)
    }

    #[test]
    fn a_deployment_in_progress_updates_the_counts_only() {
        let (record, rollout) = records();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (next_record, next_rollout) = follow_deployment(
            &record,
            &rollout,
            &deployment(DaemonDeploymentStatus::InProgress),
            None,
            8,
            now,
        )
        .unwrap();
        assert_eq!(next_record, record);
        assert_eq!(
            (next_rollout.counts.total, next_rollout.counts.done),
            (8, 3)
        );
        assert_eq!(next_rollout.state, RolloutState::InProgress);
        let unchanged = follow_deployment(
            &record,
            &next_rollout,
            &deployment(DaemonDeploymentStatus::InProgress),
            None,
            8,
            now,
        );
        assert!(unchanged.is_none(), "nothing new, nothing written");
    }

    #[test]
    fn a_successful_deployment_makes_its_revision_the_good_one() {
        let (record, rollout) = records();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (next_record, next_rollout) = follow_deployment(
            &record,
            &rollout,
            &deployment(DaemonDeploymentStatus::Successful),
            None,
            4,
            now,
        )
        .unwrap();
        assert_eq!(next_rollout.state, RolloutState::Succeeded);
        assert_eq!(next_record.last_good.as_deref(), Some("agent-daemon:2"));
        assert_eq!(next_record.previous_good.as_deref(), Some("agent-daemon:1"));
        assert_eq!(next_record.active_rollout, None);
    }

    #[test]
    fn ecs_rolling_back_fails_the_rollout_and_the_declaration_follows_ecs() {
        let (record, rollout) = records();
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let (next_record, next_rollout) = follow_deployment(
            &record,
            &rollout,
            &deployment(DaemonDeploymentStatus::RollbackSuccessful),
            Some("agent-daemon:1"),
            4,
            now,
        )
        .unwrap();
        assert_eq!(next_rollout.state, RolloutState::Failed);
        let reason = next_rollout.reason.unwrap();
        assert!(
            reason.contains("ROLLBACK_SUCCESSFUL") && reason.contains("agent-daemon:1"),
            "{reason}"
        );
        assert_eq!(next_record.daemon_task_definition, "agent-daemon:1");
        assert_eq!(next_record.last_good.as_deref(), Some("agent-daemon:1"));
    }

    #[test]
    fn settings_ecs_cannot_honour_are_named() {
        let config = RolloutConfig {
            canary: Some(crate::rollout::Canary::automatic(1)),
            auto_rollback: false,
            ..RolloutConfig::default()
        };
        let warnings = unsupported_settings(&config);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("canary") && warnings[1].contains("autoRollback"));
        assert!(unsupported_settings(&RolloutConfig::default()).is_empty());
    }
}
