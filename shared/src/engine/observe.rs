//! What the engine reads before it plans: specs, rollouts, slots, instances and tasks of a
//! cluster (or as they would be, for a dry run), and the fresh reads drain-last needs.

use super::*;
use crate::alarms::AlarmReading;
use crate::placement::services::{service_name, Letter};

pub(super) fn view(spec: &DaemonSpec) -> DaemonView {
    DaemonView {
        name: spec.daemon.clone(),
        launch: spec.launch.clone(),
        task_definition: spec.task_definition.clone(),
        capacity_providers: spec.capacity_providers.clone(),
        start_order: spec.start_order,
        has_health_check: spec.has_health_check,
        revision_health_checks: spec.revision_health_checks.clone(),
        unhealthy_grace: Duration::seconds(i64::from(
            spec.restart
                .unhealthy_grace_seconds
                .or(spec.health_check_grace_seconds)
                .unwrap_or(crate::spec::DEFAULT_UNHEALTHY_GRACE_SECONDS),
        )),
        restart: spec.restart.clone(),
        active_rollout: spec.active_rollout.clone(),
        last_good: spec.last_good_task_definition.clone(),
        services: spec.services.clone(),
        // Validated at deploy; a record edited by hand into something unparsable targets by
        // provider alone (never stopping every copy for a typo).
        instance_filter: spec
            .instance_filter
            .as_deref()
            .and_then(|text| crate::instance_filter::InstanceFilter::parse(text).ok()),
        critical_drains: spec.critical_drains,
    }
}

/// One entry per task, the newest word about it (highest version; a stopped one wins a tie):
/// a task read twice (a slot and a describe, or a describe naming it twice) must never look
/// like two copies, or the planner would stop one of them as a duplicate of itself.
pub(super) fn newest_per_task(tasks: Vec<Task>) -> Vec<Task> {
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
pub(super) fn missing_rollouts(
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
                managed_instances: false,
                deployment_arn: None,
                control: Default::default(),
                alarm_watch: Default::default(),
            };
            Some(Versioned { record, version: 0 })
        })
        .collect()
}

/// `now` moved on by the seconds the reads took on the client's clock (unchanged without
/// one, or if it went back).
pub(super) fn described_from(
    now: DateTime<Utc>,
    reads_began: Option<f64>,
    describes_begin: Option<f64>,
) -> DateTime<Utc> {
    match (reads_began, describes_begin) {
        (Some(began), Some(begin)) if begin > began => {
            now + Duration::milliseconds(((begin - began) * 1000.0).round() as i64)
        }
        _ => now,
    }
}

/// The tasks a slot tracks: its copy, and a rollout's new copy next to it.
pub(super) fn slot_task_arns(slot: &Slot) -> Vec<String> {
    let new = slot.rollout.as_ref().and_then(|r| r.new_task_arn.clone());
    slot.task_arn.clone().into_iter().chain(new).collect()
}

