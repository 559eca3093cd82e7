//! Events: each deduplicated, a batch merged per instance (the newest word per task wins),
//! the instances it names reconciled together with batched reads.

use super::*;

/// Up to this many instances, a batch reads their slots with one GetItem each; beyond, with
/// one query per daemon.
pub(super) const SLOT_GETS_UP_TO: usize = 20;

/// What one event asks for, decided from the event alone.
pub(super) enum EventWork {
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
pub(super) struct InstanceWork {
    pub(super) instance_arn: String,
    /// What the events said of daemon tasks on the instance: the newest word per task.
    pub(super) hints: Vec<Task>,
    /// Only application tasks stopped here: reconcile only if the instance drains.
    pub(super) only_if_draining: bool,
    pub(super) positions: Vec<usize>,
    pub(super) event_ids: Vec<String>,
}

impl InstanceWork {
    pub(super) fn add(
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

/// The reads one instance needs, decided from its slots and what the events said.
#[derive(Debug, Default, PartialEq)]
pub(super) struct TaskReads {
    /// Tasks as their slots recorded them (no call needed).
    pub(super) from_slots: Vec<Task>,
    /// Event words that cannot mislead: a STOPPED, or news of the very task a slot tracks.
    pub(super) trusted: Vec<Task>,
    pub(super) to_describe: Vec<String>,
    /// A claim without a task: look for a start that happened but was never recorded.
    pub(super) claim_check: bool,
}

/// Trust an event only where it cannot mislead: STOPPED is final, and a newer state of the
/// very task a slot tracks is news. Anything else (an old task's late event, a task no slot
/// knows) is described instead of believed.
pub(super) fn tasks_to_read(
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

pub(super) fn task_from_event(detail: &TaskStateChange) -> Task {
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

    /// Reconcile of several instances of one cluster for every daemon, with batched reads:
    /// one DescribeContainerInstances and one DescribeTasks per 100, whatever the number of
    /// events that asked for them. One outcome for the planned instances, one per skipped one.
    pub(super) async fn reconcile_instances(
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

    /// The slots of some instances: one GetItem each for a few instances, one paginated
    /// query per daemon when a batch names many.
    pub(super) async fn instance_slots(
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
    pub(super) async fn instances_tasks(
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

    pub(super) async fn forget_events(&self, event_ids: &[&str]) {
        for event_id in event_ids {
            if let Err(forget) = self.store.forget_event(event_id).await {
                tracing::warn!(event_id, error = %forget, "could not forget a failed event; its retry will be skipped");
            }
        }
    }

    /// What one event asks for, decided from the event alone (no call).
    pub(super) fn event_work(
        &self,
        event: AnyEcsEvent,
    ) -> Result<(String, EventWork), EngineError> {
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
}
