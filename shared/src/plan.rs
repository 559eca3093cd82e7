//! The pure planner: observed instances, daemon tasks, specs and slots in; the
//! actions that bring the cluster to "exactly one running copy of every daemon
//! on every targeted instance, started first, drained last" out. No I/O: the
//! same inputs always give the same actions.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::arn::resource_id;
use crate::model::{ContainerInstance, HealthStatus, InstanceStatus, Task, TaskStatus};
use crate::rollout::{Rollout, RolloutFailure};
use crate::rollout::{
    RolloutCounts, RolloutKind, RolloutState, RolloutStep, SlotRollout, SurgeFallback,
};
use crate::slot::{Slot, SlotState};
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{Expected, ItemKey, Versioned};

/// The custom attribute application services place on.
pub const READY_ATTRIBUTE: &str = "ecs-daemons.ready";
/// A claim whose StartTask never showed a task is taken over after this long.
pub const CLAIM_GRACE_SECONDS: i64 = 60;
const GROUP_PREFIX: &str = "daemon:";

/// The task `group` of a daemon's copies.
pub fn daemon_group(daemon: &str) -> String {
    format!("{GROUP_PREFIX}{daemon}")
}

/// A deployed daemon as the planner needs it: the spec plus facts of its task definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonView {
    pub name: String,
    /// Pinned `family:revision`.
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    pub start_order: i32,
    pub has_health_check: bool,
    pub restart: RestartPolicy,
    /// The rollout in flight (its record is in `Observation::rollouts`).
    pub active_rollout: Option<String>,
    /// The last revision whose rollout succeeded: where the breaker rolls back to.
    pub last_good: Option<String>,
}

/// While a rollout has copies on their way, a full reconcile runs again after this long.
pub const ROLLOUT_POLL_SECONDS: i64 = 10;

/// A failed instance is tried again in a rollout after this long.
pub const FAILED_RETRY_SECONDS: i64 = 60;

/// Whether the observation covers the whole cluster or only some instances
/// (an event). Clean-ups that need the whole picture run only on `Full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    Instances,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Observation {
    pub cluster: String,
    pub now: DateTime<Utc>,
    pub scope: Scope,
    pub daemons: Vec<DaemonView>,
    pub instances: Vec<ContainerInstance>,
    /// Tasks started with the system's marker, recently stopped ones included.
    pub tasks: Vec<Task>,
    pub slots: Vec<Versioned<Slot>>,
    /// Rollout records of the observed daemons (the active ones at least).
    pub rollouts: Vec<Versioned<Rollout>>,
    /// The specs behind `daemons`, with their versions (for the engine's spec writes).
    pub specs: Vec<Versioned<DaemonSpec>>,
    /// Per DRAINING instance id, read fresh for drain-last ([`Plan::drain_checks`]): how many
    /// tasks that are not ours have not stopped yet, stopping ones included.
    pub drain_census: BTreeMap<String, usize>,
}

/// One step the engine carries out, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Remove the readiness attribute (first, so no application lands meanwhile).
    ClearReady {
        instance_arn: String,
        reason: String,
    },
    /// Write a slot (bookkeeping: adopted copy, failure, stopping).
    RecordSlot { slot: Slot, expected: Expected },
    /// Forget a slot whose instance is gone or no longer targeted.
    DeleteSlot { key: ItemKey, version: u64 },
    /// Stop one task the system owns.
    Stop {
        task_arn: String,
        instance_id: String,
        daemon: String,
        reason: String,
    },
    /// Claim the slot with a conditional write, then StartTask on the instance.
    Start {
        instance_arn: String,
        task_definition: String,
        claim: Slot,
        expected: Expected,
        /// A rollout's second copy next to the old one, and what to do without room for it.
        surge: Option<SurgeFallback>,
    },
    /// Put the readiness attribute (last: every daemon of the instance runs).
    SetReady { instance_arn: String },
    /// Point the daemon at another revision or rollout (rollback, success); a new rollout
    /// record is written first.
    SwitchRevision {
        daemon: String,
        task_definition: String,
        active_rollout: Option<String>,
        last_good: Option<String>,
        new_rollout: Option<Box<Rollout>>,
    },
    /// Write a rollout's progress or end.
    RecordRollout {
        rollout: Box<Rollout>,
        expected: Expected,
    },
}

impl Action {
    fn rank(&self) -> u8 {
        match self {
            Self::ClearReady { .. } => 0,
            Self::RecordSlot { .. } => 1,
            Self::DeleteSlot { .. } => 2,
            Self::Stop { .. } => 3,
            Self::Start { .. } => 4,
            Self::SetReady { .. } => 5,
            Self::SwitchRevision { .. } => 6,
            Self::RecordRollout { .. } => 7,
        }
    }
}

/// A slot that needs a person: the reason is ECS's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trouble {
    pub instance_id: String,
    pub state: String,
    pub reason: String,
}

/// Per-daemon coverage as observed before the plan's actions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonCoverage {
    /// ACTIVE, agent-connected instances of the daemon's capacity providers.
    pub targeted: usize,
    /// Of those, with a RUNNING (and HEALTHY where checked) copy.
    pub covered: usize,
    /// A copy is on its way (pending, claimed, or waiting for an earlier daemon).
    pub starting: usize,
    /// No copy and none on its way (backing off, or about to be started by this plan).
    pub missing: usize,
    /// Extra copies found (and stopped by this plan).
    pub duplicates: usize,
    pub crash_looping: usize,
    /// Instances in trouble, with reasons.
    pub trouble: Vec<Trouble>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub actions: Vec<Action>,
    pub coverage: BTreeMap<String, DaemonCoverage>,
    /// Progress of each active rollout as observed (full reconciles only).
    pub rollouts: BTreeMap<String, RolloutCounts>,
    /// The earliest moment a timed condition (minHealthySeconds, a restart backoff, a
    /// claim's grace) matures: reconciling then moves things on without waiting for the schedule.
    pub wake_at: Option<DateTime<Utc>>,
    /// Per daemon with a rollout: the instances still to surge, in the order the planner
    /// takes them, and how many it takes now (the dry run's batch order comes from here).
    pub rollout_queues: BTreeMap<String, RolloutQueue>,
    /// DRAINING instances (ARNs) whose counts say only daemons are left: drain-last stops
    /// them only on a fresh read of every task there ([`Observation::drain_census`]), since
    /// the counts leave out stopping tasks and the daemon copies may come from older news.
    pub drain_checks: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutQueue {
    /// Instance ARNs: fresh ones first, failed ones to retry after them.
    pub order: Vec<String>,
    /// How many of `order` this plan starts.
    pub now: usize,
    /// Instances in flight at once once the canary (if any) is done.
    pub max_parallel: usize,
}

fn is_live(task: &Task) -> bool {
    !task.last_status.is_terminal() && task.desired_status != TaskStatus::Stopped
}

/// Still on the instance (ECS counts it) even if asked to stop.
fn occupies(task: &Task) -> bool {
    !task.last_status.is_terminal()
}

fn is_up(task: &Task, daemon: &DaemonView) -> bool {
    task.last_status == TaskStatus::Running
        && (!daemon.has_health_check || task.health == HealthStatus::Healthy)
}

/// Higher is better: running, healthy, the declared revision, newest.
fn keeper_rank(task: &Task, daemon: &DaemonView) -> (u8, u8, bool, Option<DateTime<Utc>>, String) {
    let status = match task.last_status {
        TaskStatus::Running => 2,
        TaskStatus::Deactivating | TaskStatus::Stopping => 0,
        _ => 1,
    };
    let health = match task.health {
        HealthStatus::Healthy => 2,
        HealthStatus::Unknown | HealthStatus::Other(_) => 1,
        HealthStatus::Unhealthy => 0,
    };
    let declared = revision_of(task) == daemon.task_definition;
    (
        status,
        health,
        declared,
        task.started_at.or(task.created_at),
        task.arn.clone(),
    )
}

