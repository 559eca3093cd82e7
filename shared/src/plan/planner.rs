//! The planner itself: its state over one plan, lookups into the observation grouped per
//! instance, and the run: every instance by status, then rollouts, then clean-ups.

use super::*;

pub(super) struct Planner<'a, 'g> {
    pub(super) observation: &'a Observation,
    pub(super) daemons: Vec<&'a DaemonView>,
    /// Per instance id. Only looked up (clean-ups sort what they gather), so the plan stays
    /// deterministic.
    pub(super) by_instance: &'g Groups<'a>,
    /// The group of the instance being planned: most lookups are for it.
    pub(super) current: Option<(&'a str, &'g InstanceItems<'a>)>,
    /// Active rollout per daemon (by position in `daemons`).
    pub(super) rollouts: Vec<Option<&'a Versioned<Rollout>>>,
    /// Coverage per daemon (by position in `daemons`), moved into the plan at the end.
    pub(super) coverages: Vec<DaemonCoverage>,
    /// Per-rollout tallies and surge candidates, gathered instance by instance.
    pub(super) tallies: BTreeMap<String, Tally>,
    /// Per critical daemon: its instances DRAINING now, this plan's drains included.
    pub(super) critical_draining: BTreeMap<String, usize>,
    pub(super) plan: Plan,
}

/// A daemon's position in the planning order; `None` for a daemon no longer declared.
/// What a keeper's slot records as its rollout step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StepUpdate {
    /// The step the slot holds (none, or another rollout's) stays.
    Keep,
    /// This rollout's step from now on.
    Set(SlotRollout),
    /// This rollout's step ends: the instance is back among those still to do.
    Clear,
}

pub(super) type DaemonIndex = Option<usize>;

/// What the observation holds for one instance: its daemon tasks (with their daemon's name
/// and position) and slots (with their daemon's position).
#[derive(Default)]
pub(super) struct InstanceItems<'a> {
    pub(super) tasks: Vec<(&'a str, DaemonIndex, &'a Task)>,
    pub(super) slots: Vec<(DaemonIndex, &'a Versioned<Slot>)>,
}

#[derive(Default)]
pub(super) struct Tally {
    pub(super) counts: RolloutCounts,
    /// Instances with the old revision up, not yet started in this rollout: (arn, retry).
    pub(super) candidates: Vec<(String, bool)>,
    pub(super) failures: Vec<RolloutFailure>,
}

impl<'a, 'g> Planner<'a, 'g> {
    pub(super) fn new(
        observation: &'a Observation,
        daemons: Vec<&'a DaemonView>,
        by_instance: &'g Groups<'a>,
    ) -> Self {
        let rollouts = daemons
            .iter()
            .map(|d| {
                let id = d.active_rollout.as_deref()?;
                observation.rollouts.iter().find(|r| {
                    r.record.id == id
                        && r.record.daemon == d.name
                        && r.record.state == RolloutState::InProgress
                        && r.record.to_task_definition == d.task_definition
                })
            })
            .collect();
        Self {
            observation,
            coverages: vec![DaemonCoverage::default(); daemons.len()],
            daemons,
            by_instance,
            current: None,
            rollouts,
            tallies: BTreeMap::new(),
            critical_draining: BTreeMap::new(),
            plan: Plan::default(),
        }
    }

    /// The daemon's position in the planning order (every `DaemonView` the planner hands
    /// around is one of `daemons`).
    pub(super) fn index(&self, daemon: &DaemonView) -> usize {
        self.daemons
            .iter()
            .position(|d| std::ptr::eq(*d, daemon))
            .or_else(|| self.daemons.iter().position(|d| d.name == daemon.name))
            .expect("the planner only hands around its own daemons")
    }

    pub(super) fn coverage(&mut self, daemon: &DaemonView) -> &mut DaemonCoverage {
        let index = self.index(daemon);
        &mut self.coverages[index]
    }