/// `group`: the copy's task group where a DAEMON service runs it (its own otherwise).
pub(super) fn task_from_slot(
    slot: &Slot,
    instance_arn: &str,
    started_by: &str,
    group: Option<String>,
) -> Option<Task> {
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
        group: Some(group.unwrap_or_else(|| crate::plan::daemon_group(&slot.daemon))),
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

impl<E: Ecs, S: Store> Engine<E, S> {
    /// The daemons declared in a cluster (the undeployed ones left out) and their views.
    pub(super) async fn specs(
        &self,
        cluster: &str,
    ) -> Result<(Vec<Versioned<DaemonSpec>>, Vec<DaemonView>), EngineError> {
        let (specs, _retired) = self.specs_and_retired(cluster).await?;
        let views = specs.iter().map(|spec| view(&spec.record)).collect();
        Ok((specs, views))
    }

    /// The declared daemons of a cluster, and apart the undeployed ones.
    pub(super) async fn specs_and_retired(
        &self,
        cluster: &str,
    ) -> Result<(Vec<Versioned<DaemonSpec>>, Vec<Versioned<DaemonSpec>>), EngineError> {
        let stored = self.store.list_in_cluster::<DaemonSpec>(cluster).await?;
        Ok(stored
            .into_iter()
            .partition(|spec| spec.record.retired_at.is_none()))
    }

    /// Everything about a cluster, in batched calls: instances, daemon tasks, specs and slots.
    pub(super) async fn observe_cluster(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
    ) -> Result<Observation, EngineError> {
        self.observe_cluster_as(cluster, now, None).await
    }

    /// The observation as it would be with `what_if` recorded (a dry run): its spec in place
    /// of the stored one (version 0: not stored), its rollout the daemon's active one. Reads only.
    pub(crate) async fn observe_cluster_as(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
        what_if: Option<(DaemonSpec, Option<Rollout>)>,
    ) -> Result<Observation, EngineError> {
        self.check_cluster(cluster)?;
        let (mut specs, mut retired) = self.specs_and_retired(cluster).await?;
        let mut hypothetical_rollout = None;
        if let Some((spec, rollout)) = what_if {
            specs.retain(|s| s.record.daemon != spec.daemon);
            retired.retain(|s| s.record.daemon != spec.daemon);
            specs.push(Versioned {
                record: spec,
                version: 0,
            });
            hypothetical_rollout = rollout;
        }
        let daemons: Vec<DaemonView> = specs.iter().map(|spec| view(&spec.record)).collect();
        // With no daemon declared the cluster is still read: copies of an undeployed or
        // unknown daemon are stopped, and every instance is ready (nothing to wait for).
        let mut rollouts = Vec::new();
        for daemon in &daemons {
            // A daemon spanning both kinds keeps its Managed Instances rollouts in the same
            // partition; ECS's deployment moves those, never the planner.
            let query = self.store.query::<Rollout>(cluster, &daemon.name).await?;
            rollouts.extend(query.into_iter().filter(|r| !r.record.managed_instances));
        }
        rollouts.extend(hypothetical_rollout.map(|record| Versioned { record, version: 0 }));
        rollouts.extend(missing_rollouts(&specs, &rollouts));
        let reads_began = self.ecs.clock_seconds();
        let arns = self.ecs.list_container_instances(cluster, None).await?;
        let instances = self
            .ecs
            .describe_container_instances(cluster, &arns)
            .await?;
        // An undeployed daemon's slots and service copies are read too, for the clean-up to
        // delete and stop them (its DAEMON services once they are gone: `retire_services`).
        let named = daemons
            .iter()
            .map(|d| (d.name.as_str(), d.services.is_some()))
            .chain(
                retired
                    .iter()
                    .filter(|s| s.record.cleaned_up_at.is_none())
                    .map(|s| (s.record.daemon.as_str(), s.record.services.is_some())),
            );
        let mut slots = Vec::new();
        let mut on_services = Vec::new();
        for (daemon, has_services) in named {
            slots.extend(self.store.query::<Slot>(cluster, daemon).await?);
            if has_services {
                on_services.push(daemon);
            }
        }
        let mut task_arns = self.placement().list_copies(cluster).await?;
        for daemon in on_services {
            for letter in [Letter::A, Letter::B] {
                let filter = TaskFilter::ServiceName(service_name(daemon, letter));
                task_arns.extend(self.ecs.list_tasks(cluster, &filter).await?);
            }
        }
        // Slot tasks missing from the (eventually consistent) list are described too: a stopped one tells why.
        let listed: BTreeSet<String> = task_arns.iter().cloned().collect();
        task_arns.extend(
            slots
                .iter()
                .flat_map(|s| slot_task_arns(&s.record))
                .filter(|arn| !listed.contains(arn)),
        );
        // The plan's moment is when the tasks' describes begin, not when the reads did: every
        // task is seen at or after it (a copy up for minHealthySeconds by then was seen up),
        // and a reconcile that waited seconds for its pacer acts on what matured meanwhile.
        let now = described_from(now, reads_began, self.ecs.clock_seconds());
        let tasks: Vec<Task> = self
            .ecs
            .describe_tasks(cluster, &task_arns)
            .await?
            .into_iter()
            .filter(|t| self.owns(t))
            .collect();
        let alarms = self.read_alarms(&rollouts).await;
        Ok(Observation {
            cluster: cluster.into(),
            now,
            scope: Scope::Full,
            rollouts,
            specs,
            retired,
            daemons,
            instances,
            tasks,
            slots,
            drain_census: BTreeMap::new(),
            alarms,
        })
    }

    /// The alarms of the rollouts in progress, in one DescribeAlarms. A failed read is not
    /// the reconcile's failure (coverage goes on): the plan neither fails nor finishes a
    /// rollout on alarms it could not see, and the next reconcile reads again.
    async fn read_alarms(&self, rollouts: &[Versioned<Rollout>]) -> AlarmReading {
        let names: BTreeSet<&String> = rollouts
            .iter()
            .filter(|r| r.record.state == RolloutState::InProgress && !r.record.managed_instances)
            .flat_map(|r| r.record.watched_alarms())
            .collect();
        if names.is_empty() {
            return AlarmReading::NotNeeded;
        }
        let Some(alarms) = &self.alarms else {
            return AlarmReading::Unreadable(
                "this function has no CloudWatch client to read the rollout's alarms".into(),
            );
        };
        let names: Vec<String> = names.into_iter().cloned().collect();
        match alarms.describe_alarms(&names).await {
            Ok(states) => AlarmReading::Read(
                states
                    .into_iter()
                    .map(|state| (state.name.clone(), state))
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!(%error, "rollout alarms unread; read again next reconcile");
                AlarmReading::Unreadable(error.to_string())
            }
        }
    }

    /// Plans; where drain-last would stop daemons, reads every task on those instances fresh
    /// and plans again on that (never trust older news for a destructive step). An instance
    /// whose read fails keeps its daemons this time (reported; the next reconcile tries again).
    pub(super) async fn plan_drains_fresh(
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
}
