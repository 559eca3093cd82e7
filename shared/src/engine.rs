//! The engine: the only code that mixes I/O and planning. Observe (`Ecs`,
//! `Store`), plan (pure), act, record. Every action is idempotent and guarded
//! by conditional writes, so concurrent or repeated invocations converge
//! instead of doubling work.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::arn::{cluster_name, resource_id};
use crate::ecs::{
    Ecs, EcsError, InstanceAttribute, StartTaskRequest, TaskFilter, START_TASK_MAX_INSTANCES,
};
use crate::events::{
    parse_ecs_event, parse_instance_event, parse_task_event, AnyEcsEvent, EventError,
    TaskStateChange,
};
use crate::model::{ContainerInstance, HealthStatus, InstanceStatus, Task, TaskStatus};
use crate::plan::{
    plan, Action, DaemonCoverage, DaemonView, Observation, Plan, Scope, READY_ATTRIBUTE,
};
use crate::rollout::Rollout;
use crate::rollout::{RolloutState, RolloutStep, SurgeFallback};
use crate::slot::{Slot, SlotState};
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{EventSeen, Expected, ItemKey, PreparedPut, Store, StoreError, Versioned};

/// `startedBy` of every daemon task (ECS allows 36 characters).
pub const STARTED_BY: &str = "ecs-daemons";
/// Tag naming the daemon on each of its tasks.
pub const DAEMON_TAG: &str = "ecs-daemons:daemon";
/// Tag naming the rollout a copy was started for (absent outside rollouts).
pub const ROLLOUT_TAG: &str = "ecs-daemons:rollout";

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
pub const EVENT_MARKER_SECONDS: i64 = 60;

/// ECS calls of one drain-last read of an instance: ListTasks desired RUNNING, ListTasks
/// desired STOPPED, one DescribeTasks.
pub const DRAIN_READ_CALLS: usize = 3;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub started_by: String,
    /// How long an event id is remembered. Short on purpose: a marker is written before the
    /// event's work, so an invocation that dies mid-way leaves one behind; it must be gone by
    /// the time SQS delivers the message again (visibility timeout 180 s, template.yaml), or
    /// the retry would be skipped as a duplicate. Twice the event functions' 30 s timeout.
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            started_by: STARTED_BY.into(),
            event_ttl: Duration::seconds(EVENT_MARKER_SECONDS),
            clusters: Vec::new(),
            holds: crate::holds::HoldSettings::default(),
            terminate_hook: None,
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
    pub start_failures: Vec<FailedStart>,
    pub stopped: Vec<StoppedCopy>,
    pub ready_set: Vec<String>,
    pub ready_cleared: Vec<ClearedReady>,
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
    /// Writes lost to another invocation that got there first (harmless).
    pub conflicts: usize,
    /// Actions that failed; the next event or coverage check retries them.
    pub errors: Vec<String>,
}

impl Outcome {
    fn skipped(cluster: &str, instance: Option<&str>, why: impl Into<String>) -> Self {
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
    fn of(rollout: &Rollout) -> Self {
        Self {
            daemon: rollout.daemon.clone(),
            id: rollout.id.clone(),
            state: rollout.state,
            reason: rollout.reason.clone(),
        }
    }
}

/// A slot won for a start, waiting for its StartTask batch.
struct Claimed {
    instance_arn: String,
    slot: Slot,
    expected: Expected,
    surge: Option<SurgeFallback>,
}

/// Which ECS events a function takes (its rule's detail-type), or either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Instance,
    Task,
    Any,
}

/// Up to this many instances, a batch reads their slots with one GetItem each; beyond, with
/// one query per daemon.
const SLOT_GETS_UP_TO: usize = 20;

/// What one event asks for, decided from the event alone.
enum EventWork {
    Skip(Outcome),
    Reconcile {
        cluster: String,
        instance_arn: String,
        hint: Option<Task>,
        only_if_draining: bool,
    },
}

/// One instance that the events of a batch ask to reconcile.
#[derive(Debug, Default)]
struct InstanceWork {
    instance_arn: String,
    /// What the events said of daemon tasks on the instance: the newest word per task.
    hints: Vec<Task>,
    /// Only application tasks stopped here: reconcile only if the instance drains.
    only_if_draining: bool,
    positions: Vec<usize>,
    event_ids: Vec<String>,
}