fn stop_reason(task: &Task) -> String {
    match (&task.stop_code, &task.stopped_reason) {
        (Some(code), Some(reason)) => format!("{code}: {reason}"),
        (None, Some(reason)) => reason.clone(),
        (Some(code), None) => code.clone(),
        (None, None) => "stopped without a reason from ECS".into(),
    }
}

/// A stable order for clean-up actions gathered from a hash map.
fn action_key(action: &Action) -> (&str, &str) {
    match action {
        Action::DeleteSlot { key, .. } => (&key.pk, &key.sk),
        Action::Stop {
            task_arn, daemon, ..
        } => (daemon, task_arn),
        _ => ("", ""),
    }
}

/// `family:revision` of a task (its task definition ARN ends with it).
pub fn revision_of(task: &Task) -> &str {
    task.task_definition_arn
        .rsplit('/')
        .next()
        .unwrap_or(&task.task_definition_arn)
}

fn fail(mut step: SlotRollout, now: DateTime<Utc>, reason: String) -> SlotRollout {
    step.step = RolloutStep::Failed;
    step.since = now;
    step.failures += 1;
    step.last_failure = Some(reason);
    step.new_task_arn = None;
    step
}

fn is_ready(instance: &ContainerInstance) -> bool {
    instance
        .attributes
        .get(READY_ATTRIBUTE)
        .is_some_and(|value| value.as_deref() == Some("true"))
}

/// FNV-1a: the planner hashes 100,000s of short ids and names of the user's own cluster per
/// run, where SipHash's flood resistance buys nothing and costs a third of the time.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FastHash = std::hash::BuildHasherDefault<Fnv>;

fn fnv(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = Fnv::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

type Groups<'a> = HashMap<&'a str, InstanceItems<'a>, FastHash>;

/// The declared daemons in planning order: start order, then name.
fn planning_order(observation: &Observation) -> Vec<&DaemonView> {
    let mut daemons: Vec<&DaemonView> = observation.daemons.iter().collect();
    daemons.sort_by(|a, b| (a.start_order, &a.name).cmp(&(b.start_order, &b.name)));
    daemons
}

/// Tasks and slots grouped per instance, once per plan, each with its daemon's position in
/// `daemons` (so that per-instance lookups compare numbers, not names).
fn group<'a>(observation: &'a Observation, daemons: &[&DaemonView]) -> Groups<'a> {
    // Names are short: a byte loop beats a call to memcmp, 200,000 times over.
    let same =
        |a: &str, b: &str| a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y);
    // A handful of daemons: scan their hashes, compare the bytes of the one that matches.
    let hashes: Vec<u64> = daemons.iter().map(|d| fnv(&d.name)).collect();
    let index = |name: &str| {
        let hash = fnv(name);
        hashes
            .iter()
            .zip(daemons)
            .position(|(h, d)| *h == hash && same(&d.name, name))
    };
    let prefix: &[u8; GROUP_PREFIX.len()] = GROUP_PREFIX
        .as_bytes()
        .first_chunk()
        .expect("a chunk the length of the prefix itself");
    let per_instance = daemons.len().max(1);
    let fresh = || InstanceItems {
        tasks: Vec::with_capacity(per_instance),
        slots: Vec::with_capacity(per_instance),
    };
    let mut groups: Groups =
        HashMap::with_capacity_and_hasher(observation.instances.len(), FastHash::default());
    for task in &observation.tasks {
        let (Some(group), Some(instance)) = (
            task.group.as_deref(),
            task.container_instance_arn.as_deref(),
        ) else {
            continue;
        };
        if group.as_bytes().first_chunk() == Some(prefix) {
            let daemon = &group[GROUP_PREFIX.len()..];
            groups
                .entry(resource_id(instance))
                .or_insert_with(fresh)
                .tasks
                .push((daemon, index(daemon), task));
        }
    }
    for slot in &observation.slots {
        groups
            .entry(slot.record.instance_id.as_str())
            .or_insert_with(fresh)
            .slots
            .push((index(&slot.record.daemon), slot));
    }
    groups
}

struct Planner<'a, 'g> {
    observation: &'a Observation,
    daemons: Vec<&'a DaemonView>,
    /// Per instance id. Only looked up (clean-ups sort what they gather), so the plan stays
    /// deterministic.
    by_instance: &'g Groups<'a>,
    /// The group of the instance being planned: most lookups are for it.
    current: Option<(&'a str, &'g InstanceItems<'a>)>,
    /// Active rollout per daemon (by position in `daemons`).
    rollouts: Vec<Option<&'a Versioned<Rollout>>>,
    /// Coverage per daemon (by position in `daemons`), moved into the plan at the end.
    coverages: Vec<DaemonCoverage>,
    /// Per-rollout tallies and surge candidates, gathered instance by instance.
    tallies: BTreeMap<String, Tally>,
    plan: Plan,
}

/// A daemon's position in the planning order; `None` for a daemon no longer declared.
type DaemonIndex = Option<usize>;

/// What the observation holds for one instance: its daemon tasks (with their daemon's name
/// and position) and slots (with their daemon's position).
#[derive(Default)]
struct InstanceItems<'a> {
    tasks: Vec<(&'a str, DaemonIndex, &'a Task)>,
    slots: Vec<(DaemonIndex, &'a Versioned<Slot>)>,
}

#[derive(Default)]
struct Tally {
    counts: RolloutCounts,
    /// Instances with the old revision up, not yet started in this rollout: (arn, retry).
    candidates: Vec<(String, bool)>,
    failures: Vec<RolloutFailure>,
}

impl<'a, 'g> Planner<'a, 'g> {
    fn new(
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
            plan: Plan::default(),
        }
    }

    /// The daemon's position in the planning order (every `DaemonView` the planner hands
    /// around is one of `daemons`).
    fn index(&self, daemon: &DaemonView) -> usize {
        self.daemons
            .iter()
            .position(|d| std::ptr::eq(*d, daemon))
            .or_else(|| self.daemons.iter().position(|d| d.name == daemon.name))
            .expect("the planner only hands around its own daemons")
    }

    fn coverage(&mut self, daemon: &DaemonView) -> &mut DaemonCoverage {
        let index = self.index(daemon);
        &mut self.coverages[index]
    }

