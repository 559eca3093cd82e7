//! The engine: the only code that mixes I/O and planning. Observe (`Ecs`,
//! `Store`), plan (pure), act, record. Every action is idempotent and guarded
//! by conditional writes, so concurrent or repeated invocations converge
//! instead of doubling work.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::arn::{cluster_name, resource_id};
use crate::ecs::{Ecs, EcsError, InstanceAttribute, TaskFilter};
use crate::events::{
    parse_ecs_event, parse_instance_event, parse_task_or_daemon_event, AnyEcsEvent, EventError,
    TaskStateChange,
};
use crate::model::{ContainerInstance, HealthStatus, InstanceStatus, Task, TaskStatus};
use crate::placement::{CopyAnswer, CopyRequest, Placement};
use crate::plan::{
    plan, Action, DaemonCoverage, DaemonView, Observation, Plan, Scope, READY_ATTRIBUTE,
};
use crate::rollout::Rollout;
use crate::rollout::{RolloutState, RolloutStep, SurgeFallback};
use crate::slot::{Slot, SlotState};
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{EventSeen, Expected, ItemKey, PreparedPut, Store, StoreError, Versioned};

mod act;
mod batches;
mod holds;
mod instances;
mod managed;
mod observe;
mod records;
mod rollouts;
mod services;
#[cfg(test)]
mod tests;
mod wakes;

pub use holds::TerminateOutcome;
use observe::*;
pub use services::RequestedCopy;

/// `startedBy` of every daemon task (ECS allows 36 characters).
pub const STARTED_BY: &str = "ecs-daemons";

pub use crate::placement::{DAEMON_TAG, ROLLOUT_TAG};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Ecs(#[from] EcsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    AutoScaling(#[from] crate::autoscaling::AutoScalingError),
    #[error(
        "this function has no Auto Scaling client, so it cannot complete lifecycle actions (a deployment error)"
    )]
    NoAutoScaling,
    #[error("cluster {cluster} is not managed by this deployment (managed: {managed}); add its ARN to the stack's ClusterArns parameter")]
    ClusterNotManaged { cluster: String, managed: String },
}

impl EngineError {
    /// Worth another delivery of the same event (EventBridge retries failed invocations).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Ecs(error) => error.is_retryable(),
            Self::Store(StoreError::Call { retryable, .. }) => *retryable,
            Self::AutoScaling(error) => error.is_retryable(),
            _ => false,
        }
    }
}

/// See [`EngineConfig::event_ttl`]; template.yaml's queue visibility timeout must exceed it.
pub const EVENT_MARKER_SECONDS: i64 = 120;

