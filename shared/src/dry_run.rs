//! See before you move: what a deploy or rollback would do, computed by the planner that
//! runs the real one, with nothing changed. The engine observes the cluster as it would be with
//! the new spec and rollout recorded (`Engine::observe_cluster_as`), the real [`plan`] decides
//! the first reconcile, and its rollout queue gives the batch order; this module turns that
//! into the answer: instances per capacity provider, room for a second copy and what
//! `surgeFallback` would do without it, batches, expected wall time and ECS calls.
//!
//! [`plan`]: crate::plan::plan

use std::collections::BTreeMap;

use serde::Serialize;

use crate::arn::resource_id;
use crate::ecs::{DESCRIBE_BATCH, START_TASK_MAX_INSTANCES};
use crate::model::{ContainerInstance, InstanceStatus};
use crate::pacing::Pacing;
use crate::plan::{revision_of, Action, Observation, Plan};
use crate::rollout::{RolloutConfig, SurgeFallback};

/// Assumed time from StartTask to RUNNING when no copy of the daemon has started yet.
pub const DEFAULT_START_SECONDS: f64 = 20.0;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunAnswer {
    pub dry_run: bool,
    pub cluster: String,
    pub daemon: String,
    pub task_definition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_task_definition: Option<String>,
    /// What a real run would record: `created`, `updated`, `unchanged`, `rollout`, `rollback`.
    pub would_record: &'static str,
    /// The real run's warnings (its errors are answered as errors, exactly as it would).
    pub warnings: Vec<String>,
    /// Targeted instances per capacity provider.
    pub targeted: BTreeMap<String, usize>,
    pub instances: Vec<InstancePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
    /// The first reconcile, as the planner decides it (the real run does exactly this first).
    pub first_step: Vec<PlannedStep>,
    pub expected_wall_seconds: u64,
    pub ecs_calls: CallEstimate,
    /// How the figures were estimated.
    pub assumptions: Vec<String>,
    /// On Managed Instances providers: what would be asked of ECS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedPreview>,
}

/// What a deploy would ask of ECS on Managed Instances providers, and how ECS would roll it out.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedPreview {
    /// `CreateDaemon`, `UpdateDaemon`, or none when unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<&'static str>,
    /// The exact request.
    pub request: crate::ecs::DaemonDeclaration,
    pub would_record: &'static str,
    /// Instances known per provider (ECS's counts of the daemon; none before it exists).
    pub instances: BTreeMap<String, usize>,
    /// Instances drained and replaced at once, and in how many steps.
    pub instances_per_step: usize,
    pub steps: usize,
    /// From the last finished Managed Instances rollout of this daemon, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_wall_seconds: Option<u64>,
    pub assumptions: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePlan {
    pub instance_id: String,
    pub capacity_provider: String,
    /// The revision its copy runs now (none: no copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    pub remaining_cpu: i64,
    pub remaining_memory_mib: i64,
    /// For a rollout: whether a second copy fits next to the first.
    pub room_for_second_copy: bool,
    /// What happens on this instance.
    pub plan: String,
    /// The batch (from 1) that updates it, for a rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    pub max_parallel: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::rollout::Canary>,
    pub min_healthy_seconds: u32,
    pub surge_fallback: SurgeFallback,
    pub failure_threshold: usize,
    /// Instance ids per batch, in order (the canary batch first).
    pub batches: Vec<Vec<String>>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEstimate {
    pub start_task: usize,
    pub stop_task: usize,
    pub attributes: usize,
    pub reads: usize,
    pub total: usize,
}

/// What the dry run is about.
pub struct DryRunInput<'a> {
    pub observation: &'a Observation,
    pub plan: &'a Plan,
    pub daemon: &'a str,
    pub task_definition: &'a str,
    pub from_task_definition: Option<&'a str>,
    pub would_record: &'static str,
    pub warnings: Vec<String>,
    /// The new revision's CPU units and MiB (what a second copy needs).
    pub cpu: Option<i64>,
    pub memory_mib: Option<i64>,
    /// The rollout's settings, when a revision changes.
    pub rollout: Option<&'a RolloutConfig>,
    /// The coverage-check's pacing share: it makes the rollout's batch boundaries.
    pub pacing: Pacing,
}

