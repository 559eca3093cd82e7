//! A declared daemon and how its copies restart: the records a deploy writes and the planner
//! reads. Pure data and rules; how they are stored is `store`'s business.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::rollout::RolloutConfig;

/// A declared daemon: what runs, where, in which order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSpec {
    pub cluster: String,
    pub daemon: String,
    /// Pinned `family:revision`.
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    /// Lower starts first and stops last.
    #[serde(default)]
    pub start_order: i32,
    /// Facts of the pinned task definition (revisions are immutable, so they are kept
    /// here instead of being described on every event).
    #[serde(default)]
    pub has_health_check: bool,
    /// Whether each revision the daemon may run again (declared, last good, previous good)
    /// has a health check: a copy of a revision without one is up once RUNNING, whatever
    /// revision is declared (ECS reports UNKNOWN health for it for ever).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub revision_health_checks: std::collections::BTreeMap<String, bool>,
    /// The declared revision's health-check grace (`TaskDefinition::health_check_grace_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_seconds: Option<u32>,
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub memory_mib: Option<i64>,
    /// The last revision whose rollout succeeded (rollback target).
    #[serde(default)]
    pub last_good_task_definition: Option<String>,
    /// The good revision before that one: where `rollback` goes once the current revision
    /// has itself succeeded.
    #[serde(default)]
    pub previous_good_task_definition: Option<String>,
    /// The rollout in flight, if any.
    #[serde(default)]
    pub active_rollout: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How revisions of this daemon roll out (the latest deploy's choice).
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// The capacity providers where the daemon runs as DAEMON services, and their
    /// revisions; the other EC2 providers run standalone copies.
    #[serde(default)]
    pub services: Option<crate::placement::services::ServicePlacement>,
    /// Which instances of its providers the daemon targets, as written (validated at deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_filter: Option<String>,
    /// A critical daemon (`critical: true` on EC2 providers): an instance where it
    /// crash-loops is set DRAINING, at most this many (or this share) of its instances at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_drains: Option<crate::rollout::Amount>,
    /// When the daemon was undeployed: kept with its rollout history for `status`, no
    /// longer planned; the full reconcile stops what is left of it. A deploy starts it afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<DateTime<Utc>>,
    /// When a reconcile found nothing left of the undeployed daemon (no slot, no copy, no
    /// DAEMON service): later reconciles no longer read its partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_up_at: Option<DateTime<Utc>>,
    /// How the copies are launched (tags, ECS Exec, environment per provider).
    #[serde(
        default,
        skip_serializing_if = "crate::launch::LaunchOptions::is_default"
    )]
    pub launch: crate::launch::LaunchOptions,
    pub updated_at: DateTime<Utc>,
}

impl DaemonSpec {
    /// Notes whether `revision` has a health check, keeping only the revisions the daemon
    /// may run again (the declared one, the good ones, and this one).
    pub fn note_health_check(&mut self, revision: &str, checked: bool) {
        self.revision_health_checks
            .insert(revision.to_string(), checked);
        let kept = [
            Some(self.task_definition.as_str()),
            self.last_good_task_definition.as_deref(),
            self.previous_good_task_definition.as_deref(),
            Some(revision),
        ];
        self.revision_health_checks
            .retain(|known, _| kept.contains(&Some(known.as_str())));
    }

    /// Whether `revision` has a health check, as noted (the declared revision's flag when
    /// it was never noted: a record written before the facts were kept per revision).
    pub fn health_check_of(&self, revision: &str) -> bool {
        self.revision_health_checks
            .get(revision)
            .copied()
            .unwrap_or(self.has_health_check)
    }
}

/// How a daemon that stops unexpectedly is restarted on its instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RestartPolicy {
    /// After this many failures in a row the slot is crash-looping: reported, not restarted.
    pub max_consecutive_failures: u32,
    /// The second restart waits this long, every further one twice as long as the one before.
    pub base_backoff_seconds: u32,
    pub max_backoff_seconds: u32,
    /// A copy that ran (healthy) this long clears the failure count.
    pub stable_after_seconds: u32,
    /// A copy RUNNING but not HEALTHY this long after it started is replaced like a dead
    /// one; none: the task definition's health check decides (`startPeriod + retries ×
    /// (interval + timeout)`, 105 s with ECS's defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_grace_seconds: Option<u32>,
}

/// The unhealthy grace when neither the restart policy nor the task definition says.
pub const DEFAULT_UNHEALTHY_GRACE_SECONDS: u32 = 105;

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_consecutive_failures: 5,
            base_backoff_seconds: 10,
            max_backoff_seconds: 300,
            stable_after_seconds: 60,
            unhealthy_grace_seconds: None,
        }
    }
}

impl RestartPolicy {
    /// Wait before restart number `failures` (1-based): the first restart is immediate.
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::zero();
        }
        let doubled =
            u64::from(self.base_backoff_seconds).saturating_mul(1u64 << (failures - 2).min(20));
        Duration::seconds(doubled.min(u64::from(self.max_backoff_seconds)) as i64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_check_facts_are_kept_per_revision_the_daemon_may_run_again() {
        let mut spec = crate::deploy::tests::spec_for_tests();
        spec.has_health_check = true;
        spec.task_definition = "agent:3".into();
        spec.last_good_task_definition = Some("agent:1".into());
        spec.note_health_check("agent:1", false);
        spec.note_health_check("agent:3", true);
        spec.note_health_check("agent:2", true);
        assert!(
            !spec.health_check_of("agent:1"),
            "the good revision has none"
        );
        assert!(spec.health_check_of("agent:3"));
        // agent:2 was the revision noted last: kept; an older unknown one falls back.
        assert!(spec.health_check_of("agent:2"));
        spec.note_health_check("agent:3", true);
        assert_eq!(
            spec.revision_health_checks.keys().collect::<Vec<_>>(),
            vec!["agent:1", "agent:3"],
            "a revision it will not run again is forgotten"
        );
        assert!(
            spec.health_check_of("agent:9"),
            "unknown: the declared one's fact"
        );
    }
}
