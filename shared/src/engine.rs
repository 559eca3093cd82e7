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
use crate::events::{parse_instance_event, parse_task_event, EventError, TaskStateChange};
use crate::model::{ContainerInstance, HealthStatus, InstanceStatus, Task, TaskStatus};
use crate::plan::{
    plan, Action, DaemonCoverage, DaemonView, Observation, Plan, Scope, READY_ATTRIBUTE,
};
use crate::rollout::{RolloutStep, SurgeFallback};
use crate::store::{
    DaemonSpec, EventSeen, Expected, ItemKey, RestartPolicy, Rollout, Slot, SlotState, Store,
    StoreError, Versioned,
};

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
    #[error("cluster {cluster} is not managed by this deployment (managed: {managed}); add it to the ManagedClusters parameter")]
    ClusterNotManaged { cluster: String, managed: String },
}

impl EngineError {
    /// Worth another delivery of the same event (EventBridge retries failed invocations).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Ecs(error) => error.is_retryable(),
            Self::Store(StoreError::Call { retryable, .. }) => *retryable,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub started_by: String,
    /// How long an event id is remembered (EventBridge retries for up to 24 h).
    pub event_ttl: Duration,
    /// Clusters this deployment may act on; empty means any.
    pub clusters: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            started_by: STARTED_BY.into(),
            event_ttl: Duration::hours(48),
            clusters: Vec::new(),
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

/// A slot won for a start, waiting for its StartTask batch.
struct Claimed {
    instance_arn: String,
    slot: Slot,
    expected: Expected,
    surge: Option<SurgeFallback>,
}

pub struct Engine<E, S> {
    pub ecs: E,
    pub store: S,
    pub config: EngineConfig,
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
        Self { ecs, store, config }
    }