impl InstanceWork {
    fn add(
        &mut self,
        position: usize,
        event_id: String,
        hint: Option<Task>,
        only_if_draining: bool,
    ) {
        self.positions.push(position);
        self.event_ids.push(event_id);
        self.only_if_draining &= only_if_draining;
        let Some(hint) = hint else { return };
        // Duplicates and reorderings within one batch: the higher version wins, and at the same
        // version the final word (STOPPED).
        let newer = |old: &Task| {
            (hint.version, hint.last_status.is_terminal())
                > (old.version, old.last_status.is_terminal())
        };
        match self.hints.iter_mut().find(|t| t.arn == hint.arn) {
            Some(old) if newer(old) => *old = hint,
            Some(_) => {}
            None => self.hints.push(hint),
        }
    }
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

/// The reads one instance needs, decided from its slots and what the events said.
#[derive(Debug, Default, PartialEq)]
struct TaskReads {
    /// Tasks as their slots recorded them (no call needed).
    from_slots: Vec<Task>,
    /// Event words that cannot mislead: a STOPPED, or news of the very task a slot tracks.
    trusted: Vec<Task>,
    to_describe: Vec<String>,
    /// A claim without a task: look for a start that happened but was never recorded.
    claim_check: bool,
}

/// Trust an event only where it cannot mislead: STOPPED is final, and a newer state of the
/// very task a slot tracks is news. Anything else (an old task's late event, a task no slot
/// knows) is described instead of believed.
fn tasks_to_read(
    instance: &ContainerInstance,
    slots: &[&Versioned<Slot>],
    hints: &[Task],
    started_by: &str,
) -> TaskReads {
    let mut reads = TaskReads::default();
    for task in hints {
        let tracked = slots.iter().any(|s| {
            (s.record.task_arn.as_deref() == Some(task.arn.as_str())
                && s.record.task_version <= task.version)
                || s.record
                    .rollout
                    .as_ref()
                    .and_then(|r| r.new_task_arn.as_deref())
                    == Some(task.arn.as_str())
        });
        if task.last_status.is_terminal() || tracked {
            reads.trusted.push(task.clone());
        } else {
            reads.to_describe.push(task.arn.clone());
        }
    }
    let trusted: BTreeSet<&str> = reads.trusted.iter().map(|t| t.arn.as_str()).collect();
    let others = slots.iter().filter(|s| {
        slot_task_arns(&s.record)
            .iter()
            .any(|arn| !trusted.contains(arn.as_str()))
    });
    let surging = slots.iter().any(|s| {
        s.record
            .rollout
            .as_ref()
            .is_some_and(|r| r.new_task_arn.is_some())
    });
    let only_stops =
        !reads.trusted.is_empty() && reads.trusted.iter().all(|t| t.last_status.is_terminal());
    if !surging && only_stops {
        // A STOPPED event is final: the other daemons are as their slots say (the instance
        // cannot become ready meanwhile), which saves a DescribeTasks.
        reads
            .from_slots
            .extend(others.filter_map(|s| task_from_slot(&s.record, &instance.arn, started_by)));
    } else {
        reads.to_describe.extend(
            others
                .flat_map(|s| slot_task_arns(&s.record))
                .filter(|arn| !trusted.contains(arn.as_str())),
        );
    }
    reads.claim_check = slots
        .iter()
        .any(|s| s.record.state == SlotState::Claimed && s.record.task_arn.is_none());
    // Each task once: an event and a slot naming the same task are one read.
    let mut seen = BTreeSet::new();
    reads.to_describe.retain(|arn| seen.insert(arn.clone()));
    reads
}

pub struct Engine<E, S> {
    pub ecs: E,
    pub store: S,
    pub config: EngineConfig,
    /// Terminate lifecycle hooks held until drain-last is done (none: no hook is held).
    pub autoscaling: Option<std::sync::Arc<dyn crate::autoscaling::AutoScaling>>,
}

fn view(spec: &DaemonSpec) -> DaemonView {
    DaemonView {
        name: spec.daemon.clone(),
        task_definition: spec.task_definition.clone(),
        capacity_providers: spec.capacity_providers.clone(),
        start_order: spec.start_order,
        has_health_check: spec.has_health_check,
        restart: spec.restart.clone(),
        active_rollout: spec.active_rollout.clone(),
        last_good: spec.last_good_task_definition.clone(),
    }
}

/// One entry per task, the newest word about it (highest version; a stopped one wins a tie):
/// a task read twice (a slot and a describe, or a describe naming it twice) must never look
/// like two copies, or the planner would stop one of them as a duplicate of itself.
fn newest_per_task(tasks: Vec<Task>) -> Vec<Task> {
    let mut newest: BTreeMap<String, Task> = BTreeMap::new();
    for task in tasks {
        let rank = |t: &Task| (t.version, t.last_status == TaskStatus::Stopped);
        match newest.get(&task.arn) {
            Some(kept) if rank(kept) >= rank(&task) => {}
            _ => {
                newest.insert(task.arn.clone(), task);
            }
        }
    }
    newest.into_values().collect()
}

/// A task as its slot last recorded it (used where the event already told us what changed).
/// The active rollout a spec names, rebuilt (version 0: not stored) when the deploy that
/// switched the spec died before writing its record.
fn missing_rollouts(
    specs: &[Versioned<DaemonSpec>],
    rollouts: &[Versioned<Rollout>],
) -> Vec<Versioned<Rollout>> {
    specs
        .iter()
        .filter_map(|spec| {
            let id = spec.record.active_rollout.as_ref()?;
            if rollouts
                .iter()
                .any(|r| &r.record.id == id && r.record.daemon == spec.record.daemon)
            {
                return None;
            }
            let record = Rollout {
                cluster: spec.record.cluster.clone(),
                daemon: spec.record.daemon.clone(),
                id: id.clone(),
                kind: crate::rollout::RolloutKind::Update,
                from_task_definition: None,
                to_task_definition: spec.record.task_definition.clone(),
                config: spec.record.rollout.clone(),
                state: crate::rollout::RolloutState::InProgress,
                counts: Default::default(),
                failures: Vec::new(),
                reason: Some(
                    "rebuilt: the deploy that started it stopped before recording it".into(),
                ),
                started_at: spec.record.updated_at,
                updated_at: spec.record.updated_at,
                finished_at: None,
            };
            Some(Versioned { record, version: 0 })
        })
        .collect()
}

/// The tasks a slot tracks: its copy, and a rollout's new copy next to it.
fn slot_task_arns(slot: &Slot) -> Vec<String> {
    let new = slot.rollout.as_ref().and_then(|r| r.new_task_arn.clone());
    slot.task_arn.clone().into_iter().chain(new).collect()
}

fn task_from_slot(slot: &Slot, instance_arn: &str, started_by: &str) -> Option<Task> {
    let arn = slot.task_arn.clone()?;
    let (last_status, desired_status) = match slot.state {
        SlotState::Running => (TaskStatus::Running, TaskStatus::Running),
        SlotState::Starting | SlotState::Claimed => (TaskStatus::Pending, TaskStatus::Running),
        SlotState::Stopping => (TaskStatus::Running, TaskStatus::Stopped),
        SlotState::Stopped | SlotState::CrashLooping => return None,
    };
    Some(Task {
        arn,
        task_definition_arn: slot.task_definition.clone().unwrap_or_default(),
        container_instance_arn: Some(instance_arn.into()),
        last_status,
        desired_status,
        health: if slot.state == SlotState::Running {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        },
        group: Some(crate::plan::daemon_group(&slot.daemon)),
        started_by: Some(started_by.into()),
        stop_code: None,
        stopped_reason: None,
        version: slot.task_version,
        created_at: None,
        started_at: None,
        stopped_at: None,
        tags: BTreeMap::new(),
    })
}

fn task_from_event(detail: &TaskStateChange) -> Task {
    Task {
        arn: detail.task_arn.clone(),
        task_definition_arn: detail.task_definition_arn.clone(),
        container_instance_arn: detail.container_instance_arn.clone(),
        last_status: detail.last_status.clone(),
        desired_status: detail.desired_status.clone(),
        health: detail.health(),
        group: detail.group.clone(),
        started_by: detail.started_by.clone(),
        stop_code: detail.stop_code.clone(),
        stopped_reason: detail.stopped_reason.clone(),
        version: detail.version,
        created_at: detail.created_at,
        started_at: detail.started_at,
        stopped_at: detail.stopped_at,
        tags: BTreeMap::new(),
    }
}

impl<E: Ecs, S: Store> Engine<E, S> {
    pub fn new(ecs: E, store: S, config: EngineConfig) -> Self {
        Self {
            ecs,
            store,
            config,
            autoscaling: None,
        }
    }

