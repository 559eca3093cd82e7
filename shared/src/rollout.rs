//! Rolling updates: the configuration a deploy carries, the per-instance steps
//! kept in slots, and the rollout record's vocabulary. The decisions themselves
//! are in the planner: `plan/rolling.rs` (per instance) and `plan/rollouts.rs` (per rollout).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A count of instances, or a percentage of the instances a rollout covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// The amount for `total` instances, at least 1.
    pub fn of(self, total: usize) -> usize {
        let value = match self {
            Self::Count(count) => count as usize,
            Self::Percent(percent) => (total * percent as usize).div_ceil(100),
        };
        value.max(1)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(count) => serializer.serialize_u32(*count),
            Self::Percent(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(0) => Err(D::Error::custom("must be at least 1")),
            Raw::Count(count) => Ok(Self::Count(count)),
            Raw::Text(text) => {
                let percent = text
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| D::Error::custom(format!("expected a count like 3 or a percentage like \"10%\" (1–100), got {text:?}")))?;
                Ok(Self::Percent(percent))
            }
        }
    }
}

/// What to do on an instance that has no room for the new copy next to the old one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SurgeFallback {
    /// Count the instance as failed (no gap in coverage, ever).
    #[default]
    Fail,
    /// Stop the old copy, then start the new one on that instance only: a counted gap.
    StopFirst,
}

/// How a revision is rolled out. Every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// Instances in flight at once.
    pub max_parallel: Amount,
    /// How long a new copy must stay RUNNING (and HEALTHY where checked) before the old one stops.
    pub min_healthy_seconds: u32,
    /// A first batch that must finish before the rest start (a count, or
    /// `{"instances": n, "promote": "manual"}` to wait for a `promote` invoke after it).
    pub canary: Option<Canary>,
    pub surge_fallback: SurgeFallback,
    /// Failed instances (starts refused, new copies dying before healthy) that trip the breaker.
    pub failure_threshold: Amount,
    /// Roll back to the last good revision when the breaker trips.
    pub auto_rollback: bool,
    /// A new copy not RUNNING (and HEALTHY where checked) this long after its start was
    /// asked for counts as a failed instance: its place is freed, the breaker counts it.
    pub progress_deadline_seconds: u32,
    /// CloudWatch alarms that fail the rollout (and roll it back, as the breaker does) when
    /// any is in ALARM while it runs or bakes ([`crate::alarms`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// How long after its last instance the alarms are still watched. Deploy records it:
    /// the one given, else derived from the alarms as ECS derives a deployment's bake
    /// ([`crate::alarms::derived_bake_seconds`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_seconds: Option<u32>,
}

/// Who lets a rollout go on once its canary batch is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Promote {
    /// The rollout goes on by itself.
    #[default]
    Automatic,
    /// The rollout holds after the canary batch until a `promote` invoke.
    Manual,
}

/// The canary batch of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    pub instances: u32,
    pub promote: Promote,
}

impl Canary {
    /// A canary batch the rollout goes on from by itself.
    pub fn automatic(instances: u32) -> Self {
        Self {
            instances,
            promote: Promote::Automatic,
        }
    }
}

impl<'de> Deserialize<'de> for Canary {
    /// A bare count (the form before manual promotion existed, still accepted) or the object.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Object {
            instances: u32,
            #[serde(default)]
            promote: Promote,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Object(Object),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Count(instances)) => Ok(Self::automatic(instances)),
            Ok(Raw::Object(Object { instances, promote })) => Ok(Self { instances, promote }),
            Err(_) => Err(D::Error::custom(
                "expected a count of instances like 1, or {\"instances\": 1, \"promote\": \"manual\"} \
                 (promote: \"automatic\" or \"manual\")",
            )),
        }
    }
}

/// [`RolloutConfig::progress_deadline_seconds`] unless set: ten minutes, as Kubernetes'
/// `progressDeadlineSeconds` defaults to.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: u32 = 600;

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            max_parallel: Amount::Percent(25),
            min_healthy_seconds: 30,
            canary: None,
            surge_fallback: SurgeFallback::Fail,
            failure_threshold: Amount::Percent(10),
            auto_rollback: true,
            progress_deadline_seconds: DEFAULT_PROGRESS_DEADLINE_SECONDS,
            alarms: Vec::new(),
            bake_seconds: None,
        }
    }
}