    pub(super) fn rollout_of(&self, daemon: &DaemonView) -> Option<&'a Versioned<Rollout>> {
        self.rollouts[self.index(daemon)]
    }

    pub(super) fn trouble(
        &mut self,
        daemon: &DaemonView,
        instance_id: &str,
        state: &str,
        reason: String,
    ) {
        self.coverage(daemon).trouble.push(Trouble {
            instance_id: instance_id.into(),
            state: state.into(),
            reason,
        });
    }

    pub(super) fn push(&mut self, action: Action) {
        self.plan.actions.push(action);
    }

    pub(super) fn new_slot(
        &self,
        daemon: &DaemonView,
        instance_id: &str,
        previous: Option<&Versioned<Slot>>,
    ) -> Slot {
        let mut slot = previous.map(|p| p.record.clone()).unwrap_or_else(|| Slot {
            cluster: self.observation.cluster.clone(),
            daemon: daemon.name.clone(),
            instance_id: instance_id.into(),
            state: SlotState::Claimed,
            task_arn: None,
            task_definition: None,
            claimed_by: None,
            task_version: 0,
            consecutive_failures: 0,
            last_stop_reason: None,
            retry_after: None,
            rollout: None,
            stopped_early: None,
            critical_drain_at: None,
            updated_at: self.observation.now,
        });
        slot.updated_at = self.observation.now;
        slot
    }

    pub(super) fn record(&mut self, slot: Slot, previous: Option<&Versioned<Slot>>) {
        let expected = previous.map_or(Expected::Absent, Versioned::expected);
        self.push(Action::RecordSlot { slot, expected });
    }

    pub(super) fn items(&self, instance_id: &str) -> Option<&'g InstanceItems<'a>> {
        match self.current {
            // Mostly the very slice `current` was set from: no need to compare the bytes.
            Some((current, items))
                if std::ptr::eq(current, instance_id) || current == instance_id =>
            {
                Some(items)
            }
            _ => self.by_instance.get(instance_id),
        }
    }

    /// Every observed task of a daemon on an instance.
    pub(super) fn daemon_tasks(&self, daemon: &DaemonView, instance_id: &str) -> Vec<&'a Task> {
        let index = Some(self.index(daemon));
        self.items(instance_id).map_or_else(Vec::new, |items| {
            items
                .tasks
                .iter()
                .filter(|(_, d, _)| *d == index)
                .map(|(_, _, t)| *t)
                .collect()
        })
    }

    pub(super) fn live_tasks(&self, daemon: &DaemonView, instance_id: &str) -> Vec<&'a Task> {
        let mut tasks = self.daemon_tasks(daemon, instance_id);
        tasks.retain(|t| is_live(t));
        tasks
    }

    pub(super) fn slot(
        &self,
        daemon: &DaemonView,
        instance_id: &str,
    ) -> Option<&'a Versioned<Slot>> {
        let index = Some(self.index(daemon));
        let items = self.items(instance_id)?;
        items
            .slots
            .iter()
            .find(|(d, _)| *d == index)
            .map(|(_, slot)| *slot)
    }

    pub(super) fn task_by_arn(&self, arn: &str) -> Option<&'a Task> {
        self.observation.tasks.iter().find(|t| t.arn == arn)
    }

    /// Notes a moment when a timed condition matures (the earliest one is the plan's wake time).
    pub(super) fn wake_at(&mut self, at: DateTime<Utc>) {
        if at > self.observation.now && self.plan.wake_at.is_none_or(|current| at < current) {
            self.plan.wake_at = Some(at);
        }
    }

    pub(super) fn count(&mut self, daemon: &DaemonView, coverage: Coverage) -> Coverage {
        match coverage {
            Coverage::Up => self.coverage(daemon).covered += 1,
            _ => self.coverage(daemon).starting += 1,
        }
        coverage
    }

    /// Records the slot's keeper (and rollout step) when anything changed.
    pub(super) fn track_keeper(
        &mut self,
        daemon: &DaemonView,
        instance_id: &str,
        previous: Option<&Versioned<Slot>>,
        keeper: &Task,
        step: StepUpdate,
    ) {
        let now = self.observation.now;
        let up = is_up(keeper, daemon);
        // `Running` in a slot means up (RUNNING, and HEALTHY where checked): events trust it.
        let state = if up {
            SlotState::Running
        } else {
            SlotState::Starting
        };
        let stable = up
            && keeper.started_at.is_some_and(|at| {
                at + Duration::seconds(i64::from(daemon.restart.stable_after_seconds)) <= now
            });
        let known_failures = previous.map_or(0, |p| p.record.consecutive_failures);
        let failures = if stable { 0 } else { known_failures };
        let rollout = match step {
            StepUpdate::Keep => previous.and_then(|p| p.record.rollout.clone()),
            StepUpdate::Set(step) => Some(step),
            StepUpdate::Clear => None,
        };
        // Compared before anything is copied: at rest (the common case) nothing is written.
        let changed = previous.is_none_or(|p| {
            p.record.task_arn.as_deref() != Some(keeper.arn.as_str())
                || p.record.state != state
                || p.record.consecutive_failures != failures
                || p.record.task_version < keeper.version
                || p.record.rollout != rollout
                || p.record.stopped_early.is_some()
                || (stable && p.record.critical_drain_at.is_some())
        });
        if changed {
            let mut slot = self.new_slot(daemon, instance_id, previous);
            slot.state = state;
            slot.task_arn = Some(keeper.arn.clone());
            slot.task_definition = Some(revision_of(keeper).to_string());
            slot.task_version = keeper.version;
            slot.consecutive_failures = failures;
            slot.retry_after = None;
            slot.rollout = rollout;
            // A copy runs again (the instance was reactivated): the early stop is history.
            slot.stopped_early = None;
            if stable {
                // The crash loop is over: a later one may drain the instance again.
                slot.critical_drain_at = None;
            }
            self.record(slot, previous);
        }
    }

    pub(super) fn clean_up(&mut self) {
        let present: HashSet<&str, FastHash> =
            self.observation.instances.iter().map(|i| i.id()).collect();
        let mut actions = Vec::new();
        for (instance_id, items) in self.by_instance {
            let gone = !present.contains(instance_id);
            for (index, slot) in &items.slots {
                if gone || index.is_none() {
                    actions.push(Action::DeleteSlot {
                        key: slot.record.key_of(),
                        version: slot.version,
                    });
                }
            }
            for (daemon, index, task) in &items.tasks {
                if is_live(task) && index.is_none() {
                    actions.push(Action::Stop {
                        task_arn: task.arn.clone(),
                        instance_id: (*instance_id).into(),
                        daemon: (*daemon).into(),
                        reason: format!("ecs-daemons: daemon {daemon} is no longer declared"),
                    });
                }
            }
        }
        self.withdraw_undeclared_letters(&mut actions);
        // The map's order is arbitrary: sort so the same observation gives the same plan.
        actions.sort_by(|a, b| action_key(a).cmp(&action_key(b)));
        self.plan.actions.extend(actions);
    }

    pub(super) fn run(mut self) -> Plan {
        // With no daemon declared the instances are still planned: every one is ready, and
        // the clean-up stops what undeployed or unknown daemons left.
        self.plan_instances_and_rollouts();
        let coverages = std::mem::take(&mut self.coverages);
        self.plan.coverage = self
            .daemons
            .iter()
            .map(|d| d.name.clone())
            .zip(coverages)
            .collect();
        self.plan
    }

    /// An instance the rollout no longer moves on (its agent disconnected, or DRAINING, where
    /// drain-last keeps both copies until the applications left): a rollout step in flight
    /// on it still counts against `maxParallel` while its two copies run, so the rollout's
    /// tally includes it as its slot last recorded it. An instance not in flight is left out,
    /// as before: the rollout does not wait for it.
    fn tally_frozen(&mut self, instance: &'a ContainerInstance) {
        let instance_id = instance.id();
        for daemon in self.daemons.clone() {
            let targeted = daemon.targets(instance);
            let Some(rollout) = self.rollout_of(daemon).filter(|_| targeted) else {
                continue;
            };
            let step = self
                .slot(daemon, instance_id)
                .and_then(|slot| slot.record.rollout.clone())
                .filter(|step| step.rollout_id == rollout.record.id && step.step.in_flight());
            // Counted while both copies still run (a drain stops them in the end).
            if step.is_some() && self.live_tasks(daemon, instance_id).len() >= 2 {
                self.tally(daemon, step.as_ref(), instance_id, true);
            }
        }
    }

    pub(super) fn plan_instances_and_rollouts(&mut self) {
        let observation = self.observation;
        for instance in &observation.instances {
            match (&instance.status, instance.agent_connected) {
                (InstanceStatus::Active, true) => self.active(instance),
                (InstanceStatus::Active, false) => self.tally_frozen(instance),
                (InstanceStatus::Draining, _) => {
                    self.tally_frozen(instance);
                    self.draining(instance);
                }
                // Instances on their way in or out: nothing can be placed.
                _ => {}
            }
        }
        if self.observation.scope == Scope::Full {
            self.clean_up();
            self.advance_rollouts();
        }
        self.withdraw_stale_requests();
        self.plan.actions.sort_by_key(Action::rank);
    }
}