/// ECS calls of one drain-last read of an instance: ListTasks desired RUNNING, ListTasks
/// desired STOPPED, one DescribeTasks.
pub const DRAIN_READ_CALLS: usize = 3;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub started_by: String,
    /// How long an event id is remembered. Short on purpose: a marker is written before the
    /// event's work, so an invocation that dies mid-way leaves one behind; it must be gone by
    /// the time SQS delivers the message again (visibility timeout 360 s, template.yaml), or
    /// the retry would be skipped as a duplicate. Twice the event functions' 60 s timeout.
    /// A duplicate after that is handled again, which is harmless: every decision re-reads ECS
    /// and stale task versions are ignored.
    pub event_ttl: Duration,
    /// Clusters this deployment may act on; empty means any.
    pub clusters: Vec<String>,
    /// Terminate lifecycle hooks: heartbeat interval and drain limit.
    pub holds: crate::holds::HoldSettings,
    /// The terminate hook and its groups, for the coverage check to adopt terminations whose
    /// event never arrived (none: only events start holds).
    pub terminate_hook: Option<crate::autoscaling::TerminateHook>,
    /// The name of ecs-daemons' terminate lifecycle hook. A group may have other terminate
    /// hooks (ECS managed draining's, a person's); their events are ignored, never acted on:
    /// completing another hook's action would end its wait early.
    pub hook_name: String,
    /// The task definition families this stack may start (its StartTask permission names
    /// them); empty: any. Deploy and rollback refuse others with the fix.
    pub daemon_families: Vec<String>,
    /// The roles this stack may pass to ECS tasks (its iam:PassRole names them); empty: any.
    /// A deploy whose daemon task definition names another is refused with the fix.
    pub daemon_role_arns: Vec<String>,
    /// The services-per-cluster quota deploy keeps within when it creates a daemon's DAEMON
    /// services (ECS's default unless raised: [`crate::ecs::SERVICES_PER_CLUSTER`]).
    pub services_per_cluster: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            started_by: STARTED_BY.into(),
            event_ttl: Duration::seconds(EVENT_MARKER_SECONDS),
            clusters: Vec::new(),
            holds: crate::holds::HoldSettings::default(),
            terminate_hook: None,
            hook_name: crate::autoscaling::DEFAULT_HOOK_NAME.into(),
            daemon_families: Vec::new(),
            daemon_role_arns: Vec::new(),
            services_per_cluster: crate::ecs::SERVICES_PER_CLUSTER,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedCopy {
    pub daemon: String,
    pub instance_id: String,
    pub task_arn: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedStart {
    pub daemon: String,
    pub instance_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoppedCopy {
    pub daemon: String,
    pub instance_id: String,
    pub task_arn: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearedReady {
    pub instance_id: String,
    pub reason: String,
}

/// An instance set DRAINING for a critical daemon that crash-loops there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriticalDrained {
    pub instance_id: String,
    pub daemon: String,
    pub reason: String,
}

/// What one invocation saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Why nothing was done (duplicate event, not a daemon task, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub coverage: BTreeMap<String, DaemonCoverage>,
    pub started: Vec<StartedCopy>,
    /// Copies requested from DAEMON services (their tasks start when ECS's scheduler acts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<services::RequestedCopy>,
    /// Requests taken back before their service acted on them (a revision replaced meanwhile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<services::RequestedCopy>,
    /// DAEMON-service copies ECS stopped on a DRAINING instance before its other tasks left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped_early: Vec<crate::plan::EarlyStop>,
    pub start_failures: Vec<FailedStart>,
    pub stopped: Vec<StoppedCopy>,
    pub ready_set: Vec<String>,
    pub ready_cleared: Vec<ClearedReady>,
    /// Instances set DRAINING because a critical daemon crash-loops there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub critical_drains: Vec<CriticalDrained>,
    /// Rollouts this invocation started (automatic rollbacks) or ended.
    pub rollouts_started: Vec<String>,
    pub rollouts_ended: Vec<EndedRollout>,
    /// Progress of each active rollout (full reconciles).
    pub rollouts: BTreeMap<String, crate::rollout::RolloutCounts>,
    /// When reconciling again moves things on (a timed condition matures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    /// Terminate lifecycle actions held, heartbeated or completed (instances scaled in).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminations: Vec<crate::holds::HoldReport>,
    /// DRAINING instances whose every task was read fresh before a drain-last decision
    /// ([`DRAIN_READ_CALLS`] ECS calls each, a DescribeTasks more past 100 tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drain_reads: Vec<String>,
    /// Instances that joined and became ready in this invocation: their time to coverage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coverage_times: Vec<crate::coverage_time::CoverageTime>,
    /// Each Managed Instances daemon the coverage check followed: the drift found (changed
    /// or deleted outside ecs-daemons), if any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub native_drift: BTreeMap<String, Option<String>>,
    /// Writes lost to another invocation that got there first (harmless).
    pub conflicts: usize,
    /// Actions that failed; the next event or coverage check retries them.
    pub errors: Vec<String>,
}

impl Outcome {
    pub(super) fn skipped(cluster: &str, instance: Option<&str>, why: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            instance: instance.map(str::to_string),
            skipped: Some(why.into()),
            ..Self::default()
        }
    }
}

/// A rollout this invocation ended (succeeded, failed, superseded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndedRollout {
    pub daemon: String,
    pub id: String,
    pub state: crate::rollout::RolloutState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EndedRollout {
    pub(super) fn of(rollout: &Rollout) -> Self {
        Self {
            daemon: rollout.daemon.clone(),
            id: rollout.id.clone(),
            state: rollout.state,
            reason: rollout.reason.clone(),
        }
    }
}

/// Which ECS events a function takes (its rule's detail-type), or either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Instance,
    Task,
    Any,
}

/// Events of a batch whose work failed together, by position in the batch.
#[derive(Debug)]
pub struct BatchFailure {
    pub positions: Vec<usize>,
    pub error: EngineError,
}

/// What one batch of events led to.
#[derive(Debug, Default)]
pub struct EventBatch {
    /// One per cluster reconcile, and one per skipped event or instance.
    pub outcomes: Vec<Outcome>,
    pub failures: Vec<BatchFailure>,
}

/// Observe, plan, act. Deploy, rollback and status reach the records through its named
/// methods (`engine/records.rs`) and ECS through [`Engine::ecs`], for reads.
pub struct Engine<E, S> {
    ecs: E,
    store: S,
    config: EngineConfig,
    /// Terminate lifecycle hooks held until drain-last is done (none: no hook is held).
    autoscaling: Option<std::sync::Arc<dyn crate::autoscaling::AutoScaling>>,
    /// CloudWatch, for rollouts gated by alarms (none: such rollouts wait for a reconcile
    /// that can read them, and a deploy naming alarms is refused).
    alarms: Option<std::sync::Arc<dyn crate::alarms::Alarms>>,
    /// The wake queue (none: timed steps wait for the schedule).
    wakes: Option<std::sync::Arc<dyn crate::wake::WakeQueue>>,
}