impl RolloutConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_healthy_seconds > 3600 {
            return Err(format!(
                "`rollout.minHealthySeconds` must be at most 3600, got {}",
                self.min_healthy_seconds
            ));
        }
        if self.canary.is_some_and(|canary| canary.instances == 0) {
            return Err("`rollout.canary` must be at least 1 instance when set".into());
        }
        if !(30..=86_400).contains(&self.progress_deadline_seconds) {
            return Err(format!(
                "`rollout.progressDeadlineSeconds` must be between 30 and 86400, got {}",
                self.progress_deadline_seconds
            ));
        }
        crate::alarms::check_names(&self.alarms)?;
        match self.bake_seconds {
            Some(_) if self.alarms.is_empty() => Err(
                "`rollout.bakeSeconds` watches `rollout.alarms`: name the alarms, or leave bakeSeconds out"
                    .into(),
            ),
            Some(bake) if bake > crate::alarms::MAX_BAKE_SECONDS => Err(format!(
                "`rollout.bakeSeconds` must be at most {}, got {bake}",
                crate::alarms::MAX_BAKE_SECONDS
            )),
            _ => Ok(()),
        }
    }

    /// The bake this rollout keeps watching its alarms for after its last instance (none
    /// without alarms).
    pub fn bake(&self) -> Option<chrono::Duration> {
        (!self.alarms.is_empty()).then(|| {
            chrono::Duration::seconds(i64::from(
                self.bake_seconds
                    .unwrap_or(crate::alarms::DEFAULT_BAKE_SECONDS),
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutKind {
    /// The first deploy of a daemon.
    Initial,
    Update,
    /// Asked for with the `rollback` invoke.
    Rollback,
    /// Started by the circuit breaker.
    AutoRollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutState {
    InProgress,
    Succeeded,
    /// The breaker tripped.
    Failed,
    /// A later deploy or rollback took over.
    Superseded,
}

/// Where one instance is in one rollout (kept in its slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RolloutStep {
    /// The new copy was started next to the old one.
    Surging,
    /// The new copy is up; the old one stops after `minHealthySeconds`.
    Settling,
    /// No room for two: the old copy is being stopped first (a counted gap).
    GapStopping,
    /// On the new revision, the old copy stopped.
    Done,
    /// The new copy could not start or died before it was healthy.
    Failed,
}

impl RolloutStep {
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Surging | Self::Settling | Self::GapStopping)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRollout {
    pub rollout_id: String,
    pub step: RolloutStep,
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub new_task_arn: Option<String>,
    /// Failures of this instance in this rollout.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_failure: Option<String>,
    /// The old copy was stopped before the new one started.
    #[serde(default)]
    pub gap: bool,
}

/// Instances per step, recomputed by every full reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutCounts {
    pub total: u32,
    pub pending: u32,
    pub surging: u32,
    pub settling: u32,
    pub done: u32,
    pub failed: u32,
    /// stopFirst instances (a gap in coverage, counted).
    pub gaps: u32,
    /// Instances done (or failed) whose other copy still runs: its stop was asked for, and
    /// ECS has not carried it out yet (a DAEMON service's scheduler takes its time). They
    /// still count against maxParallel.
    pub lingering: u32,
    /// Failures so far, against the breaker's threshold.
    pub failures: u32,
    pub threshold: u32,
}

impl RolloutCounts {
    pub fn percent_done(&self) -> u32 {
        (self.done * 100).checked_div(self.total).unwrap_or(100)
    }
}

/// One instance that failed during a rollout, with ECS's own reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFailure {
    pub instance_id: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One rollout of a daemon from one revision to another, and its progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub cluster: String,
    pub daemon: String,
    /// Sorts by start time, so a query lists history in order.
    pub id: String,
    pub kind: RolloutKind,
    pub from_task_definition: Option<String>,
    pub to_task_definition: String,
    pub config: RolloutConfig,
    pub state: RolloutState,
    #[serde(default)]
    pub counts: RolloutCounts,
    /// The latest failures (at most [`Rollout::FAILURES_KEPT`]).
    #[serde(default)]
    pub failures: Vec<RolloutFailure>,
    /// Why it failed or was superseded.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// A rollout of the daemon's Managed Instances part (ECS's managed daemon), not of its
    /// copies on EC2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub managed_instances: bool,
    /// On Managed Instances: ECS's deployment that carries this rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_arn: Option<String>,
    /// What operators did to it: pause, resume, promote.
    #[serde(default, flatten)]
    pub control: RolloutControl,
    /// Its alarms' watch: the bake's start, the alarms that failed it.
    #[serde(default, skip_serializing_if = "AlarmWatch::is_quiet")]
    pub alarm_watch: AlarmWatch,
}

impl Rollout {
    /// The alarms that gate this rollout. None for a rollback: it runs while the alarms that
    /// failed its predecessor may still fire, and must not be stopped by them.
    pub fn watched_alarms(&self) -> &[String] {
        match self.kind {
            RolloutKind::Rollback | RolloutKind::AutoRollback => &[],
            RolloutKind::Initial | RolloutKind::Update => &self.config.alarms,
        }
    }
}

/// What a rollout's alarms did to it (API reference, *DeploymentAlarms*: its
/// `triggeredAlarmNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmWatch {
    /// When every instance was done and the bake began (the rollout stays IN_PROGRESS
    /// until it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baking_since: Option<DateTime<Utc>>,
    /// The alarms found in ALARM, which failed the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggered_alarm_names: Vec<String>,
}

impl AlarmWatch {
    pub fn is_quiet(&self) -> bool {
        self.baking_since.is_none() && self.triggered_alarm_names.is_empty()
    }
}

/// One operator's invoke on a rollout: who (as the invoke named them), which invoke, when, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorMark {
    /// The `by` the invoke gave (Lambda tells a function nothing of its caller's identity:
    /// CloudTrail's Invoke record, found by `invocation`, does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The Lambda request id of the invoke.
    pub invocation: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The operator's hand on a rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutControl {
    /// Set while paused: no new batch starts and no old copy is stopped until `resume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<OperatorMark>,
    /// The latest resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<OperatorMark>,
    /// With `canary.promote: manual`: the `promote` that let the rollout go on past its canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<OperatorMark>,
}

impl Rollout {
    /// Whether the rollout waits for a `promote`: its manual canary batch is done (`counts`
    /// as a reconcile tallies them) and nobody promoted it yet.
    pub fn awaits_promote(&self, counts: &RolloutCounts) -> bool {
        self.config.canary.is_some_and(|canary| {
            canary.promote == Promote::Manual
                && self.control.promoted.is_none()
                && counts.done >= canary.instances.min(counts.total)
                && counts.total > 0
        })
    }
}

impl Rollout {
    pub const FAILURES_KEPT: usize = 50;
    /// Rollout records kept per daemon.
    pub const HISTORY_KEPT: usize = 20;

    /// A rollout that starts now, from `from` (none: the first deploy) to `to`.
    #[allow(clippy::too_many_arguments)]
    pub fn started(
        cluster: &str,
        daemon: &str,
        id: String,
        kind: RolloutKind,
        from: Option<String>,
        to: String,
        config: RolloutConfig,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            daemon: daemon.into(),
            id,
            kind,
            from_task_definition: from,
            to_task_definition: to,
            config,
            state: RolloutState::InProgress,
            counts: RolloutCounts::default(),
            failures: Vec::new(),
            reason: None,
            started_at: now,
            updated_at: now,
            finished_at: None,
            managed_instances: false,
            deployment_arn: None,
            control: RolloutControl::default(),
            alarm_watch: AlarmWatch::default(),
        }
    }

    /// A sortable id: start time, then a suffix that tells two starts of one millisecond apart.
    pub fn new_id(now: DateTime<Utc>, suffix: &str) -> String {
        let tail: String = suffix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .rev()
            .take(6)
            .collect();
        format!("{}-{tail}", now.format("%Y%m%dT%H%M%S%3fZ"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_counts_or_percentages() {
        let count: Amount = serde_json::from_str("3").unwrap();
        let percent: Amount = serde_json::from_str("\"10%\"").unwrap();
        assert_eq!(
            (count.of(100), percent.of(1000), percent.of(5)),
            (3, 100, 1)
        );
        assert_eq!(serde_json::to_string(&percent).unwrap(), "\"10%\"");
        for bad in ["0", "\"0%\"", "\"150%\"", "\"ten\"", "-1"] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_canary_is_a_count_or_an_object_with_its_promote() {
        let count: RolloutConfig = serde_json::from_str(r#"{"canary": 2}"#).unwrap();
        assert_eq!(count.canary, Some(Canary::automatic(2)));
        let manual: RolloutConfig =
            serde_json::from_str(r#"{"canary": {"instances": 1, "promote": "manual"}}"#).unwrap();
        assert_eq!(
            manual.canary,
            Some(Canary {
                instances: 1,
                promote: Promote::Manual
            })
        );
        let stored = serde_json::to_string(&manual).unwrap();
        assert_eq!(
            serde_json::from_str::<RolloutConfig>(&stored).unwrap(),
            manual
        );
        for bad in [
            r#"{"canary": {"instances": 1, "promote": "later"}}"#,
            r#"{"canary": {"promote": "manual"}}"#,
            r#"{"canary": "one"}"#,
        ] {
            let error = serde_json::from_str::<RolloutConfig>(bad).unwrap_err();
            assert!(error.to_string().contains("promote"), "{bad}: {error}");
        }
        let zero: RolloutConfig = serde_json::from_str(r#"{"canary": 0}"#).unwrap();
        assert!(zero.validate().is_err());
    }

    #[test]
    fn rollout_config_defaults_and_refuses_unknown_fields() {
        let config: RolloutConfig = serde_json::from_str(r#"{"maxParallel": 3}"#).unwrap();
        assert_eq!(config.max_parallel, Amount::Count(3));
        assert_eq!(config.min_healthy_seconds, 30);
        assert!(config.auto_rollback);
        let error = serde_json::from_str::<RolloutConfig>(r#"{"maxParalel": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("maxParalel"), "{error}");
    }
}