fn step(action: &Action) -> PlannedStep {
    let (name, instance, detail) = match action {
        Action::ClearReady {
            instance_arn,
            reason,
        } => (
            "clearReady",
            Some(resource_id(instance_arn).to_string()),
            reason.clone(),
        ),
        Action::RecordSlot { slot, .. } => (
            "recordSlot",
            Some(slot.instance_id.clone()),
            format!("{} slot {:?}", slot.daemon, slot.state),
        ),
        Action::DeleteSlot { key, .. } => ("deleteSlot", None, key.to_string()),
        Action::Stop {
            instance_id,
            daemon,
            reason,
            ..
        } => (
            "stop",
            Some(instance_id.clone()),
            format!("{daemon}: {reason}"),
        ),
        Action::Start {
            instance_arn,
            task_definition,
            surge,
            ..
        } => (
            "start",
            Some(resource_id(instance_arn).to_string()),
            match surge {
                Some(fallback) => {
                    format!("{task_definition} next to the old copy (without room: {fallback:?})")
                }
                None => task_definition.clone(),
            },
        ),
        Action::DrainForCritical {
            instance_arn,
            daemon,
            reason,
            ..
        } => (
            "drainForCritical",
            Some(resource_id(instance_arn).to_string()),
            format!("{daemon}: {reason}"),
        ),
        Action::WithdrawRequest {
            instance_arn,
            daemon,
            reason,
            ..
        } => (
            "withdrawRequest",
            Some(resource_id(instance_arn).to_string()),
            format!("{daemon}: {reason}"),
        ),
        Action::SetReady { instance_arn } => (
            "setReady",
            Some(resource_id(instance_arn).to_string()),
            "every daemon of the instance runs".into(),
        ),
        Action::SwitchRevision {
            daemon,
            task_definition,
            ..
        } => (
            "switchRevision",
            None,
            format!("{daemon} to {task_definition}"),
        ),
        Action::RecordRollout { rollout, .. } => (
            "recordRollout",
            None,
            format!(
                "{} {:?} to {}",
                rollout.id, rollout.state, rollout.to_task_definition
            ),
        ),
    };
    PlannedStep {
        action: name,
        instance_id: instance,
        detail,
    }
}

/// The observed start latency of the daemon's current copies (median), if any started.
fn observed_start_seconds(observation: &Observation, daemon: &str) -> Option<f64> {
    let group = crate::plan::daemon_group(daemon);
    let mut latencies: Vec<f64> = observation
        .tasks
        .iter()
        .filter(|t| t.group.as_deref() == Some(group.as_str()))
        .filter_map(|t| Some((t.started_at? - t.created_at?).num_milliseconds() as f64 / 1000.0))
        .filter(|seconds| *seconds >= 0.0)
        .collect();
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_by(f64::total_cmp);
    Some(latencies[latencies.len() / 2])
}

/// Reads of one full reconcile of the cluster (lists and describes, per 100).
fn reconcile_reads(observation: &Observation) -> usize {
    let pages = |n: usize| n.div_ceil(DESCRIBE_BATCH).max(1);
    2 * pages(observation.instances.len()) + 2 * pages(observation.tasks.len())
}

/// The ACTIVE, connected instances the daemon targets (its providers and instanceFilter).
fn targeted(
    observation: &Observation,
    daemon: Option<&crate::plan::DaemonView>,
) -> Vec<ContainerInstance> {
    let Some(daemon) = daemon else {
        return Vec::new();
    };
    observation
        .instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Active && i.agent_connected)
        .filter(|i| daemon.targets(i))
        .cloned()
        .collect()
}

/// The rollout's batches as instance ids: what the planner starts now, then the rest of its
/// queue by maxParallel.
fn batches(input: &DryRunInput<'_>) -> Vec<Vec<String>> {
    let queue = input.plan.rollout_queues.get(input.daemon);
    let (Some(_), Some(queue)) = (input.rollout, queue) else {
        return Vec::new();
    };
    let ids: Vec<String> = queue
        .order
        .iter()
        .map(|a| resource_id(a).to_string())
        .collect();
    let first = queue.now.min(ids.len());
    let mut batches = Vec::new();
    if first > 0 {
        batches.push(ids[..first].to_vec());
    }
    batches.extend(
        ids[first..]
            .chunks(queue.max_parallel.max(1))
            .map(<[String]>::to_vec),
    );
    batches
}