    fn rollout_of(&self, daemon: &DaemonView) -> Option<&'a Versioned<Rollout>> {
        self.rollouts[self.index(daemon)]
    }

    fn trouble(&mut self, daemon: &DaemonView, instance_id: &str, state: &str, reason: String) {
        self.coverage(daemon).trouble.push(Trouble {
            instance_id: instance_id.into(),
            state: state.into(),
            reason,
        });
    }

    fn push(&mut self, action: Action) {
        self.plan.actions.push(action);
    }

    fn new_slot(
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
            updated_at: self.observation.now,
        });
        slot.updated_at = self.observation.now;
        slot
    }

    fn record(&mut self, slot: Slot, previous: Option<&Versioned<Slot>>) {
        let expected = previous.map_or(Expected::Absent, Versioned::expected);
        self.push(Action::RecordSlot { slot, expected });
    }

    fn items(&self, instance_id: &str) -> Option<&'g InstanceItems<'a>> {
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
    fn daemon_tasks(&self, daemon: &DaemonView, instance_id: &str) -> Vec<&'a Task> {
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

    fn live_tasks(&self, daemon: &DaemonView, instance_id: &str) -> Vec<&'a Task> {
        let mut tasks = self.daemon_tasks(daemon, instance_id);
        tasks.retain(|t| is_live(t));
        tasks
    }

    fn slot(&self, daemon: &DaemonView, instance_id: &str) -> Option<&'a Versioned<Slot>> {
        let index = Some(self.index(daemon));
        let items = self.items(instance_id)?;
        items
            .slots
            .iter()
            .find(|(d, _)| *d == index)
            .map(|(_, slot)| *slot)
    }

    fn task_by_arn(&self, arn: &str) -> Option<&'a Task> {
        self.observation.tasks.iter().find(|t| t.arn == arn)
    }

    /// The keeper among a daemon's live copies on an instance; the others are stopped.
    fn keep_one(
        &mut self,
        daemon: &DaemonView,
        instance_id: &str,
        live: Vec<&'a Task>,
    ) -> Option<&'a Task> {
        let mut live = live;
        live.sort_by_key(|task| std::cmp::Reverse(keeper_rank(task, daemon)));
        let mut copies = live.into_iter();
        let keeper = copies.next()?;
        // The same task twice is one copy: never stop the keeper as its own duplicate.
        for extra in copies.filter(|extra| extra.arn != keeper.arn) {
            self.coverage(daemon).duplicates += 1;
            self.push(Action::Stop {
                task_arn: extra.arn.clone(),
                instance_id: instance_id.into(),
                daemon: daemon.name.clone(),
                reason: format!(
                    "ecs-daemons: duplicate copy of {} (kept {})",
                    daemon.name,
                    keeper.id()
                ),
            });
        }
        Some(keeper)
    }

    /// An eligible instance: make sure the daemon runs exactly once. Returns whether it is up.
    fn cover(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        earlier_settled: bool,
    ) -> Coverage {
        let instance_id = instance.id();
        let previous = self.slot(daemon, instance_id);
        let now = self.observation.now;
        self.coverage(daemon).targeted += 1;

        let live = self.live_tasks(daemon, instance_id);
        if let Some(rollout) = self.rollout_of(daemon) {
            if let Some(coverage) =
                self.cover_rolling(daemon, rollout, instance, previous, live.clone())
            {
                return self.count(daemon, coverage);
            }
        } else if let Some(keeper) = self.keep_one(daemon, instance_id, live) {
            self.track_keeper(daemon, instance_id, previous, keeper, None);
            let coverage = if is_up(keeper, daemon) {
                Coverage::Up
            } else {
                Coverage::OnItsWay
            };
            return self.count(daemon, coverage);
        }

        // No live copy. Did the one we knew of stop (a failure), or is a start in flight?
        let mut slot = self.new_slot(daemon, instance_id, previous);
        let mut failed_now = false;
        if let Some(p) = previous {
            let known_task = p.record.task_arn.as_deref();
            let task_gone = known_task.is_some_and(|arn| match self.task_by_arn(arn) {
                Some(task) => !is_live(task),
                // Not even a stopped task: ECS forgot it, or it never started.
                None => self.observation.scope == Scope::Full,
            });
            let in_flight = matches!(p.record.state, SlotState::Claimed | SlotState::Starting)
                && p.record.updated_at + Duration::seconds(CLAIM_GRACE_SECONDS) > now;
            if matches!(p.record.state, SlotState::Starting | SlotState::Running) && task_gone {
                let reason = known_task
                    .and_then(|arn| self.task_by_arn(arn))
                    .map_or_else(
                        || "the task is no longer known to ECS".to_string(),
                        stop_reason,
                    );
                // A rollout's new copy that dies before it settled is a rollout failure too
                // (with stopFirst it is the instance's only copy): the breaker counts it.
                let active = self.rollout_of(daemon).map(|r| r.record.id.clone());
                let on_target =
                    p.record.task_definition.as_deref() == Some(daemon.task_definition.as_str());
                if let Some(step) = slot.rollout.as_mut().filter(|step| {
                    on_target
                        && Some(&step.rollout_id) == active.as_ref()
                        && matches!(
                            step.step,
                            RolloutStep::Surging | RolloutStep::Settling | RolloutStep::Failed
                        )
                }) {
                    *step = fail(
                        step.clone(),
                        now,
                        format!("the new copy stopped before it was healthy: {reason}"),
                    );
                }
                slot.consecutive_failures += 1;
                slot.last_stop_reason = Some(reason);
                slot.retry_after = Some(now + daemon.restart.backoff(slot.consecutive_failures));
                slot.state = if slot.consecutive_failures >= daemon.restart.max_consecutive_failures
                {
                    SlotState::CrashLooping
                } else {
                    SlotState::Stopped
                };
                failed_now = true;
            } else if in_flight && !task_gone {
                self.wake_at(p.record.updated_at + Duration::seconds(CLAIM_GRACE_SECONDS));
                self.coverage(daemon).starting += 1;
                return Coverage::OnItsWay;
            }
        }

        if slot.state == SlotState::CrashLooping
            && slot.task_definition.as_deref() == Some(daemon.task_definition.as_str())
        {
            let reason = slot.last_stop_reason.clone().unwrap_or_default();
            self.trouble(
                daemon,
                instance_id,
                "CRASH_LOOPING",
                format!(
                    "stopped {} times in a row; last: {reason}",
                    slot.consecutive_failures
                ),
            );
            self.coverage(daemon).crash_looping += 1;
            if failed_now {
                self.record(slot, previous);
            }
            return Coverage::CrashLooping;
        }
        if slot.state == SlotState::CrashLooping {
            // A new revision was declared: give it a fresh start.
            slot.consecutive_failures = 0;
            slot.retry_after = None;
        }
        if !earlier_settled {
            if failed_now {
                self.record(slot, previous);
            }
            self.coverage(daemon).starting += 1;
            return Coverage::OnItsWay;
        }
        if let Some(wait_until) = slot.retry_after.filter(|at| *at > now) {
            self.wake_at(wait_until);
            let reason = slot.last_stop_reason.clone().unwrap_or_default();
            self.trouble(
                daemon,
                instance_id,
                "BACKING_OFF",
                format!(
                    "restart {} at {wait_until}; last stop: {reason}",
                    slot.consecutive_failures + 1
                ),
            );
            self.coverage(daemon).missing += 1;
            if failed_now {
                self.record(slot, previous);
            }
            return Coverage::Missing;
        }
        slot.state = SlotState::Claimed;
        slot.task_arn = None;
        slot.task_definition = Some(daemon.task_definition.clone());
        slot.task_version = 0;
        if let Some(step) = slot
            .rollout
            .as_mut()
            .filter(|r| r.step == RolloutStep::GapStopping)
        {
            // stopFirst: the old copy is gone, the new one starts now (its instance counts as surging).
            step.step = RolloutStep::Surging;
            step.since = now;
        }
        self.coverage(daemon).missing += 1;
        self.push(Action::Start {
            instance_arn: instance.arn.clone(),
            task_definition: daemon.task_definition.clone(),
            claim: slot,
            expected: previous.map_or(Expected::Absent, Versioned::expected),
            surge: None,
        });
        Coverage::Missing
    }

    /// Notes a moment when a timed condition matures (the earliest one is the plan's wake time).
    fn wake_at(&mut self, at: DateTime<Utc>) {
        if at > self.observation.now && self.plan.wake_at.is_none_or(|current| at < current) {
            self.plan.wake_at = Some(at);
        }
    }

    fn count(&mut self, daemon: &DaemonView, coverage: Coverage) -> Coverage {
        match coverage {
            Coverage::Up => self.coverage(daemon).covered += 1,
            _ => self.coverage(daemon).starting += 1,
        }
        coverage
    }

    /// Records the slot's keeper (and rollout step) when anything changed.
    fn track_keeper(
        &mut self,
        daemon: &DaemonView,
        instance_id: &str,
        previous: Option<&Versioned<Slot>>,
        keeper: &Task,
        rollout: Option<SlotRollout>,
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
        let rollout = rollout.or_else(|| previous.and_then(|p| p.record.rollout.clone()));
        // Compared before anything is copied: at rest (the common case) nothing is written.
        let changed = previous.is_none_or(|p| {
            p.record.task_arn.as_deref() != Some(keeper.arn.as_str())
                || p.record.state != state
                || p.record.consecutive_failures != failures
                || p.record.task_version < keeper.version
                || p.record.rollout != rollout
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
            self.record(slot, previous);
        }
    }

    /// A daemon with a rollout in flight on an eligible instance. `None` when no copy is
    /// live at all: the missing path then starts the new revision.
    fn cover_rolling(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        instance: &ContainerInstance,
        previous: Option<&Versioned<Slot>>,
        live: Vec<&'a Task>,
    ) -> Option<Coverage> {
        let now = self.observation.now;
        let instance_id = instance.id();
        let config = &rollout.record.config;
        let target = daemon.task_definition.as_str();
        let step = previous
            .and_then(|p| p.record.rollout.clone())
            .filter(|r| r.rollout_id == rollout.record.id);
        let fresh = |kind: RolloutStep| SlotRollout {
            rollout_id: rollout.record.id.clone(),
            step: kind,
            since: now,
            new_task_arn: None,
            failures: 0,
            last_failure: None,
            gap: false,
        };
        let (new, old): (Vec<&Task>, Vec<&Task>) =
            live.into_iter().partition(|t| revision_of(t) == target);
        // Never more than two copies: one of each revision at most.
        let best_new = self.keep_one(daemon, instance_id, new);
        let best_old = self.keep_one(daemon, instance_id, old);
        let mut next = step.clone();
        let mut candidate = None;
        let coverage = match (best_old, best_new) {
            (None, None) => {
                self.tally(daemon, step.as_ref(), instance_id);
                return None;
            }
            (None, Some(new)) => {
                // A copy on the target that this rollout did not surge (a restart, an instance
                // that joined) is watched like a surge: done once it has been up long enough.
                let mut current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                current.new_task_arn = None;
                match current.step {
                    // The new copy is alone (stopFirst, or the old copy died meanwhile): the
                    // instance is done only once it has been up for minHealthySeconds, so a
                    // revision that never runs trips the breaker instead of passing.
                    RolloutStep::Surging
                    | RolloutStep::Settling
                    | RolloutStep::GapStopping
                    | RolloutStep::Failed => {
                        if is_up(new, daemon) {
                            let since = match current.step {
                                RolloutStep::Settling => current.since,
                                _ if !daemon.has_health_check => new
                                    .started_at
                                    .filter(|started| *started <= now)
                                    .unwrap_or(now),
                                _ => now,
                            };
                            let settle = Duration::seconds(i64::from(config.min_healthy_seconds));
                            if now - since >= settle {
                                current.step = RolloutStep::Done;
                                current.since = now;
                            } else if current.step != RolloutStep::Failed {
                                current.step = RolloutStep::Settling;
                                current.since = since;
                                self.wake_at(since + settle);
                            } else {
                                self.wake_at(since + settle);
                            }
                        } else if current.step != RolloutStep::Failed {
                            current.step = RolloutStep::Surging;
                        }
                    }
                    RolloutStep::Done => {}
                }
                next = Some(current);
                self.track_keeper(daemon, instance_id, previous, new, next.clone());
                if is_up(new, daemon) {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
            (Some(old), None) => {
                match step.as_ref().map(|s| s.step) {
                    None => candidate = Some(false),
                    Some(RolloutStep::Failed) => {
                        let due = step.as_ref().is_some_and(|s| {
                            s.since + Duration::seconds(FAILED_RETRY_SECONDS) <= now
                        });
                        if due {
                            candidate = Some(true);
                        } else if let Some(s) = &step {
                            self.wake_at(s.since + Duration::seconds(FAILED_RETRY_SECONDS));
                        }
                    }
                    Some(RolloutStep::Surging | RolloutStep::Settling) => {
                        let current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                        match current.new_task_arn.as_deref() {
                            Some(arn) => {
                                let reason = self.task_by_arn(arn).map_or_else(
                                    || "the new copy is no longer known to ECS".to_string(),
                                    stop_reason,
                                );
                                next = Some(fail(
                                    current,
                                    now,
                                    format!("the new copy stopped before it was healthy: {reason}"),
                                ));
                            }
                            None if current.since + Duration::seconds(CLAIM_GRACE_SECONDS)
                                <= now =>
                            {
                                // A claim whose start never showed a task: try this instance again.
                                next = None;
                                candidate = Some(false);
                            }
                            None => {
                                self.wake_at(current.since + Duration::seconds(CLAIM_GRACE_SECONDS))
                            }
                        }
                    }
                    Some(RolloutStep::GapStopping) => {
                        if old.desired_status != TaskStatus::Stopped {
                            self.push(Action::Stop {
                                task_arn: old.arn.clone(),
                                instance_id: instance_id.into(),
                                daemon: daemon.name.clone(),
                                reason: format!(
                                    "ecs-daemons: no room for {target} next to this copy; stopping it first (surgeFallback stopFirst)"
                                ),
                            });
                        }
                    }
                    Some(RolloutStep::Done) => {
                        let current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Done));
                        next = Some(fail(
                            current,
                            now,
                            "the new copy stopped after the instance was done".into(),
                        ));
                    }
                }
                self.track_keeper(daemon, instance_id, previous, old, next.clone());
                if is_up(old, daemon) {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
            (Some(old), Some(new)) => {
                let either_up = is_up(old, daemon) || is_up(new, daemon);
                let kind = step.as_ref().map(|s| s.step);
                if kind == Some(RolloutStep::Failed) {
                    self.push(Action::Stop {
                        task_arn: new.arn.clone(),
                        instance_id: instance_id.into(),
                        daemon: daemon.name.clone(),
                        reason: format!(
                            "ecs-daemons: the rollout to {target} failed on this instance"
                        ),
                    });
                    self.track_keeper(daemon, instance_id, previous, old, next.clone());
                } else if kind == Some(RolloutStep::Done) {
                    // Done already (an earlier stop of the old copy did not go through): stop it now.
                    self.push(Action::Stop {
                        task_arn: old.arn.clone(),
                        instance_id: instance_id.into(),
                        daemon: daemon.name.clone(),
                        reason: format!("ecs-daemons: replaced by {target}"),
                    });
                    self.track_keeper(daemon, instance_id, previous, new, next.clone());
                } else if is_up(new, daemon) {
                    let since = match &step {
                        Some(s) if matches!(s.step, RolloutStep::Settling | RolloutStep::Done) => {
                            s.since
                        }
                        // Up since ECS says it started (RUNNING), however late the news came;
                        // a health-checked copy counts from when it was seen HEALTHY.
                        Some(_) if !daemon.has_health_check => new
                            .started_at
                            .filter(|started| *started <= now)
                            .unwrap_or(now),
                        Some(_) => now,
                        // A copy found, not started here (adopted): its own start time counts.
                        None => new.started_at.unwrap_or(now),
                    };
                    let mut settling = step.clone().unwrap_or_else(|| fresh(RolloutStep::Settling));
                    settling.new_task_arn = Some(new.arn.clone());
                    if now - since >= Duration::seconds(i64::from(config.min_healthy_seconds)) {
                        self.push(Action::Stop {
                            task_arn: old.arn.clone(),
                            instance_id: instance_id.into(),
                            daemon: daemon.name.clone(),
                            reason: format!(
                                "ecs-daemons: replaced by {target}, healthy for {}s",
                                (now - since).num_seconds()
                            ),
                        });
                        settling.step = RolloutStep::Done;
                        settling.since = now;
                        settling.new_task_arn = None;
                        next = Some(settling);
                        self.track_keeper(daemon, instance_id, previous, new, next.clone());
                    } else {
                        settling.step = RolloutStep::Settling;
                        settling.since = since;
                        self.wake_at(
                            since + Duration::seconds(i64::from(config.min_healthy_seconds)),
                        );
                        next = Some(settling);
                        self.track_keeper(daemon, instance_id, previous, old, next.clone());
                    }
                } else {
                    let mut surging = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                    surging.step = RolloutStep::Surging;
                    surging.new_task_arn = Some(new.arn.clone());
                    next = Some(surging);
                    self.track_keeper(daemon, instance_id, previous, old, next.clone());
                }
                if either_up {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
        };
        self.tally(daemon, next.as_ref(), instance_id);
        if let Some(retry) = candidate {
            let tally = self.tallies.entry(daemon.name.clone()).or_default();
            tally.candidates.push((instance.arn.clone(), retry));
        }
        Some(coverage)
    }

    fn tally(&mut self, daemon: &DaemonView, step: Option<&SlotRollout>, instance_id: &str) {
        let tally = self.tallies.entry(daemon.name.clone()).or_default();
        let counts = &mut tally.counts;
        counts.total += 1;
        match step.map(|s| s.step) {
            None => counts.pending += 1,
            Some(RolloutStep::Surging | RolloutStep::GapStopping) => counts.surging += 1,
            Some(RolloutStep::Settling) => counts.settling += 1,
            Some(RolloutStep::Done) => counts.done += 1,
            Some(RolloutStep::Failed) => counts.failed += 1,
        }
        if let Some(step) = step {
            counts.failures += step.failures;
            counts.gaps += u32::from(step.gap);
            if let Some(reason) = &step.last_failure {
                tally.failures.push(RolloutFailure {
                    instance_id: instance_id.into(),
                    reason: reason.clone(),
                    at: step.since,
                });
            }
        }
    }

    /// Full reconciles only: trip the breaker, finish, or start the next surges of each rollout.
    fn advance_rollouts(&mut self) {
        let now = self.observation.now;
        // Rollouts left in progress that the spec no longer names were replaced.
        for stale in &self.observation.rollouts {
            let active = self
                .daemons
                .iter()
                .position(|d| d.name == stale.record.daemon)
                .and_then(|index| self.rollouts[index])
                .map(|r| r.record.id.as_str());
            if stale.record.state == RolloutState::InProgress
                && active != Some(stale.record.id.as_str())
                && stale.version > 0
            {
                let mut ended = stale.record.clone();
                ended.state = RolloutState::Superseded;
                ended.reason = Some(match active {
                    Some(id) => format!("replaced by rollout {id}"),
                    None => "no longer the daemon's active rollout".into(),
                });
                ended.finished_at = Some(now);
                ended.updated_at = now;
                self.push(Action::RecordRollout {
                    rollout: Box::new(ended),
                    expected: stale.expected(),
                });
            }
        }
        for daemon in self.daemons.clone() {
            let Some(rollout) = self.rollout_of(daemon) else {
                continue;
            };
            let Tally {
                mut counts,
                mut candidates,
                failures,
            } = self.tallies.remove(&daemon.name).unwrap_or_default();
            let config = &rollout.record.config;
            let target = daemon.task_definition.clone();
            counts.threshold = config.failure_threshold.of(counts.total as usize) as u32;
            let mut record = rollout.record.clone();
            record.updated_at = now;
            for failure in failures {
                if !record
                    .failures
                    .iter()
                    .any(|f| f.instance_id == failure.instance_id && f.at == failure.at)
                {
                    record.failures.push(failure);
                }
            }
            record.failures.sort_by_key(|f| f.at);
            let excess = record.failures.len().saturating_sub(Rollout::FAILURES_KEPT);
            record.failures.drain(..excess);

            if counts.failures >= counts.threshold {
                let last = record.failures.last().map_or_else(String::new, |f| {
                    format!("; last on {}: {}", f.instance_id, f.reason)
                });
                record.state = RolloutState::Failed;
                record.reason = Some(format!(
                    "the circuit breaker tripped: {} failure(s) reached the threshold of {}{last}",
                    counts.failures, counts.threshold
                ));
                record.finished_at = Some(now);
                record.counts = counts.clone();
                // Restarts this plan meant on the failing revision are dropped: it must not
                // spread further; the instances get the good revision from the next reconcile.
                self.plan.actions.retain(|action| {
                    !matches!(action, Action::Start { task_definition, claim, .. }
                        if *task_definition == target && claim.daemon == daemon.name)
                });
                let back = daemon
                    .last_good
                    .clone()
                    .filter(|good| *good != target && config.auto_rollback);
                let switch = match back {
                    Some(good) => {
                        let rollback = Rollout {
                            cluster: record.cluster.clone(),
                            daemon: daemon.name.clone(),
                            id: Rollout::new_id(now, &format!("{}auto", record.id)),
                            kind: RolloutKind::AutoRollback,
                            from_task_definition: Some(target.clone()),
                            to_task_definition: good.clone(),
                            config: config.clone(),
                            state: RolloutState::InProgress,
                            counts: RolloutCounts::default(),
                            failures: Vec::new(),
                            reason: Some(format!("the circuit breaker tripped on {target}")),
                            started_at: now,
                            updated_at: now,
                            finished_at: None,
                        };
                        Action::SwitchRevision {
                            daemon: daemon.name.clone(),
                            task_definition: good,
                            active_rollout: Some(rollback.id.clone()),
                            last_good: daemon.last_good.clone(),
                            new_rollout: Some(Box::new(rollback)),
                        }
                    }
                    // No rollback: instances stay where they are, and instances that join get
                    // the last good revision rather than the one that just failed.
                    None => Action::SwitchRevision {
                        daemon: daemon.name.clone(),
                        task_definition: daemon.last_good.clone().unwrap_or_else(|| target.clone()),
                        active_rollout: None,
                        last_good: daemon.last_good.clone(),
                        new_rollout: None,
                    },
                };
                self.push(switch);
                self.plan.rollouts.insert(daemon.name.clone(), counts);
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
                continue;
            }
            if counts.done == counts.total {
                record.state = RolloutState::Succeeded;
                record.finished_at = Some(now);
                record.counts = counts.clone();
                self.push(Action::SwitchRevision {
                    daemon: daemon.name.clone(),
                    task_definition: target.clone(),
                    active_rollout: None,
                    last_good: Some(target.clone()),
                    new_rollout: None,
                });
                self.plan.rollouts.insert(daemon.name.clone(), counts);
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
                continue;
            }
            let in_flight = (counts.surging + counts.settling) as usize;
            let mut budget = config
                .max_parallel
                .of(counts.total as usize)
                .saturating_sub(in_flight);
            if let Some(canary) = config.canary {
                // Until the canary batch is done, only canaries run (a failed one is replaced).
                let canary = (canary as usize).min(counts.total as usize);
                if (counts.done as usize) < canary {
                    budget = budget.min(canary.saturating_sub(counts.done as usize + in_flight));
                }
            }
            // Fresh instances first, in a stable order; failed ones retried after them.
            candidates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            self.plan.rollout_queues.insert(
                daemon.name.clone(),
                RolloutQueue {
                    order: candidates.iter().map(|(arn, _)| arn.clone()).collect(),
                    now: budget.min(candidates.len()),
                    max_parallel: config.max_parallel.of(counts.total as usize),
                },
            );
            for (instance_arn, retry) in candidates.into_iter().take(budget) {
                let instance_id = resource_id(&instance_arn).to_string();
                let previous = self.slot(daemon, &instance_id);
                let mut claim = self.new_slot(daemon, &instance_id, previous);
                let failures = claim
                    .rollout
                    .as_ref()
                    .filter(|r| r.rollout_id == record.id)
                    .map_or(0, |r| r.failures);
                claim.rollout = Some(SlotRollout {
                    rollout_id: record.id.clone(),
                    step: RolloutStep::Surging,
                    since: now,
                    new_task_arn: None,
                    failures,
                    last_failure: None,
                    gap: false,
                });
                if retry {
                    counts.failed -= 1;
                } else {
                    counts.pending -= 1;
                }
                counts.surging += 1;
                self.push(Action::Start {
                    instance_arn,
                    task_definition: target.clone(),
                    claim,
                    expected: previous.map_or(Expected::Absent, Versioned::expected),
                    surge: Some(config.surge_fallback),
                });
            }
            // New copies report RUNNING on their own time: look again soon while any are on
            // the way. Settling copies wake the check at their own moment (minHealthySeconds).
            if counts.surging > 0 {
                self.wake_at(now + Duration::seconds(ROLLOUT_POLL_SECONDS));
            }
            record.counts = counts.clone();
            self.plan.rollouts.insert(daemon.name.clone(), counts);
            if record != rollout.record {
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
            }
        }
    }

    /// Stops every live copy of a daemon on an instance and marks the slot stopping.
    fn stop_all(&mut self, daemon: &DaemonView, instance_id: &str, reason: &str) {
        let previous = self.slot(daemon, instance_id);
        let live = self.live_tasks(daemon, instance_id);
        for task in &live {
            self.push(Action::Stop {
                task_arn: task.arn.clone(),
                instance_id: instance_id.into(),
                daemon: daemon.name.clone(),
                reason: reason.into(),
            });
        }
        if let Some(p) = previous {
            if live.is_empty() {
                // Nothing left to stop: the slot has done its job.
                self.push(Action::DeleteSlot {
                    key: p.record.key_of(),
                    version: p.version,
                });
            } else if p.record.state != SlotState::Stopping {
                let mut slot = self.new_slot(daemon, instance_id, previous);
                slot.state = SlotState::Stopping;
                self.record(slot, previous);
            }
        }
    }

    fn draining(&mut self, instance: &'a ContainerInstance) {
        let instance_id = instance.id();
        self.current = self
            .by_instance
            .get(instance_id)
            .map(|items| (instance_id, items));
        if is_ready(instance) {
            self.push(Action::ClearReady {
                instance_arn: instance.arn.clone(),
                reason: "instance is DRAINING".into(),
            });
        }
        let (with_copies, without): (Vec<&DaemonView>, Vec<&DaemonView>) =
            self.daemons.iter().copied().partition(|d| {
                self.daemon_tasks(d, instance_id)
                    .iter()
                    .any(|t| occupies(t))
            });
        for daemon in without {
            if let Some(slot) = self.slot(daemon, instance_id) {
                self.push(Action::DeleteSlot {
                    key: slot.record.key_of(),
                    version: slot.version,
                });
            }
        }
        if with_copies.is_empty() {
            return;
        }
        let others = match self.observation.drain_census.get(instance_id) {
            Some(&others) => others as i64,
            None => {
                // The counts only rule a stop out; stopping takes the fresh read.
                let daemon_tasks_here = self.items(instance_id).map_or(0, |items| {
                    items.tasks.iter().filter(|(_, _, t)| occupies(t)).count()
                }) as i64;
                let counted = i64::from(instance.running_tasks) + i64::from(instance.pending_tasks)
                    - daemon_tasks_here;
                if counted <= 0 {
                    self.plan.drain_checks.push(instance.arn.clone());
                    return;
                }
                counted
            }
        };
        if others > 0 {
            for daemon in with_copies {
                self.trouble(
                    daemon,
                    instance_id,
                    "DRAINING",
                    format!("kept running until {others} other task(s) leave the instance"),
                );
            }
            return;
        }
        // Reverse start order: only the latest-starting daemons still present stop now.
        let last_order = with_copies.iter().map(|d| d.start_order).max();
        for daemon in with_copies
            .into_iter()
            .filter(|d| Some(d.start_order) == last_order)
        {
            self.stop_all(
                daemon,
                instance_id,
                "ecs-daemons: drain-last, no other task left on the DRAINING instance",
            );
        }
    }

    fn active(&mut self, instance: &'a ContainerInstance) {
        let instance_id = instance.id();
        self.current = self
            .by_instance
            .get(instance_id)
            .map(|items| (instance_id, items));
        let provider = instance.capacity_provider.as_deref();
        let mut all_up = true;
        let mut settled_below = true;
        let mut order_settled: Option<(i32, bool)> = None;
        for daemon in self.daemons.clone() {
            let targeted =
                provider.is_some_and(|p| daemon.capacity_providers.iter().any(|c| c == p));
            if !targeted {
                let reason = format!(
                    "ecs-daemons: capacity provider {} is not targeted by daemon {}",
                    provider.unwrap_or("(none)"),
                    daemon.name
                );
                self.stop_all(daemon, instance_id, &reason);
                continue;
            }
            // Daemons of one start order start together; the next order waits for them.
            if let Some((order, settled)) = order_settled {
                if order != daemon.start_order {
                    settled_below = settled_below && settled;
                    order_settled = None;
                }
            }
            let outcome = self.cover(daemon, instance, settled_below);
            let settled = matches!(outcome, Coverage::Up | Coverage::CrashLooping);
            all_up &= outcome == Coverage::Up;
            order_settled = Some(match order_settled {
                Some((order, so_far)) => (order, so_far && settled),
                None => (daemon.start_order, settled),
            });
        }
        match (all_up, is_ready(instance)) {
            (true, false) => self.push(Action::SetReady {
                instance_arn: instance.arn.clone(),
            }),
            (false, true) => self.push(Action::ClearReady {
                instance_arn: instance.arn.clone(),
                reason: "a daemon of the instance is not running".into(),
            }),
            _ => {}
        }
    }

    fn clean_up(&mut self) {
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
        // The map's order is arbitrary: sort so the same observation gives the same plan.
        actions.sort_by(|a, b| action_key(a).cmp(&action_key(b)));
        self.plan.actions.extend(actions);
    }

    fn run(mut self) -> Plan {
        if self.daemons.is_empty() {
            return self.plan;
        }
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

    fn plan_instances_and_rollouts(&mut self) {
        let observation = self.observation;
        for instance in &observation.instances {
            match (&instance.status, instance.agent_connected) {
                (InstanceStatus::Active, true) => self.active(instance),
                (InstanceStatus::Draining, _) => self.draining(instance),
                // Disconnected agents and instances on their way in or out: nothing can be placed.
                _ => {}
            }
        }
        if self.observation.scope == Scope::Full {
            self.clean_up();
            self.advance_rollouts();
        }
        self.plan.actions.sort_by_key(Action::rank);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coverage {
    Up,
    OnItsWay,
    Missing,
    CrashLooping,
}

/// Plans one cluster (or some of its instances).
pub fn plan(observation: &Observation) -> Plan {
    let daemons = planning_order(observation);
    let groups = group(observation, &daemons);
    Planner::new(observation, daemons, &groups).run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CLUSTER: &str = "prod";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000, 0).single().unwrap()
    }

    fn instance(id: &str, provider: &str) -> ContainerInstance {
        ContainerInstance {
            arn: format!("arn:aws:ecs:us-east-1:1:container-instance/{CLUSTER}/{id}"),
            ec2_instance_id: None,
            status: InstanceStatus::Active,
            status_reason: None,
            agent_connected: true,
            capacity_provider: Some(provider.into()),
            registered: Default::default(),
            remaining: Default::default(),
            running_tasks: 0,
            pending_tasks: 0,
            attributes: Default::default(),
            version: 1,
            registered_at: None,
        }
    }

    fn ready(mut instance: ContainerInstance) -> ContainerInstance {
        instance
            .attributes
            .insert(READY_ATTRIBUTE.into(), Some("true".into()));
        instance
    }

    fn daemon(name: &str, order: i32) -> DaemonView {
        DaemonView {
            name: name.into(),
            task_definition: format!("{name}:1"),
            capacity_providers: vec!["general".into()],
            start_order: order,
            has_health_check: false,
            restart: RestartPolicy::default(),
            active_rollout: None,
            last_good: None,
        }
    }

    fn task(id: &str, daemon: &str, instance: &str, status: TaskStatus) -> Task {
        Task {
            arn: format!("arn:aws:ecs:us-east-1:1:task/{CLUSTER}/{id}"),
            task_definition_arn: format!("arn:aws:ecs:us-east-1:1:task-definition/{daemon}:1"),
            container_instance_arn: Some(format!(
                "arn:aws:ecs:us-east-1:1:container-instance/{CLUSTER}/{instance}"
            )),
            desired_status: if status.is_terminal() {
                TaskStatus::Stopped
            } else {
                TaskStatus::Running
            },
            last_status: status,
            health: HealthStatus::Unknown,
            group: Some(daemon_group(daemon)),
            started_by: Some("ecs-daemons".into()),
            stop_code: None,
            stopped_reason: None,
            version: 2,
            created_at: Some(now() - Duration::seconds(600)),
            started_at: Some(now() - Duration::seconds(590)),
            stopped_at: None,
            tags: Default::default(),
        }
    }

    fn slot(
        daemon: &str,
        instance: &str,
        state: SlotState,
        task: Option<&Task>,
        version: u64,
    ) -> Versioned<Slot> {
        Versioned {
            record: Slot {
                cluster: CLUSTER.into(),
                daemon: daemon.into(),
                instance_id: instance.into(),
                state,
                task_arn: task.map(|t| t.arn.clone()),
                task_definition: Some(format!("{daemon}:1")),
                claimed_by: None,
                task_version: task.map_or(0, |t| t.version),
                consecutive_failures: 0,
                last_stop_reason: None,
                retry_after: None,
                rollout: None,
                updated_at: now() - Duration::seconds(300),
            },
            version,
        }
    }

    fn observe(
        daemons: Vec<DaemonView>,
        instances: Vec<ContainerInstance>,
        tasks: Vec<Task>,
    ) -> Observation {
        Observation {
            cluster: CLUSTER.into(),
            now: now(),
            scope: Scope::Full,
            daemons,
            instances,
            tasks,
            slots: vec![],
            rollouts: vec![],
            specs: vec![],
            drain_census: BTreeMap::new(),
        }
    }

    fn starts(plan: &Plan) -> Vec<(String, String)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Start {
                    instance_arn,
                    task_definition,
                    ..
                } => Some((
                    resource_id(instance_arn).to_string(),
                    task_definition.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn stops(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop { task_arn, .. } => Some(resource_id(task_arn).to_string()),
                _ => None,
            })
            .collect()
    }

    fn has(plan: &Plan, wanted: fn(&Action) -> bool) -> bool {
        plan.actions.iter().any(wanted)
    }

    #[test]
    fn a_new_instance_gets_its_daemon_claimed_and_started() {
        let plan = plan(&observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![],
        ));
        assert_eq!(
            starts(&plan),
            vec![("i1".to_string(), "agent:1".to_string())]
        );
        match &plan.actions[0] {
            Action::Start {
                expected, claim, ..
            } => {
                assert_eq!(*expected, Expected::Absent);
                assert_eq!(claim.state, SlotState::Claimed);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !has(&plan, |a| matches!(a, Action::SetReady { .. })),
            "not ready before the daemon runs"
        );
        assert_eq!(plan.coverage["agent"].missing, 1);
    }

    #[test]
    fn a_running_copy_is_adopted_and_the_instance_marked_ready() {
        let running = task("t1", "agent", "i1", TaskStatus::Running);
        let plan = plan(&observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![running],
        ));
        assert!(starts(&plan).is_empty());
        match &plan.actions[..] {
            [Action::RecordSlot {
                slot,
                expected: Expected::Absent,
            }, Action::SetReady { .. }] => {
                assert_eq!(slot.state, SlotState::Running);
                assert!(slot.task_arn.as_deref().unwrap().ends_with("/t1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.coverage["agent"].covered, 1);
    }

    #[test]
    fn nothing_to_do_at_rest() {
        let running = task("t1", "agent", "i1", TaskStatus::Running);
        let mut observation = observe(
            vec![daemon("agent", 0)],
            vec![ready(instance("i1", "general"))],
            vec![running.clone()],
        );
        observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&running), 3)];
        assert_eq!(plan(&observation).actions, vec![]);
    }

    #[test]
    fn daemons_start_in_start_order_and_readiness_waits_for_all() {
        let daemons = vec![daemon("agent", 0), daemon("logs", 10)];
        let first = plan(&observe(
            daemons.clone(),
            vec![instance("i1", "general")],
            vec![],
        ));
        assert_eq!(
            starts(&first),
            vec![("i1".to_string(), "agent:1".to_string())]
        );

        let pending = task("t1", "agent", "i1", TaskStatus::Pending);
        let waiting = plan(&observe(
            daemons.clone(),
            vec![instance("i1", "general")],
            vec![pending],
        ));
        assert!(starts(&waiting).is_empty(), "logs waits for agent to run");

        let agent = task("t1", "agent", "i1", TaskStatus::Running);
        let second = plan(&observe(
            daemons.clone(),
            vec![instance("i1", "general")],
            vec![agent.clone()],
        ));
        assert_eq!(
            starts(&second),
            vec![("i1".to_string(), "logs:1".to_string())]
        );
        assert!(!has(&second, |a| matches!(a, Action::SetReady { .. })));

        let logs = task("t2", "logs", "i1", TaskStatus::Running);
        let done = plan(&observe(
            daemons,
            vec![instance("i1", "general")],
            vec![agent, logs],
        ));
        assert!(has(&done, |a| matches!(a, Action::SetReady { .. })));
    }

    #[test]
    fn a_health_checked_daemon_must_be_healthy_for_readiness() {
        let checked = DaemonView {
            has_health_check: true,
            ..daemon("agent", 0)
        };
        let mut running = task("t1", "agent", "i1", TaskStatus::Running);
        let unknown = plan(&observe(
            vec![checked.clone()],
            vec![instance("i1", "general")],
            vec![running.clone()],
        ));
        assert!(!has(&unknown, |a| matches!(a, Action::SetReady { .. })));
        assert_eq!(unknown.coverage["agent"].starting, 1);
        running.health = HealthStatus::Healthy;
        let healthy = plan(&observe(
            vec![checked],
            vec![instance("i1", "general")],
            vec![running],
        ));
        assert!(has(&healthy, |a| matches!(a, Action::SetReady { .. })));
    }

    #[test]
    fn extra_copies_are_stopped_keeping_the_healthiest_then_newest() {
        let mut old_healthy = task("old", "agent", "i1", TaskStatus::Running);
        old_healthy.health = HealthStatus::Healthy;
        let mut newer = task("new", "agent", "i1", TaskStatus::Running);
        newer.started_at = Some(now());
        let pending = task("pending", "agent", "i1", TaskStatus::Pending);
        let plan = plan(&observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![newer.clone(), pending, old_healthy],
        ));
        let mut stopped = stops(&plan);
        stopped.sort();
        assert_eq!(stopped, vec!["new", "pending"]);
        assert_eq!(plan.coverage["agent"].duplicates, 2);

        let mut other = task("other", "agent", "i1", TaskStatus::Running);
        other.started_at = Some(now() - Duration::seconds(1000));
        let newest_wins = super::plan(&observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![other, newer],
        ));
        assert_eq!(stops(&newest_wins), vec!["other"]);
    }

    #[test]
    fn copies_on_instances_no_longer_targeted_are_stopped() {
        let running = task("t1", "agent", "i1", TaskStatus::Running);
        let mut observation = observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "gpu")],
            vec![running.clone()],
        );
        observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&running), 2)];
        let plan = plan(&observation);
        assert_eq!(stops(&plan), vec!["t1"]);
        assert!(starts(&plan).is_empty());
        assert!(has(
            &plan,
            |a| matches!(a, Action::RecordSlot { slot, .. } if slot.state == SlotState::Stopping)
        ));
        match plan
            .actions
            .iter()
            .find(|a| matches!(a, Action::Stop { .. }))
        {
            Some(Action::Stop { reason, .. }) => {
                assert!(reason.contains("gpu is not targeted"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn draining_keeps_daemons_while_apps_run_then_stops_them_in_reverse_order() {
        let daemons = vec![daemon("agent", 0), daemon("logs", 10)];
        let agent = task("t1", "agent", "i1", TaskStatus::Running);
        let logs = task("t2", "logs", "i1", TaskStatus::Running);
        let mut draining = ready(instance("i1", "general"));
        draining.status = InstanceStatus::Draining;
        draining.running_tasks = 3; // two daemons + one application task

        let with_app = plan(&observe(
            daemons.clone(),
            vec![draining.clone()],
            vec![agent.clone(), logs.clone()],
        ));
        assert!(
            matches!(with_app.actions[..], [Action::ClearReady { .. }]),
            "{:?}",
            with_app.actions
        );
        assert!(with_app.coverage["agent"].trouble[0]
            .reason
            .contains("1 other task"));

        // The counts say only daemons are left: that takes a fresh read before any stop.
        draining.running_tasks = 2;
        draining.attributes.clear();
        let counted_empty = plan(&observe(
            daemons.clone(),
            vec![draining.clone()],
            vec![agent.clone(), logs.clone()],
        ));
        assert!(stops(&counted_empty).is_empty(), "no stop on counts alone");
        assert_eq!(counted_empty.drain_checks, vec![draining.arn.clone()]);
        // The fresh read finds the application still in its stop timeout: wait.
        let fresh = |instance: &ContainerInstance, tasks: Vec<Task>, others: usize| {
            let mut observation = observe(daemons.clone(), vec![instance.clone()], tasks);
            observation.drain_census.insert("i1".into(), others);
            plan(&observation)
        };
        let app_stopping = fresh(&draining, vec![agent.clone(), logs.clone()], 1);
        assert!(stops(&app_stopping).is_empty());
        assert!(app_stopping.drain_checks.is_empty());
        let apps_gone = fresh(&draining, vec![agent.clone(), logs.clone()], 0);
        assert_eq!(
            stops(&apps_gone),
            vec!["t2"],
            "the later-starting daemon stops first"
        );

        let mut logs_stopping = logs;
        logs_stopping.desired_status = TaskStatus::Stopped;
        let still_stopping = fresh(&draining, vec![agent.clone(), logs_stopping.clone()], 0);
        assert!(
            stops(&still_stopping).is_empty(),
            "agent waits until logs has really stopped"
        );

        logs_stopping.last_status = TaskStatus::Stopped;
        draining.running_tasks = 1;
        let last = fresh(&draining, vec![agent, logs_stopping], 0);
        assert_eq!(stops(&last), vec!["t1"]);
        assert!(
            starts(&last).is_empty(),
            "nothing starts on a draining instance"
        );
    }

    #[test]
    fn an_unexpected_stop_restarts_with_backoff_then_crash_loops() {
        let policy = RestartPolicy {
            max_consecutive_failures: 3,
            ..RestartPolicy::default()
        };
        let agent = DaemonView {
            restart: policy,
            ..daemon("agent", 0)
        };
        let mut dead = task("t1", "agent", "i1", TaskStatus::Stopped);
        dead.stop_code = Some("TaskFailedToStart".into());
        dead.stopped_reason = Some("ResourceInitializationError: AccessDeniedException".into());
        let mut observation = observe(
            vec![agent.clone()],
            vec![ready(instance("i1", "general"))],
            vec![dead.clone()],
        );
        observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&dead), 4)];

        // First failure: immediate restart, readiness removed meanwhile.
        let first = plan(&observation);
        assert!(matches!(first.actions[0], Action::ClearReady { .. }));
        match &first.actions[1] {
            Action::Start {
                claim, expected, ..
            } => {
                assert_eq!(*expected, Expected::Version(4));
                assert_eq!(claim.consecutive_failures, 1);
                assert_eq!(
                    claim.last_stop_reason.as_deref(),
                    Some("TaskFailedToStart: ResourceInitializationError: AccessDeniedException")
                );
            }
            other => panic!("{other:?}"),
        }

        // Second failure: wait 10 s.
        observation.slots[0].record.consecutive_failures = 1;
        let second = plan(&observation);
        assert!(starts(&second).is_empty());
        match second
            .actions
            .iter()
            .find(|a| matches!(a, Action::RecordSlot { .. }))
        {
            Some(Action::RecordSlot { slot, .. }) => {
                assert_eq!(slot.state, SlotState::Stopped);
                assert_eq!(slot.retry_after, Some(now() + Duration::seconds(10)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(second.coverage["agent"].trouble[0].state, "BACKING_OFF");

        // The backoff passed: restart.
        observation.slots[0].record.state = SlotState::Stopped;
        observation.slots[0].record.consecutive_failures = 2;
        observation.slots[0].record.retry_after = Some(now() - Duration::seconds(1));
        assert_eq!(starts(&plan(&observation)).len(), 1);

        // Third failure in a row: crash-looping, reported, not restarted.
        observation.slots[0].record.state = SlotState::Running;
        let third = plan(&observation);
        assert!(starts(&third).is_empty());
        assert!(has(
            &third,
            |a| matches!(a, Action::RecordSlot { slot, .. } if slot.state == SlotState::CrashLooping)
        ));
        assert_eq!(third.coverage["agent"].crash_looping, 1);
        assert!(third.coverage["agent"].trouble[0]
            .reason
            .contains("AccessDeniedException"));

        observation.slots[0].record.state = SlotState::CrashLooping;
        observation.slots[0].record.consecutive_failures = 3;
        assert!(starts(&plan(&observation)).is_empty(), "still not hammered");

        // A new revision gets a fresh start.
        observation.daemons[0].task_definition = "agent:2".into();
        let fixed = plan(&observation);
        assert_eq!(
            starts(&fixed),
            vec![("i1".to_string(), "agent:2".to_string())]
        );
    }

    #[test]
    fn a_claim_in_flight_is_left_alone_until_its_grace_runs_out() {
        let mut observation = observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![],
        );
        let mut claimed = slot("agent", "i1", SlotState::Claimed, None, 1);
        claimed.record.updated_at = now() - Duration::seconds(5);
        observation.slots = vec![claimed];
        let fresh = plan(&observation);
        assert!(fresh.actions.is_empty(), "{:?}", fresh.actions);
        assert_eq!(fresh.coverage["agent"].starting, 1);

        observation.slots[0].record.updated_at = now() - Duration::seconds(CLAIM_GRACE_SECONDS + 1);
        let stale = plan(&observation);
        assert!(matches!(
            &stale.actions[..],
            [Action::Start {
                expected: Expected::Version(1),
                ..
            }]
        ));
    }

    #[test]
    fn a_full_reconcile_cleans_up_gone_instances_and_undeclared_daemons() {
        let orphan = task("t9", "retired", "i1", TaskStatus::Running);
        let mut observation = observe(
            vec![daemon("agent", 0)],
            vec![instance("i1", "general")],
            vec![orphan],
        );
        observation.slots = vec![slot("agent", "i-gone", SlotState::Running, None, 7)];
        let full = plan(&observation);
        assert_eq!(stops(&full), vec!["t9"]);
        assert!(has(&full, |a| matches!(
            a,
            Action::DeleteSlot { version: 7, .. }
        )));

        observation.scope = Scope::Instances;
        let partial = plan(&observation);
        assert!(
            stops(&partial).is_empty(),
            "an event's partial view never stops what it cannot see"
        );
        assert!(!has(&partial, |a| matches!(a, Action::DeleteSlot { .. })));
    }

    #[test]
    fn disconnected_agents_and_foreign_tasks_are_left_alone() {
        let mut offline = instance("i1", "general");
        offline.agent_connected = false;
        let mut foreign = task("app", "agent", "i2", TaskStatus::Running);
        foreign.group = Some("service:checkout".into());
        let plan = plan(&observe(
            vec![daemon("agent", 0)],
            vec![offline],
            vec![foreign],
        ));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    }

    #[test]
    fn actions_are_ordered_and_planning_is_deterministic() {
        let mut draining = ready(instance("i2", "general"));
        draining.status = InstanceStatus::Draining;
        let observation = observe(
            vec![daemon("agent", 0)],
            vec![
                instance("i1", "general"),
                draining,
                instance("i3", "general"),
            ],
            vec![task("t3", "agent", "i3", TaskStatus::Running)],
        );
        let first = plan(&observation);
        assert_eq!(first, plan(&observation));
        let ranks: Vec<u8> = first.actions.iter().map(Action::rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        assert!(matches!(
            first.actions.first(),
            Some(Action::ClearReady { .. })
        ));
        assert!(matches!(
            first.actions.last(),
            Some(Action::SetReady { .. })
        ));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RestartPolicy::default();
        let waits: Vec<i64> = (1..=8).map(|n| policy.backoff(n).num_seconds()).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(policy.backoff(200).num_seconds(), 300);
    }
}