impl<E: Ecs, S: Store> Engine<E, S> {
    pub fn new(ecs: E, store: S, config: EngineConfig) -> Self {
        Self {
            ecs,
            store,
            config,
            autoscaling: None,
            alarms: None,
            wakes: None,
        }
    }

    /// The ECS client: deploy's validation reads, a harness's pacing figures.
    pub fn ecs(&self) -> &E {
        &self.ecs
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Changes the configuration (a harness setting hold limits or the terminate hook).
    pub fn configure(&mut self, change: impl FnOnce(&mut EngineConfig)) {
        change(&mut self.config);
    }

    /// Holds terminate lifecycle actions through `autoscaling` (see [`crate::holds`]).
    pub fn with_autoscaling(
        mut self,
        autoscaling: std::sync::Arc<dyn crate::autoscaling::AutoScaling>,
    ) -> Self {
        self.autoscaling = Some(autoscaling);
        self
    }

    /// Reads rollout alarms through `alarms` (see [`crate::alarms`]).
    pub fn with_alarms(mut self, alarms: std::sync::Arc<dyn crate::alarms::Alarms>) -> Self {
        self.alarms = Some(alarms);
        self
    }

    /// The CloudWatch client: deploy's check of `rollout.alarms`.
    pub fn alarms(&self) -> Option<&dyn crate::alarms::Alarms> {
        self.alarms.as_deref()
    }

    /// How this engine's copies exist: standalone tasks on every capacity provider, the
    /// placement the planner's per-instance actions are carried out through.
    pub(super) fn placement(&self) -> crate::placement::StandaloneTasks<'_, E> {
        crate::placement::StandaloneTasks {
            ecs: &self.ecs,
            started_by: &self.config.started_by,
        }
    }

    /// A copy of ecs-daemons: a standalone one it started, or a task of one of its daemons'
    /// DAEMON services (only ever stopped through the slot attribute, never by StopTask).
    pub(super) fn owns(&self, task: &Task) -> bool {
        self.placement().is_copy(task)
            || task
                .group
                .as_deref()
                .and_then(crate::placement::services::daemon_of_group)
                .is_some()
    }

    /// Refuses clusters outside the configured list, whatever an event or invoke says.
    pub fn check_cluster(&self, cluster: &str) -> Result<(), EngineError> {
        if self.config.clusters.is_empty() || self.config.clusters.iter().any(|c| c == cluster) {
            return Ok(());
        }
        Err(EngineError::ClusterNotManaged {
            cluster: cluster.into(),
            managed: self.config.clusters.join(", "),
        })
    }

    /// Full reconcile of every daemon on every instance of a cluster.
    pub async fn reconcile_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let observation = self.observe_cluster(cluster, now).await?;
        let (observation, planned, reads) = self.plan_drains_fresh(observation).await;
        let mut outcome = self.act(&observation, planned, invocation, None).await;
        outcome.drain_reads = reads.drain_reads;
        outcome.errors.extend(reads.errors);
        let errors = self.retire_services(&observation).await;
        outcome.errors.extend(errors);
        let instances = observation.instances;
        let (reports, errors) = self.adopt_terminations(cluster, &instances, now).await;
        outcome.terminations.extend(reports);
        outcome.errors.extend(errors);
        let (reports, errors) = self.keep_holds(cluster, now).await;
        outcome.terminations.extend(reports);
        outcome.errors.extend(errors);
        if let Err(error) = self.prune_coverage_times(cluster, now).await {
            outcome.errors.push(error.to_string());
        }
        Ok(outcome)
    }

    /// Times to coverage older than status's window are deleted (version-checked).
    pub(super) async fn prune_coverage_times(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let records: Vec<Versioned<crate::coverage_time::CoverageTime>> =
            self.store.query(cluster, ItemKey::COVERAGE_TIMES).await?;
        let window = Duration::hours(crate::coverage_time::WINDOW_HOURS);
        for old in records.iter().filter(|r| now - r.record.ready_at > window) {
            let key = crate::store::Record::key(&old.record);
            match self.store.delete(&key, old.version).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Coverage and rollout progress as the next reconcile would see them, changing nothing.
    pub async fn preview(&self, cluster: &str, now: DateTime<Utc>) -> Result<Plan, EngineError> {
        Ok(plan(&self.observe_cluster(cluster, now).await?))
    }
}