/// The revision of the daemon's live copy on the instance, if any.
fn current_revision(input: &DryRunInput<'_>, instance: &ContainerInstance) -> Option<String> {
    let group = crate::plan::daemon_group(input.daemon);
    input
        .observation
        .tasks
        .iter()
        .filter(|t| t.container_instance_arn.as_deref() == Some(instance.arn.as_str()))
        .filter(|t| t.group.as_deref() == Some(group.as_str()) && !t.last_status.is_terminal())
        .map(|t| revision_of(t).to_string())
        .next()
}

/// What happens on one instance, in words.
fn instance_plan(
    input: &DryRunInput<'_>,
    instance: &ContainerInstance,
    batches: &[Vec<String>],
) -> InstancePlan {
    let now = current_revision(input, instance);
    let room = instance.remaining.cpu >= input.cpu.unwrap_or(0)
        && instance.remaining.memory_mib >= input.memory_mib.unwrap_or(0);
    let target = input.task_definition;
    let plan = match (input.rollout, &now) {
        (None, None) if room => format!("start {target}"),
        (None, None) => format!(
            "start {target}: no room now ({} CPU units, {} MiB free); retried until room frees up",
            instance.remaining.cpu, instance.remaining.memory_mib
        ),
        (None, Some(revision)) if revision == target => "unchanged: already runs it".into(),
        (None, Some(revision)) => format!("keeps {revision}"),
        (Some(_), Some(revision)) if revision == target => "already on the target revision".into(),
        (Some(_), _) if room => format!(
            "new copy of {target} next to {}, the old one stops after minHealthySeconds",
            now.as_deref().unwrap_or("nothing")
        ),
        (Some(config), _) => match config.surge_fallback {
            SurgeFallback::Fail => format!(
                "no room for a second copy: counted as a failure, keeps {} (surgeFallback fail)",
                now.as_deref().unwrap_or("no copy")
            ),
            SurgeFallback::StopFirst => format!(
                "no room for a second copy: the old copy stops first, then {target} starts (a counted gap, surgeFallback stopFirst)"
            ),
        },
    };
    InstancePlan {
        instance_id: instance.id().to_string(),
        capacity_provider: instance.capacity_provider.clone().unwrap_or_default(),
        current: now,
        remaining_cpu: instance.remaining.cpu,
        remaining_memory_mib: instance.remaining.memory_mib,
        room_for_second_copy: room,
        plan,
        batch: batches
            .iter()
            .position(|b| b.iter().any(|i| i == instance.id()))
            .map(|b| b + 1),
    }
}

/// How long it takes and what it calls, with the assumptions in words.
struct Estimate {
    wall_seconds: f64,
    calls: CallEstimate,
    assumptions: Vec<String>,
}

