//! The pure planner: observed instances, daemon tasks, specs and slots in; the
//! actions that bring the cluster to "exactly one running copy of every daemon
//! on every targeted instance, started first, drained last" out. No I/O: the
//! same inputs always give the same actions.
//!
//! Where each behaviour lives:
//! - `index.rs`: tasks and slots grouped per instance, daemons by position (once per plan);
//! - `planner.rs`: the planner's state and lookups, and the run (instances, rollouts, clean-ups);
//! - `steady.rs`: exactly one copy per targeted ACTIVE instance, start order, restarts, readiness;
//! - `rolling.rs`: one instance's rollout step (`next_step`, pure, table-tested), and the tally;
//! - `rollouts.rs`: the breaker, ends, automatic rollback, superseded rollouts, the next batch;
//! - `draining.rs`: drain-last on DRAINING instances.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

mod critical;
mod draining;
mod index;
mod planner;
mod rolling;
mod rollouts;
mod services;
mod steady;

use index::{group, planning_order, FastHash, Groups};
use planner::{InstanceItems, Planner, StepUpdate, Tally};

use crate::alarms::AlarmReading;
use crate::arn::resource_id;
use crate::model::{ContainerInstance, HealthStatus, InstanceStatus, Task, TaskStatus};
use crate::placement::services::Letter;
use crate::rollout::{Rollout, RolloutFailure};
use crate::rollout::{
    RolloutCounts, RolloutKind, RolloutState, RolloutStep, SlotRollout, SurgeFallback,
};
use crate::slot::{Slot, SlotState};
use crate::spec::{DaemonSpec, RestartPolicy};
use crate::store::{Expected, ItemKey, Versioned};

/// How one daemon stands on one instance, as the planner counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coverage {
    Up,
    OnItsWay,
    Missing,
    CrashLooping,
}

/// The custom attribute application services place on.
pub const READY_ATTRIBUTE: &str = "ecs-daemons.ready";
/// A claim whose StartTask never showed a task is taken over after this long.
pub const CLAIM_GRACE_SECONDS: i64 = 60;
/// A copy requested from a DAEMON service (its slot attribute set) is requested again after
/// this long without a task: the scheduler's reaction time is undocumented (tens of seconds
/// seen, minutes while another instance drains, containers-roadmap #856), and a request
/// still pending must keep its `maxParallel` place.
pub const SERVICE_REQUEST_GRACE_SECONDS: i64 = 300;

/// How long a start of `daemon` on an instance of `provider` may take to show a task.
pub(crate) fn claim_grace(daemon: &DaemonView, provider: Option<&str>) -> Duration {
    let services = daemon.services.as_ref().is_some_and(|s| s.covers(provider));
    Duration::seconds(if services {
        SERVICE_REQUEST_GRACE_SECONDS
    } else {
        CLAIM_GRACE_SECONDS
    })
}
/// The task `group` prefix of every daemon copy (`daemon:<name>`).
pub const GROUP_PREFIX: &str = "daemon:";

/// The task `group` of a daemon's copies.
pub fn daemon_group(daemon: &str) -> String {
    format!("{GROUP_PREFIX}{daemon}")
}

/// A deployed daemon as the planner needs it: the spec plus facts of its task definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonView {
    pub name: String,
    /// How its copies are launched (tags, ECS Exec, environment per provider).
    pub launch: crate::launch::LaunchOptions,
    /// Pinned `family:revision`.
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    pub start_order: i32,
    pub has_health_check: bool,
    /// Health-check facts of other revisions its copies may run (`DaemonSpec`).
    pub revision_health_checks: BTreeMap<String, bool>,
    /// How long a copy may run without turning HEALTHY before it is replaced.
    pub unhealthy_grace: Duration,
    pub restart: RestartPolicy,
    /// The rollout in flight (its record is in `Observation::rollouts`).
    pub active_rollout: Option<String>,
    /// The last revision whose rollout succeeded: where the breaker rolls back to.
    pub last_good: Option<String>,
    /// Where the daemon runs as DAEMON services instead of standalone copies.
    pub services: Option<crate::placement::services::ServicePlacement>,
    /// Which instances of its providers it targets (none: all).
    pub instance_filter: Option<crate::instance_filter::InstanceFilter>,
    /// A critical daemon: how many of its instances may be draining at once.
    pub critical_drains: Option<crate::rollout::Amount>,
}