    /// Holds terminate lifecycle actions through `autoscaling` (see [`crate::holds`]).
    pub fn with_autoscaling(
        mut self,
        autoscaling: std::sync::Arc<dyn crate::autoscaling::AutoScaling>,
    ) -> Self {
        self.autoscaling = Some(autoscaling);
        self
    }

    fn owns(&self, task: &Task) -> bool {
        task.started_by.as_deref() == Some(self.config.started_by.as_str())
            && task
                .group
                .as_deref()
                .is_some_and(|g| g.starts_with(crate::plan::GROUP_PREFIX))
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

    async fn specs(
        &self,
        cluster: &str,
    ) -> Result<(Vec<Versioned<DaemonSpec>>, Vec<DaemonView>), EngineError> {
        let specs = self.store.list_specs(cluster).await?;
        let views = specs.iter().map(|spec| view(&spec.record)).collect();
        Ok((specs, views))
    }

    /// Everything about a cluster, in batched calls: instances, daemon tasks, specs and slots.
    async fn observe_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Observation>, EngineError> {
        self.observe_cluster_as(cluster, now, None).await
    }

    /// The observation as it would be with `what_if` recorded (a dry run): its spec in place
    /// of the stored one (version 0: not stored), its rollout the daemon's active one. Reads only.
    pub(crate) async fn observe_cluster_as(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        what_if: Option<(DaemonSpec, Option<Rollout>)>,
    ) -> Result<Option<Observation>, EngineError> {
        self.check_cluster(cluster)?;
        let (mut specs, _) = self.specs(cluster).await?;
        let mut hypothetical_rollout = None;
        if let Some((spec, rollout)) = what_if {
            specs.retain(|s| s.record.daemon != spec.daemon);
            specs.push(Versioned {
                record: spec,
                version: 0,
            });
            hypothetical_rollout = rollout;
        }
        let daemons: Vec<DaemonView> = specs.iter().map(|spec| view(&spec.record)).collect();
        if daemons.is_empty() {
            return Ok(None);
        }
        let mut rollouts = Vec::new();
        for daemon in &daemons {
            rollouts.extend(self.store.query::<Rollout>(cluster, &daemon.name).await?);
        }
        rollouts.extend(hypothetical_rollout.map(|record| Versioned { record, version: 0 }));
        rollouts.extend(missing_rollouts(&specs, &rollouts));
        let arns = self.ecs.list_container_instances(cluster, None).await?;
        let instances = self
            .ecs
            .describe_container_instances(cluster, &arns)
            .await?;
        let mut slots = Vec::new();
        for daemon in &daemons {
            slots.extend(self.store.query::<Slot>(cluster, &daemon.name).await?);
        }
        let mut task_arns = self
            .ecs
            .list_tasks(
                cluster,
                &TaskFilter::StartedBy(self.config.started_by.clone()),
            )
            .await?;
        // Slot tasks missing from the (eventually consistent) list are described too: a stopped one tells why.
        let listed: BTreeSet<String> = task_arns.iter().cloned().collect();
        task_arns.extend(
            slots
                .iter()
                .flat_map(|s| slot_task_arns(&s.record))
                .filter(|arn| !listed.contains(arn)),
        );
        let tasks: Vec<Task> = self
            .ecs
            .describe_tasks(cluster, &task_arns)
            .await?
            .into_iter()
            .filter(|t| self.owns(t))
            .collect();
        Ok(Some(Observation {
            cluster: cluster.into(),
            now,
            scope: Scope::Full,
            rollouts,
            specs,
            daemons,
            instances,
            tasks,
            slots,
            drain_census: BTreeMap::new(),
        }))
    }

    /// Full reconcile of every daemon on every instance of a cluster.
    pub async fn reconcile_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let mut instances = Vec::new();
        let mut outcome = match self.observe_cluster(cluster, now).await? {
            Some(observation) => {
                let (observation, planned, reads) = self.plan_drains_fresh(observation).await;
                let mut outcome = self.act(&observation, planned, invocation, None).await;
                outcome.drain_reads = reads.drain_reads;
                outcome.errors.extend(reads.errors);
                instances = observation.instances;
                outcome
            }
            None => Outcome::skipped(cluster, None, "no daemon is declared for this cluster"),
        };
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
    async fn prune_coverage_times(
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

    /// Reconciles one instance now (the lifecycle hook's start of drain-last).
    pub(crate) async fn reconcile_instance_now(
        &self,
        cluster: &str,
        instance_arn: &str,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let work = InstanceWork {
            instance_arn: instance_arn.to_string(),
            ..InstanceWork::default()
        };
        let mut outcomes = self
            .reconcile_instances(cluster, std::slice::from_ref(&work), now, invocation)
            .await?;
        Ok(outcomes.pop().unwrap_or_else(|| {
            Outcome::skipped(cluster, Some(resource_id(instance_arn)), "nothing to do")
        }))
    }

    /// Coverage and rollout progress as the next reconcile would see them, changing nothing.
    pub async fn preview(&self, cluster: &str, now: DateTime<Utc>) -> Result<Plan, EngineError> {
        Ok(self
            .observe_cluster(cluster, now)
            .await?
            .map(|observation| plan(&observation))
            .unwrap_or_default())
    }

    /// Reconcile of several instances of one cluster for every daemon, with batched reads:
    /// one DescribeContainerInstances and one DescribeTasks per 100, whatever the number of
    /// events that asked for them. One outcome for the planned instances, one per skipped one.
    async fn reconcile_instances(
        &self,
        cluster: &str,
        works: &[InstanceWork],
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Vec<Outcome>, EngineError> {
        self.check_cluster(cluster)?;
        let arns: Vec<String> = works.iter().map(|w| w.instance_arn.clone()).collect();
        let described = self
            .ecs
            .describe_container_instances(cluster, &arns)
            .await?;
        let mut outcomes = Vec::new();
        // Instances drained by now let their held terminations continue.
        let (reports, errors) = self.settle_drained(cluster, &described, now).await;
        if !reports.is_empty() || !errors.is_empty() {
            let mut settled =
                Outcome::skipped(cluster, None, "terminations of drained instances continued");
            settled.terminations = reports;
            settled.errors = errors;
            outcomes.push(settled);
        }
        let mut chosen: Vec<(ContainerInstance, &InstanceWork)> = Vec::new();
        for work in works {
            let instance_id = resource_id(&work.instance_arn);
            match described.iter().find(|i| i.id() == instance_id) {
                None => outcomes.push(Outcome::skipped(
                    cluster,
                    Some(instance_id),
                    "the container instance is no longer registered",
                )),
                Some(instance)
                    if work.only_if_draining && instance.status != InstanceStatus::Draining =>
                {
                    outcomes.push(Outcome::skipped(
                        cluster,
                        Some(instance_id),
                        "an application task stopped; the instance is not draining",
                    ))
                }
                Some(instance) => chosen.push((instance.clone(), work)),
            }
        }
        if chosen.is_empty() {
            return Ok(outcomes);
        }
        let (specs, daemons) = self.specs(cluster).await?;
        if daemons.is_empty() {
            outcomes.extend(chosen.iter().map(|(instance, _)| {
                Outcome::skipped(
                    cluster,
                    Some(instance.id()),
                    "no daemon is declared for this cluster",
                )
            }));
            return Ok(outcomes);
        }
        let mut rollouts = Vec::new();
        for daemon in &daemons {
            if let Some(id) = &daemon.active_rollout {
                rollouts.extend(
                    self.store
                        .get::<Rollout>(&ItemKey::rollout(cluster, &daemon.name, id))
                        .await?,
                );
            }
        }
        rollouts.extend(missing_rollouts(&specs, &rollouts));
        let slots = self.instance_slots(cluster, &daemons, &chosen).await?;
        let tasks = self.instances_tasks(cluster, &chosen, &slots).await?;
        let instance = match chosen.as_slice() {
            [(only, _)] => Some(only.id().to_string()),
            _ => None,
        };
        let observation = Observation {
            cluster: cluster.into(),
            now,
            scope: Scope::Instances,
            rollouts,
            specs,
            daemons,
            instances: chosen.into_iter().map(|(instance, _)| instance).collect(),
            tasks,
            slots,
            drain_census: BTreeMap::new(),
        };
        let (observation, planned, reads) = self.plan_drains_fresh(observation).await;
        let mut outcome = self.act(&observation, planned, invocation, instance).await;
        outcome.drain_reads = reads.drain_reads;
        outcome.errors.extend(reads.errors);
        outcomes.push(outcome);
        Ok(outcomes)
    }

    /// Plans; where drain-last would stop daemons, reads every task on those instances fresh
    /// and plans again on that (never trust older news for a destructive step). An instance
    /// whose read fails keeps its daemons this time (reported; the next reconcile tries again).
    async fn plan_drains_fresh(
        &self,
        mut observation: Observation,
    ) -> (Observation, Plan, Outcome) {
        let mut reads = Outcome::default();
        let planned = plan(&observation);
        if planned.drain_checks.is_empty() {
            return (observation, planned, reads);
        }
        let mut fresh = Vec::new();
        for instance_arn in &planned.drain_checks {
            match self
                .ecs
                .tasks_on_instance(&observation.cluster, instance_arn)
                .await
            {
                Ok(tasks) => {
                    let (ours, others): (Vec<Task>, Vec<Task>) =
                        tasks.into_iter().partition(|t| self.owns(t));
                    let still_there = others
                        .iter()
                        .filter(|t| !t.last_status.is_terminal())
                        .count();
                    let id = resource_id(instance_arn).to_string();
                    observation.drain_census.insert(id.clone(), still_there);
                    reads.drain_reads.push(id);
                    fresh.extend(ours);
                }
                Err(error) => reads.errors.push(format!(
                    "drain-last of {} waits for a fresh read of its tasks: {error}",
                    resource_id(instance_arn)
                )),
            }
        }
        if observation.drain_census.is_empty() {
            return (observation, planned, reads);
        }
        let mut tasks = std::mem::take(&mut observation.tasks);
        tasks.extend(fresh);
        observation.tasks = newest_per_task(tasks);
        let replanned = plan(&observation);
        (observation, replanned, reads)
    }

    /// The slots of some instances: one GetItem each for a few instances, one paginated
    /// query per daemon when a batch names many.
    async fn instance_slots(
        &self,
        cluster: &str,
        daemons: &[DaemonView],
        chosen: &[(ContainerInstance, &InstanceWork)],
    ) -> Result<Vec<Versioned<Slot>>, EngineError> {
        let mut slots = Vec::new();
        if chosen.len() > SLOT_GETS_UP_TO {
            let wanted: BTreeSet<&str> = chosen.iter().map(|(i, _)| i.id()).collect();
            for daemon in daemons {
                let all: Vec<Versioned<Slot>> = self.store.query(cluster, &daemon.name).await?;
                slots.extend(
                    all.into_iter()
                        .filter(|s| wanted.contains(s.record.instance_id.as_str())),
                );
            }
            return Ok(slots);
        }
        for (instance, _) in chosen {
            for daemon in daemons {
                if let Some(slot) = self
                    .store
                    .get::<Slot>(&ItemKey::slot(cluster, &daemon.name, instance.id()))
                    .await?
                {
                    slots.push(slot);
                }
            }
        }
        Ok(slots)
    }

    /// The daemon tasks of some instances with as few calls as the situation allows: what
    /// the events said where it cannot mislead, one batched DescribeTasks for the rest.
    async fn instances_tasks(
        &self,
        cluster: &str,
        chosen: &[(ContainerInstance, &InstanceWork)],
        slots: &[Versioned<Slot>],
    ) -> Result<Vec<Task>, EngineError> {
        let mut tasks = Vec::new();
        let mut hints = Vec::new();
        let mut to_describe = Vec::new();
        let mut claim_checks = Vec::new();
        for (instance, work) in chosen {
            let own: Vec<&Versioned<Slot>> = slots
                .iter()
                .filter(|s| s.record.instance_id == instance.id())
                .collect();
            let read = tasks_to_read(instance, &own, &work.hints, &self.config.started_by);
            tasks.extend(read.from_slots);
            hints.extend(read.trusted);
            to_describe.extend(read.to_describe);
            if read.claim_check {
                claim_checks.push(instance);
            }
        }
        if !to_describe.is_empty() {
            tasks.extend(self.ecs.describe_tasks(cluster, &to_describe).await?);
        }
        // A claim without a task may be a start that happened but was never recorded: look.
        for instance in claim_checks {
            let known: BTreeSet<String> = tasks.iter().map(|t| t.arn.clone()).collect();
            let on_instance = self
                .ecs
                .list_tasks(
                    cluster,
                    &TaskFilter::ContainerInstance(instance.arn.clone()),
                )
                .await?;
            let unknown: Vec<String> = on_instance
                .into_iter()
                .filter(|arn| !known.contains(arn))
                .collect();
            if !unknown.is_empty() {
                tasks.extend(self.ecs.describe_tasks(cluster, &unknown).await?);
            }
        }
        for hint in hints {
            tasks.retain(|t| t.arn != hint.arn);
            tasks.push(hint);
        }
        tasks.retain(|t| self.owns(t));
        Ok(newest_per_task(tasks))
    }

    async fn forget_events(&self, event_ids: &[&str]) {
        for event_id in event_ids {
            if let Err(forget) = self.store.forget_event(event_id).await {
                tracing::warn!(event_id, error = %forget, "could not forget a failed event; its retry will be skipped");
            }
        }
    }

    /// What one event asks for, decided from the event alone (no call).
    fn event_work(&self, event: AnyEcsEvent) -> Result<(String, EventWork), EngineError> {
        match event {
            AnyEcsEvent::Instance(event) => {
                let cluster = cluster_name(&event.detail.cluster_arn).to_string();
                self.check_cluster(&cluster)?;
                Ok((
                    event.id,
                    EventWork::Reconcile {
                        cluster,
                        instance_arn: event.detail.container_instance_arn,
                        hint: None,
                        only_if_draining: false,
                    },
                ))
            }
            AnyEcsEvent::Task(event) => {
                let detail = &event.detail;
                let cluster = cluster_name(&detail.cluster_arn).to_string();
                self.check_cluster(&cluster)?;
                let Some(instance_arn) = detail.container_instance_arn.clone() else {
                    return Ok((
                        event.id,
                        EventWork::Skip(Outcome::skipped(
                            &cluster,
                            None,
                            "the task is not on a container instance",
                        )),
                    ));
                };
                let task = task_from_event(detail);
                let instance_id = resource_id(&instance_arn);
                let work = if self.owns(&task) {
                    let settled =
                        task.last_status == TaskStatus::Running || task.last_status.is_terminal();
                    if settled {
                        EventWork::Reconcile {
                            cluster,
                            instance_arn,
                            hint: Some(task),
                            only_if_draining: false,
                        }
                    } else {
                        EventWork::Skip(Outcome::skipped(
                            &cluster,
                            Some(instance_id),
                            format!("daemon task is {}", task.last_status),
                        ))
                    }
                } else if task.last_status.is_terminal() {
                    EventWork::Reconcile {
                        cluster,
                        instance_arn,
                        hint: None,
                        only_if_draining: true,
                    }
                } else {
                    EventWork::Skip(Outcome::skipped(
                        &cluster,
                        Some(instance_id),
                        "an application task changed; nothing to do",
                    ))
                };
                Ok((event.id, work))
            }
        }
    }

    /// A batch of ECS events (one SQS batch, or one event): each is deduplicated by id, the
    /// instances they name are reconciled together per cluster with batched reads, and an
    /// event whose work failed is forgotten and reported so that its redelivery runs again.
    pub async fn on_events(
        &self,
        raws: Vec<Value>,
        accept: EventKind,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> EventBatch {
        let mut batch = EventBatch::default();
        let mut clusters: BTreeMap<String, BTreeMap<String, InstanceWork>> = BTreeMap::new();
        for (position, raw) in raws.into_iter().enumerate() {
            let parsed = match accept {
                EventKind::Instance => {
                    parse_instance_event(raw).map(|e| AnyEcsEvent::Instance(Box::new(e)))
                }
                EventKind::Task => parse_task_event(raw).map(|e| AnyEcsEvent::Task(Box::new(e))),
                EventKind::Any => parse_ecs_event(raw),
            };
            let (event_id, work) = match parsed
                .map_err(EngineError::from)
                .and_then(|event| self.event_work(event))
            {
                Ok(work) => work,
                Err(error) => {
                    batch.failures.push(BatchFailure {
                        positions: vec![position],
                        error,
                    });
                    continue;
                }
            };
            let EventWork::Reconcile {
                cluster,
                instance_arn,
                hint,
                only_if_draining,
            } = work
            else {
                if let EventWork::Skip(outcome) = work {
                    batch.outcomes.push(outcome);
                }
                continue;
            };
            match self
                .store
                .remember_event(&event_id, now, self.config.event_ttl)
                .await
            {
                Ok(EventSeen::Duplicate) => batch.outcomes.push(Outcome::skipped(
                    &cluster,
                    None,
                    format!("event {event_id} was already handled"),
                )),
                Ok(EventSeen::FirstTime) => clusters
                    .entry(cluster)
                    .or_default()
                    .entry(resource_id(&instance_arn).to_string())
                    .or_insert_with(|| InstanceWork {
                        instance_arn,
                        only_if_draining: true,
                        ..InstanceWork::default()
                    })
                    .add(position, event_id, hint, only_if_draining),
                Err(error) => batch.failures.push(BatchFailure {
                    positions: vec![position],
                    error: error.into(),
                }),
            }
        }
        for (cluster, works) in clusters {
            let works: Vec<InstanceWork> = works.into_values().collect();
            match self
                .reconcile_instances(&cluster, &works, now, invocation)
                .await
            {
                Ok(outcomes) => batch.outcomes.extend(outcomes),
                Err(error) => {
                    let ids: Vec<&str> = works
                        .iter()
                        .flat_map(|w| w.event_ids.iter().map(String::as_str))
                        .collect();
                    self.forget_events(&ids).await;
                    batch.failures.push(BatchFailure {
                        positions: works.iter().flat_map(|w| w.positions.clone()).collect(),
                        error,
                    });
                }
            }
        }
        batch
    }

    /// One event alone (a direct invoke): its outcome, or the error that stopped it.
    pub async fn on_event(
        &self,
        raw: Value,
        accept: EventKind,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let mut batch = self.on_events(vec![raw], accept, now, invocation).await;
        if let Some(failure) = batch.failures.pop() {
            return Err(failure.error);
        }
        Ok(batch.outcomes.pop().unwrap_or_default())
    }

    /// ECS Container Instance State Change: reconcile that instance.
    pub async fn on_instance_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        self.on_event(raw, EventKind::Instance, now, invocation)
            .await
    }

    /// ECS Task State Change: daemon task bookkeeping and restarts, or drain-last when an
    /// application task leaves a draining instance.
    pub async fn on_task_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        self.on_event(raw, EventKind::Task, now, invocation).await
    }
    async fn act(
        &self,
        observation: &Observation,
        planned: Plan,
        invocation: &str,
        instance: Option<String>,
    ) -> Outcome {
        let cluster = observation.cluster.as_str();
        let mut outcome = Outcome {
            cluster: cluster.into(),
            instance,
            coverage: planned.coverage,
            rollouts: planned.rollouts,
            wake_at: planned.wake_at,
            ..Outcome::default()
        };
        let owned: BTreeSet<&str> = observation
            .tasks
            .iter()
            .filter(|t| self.owns(t))
            .map(|t| t.arn.as_str())
            .collect();
        let ready_attribute = |instance_arn: &String| InstanceAttribute {
            container_instance: instance_arn.clone(),
            name: READY_ATTRIBUTE.into(),
            value: Some("true".into()),
        };

        // Readiness goes first, in one batch, so no application lands while copies change.
        let (clears, actions): (Vec<Action>, Vec<Action>) = planned
            .actions
            .into_iter()
            .partition(|a| matches!(a, Action::ClearReady { .. }));
        let clear: Vec<(String, String)> = clears
            .into_iter()
            .filter_map(|a| match a {
                Action::ClearReady {
                    instance_arn,
                    reason,
                } => Some((instance_arn, reason)),
                _ => None,
            })
            .collect();
        if !clear.is_empty() {
            let attributes: Vec<InstanceAttribute> =
                clear.iter().map(|(arn, _)| ready_attribute(arn)).collect();
            match self.ecs.delete_attributes(cluster, &attributes).await {
                Ok(()) => {
                    outcome.ready_cleared = clear
                        .into_iter()
                        .map(|(arn, reason)| ClearedReady {
                            instance_id: resource_id(&arn).to_string(),
                            reason,
                        })
                        .collect()
                }
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
        let mut set = Vec::new();
        let mut starts: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        let mut rollout_writes = Vec::new();
        let mut stops_failed = false;
        for action in actions {
            match action {
                Action::ClearReady { .. } => {}
                Action::SetReady { instance_arn } => set.push(instance_arn),
                Action::RecordSlot { slot, expected } => {
                    self.write_slot(&slot, expected, &mut outcome).await;
                }
                Action::DeleteSlot { key, version } => match self.store.delete(&key, version).await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                    Err(error) => outcome.errors.push(error.to_string()),
                },
                Action::Stop {
                    task_arn,
                    instance_id,
                    daemon,
                    reason,
                } => {
                    if !owned.contains(task_arn.as_str()) {
                        outcome.errors.push(format!(
                            "refused to stop {task_arn}: not a task of ecs-daemons"
                        ));
                        continue;
                    }
                    match self.ecs.stop_task(cluster, &task_arn, &reason).await {
                        Ok(_) => outcome.stopped.push(StoppedCopy {
                            daemon,
                            instance_id,
                            task_arn,
                            reason,
                        }),
                        Err(error) => {
                            stops_failed = true;
                            outcome.errors.push(error.to_string());
                        }
                    }
                }
                Action::Start {
                    instance_arn,
                    task_definition,
                    mut claim,
                    expected,
                    surge,
                } => {
                    claim.claimed_by = Some(invocation.into());
                    if let Some(version) = self.write_slot(&claim, expected, &mut outcome).await {
                        starts.entry(task_definition).or_default().push(Claimed {
                            instance_arn,
                            slot: claim,
                            expected: Expected::Version(version),
                            surge,
                        });
                    }
                }
                rollout @ (Action::SwitchRevision { .. } | Action::RecordRollout { .. }) => {
                    rollout_writes.push(rollout)
                }
            }
        }
        if stops_failed {
            // A stop that did not go through leaves an instance with two copies: no new
            // surge until it is gone, so a rollout never has more than maxParallel in flight.
            for claims in starts.values_mut() {
                claims.retain(|c| c.surge.is_none());
            }
        }
        for (task_definition, claims) in starts {
            for batch in claims.chunks(START_TASK_MAX_INSTANCES) {
                let daemon = &batch[0].slot.daemon;
                let policy = observation
                    .daemons
                    .iter()
                    .find(|d| &d.name == daemon)
                    .map(|d| &d.restart);
                let policy = policy.cloned().unwrap_or_default();
                self.start_batch(
                    cluster,
                    &task_definition,
                    batch,
                    &policy,
                    observation.now,
                    &mut outcome,
                )
                .await;
            }
        }
        self.write_rollouts(observation, rollout_writes, &mut outcome)
            .await;
        if !set.is_empty() {
            let attributes: Vec<InstanceAttribute> = set.iter().map(ready_attribute).collect();
            match self.ecs.put_attributes(cluster, &attributes).await {
                Ok(()) => {
                    outcome.ready_set =
                        set.iter().map(|arn| resource_id(arn).to_string()).collect();
                    self.record_coverage_times(observation, &set, &mut outcome)
                        .await;
                }
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
        outcome
    }

    /// Joined instances that became ready now: their time to coverage, recorded once each
    /// (a conditional write: a second readiness of the same instance is not a join).
    async fn record_coverage_times(
        &self,
        observation: &Observation,
        ready: &[String],
        outcome: &mut Outcome,
    ) {
        for arn in ready {
            let Some(instance) = observation.instances.iter().find(|i| &i.arn == arn) else {
                continue;
            };
            let Some(time) = crate::coverage_time::measure(
                &observation.cluster,
                instance,
                &observation.daemons,
                &observation.tasks,
                observation.now,
            ) else {
                continue;
            };
            match self.store.put(&time, Expected::Absent).await {
                Ok(_) => outcome.coverage_times.push(time),
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
    }

    /// Conditional slot write; a lost race is counted, not an error.
    async fn write_slot(
        &self,
        slot: &Slot,
        expected: Expected,
        outcome: &mut Outcome,
    ) -> Option<u64> {
        match self.store.put(slot, expected).await {
            Ok(version) => Some(version),
            Err(StoreError::Conflict { .. }) => {
                outcome.conflicts += 1;
                None
            }
            Err(error) => {
                outcome.errors.push(error.to_string());
                None
            }
        }
    }

    async fn start_batch(
        &self,
        cluster: &str,
        task_definition: &str,
        batch: &[Claimed],
        policy: &RestartPolicy,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) {
        let daemon = batch[0].slot.daemon.clone();
        let mut tags = vec![(DAEMON_TAG.into(), daemon.clone())];
        // One batch is one daemon and revision, so one rollout at most.
        if let Some(rollout) = batch.iter().find_map(|c| c.slot.rollout.as_ref()) {
            tags.push((ROLLOUT_TAG.into(), rollout.rollout_id.clone()));
        }
        let request = StartTaskRequest {
            task_definition: task_definition.into(),
            container_instances: batch.iter().map(|c| c.instance_arn.clone()).collect(),
            started_by: self.config.started_by.clone(),
            group: crate::plan::daemon_group(&daemon),
            tags,
        };
        let answer = match self.ecs.start_task(cluster, &request).await {
            Ok(answer) => answer,
            Err(error) if error.is_retryable() => {
                // The start may or may not have happened (StartTask has no idempotency token):
                // the claims stay, and the next reconcile looks for the task before retrying.
                outcome.errors.push(error.to_string());
                return;
            }
            Err(error) => {
                // ECS refused the request itself: count it as a failed start on every instance.
                for claimed in batch {
                    self.record_failed_start(claimed, policy, &error.to_string(), now, outcome)
                        .await;
                }
                return;
            }
        };
        for claimed in batch {
            let instance_id = resource_id(&claimed.instance_arn);
            let started = answer.tasks.iter().find(|t| {
                t.container_instance_arn.as_deref().map(resource_id) == Some(instance_id)
            });
            if let Some(task) = started {
                let mut slot = claimed.slot.clone();
                match slot.rollout.as_mut().filter(|_| claimed.surge.is_some()) {
                    // The old copy stays the slot's task until the new one has proven itself.
                    Some(step) => step.new_task_arn = Some(task.arn.clone()),
                    None => {
                        slot.state = SlotState::Starting;
                        slot.task_arn = Some(task.arn.clone());
                        slot.task_version = task.version;
                    }
                }
                slot.updated_at = now;
                self.write_slot(&slot, claimed.expected, outcome).await;
                outcome.started.push(StartedCopy {
                    daemon: daemon.clone(),
                    instance_id: instance_id.into(),
                    task_arn: task.arn.clone(),
                });
                continue;
            }
            let reason = answer
                .failures
                .iter()
                .find(|f| f.arn.as_deref().map(resource_id) == Some(instance_id))
                .map_or_else(
                    || "StartTask placed no task on the instance".to_string(),
                    |f| format!("StartTask failed: {f}"),
                );
            self.record_failed_start(claimed, policy, &reason, now, outcome)
                .await;
        }
    }

    async fn record_failed_start(
        &self,
        claimed: &Claimed,
        policy: &RestartPolicy,
        reason: &str,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) {
        let claim = &claimed.slot;
        let expected = claimed.expected;
        outcome.start_failures.push(FailedStart {
            daemon: claim.daemon.clone(),
            instance_id: claim.instance_id.clone(),
            reason: reason.into(),
        });
        let no_room = reason.contains("RESOURCE:");
        if let (Some(fallback), Some(step)) = (claimed.surge, claim.rollout.as_ref()) {
            // A surge that did not start: the old copy keeps running; the rollout decides.
            let mut slot = claim.clone();
            let mut step = step.clone();
            step.since = now;
            if no_room && fallback == SurgeFallback::StopFirst {
                step.step = RolloutStep::GapStopping;
                step.gap = true;
            } else {
                step.step = RolloutStep::Failed;
                step.failures += 1;
                step.last_failure = Some(reason.into());
            }
            slot.rollout = Some(step);
            slot.updated_at = now;
            self.write_slot(&slot, expected, outcome).await;
            return;
        }
        let mut slot = claim.clone();
        slot.consecutive_failures += 1;
        slot.last_stop_reason = Some(reason.into());
        // A refused start (no room, no agent) is not retried at once: at least the base backoff.
        slot.retry_after = Some(now + policy.backoff(slot.consecutive_failures.max(2)));
        // No room is not a crash: the daemon starts once tasks leave, so it is never given up on.
        slot.state = if !no_room && slot.consecutive_failures >= policy.max_consecutive_failures {
            SlotState::CrashLooping
        } else {
            SlotState::Stopped
        };
        slot.updated_at = now;
        self.write_slot(&slot, expected, outcome).await;
    }

    /// Rollout bookkeeping after the instance actions: spec switches, then progress and ends
    /// of the running rollouts. All conditional.
    async fn write_rollouts(
        &self,
        observation: &Observation,
        actions: Vec<Action>,
        outcome: &mut Outcome,
    ) {
        let (switches, mut records): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::SwitchRevision { .. }));
        for switch in switches {
            let Action::SwitchRevision { ref daemon, .. } = switch else {
                continue;
            };
            // The end of the rollout this switch closes goes into the same transaction: a
            // switch that landed without its end would leave a rollout in progress that the
            // spec no longer names, and its outcome (FAILED, SUCCEEDED) would be lost.
            let ending = records
                .iter()
                .position(|a| {
                    matches!(a, Action::RecordRollout { rollout, .. }
                        if &rollout.daemon == daemon && rollout.state != RolloutState::InProgress)
                })
                .map(|index| records.remove(index));
            self.switch_revision(observation, switch, ending, outcome)
                .await;
        }
        for action in records {
            let Action::RecordRollout { rollout, expected } = action else {
                continue;
            };
            match self.store.put(rollout.as_ref(), expected).await {
                Ok(_) if rollout.state != RolloutState::InProgress => {
                    outcome.rollouts_ended.push(EndedRollout::of(&rollout))
                }
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
    }

    /// One transaction: the rollout the switch starts (if any), the spec, and the end of the
    /// rollout it closes (if any). Lost or failed, nothing is written and the next full
    /// reconcile decides again.
    async fn switch_revision(
        &self,
        observation: &Observation,
        switch: Action,
        ending: Option<Action>,
        outcome: &mut Outcome,
    ) {
        let Action::SwitchRevision {
            daemon,
            task_definition,
            active_rollout,
            last_good,
            new_rollout,
        } = switch
        else {
            return;
        };
        let Some(current) = observation.specs.iter().find(|s| s.record.daemon == daemon) else {
            return;
        };
        let mut spec = current.record.clone();
        spec.task_definition = task_definition;
        spec.active_rollout = active_rollout;
        if last_good.is_some() && last_good != spec.last_good_task_definition {
            spec.previous_good_task_definition = spec.last_good_task_definition.take();
        }
        spec.last_good_task_definition = last_good;
        spec.updated_at = observation.now;
        let ended = match ending {
            Some(Action::RecordRollout { rollout, expected }) => Some((rollout, expected)),
            _ => None,
        };
        let puts = new_rollout
            .as_deref()
            .map(|rollout| PreparedPut::of(rollout, Expected::Absent))
            .into_iter()
            .chain(std::iter::once(PreparedPut::of(&spec, current.expected())))
            .chain(
                ended
                    .as_ref()
                    .map(|(rollout, expected)| PreparedPut::of(rollout.as_ref(), *expected)),
            )
            .collect::<Result<Vec<_>, _>>();
        let written = match puts {
            Ok(puts) => self.store.put_all(&puts).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(_) => {
                if let Some(rollout) = new_rollout {
                    outcome.rollouts_started.push(rollout.id.clone());
                }
                if let Some((rollout, _)) = ended {
                    outcome.rollouts_ended.push(EndedRollout::of(&rollout));
                }
            }
            Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    const INSTANCE: &str = "arn:aws:ecs:us-east-1:1:container-instance/prod/i1";

    fn instance() -> ContainerInstance {
        ContainerInstance {
            arn: INSTANCE.into(),
            ec2_instance_id: None,
            status: InstanceStatus::Active,
            status_reason: None,
            agent_connected: true,
            capacity_provider: Some("general".into()),
            registered: Resources {
                cpu: 2048,
                memory_mib: 4096,
            },
            remaining: Resources {
                cpu: 1024,
                memory_mib: 2048,
            },
            running_tasks: 2,
            pending_tasks: 0,
            attributes: BTreeMap::new(),
            version: 3,
            registered_at: None,
        }
    }

    fn slot(daemon: &str, task: Option<&str>, state: SlotState) -> Versioned<Slot> {
        Versioned {
            record: Slot {
                cluster: "prod".into(),
                daemon: daemon.into(),
                instance_id: "i1".into(),
                state,
                task_arn: task.map(str::to_string),
                task_definition: Some(format!("{daemon}:1")),
                claimed_by: None,
                task_version: 2,
                consecutive_failures: 0,
                last_stop_reason: None,
                retry_after: None,
                rollout: None,
                updated_at: Utc::now(),
            },
            version: 1,
        }
    }

    fn event_task(arn: &str, daemon: &str, status: TaskStatus, version: i64) -> Task {
        let mut task = task_from_slot(
            &slot(daemon, Some(arn), SlotState::Running).record,
            INSTANCE,
            STARTED_BY,
        )
        .expect("a running slot has a task");
        task.last_status = status;
        task.version = version;
        task
    }

    #[test]
    fn a_stop_is_believed_and_the_other_daemons_come_from_their_slots() {
        let agent = slot("agent", Some("t-agent"), SlotState::Running);
        let logs = slot("logs", Some("t-logs"), SlotState::Running);
        let stopped = event_task("t-agent", "agent", TaskStatus::Stopped, 5);
        let reads = tasks_to_read(&instance(), &[&agent, &logs], &[stopped], STARTED_BY);
        assert_eq!(reads.trusted.len(), 1);
        assert!(reads.to_describe.is_empty(), "{reads:?}");
        assert_eq!(reads.from_slots.len(), 1);
        assert_eq!(reads.from_slots[0].arn, "t-logs");
        assert!(!reads.claim_check);
    }

    #[test]
    fn news_of_an_unknown_or_older_task_is_described_not_believed() {
        let agent = slot("agent", Some("t-agent"), SlotState::Running);
        let stranger = event_task("t-other", "agent", TaskStatus::Running, 9);
        let older = event_task("t-agent", "agent", TaskStatus::Running, 1);
        let reads = tasks_to_read(&instance(), &[&agent], &[stranger, older], STARTED_BY);
        assert!(reads.trusted.is_empty(), "{reads:?}");
        assert_eq!(
            reads.to_describe,
            vec!["t-other", "t-agent"],
            "each task once"
        );
        let newer = event_task("t-agent", "agent", TaskStatus::Running, 3);
        let reads = tasks_to_read(&instance(), &[&agent], &[newer], STARTED_BY);
        assert_eq!(reads.trusted.len(), 1);
        assert!(reads.to_describe.is_empty(), "{reads:?}");
    }

    #[test]
    fn a_task_read_twice_is_one_copy_and_the_newest_word_wins() {
        let running = event_task("t-agent", "agent", TaskStatus::Running, 2);
        let stopped = event_task("t-agent", "agent", TaskStatus::Stopped, 3);
        let other = event_task("t-logs", "logs", TaskStatus::Running, 1);
        let tasks = newest_per_task(vec![running.clone(), other.clone(), stopped, running]);
        assert_eq!(tasks.len(), 2, "{tasks:?}");
        let agent = tasks.iter().find(|t| t.arn == "t-agent").unwrap();
        assert_eq!(agent.last_status, TaskStatus::Stopped);
        assert_eq!(agent.version, 3);
    }

    #[test]
    fn a_claim_without_a_task_is_looked_for() {
        let claimed = slot("agent", None, SlotState::Claimed);
        let reads = tasks_to_read(&instance(), &[&claimed], &[], STARTED_BY);
        assert!(reads.claim_check);
    }

    #[test]
    fn within_a_batch_the_newest_word_about_a_task_wins() {
        let mut work = InstanceWork {
            instance_arn: INSTANCE.into(),
            only_if_draining: true,
            ..InstanceWork::default()
        };
        let running = event_task("t", "agent", TaskStatus::Running, 4);
        let stopped = event_task("t", "agent", TaskStatus::Stopped, 4);
        let older = event_task("t", "agent", TaskStatus::Running, 2);
        work.add(0, "e0".into(), Some(running), false);
        work.add(1, "e1".into(), Some(stopped), false);
        work.add(2, "e2".into(), Some(older), false);
        work.add(3, "e3".into(), None, true);
        assert_eq!(work.hints.len(), 1);
        assert_eq!(work.hints[0].last_status, TaskStatus::Stopped);
        assert!(
            !work.only_if_draining,
            "a daemon task event asks for a full look"
        );
        assert_eq!(work.positions, vec![0, 1, 2, 3]);
    }
}