fn estimate(input: &DryRunInput<'_>, batches: &[Vec<String>], plans: &[InstancePlan]) -> Estimate {
    let observation = input.observation;
    let (start_seconds, start_basis) = match observed_start_seconds(observation, input.daemon) {
        Some(seconds) => (seconds, format!("start latency {seconds:.0} s: the median of the daemon's current copies (StartTask to RUNNING)")),
        None => (DEFAULT_START_SECONDS, format!("start latency {DEFAULT_START_SECONDS:.0} s assumed: no copy of the daemon has started yet")),
    };
    let modify_rate = input.pacing.modify.per_second;
    let modify_burst = input.pacing.modify.burst;
    let pacing_wait = |calls: usize| ((calls as f64 - modify_burst) / modify_rate).max(0.0);
    let full_reads = reconcile_reads(observation);
    let polls_per_start =
        (start_seconds / crate::plan::ROLLOUT_POLL_SECONDS as f64).ceil() as usize;
    let mut calls = CallEstimate::default();
    let wall;
    let mut assumptions = vec![start_basis];
    match input.rollout {
        Some(config) => {
            let mut seconds = 0.0;
            for batch in batches {
                let starts = batch.len().div_ceil(START_TASK_MAX_INSTANCES);
                calls.start_task += starts;
                calls.stop_task += batch.len();
                // The boundary: the old copies of this batch stop, the next batch's copies
                // start, when the wake for minHealthySeconds' end reaches the coverage-check.
                seconds += start_seconds
                    + f64::from(config.min_healthy_seconds)
                    + crate::wake::DELIVERY_SECONDS
                    + pacing_wait(starts + batch.len());
                // A full reconcile at the boundary and one per poll while copies start, and the
                // task events of the batch read in hundreds.
                calls.reads +=
                    (1 + polls_per_start) * full_reads + 2 * batch.len().div_ceil(DESCRIBE_BATCH);
            }
            wall = seconds;
            assumptions.push(format!(
                "per batch: the start latency, then minHealthySeconds ({} s), then the wake queue's delivery of that moment ({} s assumed), then the boundary's StopTask and StartTask calls paced at {modify_rate}/s beyond a burst of {modify_burst} (coverage-check's share)",
                config.min_healthy_seconds,
                crate::wake::DELIVERY_SECONDS
            ));
            assumptions.push(format!(
                "reads: a full reconcile ({full_reads} reads here) at each boundary and every {} s while copies start, plus the batch's task events",
                crate::plan::ROLLOUT_POLL_SECONDS
            ));
            assumptions.push("no failure: a start refused or a copy that dies adds a retry (or trips the breaker)".into());
        }
        None => {
            let missing = plans.iter().filter(|p| p.current.is_none()).count();
            calls.start_task = missing.div_ceil(START_TASK_MAX_INSTANCES);
            calls.attributes = missing.div_ceil(crate::ecs::ATTRIBUTE_BATCH);
            calls.reads = (1 + polls_per_start) * full_reads + 2 * missing.div_ceil(DESCRIBE_BATCH);
            wall = if missing == 0 {
                0.0
            } else {
                start_seconds + pacing_wait(calls.start_task + calls.attributes)
            };
            assumptions.push("every missing copy starts in the deploy's own reconcile; readiness follows its RUNNING event".into());
        }
    }
    calls.total = calls.start_task + calls.stop_task + calls.attributes + calls.reads;
    Estimate {
        wall_seconds: wall,
        calls,
        assumptions,
    }
}

pub fn report(input: DryRunInput<'_>) -> DryRunAnswer {
    let observation = input.observation;
    let daemon = observation.daemons.iter().find(|d| d.name == input.daemon);
    let instances = targeted(observation, daemon);
    let mut per_provider: BTreeMap<String, usize> = BTreeMap::new();
    for instance in &instances {
        *per_provider
            .entry(instance.capacity_provider.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let batches = batches(&input);
    let plans: Vec<InstancePlan> = instances
        .iter()
        .map(|instance| instance_plan(&input, instance, &batches))
        .collect();
    let estimate = estimate(&input, &batches, &plans);
    let queue = input.plan.rollout_queues.get(input.daemon);
    DryRunAnswer {
        dry_run: true,
        cluster: observation.cluster.clone(),
        daemon: input.daemon.to_string(),
        task_definition: input.task_definition.to_string(),
        from_task_definition: input.from_task_definition.map(str::to_string),
        would_record: input.would_record,
        warnings: input.warnings,
        targeted: per_provider,
        instances: plans,
        rollout: input.rollout.map(|config| RolloutPlan {
            max_parallel: queue.map_or(config.max_parallel.of(instances.len()), |q| q.max_parallel),
            canary: config.canary,
            min_healthy_seconds: config.min_healthy_seconds,
            surge_fallback: config.surge_fallback,
            failure_threshold: config.failure_threshold.of(instances.len()),
            batches,
        }),
        first_step: input.plan.actions.iter().map(step).collect(),
        expected_wall_seconds: estimate.wall_seconds.ceil() as u64,
        ecs_calls: estimate.calls,
        assumptions: estimate.assumptions,
        managed: None,
    }
}