    fn owns(&self, task: &Task) -> bool {
        task.started_by.as_deref() == Some(self.config.started_by.as_str())
            && task
                .group
                .as_deref()
                .is_some_and(|g| g.starts_with("daemon:"))
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
        self.check_cluster(cluster)?;
        let (specs, daemons) = self.specs(cluster).await?;
        if daemons.is_empty() {
            return Ok(None);
        }
        let mut rollouts = Vec::new();
        for daemon in &daemons {
            rollouts.extend(self.store.query::<Rollout>(cluster, &daemon.name).await?);
        }
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
        }))
    }

    /// Full reconcile of every daemon on every instance of a cluster.
    pub async fn reconcile_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let Some(observation) = self.observe_cluster(cluster, now).await? else {
            return Ok(Outcome::skipped(
                cluster,
                None,
                "no daemon is declared for this cluster",
            ));
        };
        let planned = plan(&observation);
        Ok(self.act(&observation, planned, invocation, None).await)
    }

    /// Coverage and rollout progress as the next reconcile would see them, changing nothing.
    pub async fn preview(&self, cluster: &str, now: DateTime<Utc>) -> Result<Plan, EngineError> {
        Ok(self
            .observe_cluster(cluster, now)
            .await?
            .map(|observation| plan(&observation))
            .unwrap_or_default())
    }

    /// Reconcile of one instance for every daemon; `hint` is what a task event said of one daemon task.
    pub async fn reconcile_instance(
        &self,
        cluster: &str,
        instance_arn: &str,
        now: DateTime<Utc>,
        invocation: &str,
        hint: Option<Task>,
        only_if_draining: bool,
    ) -> Result<Outcome, EngineError> {
        self.check_cluster(cluster)?;
        let instance_id = resource_id(instance_arn).to_string();
        let Some(instance) = self
            .ecs
            .describe_container_instances(cluster, &[instance_arn.to_string()])
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Outcome::skipped(
                cluster,
                Some(&instance_id),
                "the container instance is no longer registered",
            ));
        };
        if only_if_draining && instance.status != InstanceStatus::Draining {
            return Ok(Outcome::skipped(
                cluster,
                Some(&instance_id),
                "an application task stopped; the instance is not draining",
            ));
        }
        let (specs, daemons) = self.specs(cluster).await?;
        if daemons.is_empty() {
            return Ok(Outcome::skipped(
                cluster,
                Some(&instance_id),
                "no daemon is declared for this cluster",
            ));
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
        let mut slots = Vec::new();
        for daemon in &daemons {
            if let Some(slot) = self
                .store
                .get::<Slot>(&ItemKey::slot(cluster, &daemon.name, &instance_id))
                .await?
            {
                slots.push(slot);
            }
        }
        let tasks = self
            .instance_tasks(cluster, &instance, &slots, hint)
            .await?;
        let observation = Observation {
            cluster: cluster.into(),
            now,
            scope: Scope::Instances,
            rollouts,
            specs,
            daemons,
            instances: vec![instance],
            tasks,
            slots,
        };
        let planned = plan(&observation);
        Ok(self
            .act(&observation, planned, invocation, Some(instance_id))
            .await)
    }

    /// The daemon tasks of one instance with as few calls as the situation allows.
    async fn instance_tasks(
        &self,
        cluster: &str,
        instance: &ContainerInstance,
        slots: &[Versioned<Slot>],
        hint: Option<Task>,
    ) -> Result<Vec<Task>, EngineError> {
        // Trust an event only where it cannot mislead: STOPPED is final, and a newer state
        // of the very task a slot tracks is news. Anything else (an old task's late event,
        // a task no slot knows) is described instead of believed.
        let (hint, doubted) = match hint {
            Some(task) if task.last_status.is_terminal() => (Some(task), None),
            Some(task) => {
                let current = slots.iter().any(|s| {
                    (s.record.task_arn.as_deref() == Some(task.arn.as_str())
                        && s.record.task_version <= task.version)
                        || s.record
                            .rollout
                            .as_ref()
                            .and_then(|r| r.new_task_arn.as_deref())
                            == Some(task.arn.as_str())
                });
                if current {
                    (Some(task), None)
                } else {
                    (None, Some(task.arn))
                }
            }
            None => (None, None),
        };
        let hint_arn = hint.as_ref().map(|t| t.arn.clone());
        let others = slots.iter().filter(|s| {
            slot_task_arns(&s.record)
                .iter()
                .any(|arn| Some(arn) != hint_arn.as_ref())
        });
        let mut tasks = Vec::new();
        let mut to_describe: Vec<String> = doubted.into_iter().collect();
        let surging = slots.iter().any(|s| {
            s.record
                .rollout
                .as_ref()
                .is_some_and(|r| r.new_task_arn.is_some())
        });
        if !surging
            && hint
                .as_ref()
                .is_some_and(|task| task.last_status.is_terminal())
        {
            // A STOPPED event is final: the other daemons are as their slots say (the
            // instance cannot become ready meanwhile), which saves a DescribeTasks.
            tasks.extend(
                others.filter_map(|s| {
                    task_from_slot(&s.record, &instance.arn, &self.config.started_by)
                }),
            );
        } else {
            to_describe.extend(
                others
                    .flat_map(|s| slot_task_arns(&s.record))
                    .filter(|arn| Some(arn) != hint_arn.as_ref()),
            );
        }
        if !to_describe.is_empty() {
            tasks.extend(self.ecs.describe_tasks(cluster, &to_describe).await?);
        }
        // A claim without a task may be a start that happened but was never recorded: look.
        if slots
            .iter()
            .any(|s| s.record.state == SlotState::Claimed && s.record.task_arn.is_none())
        {
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
        if let Some(task) = hint {
            tasks.retain(|t| t.arn != task.arn);
            tasks.push(task);
        }
        tasks.retain(|t| self.owns(t));
        Ok(tasks)
    }

    /// Runs `work` once per event id; a failed run forgets the id so a retry runs again.
    async fn once(
        &self,
        event_id: &str,
        cluster: &str,
        now: DateTime<Utc>,
        work: impl std::future::Future<Output = Result<Outcome, EngineError>>,
    ) -> Result<Outcome, EngineError> {
        if self
            .store
            .remember_event(event_id, now, self.config.event_ttl)
            .await?
            == EventSeen::Duplicate
        {
            return Ok(Outcome::skipped(
                cluster,
                None,
                format!("event {event_id} was already handled"),
            ));
        }
        match work.await {
            Ok(outcome) => Ok(outcome),
            Err(error) => {
                if let Err(forget) = self.store.forget_event(event_id).await {
                    tracing::warn!(event_id, error = %forget, "could not forget a failed event; its retry will be skipped");
                }
                Err(error)
            }
        }
    }

    /// ECS Container Instance State Change: reconcile that instance.
    pub async fn on_instance_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let event = parse_instance_event(raw)?;
        let detail = &event.detail;
        let cluster = cluster_name(&detail.cluster_arn).to_string();
        self.check_cluster(&cluster)?;
        let work = self.reconcile_instance(
            &cluster,
            &detail.container_instance_arn,
            now,
            invocation,
            None,
            false,
        );
        self.once(&event.id, &cluster, now, work).await
    }

    /// ECS Task State Change: daemon task bookkeeping and restarts, or drain-last when an
    /// application task leaves a draining instance.
    pub async fn on_task_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<Outcome, EngineError> {
        let event = parse_task_event(raw)?;
        let detail = &event.detail;
        let cluster = cluster_name(&detail.cluster_arn).to_string();
        self.check_cluster(&cluster)?;
        let Some(instance_arn) = detail.container_instance_arn.clone() else {
            return Ok(Outcome::skipped(
                &cluster,
                None,
                "the task is not on a container instance",
            ));
        };
        let task = task_from_event(detail);
        let work = async {
            if self.owns(&task) {
                let settled =
                    task.last_status == TaskStatus::Running || task.last_status.is_terminal();
                if !settled {
                    return Ok(Outcome::skipped(
                        &cluster,
                        Some(resource_id(&instance_arn)),
                        format!("daemon task is {}", task.last_status),
                    ));
                }
                self.reconcile_instance(&cluster, &instance_arn, now, invocation, Some(task), false)
                    .await
            } else if task.last_status.is_terminal() {
                self.reconcile_instance(&cluster, &instance_arn, now, invocation, None, true)
                    .await
            } else {
                Ok(Outcome::skipped(
                    &cluster,
                    Some(resource_id(&instance_arn)),
                    "an application task changed; nothing to do",
                ))
            }
        };
        self.once(&event.id, &cluster, now, work).await
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
                    outcome.ready_set = set.iter().map(|arn| resource_id(arn).to_string()).collect()
                }
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
        outcome
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

    /// Rollout bookkeeping after the instance actions: new rollout records and spec switches
    /// first, then progress and ends of the running ones. All conditional.
    async fn write_rollouts(
        &self,
        observation: &Observation,
        actions: Vec<Action>,
        outcome: &mut Outcome,
    ) {
        for action in actions {
            match action {
                Action::SwitchRevision {
                    daemon,
                    task_definition,
                    active_rollout,
                    last_good,
                    new_rollout,
                } => {
                    let Some(current) =
                        observation.specs.iter().find(|s| s.record.daemon == daemon)
                    else {
                        continue;
                    };
                    if let Some(rollout) = new_rollout {
                        match self.store.put(rollout.as_ref(), Expected::Absent).await {
                            Ok(_) => outcome.rollouts_started.push(rollout.id.clone()),
                            Err(StoreError::Conflict { .. }) => {
                                outcome.conflicts += 1;
                                continue;
                            }
                            Err(error) => {
                                outcome.errors.push(error.to_string());
                                continue;
                            }
                        }
                    }
                    let mut spec = current.record.clone();
                    spec.task_definition = task_definition;
                    spec.active_rollout = active_rollout;
                    if last_good.is_some() && last_good != spec.last_good_task_definition {
                        spec.previous_good_task_definition = spec.last_good_task_definition.take();
                    }
                    spec.last_good_task_definition = last_good;
                    spec.updated_at = observation.now;
                    match self.store.put(&spec, current.expected()).await {
                        Ok(_) => {}
                        Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                        Err(error) => outcome.errors.push(error.to_string()),
                    }
                }
                Action::RecordRollout { rollout, expected } => {
                    let ended = rollout.state != crate::rollout::RolloutState::InProgress;
                    match self.store.put(rollout.as_ref(), expected).await {
                        Ok(_) if ended => outcome.rollouts_ended.push(EndedRollout {
                            daemon: rollout.daemon.clone(),
                            id: rollout.id.clone(),
                            state: rollout.state,
                            reason: rollout.reason.clone(),
                        }),
                        Ok(_) => {}
                        Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                        Err(error) => outcome.errors.push(error.to_string()),
                    }
                }
                _ => {}
            }
        }
    }
}
