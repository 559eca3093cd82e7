//! Reconciling the instances a batch of events named: batched reads (one
//! DescribeContainerInstances, one DescribeTasks per 100), events trusted only where they
//! cannot mislead, then plan and act.

use super::*;
use batches::InstanceWork;

/// Up to this many instances, a batch reads their slots with one GetItem each; beyond, with
/// one query per daemon.
pub(super) const SLOT_GETS_UP_TO: usize = 20;

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
    daemons: &[DaemonView],
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
        reads.from_slots.extend(others.filter_map(|s| {
            let group = service_group(instance, &s.record, daemons);
            task_from_slot(&s.record, &instance.arn, started_by, group)
        }));
    } else {
        reads.to_describe.extend(
            others
                .flat_map(|s| slot_task_arns(&s.record))
                .filter(|arn| !trusted.contains(arn.as_str())),
        );
    }
    reads.claim_check = needs_claim_check(instance, slots, hints, &reads.trusted, daemons);
    // Each task once: an event and a slot naming the same task are one read.
    let mut seen = BTreeSet::new();
    reads.to_describe.retain(|arn| seen.insert(arn.clone()));
    reads
}

/// Whether the instance's tasks must be listed: a start that happened but was never
/// recorded may be there.
fn needs_claim_check(
    instance: &ContainerInstance,
    slots: &[&Versioned<Slot>],
    hints: &[Task],
    trusted: &[Task],
    daemons: &[DaemonView],
) -> bool {
    // A start that happened but was never recorded: look. On DAEMON services a requested
    // copy's task shows in its own event or in the next full reconcile's listing by service
    // (a look here would cost a ListTasks for every instance change a rollout causes: each
    // copy placed or stopped changes its instance's resources); a stopped copy its service
    // restarts by itself shows in no event read here, so that one is looked for, unless an
    // event of a live copy of the daemon's services came with the batch (described above).
    let reported = |daemon: &str| {
        hints.iter().any(|t| {
            !t.last_status.is_terminal()
                && t.group
                    .as_deref()
                    .and_then(crate::placement::services::daemon_of_group)
                    .is_some_and(|(name, _)| name == daemon)
        })
    };
    let declared = |daemon: &str| {
        daemons
            .iter()
            .find(|d| d.name == daemon)
            .map(|d| d.task_definition.as_str())
    };
    slots.iter().any(|s| {
        let record = &s.record;
        if on_services(instance, &record.daemon, daemons) {
            let copy_gone = matches!(record.state, SlotState::Stopped | SlotState::CrashLooping)
                || trusted.iter().any(|t| {
                    t.last_status.is_terminal()
                        && record.task_arn.as_deref() == Some(t.arn.as_str())
                });
            // A request of a revision replaced since (a rollback): its service may have
            // started the copy before the letter was withdrawn; a request of the revision in
            // force beside it would make two.
            let replaced = matches!(record.state, SlotState::Claimed | SlotState::Starting)
                && record.task_arn.is_none()
                && record.task_definition.as_deref() != declared(&record.daemon);
            return (copy_gone && !reported(&record.daemon)) || replaced;
        }
        let requested = record
            .rollout
            .as_ref()
            .is_some_and(|r| r.step == RolloutStep::Surging && r.new_task_arn.is_none());
        (matches!(record.state, SlotState::Claimed | SlotState::Starting)
            && record.task_arn.is_none())
            || requested
    })
}

/// The live tasks events told of that `reading` does not name yet.
fn live_hints(hints: &[Task], reading: &[String]) -> Vec<String> {
    hints
        .iter()
        .filter(|t| !t.last_status.is_terminal() && !reading.contains(&t.arn))
        .map(|t| t.arn.clone())
        .collect()
}

/// Whether the daemon runs as DAEMON services on the instance's capacity provider.
fn on_services(instance: &ContainerInstance, daemon: &str, daemons: &[DaemonView]) -> bool {
    daemons
        .iter()
        .find(|d| d.name == daemon)
        .and_then(|d| d.services.as_ref())
        .is_some_and(|s| s.covers(instance.capacity_provider.as_deref()))
}

/// The task group of a slot's copy where one of the daemon's DAEMON services runs it.
fn service_group(
    instance: &ContainerInstance,
    slot: &Slot,
    daemons: &[DaemonView],
) -> Option<String> {
    let services = daemons
        .iter()
        .find(|d| d.name == slot.daemon)?
        .services
        .as_ref()
        .filter(|s| s.covers(instance.capacity_provider.as_deref()))?;
    let letter = services.letter_for(slot.task_definition.as_deref()?)?;
    Some(format!(
        "service:{}",
        crate::placement::services::service_name(&slot.daemon, letter)
    ))
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

/// The instances of a batch that are still there to reconcile; a skip reported for each
/// one that is gone, or that an application's stop named but that is not draining.
fn choose_instances<'w>(
    cluster: &str,
    works: &'w [InstanceWork],
    described: &[ContainerInstance],
    outcomes: &mut Vec<Outcome>,
) -> Vec<(ContainerInstance, &'w InstanceWork)> {
    let mut chosen = Vec::new();
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
    chosen
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
        let chosen = choose_instances(cluster, works, &described, &mut outcomes);
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
        // The records of the daemons' rollouts in flight, one GetItem each (inline: as an
        // async fn of its own it added about 1 KB to every event function's bootstrap).
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
        let tasks = self
            .instances_tasks(cluster, &chosen, &slots, &daemons)
            .await?;
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
            retired: Vec::new(),
            daemons,
            instances: chosen.into_iter().map(|(instance, _)| instance).collect(),
            tasks,
            slots,
            drain_census: BTreeMap::new(),
            // Rollouts advance in full reconciles only: no alarm is read here.
            alarms: Default::default(),
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
        daemons: &[DaemonView],
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
            let read = tasks_to_read(
                instance,
                &own,
                &work.hints,
                &self.config.started_by,
                daemons,
            );
            tasks.extend(read.from_slots);
            hints.extend(read.trusted);
            to_describe.extend(read.to_describe);
            if read.claim_check {
                claim_checks.push(instance);
            }
        }
        if !to_describe.is_empty() {
            // The same call reads the live tasks the events told of afresh: an event may be
            // late news of a task that stopped since, and a task no slot knows beside it would
            // otherwise look like the duplicate to stop.
            to_describe.extend(live_hints(&hints, &to_describe));
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
                let mut unknown = unknown;
                unknown.extend(live_hints(&hints, &unknown));
                tasks.extend(self.ecs.describe_tasks(cluster, &unknown).await?);
            }
        }
        // The newest word about each task wins, whether an event or a describe said it.
        tasks.extend(hints);
        tasks.retain(|t| self.owns(t));
        Ok(newest_per_task(tasks))
    }
}