impl DaemonView {
    /// Whether copies of `revision` report health (the declared revision's fact if unknown).
    pub fn checks_health(&self, revision: &str) -> bool {
        self.revision_health_checks
            .get(revision)
            .copied()
            .unwrap_or(self.has_health_check)
    }

    /// Whether the daemon is meant to run on the instance: one of its capacity providers,
    /// and its `instanceFilter` (if any) matches the instance's attributes.
    pub fn targets(&self, instance: &ContainerInstance) -> bool {
        instance
            .capacity_provider
            .as_deref()
            .is_some_and(|p| self.capacity_providers.iter().any(|c| c == p))
            && self
                .instance_filter
                .as_ref()
                .is_none_or(|filter| filter.matches(instance))
    }
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
    /// Undeployed daemons (not planned: their copies, slots and slot attributes are
    /// cleaned up like an unknown daemon's; their DAEMON services deleted by the engine).
    pub retired: Vec<Versioned<DaemonSpec>>,
    /// Per DRAINING instance id, read fresh for drain-last ([`Plan::drain_checks`]): how many
    /// tasks that are not ours have not stopped yet, stopping ones included.
    pub drain_census: BTreeMap<String, usize>,
    /// The alarms of the rollouts in progress, read once per full reconcile.
    pub alarms: AlarmReading,
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
    /// Set an instance where a critical daemon crash-loops DRAINING (ECS moves its
    /// applications away), then write the slot that says so.
    DrainForCritical {
        instance_arn: String,
        daemon: String,
        reason: String,
        slot: Slot,
        expected: Expected,
    },
    /// Take a letter no copy answers and no start wants out of an instance's slot attribute
    /// (services placement), so the DAEMON service does not start it later.
    WithdrawRequest {
        instance_arn: String,
        daemon: String,
        letter: Letter,
        reason: String,
    },
}

impl Action {
    fn rank(&self) -> u8 {
        match self {
            Self::ClearReady { .. } | Self::DrainForCritical { .. } => 0,
            Self::RecordSlot { .. } => 1,
            Self::DeleteSlot { .. } => 2,
            Self::Stop { .. } | Self::WithdrawRequest { .. } => 3,
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
    /// DAEMON-service copies ECS stopped on a DRAINING instance while other tasks still ran
    /// there (its drain order defects), each reported once.
    pub early_stops: Vec<EarlyStop>,
}

/// A daemon copy ECS stopped before the applications of its DRAINING instance left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStop {
    pub daemon: String,
    pub instance_id: String,
    pub task_arn: String,
    /// Other tasks still on the instance when it was seen.
    pub others: i64,
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

/// RUNNING, and HEALTHY where its own revision has a health check.
fn is_up(task: &Task, daemon: &DaemonView) -> bool {
    task.last_status == TaskStatus::Running
        && (!daemon.checks_health(revision_of(task)) || task.health == HealthStatus::Healthy)
}

/// Higher is better: running, healthy, the declared revision, newest.
/// Whether a copy exists the way the instance's capacity provider places the daemon: from
/// its DAEMON services where they cover the provider, else standalone (a copy of the other
/// kind is a placement change's old copy).
fn placed_right(task: &Task, daemon: &DaemonView, provider: Option<&str>) -> bool {
    let on_services = daemon.services.as_ref().is_some_and(|s| s.covers(provider));
    let from_service = task
        .group
        .as_deref()
        .and_then(crate::placement::services::daemon_of_group)
        .is_some();
    on_services == from_service
}

type KeeperRank = (u8, u8, bool, bool, Option<DateTime<Utc>>, String);

fn keeper_rank(task: &Task, daemon: &DaemonView, provider: Option<&str>) -> KeeperRank {
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
        placed_right(task, daemon, provider),
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

/// Plans one cluster (or some of its instances).
pub fn plan(observation: &Observation) -> Plan {
    let daemons = planning_order(observation);
    let groups = group(observation, &daemons);
    Planner::new(observation, daemons, &groups).run()
}

#[cfg(test)]
mod tests;
