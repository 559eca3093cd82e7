//! An in-process model of an ECS cluster that behaves the way AWS does where
//! the controller depends on it: registered/remaining resources, capacity
//! providers, StartTask placement failures with ECS's reasons, PENDING →
//! RUNNING with latency, container health, task definitions that fail to start
//! (missing execution role), draining that stops service tasks but never
//! standalone ones, and the EventBridge events each change produces. Fault knobs
//! drop, duplicate and delay events and throttle calls. Seeded and deterministic:
//! time only moves when `advance` is called.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use ecs_daemons::arn::resource_id;

mod alarms;
mod autoscaling;
mod daemons;
mod scaling;
mod services;
pub use autoscaling::HookStats;
pub use daemons::{
    AlarmCheck, DaemonDefinitionModel, DeploymentOnDelete, ManagedTruth, NativeKnobs,
    NonCriticalFailure, ScaleOutRevision, IMPAIRED_REASON,
};
use ecs_daemons::ecs::{
    clip_reason, Ecs, EcsError, EcsErrorKind, InstanceAttribute, Page, StartTaskOutcome,
    StartTaskRequest, TaskFilter, ATTRIBUTE_BATCH, CAPACITY_PROVIDER_BATCH, DESCRIBE_BATCH,
};
use ecs_daemons::events::{INSTANCE_STATE_CHANGE, TASK_STATE_CHANGE};
use ecs_daemons::model::{
    CapacityProvider, CapacityProviderKind, ContainerDefinition, ContainerInstance, Failure,
    HealthStatus, InstanceStatus, Resources, Task, TaskDefinition, TaskStatus, FARGATE_PROVIDERS,
};
pub use scaling::{ManagedScaling, ReservationPoint, ScaleInStep, ScalingKnobs, TerminationPick};
pub use services::{DaemonDrainOrder, ServiceKnobs};

pub const ACCOUNT: &str = "111122223333";
const AUTOSCALING_SOURCE_NAME: &str = ecs_daemons::autoscaling::AUTOSCALING_SOURCE;
pub const REGION: &str = "us-east-1";

/// Small, fast, seedable generator (SplitMix64): the model must not depend on a crate's RNG stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }

    /// Uniform in [0, bound).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

/// What can go wrong with event delivery and calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    pub drop_events: f64,
    pub duplicate_events: f64,
    /// Each event is delivered after a random delay up to this (reordering them).
    pub max_event_delay: Duration,
    /// A duplicate comes after a random delay up to this (EventBridge redelivers late).
    pub max_duplicate_delay: Duration,
    /// Chance that any call answers `ThrottlingException` on top of the rate limits.
    pub throttle_calls: f64,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub seed: u64,
    /// PENDING → RUNNING.
    pub start_latency: Duration,
    /// RUNNING → HEALTHY for task definitions with a health check.
    pub health_grace: Duration,
    /// Desired STOPPED → STOPPED.
    pub stop_latency: Duration,
    /// Enforce ECS's documented token buckets (modify 100 burst, 40/s; read 100 burst, 20/s).
    pub rate_limits: bool,
    pub faults: Faults,
    /// The model's clock at creation (the local stack starts it at the wall clock).
    pub start_at: DateTime<Utc>,
    /// Whether `UpdateContainerInstancesState` → DRAINING emits an "ECS Container Instance
    /// State Change" event. ECS's list of what causes one (developer guide, "Amazon ECS
    /// container instance state change events") names task starts and stops, deregistration,
    /// agent connection and upgrades, but not a change of status: off by default, so
    /// drain-last is shown to work without it.
    pub draining_emits_instance_event: bool,
    /// What the managed-daemon documentation leaves open.
    pub native: NativeKnobs,
    /// What the DAEMON scheduler's documentation leaves open.
    pub services: ServiceKnobs,
    /// What the managed-scaling documentation leaves open.
    pub scaling: ScalingKnobs,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            start_latency: Duration::seconds(5),
            health_grace: Duration::seconds(10),
            stop_latency: Duration::seconds(3),
            rate_limits: true,
            faults: Faults::default(),
            start_at: epoch(),
            draining_emits_instance_event: false,
            native: NativeKnobs::default(),
            services: ServiceKnobs::default(),
            scaling: ScalingKnobs::default(),
        }
    }
}

/// A task definition revision of the model.
#[derive(Clone, Debug)]
pub struct TaskDefinitionModel {
    pub family: String,
    pub cpu: i64,
    pub memory_mib: i64,
    pub execution_role_arn: Option<String>,
    pub health_check: bool,
    /// Pulls from a private registry or reads secrets: fails to start without an execution role.
    pub needs_execution_role: bool,
    /// The essential container exits this long after RUNNING (a crashing agent).
    pub crashes_after: Option<Duration>,
    /// `awsvpc`, `host`, `bridge`, `none`; `None`: not set (ECS's default, bridge).
    pub network_mode: Option<String>,
    /// The execution role exists but may not pull the image: every start fails.
    pub execution_role_denied: bool,
    /// With `health_check`: its health check never passes (a bad revision that runs but
    /// never serves). The task turns UNHEALTHY instead of HEALTHY.
    pub never_healthy: bool,
    /// The role its code (and ECS Exec) acts with.
    pub task_role_arn: Option<String>,
    /// Its own tags (a task gets them with `propagateTags: TASK_DEFINITION`).
    pub tags: BTreeMap<String, String>,
}

impl TaskDefinitionModel {
    pub fn new(family: &str, cpu: i64, memory_mib: i64) -> Self {
        Self {
            family: family.into(),
            cpu,
            memory_mib,
            execution_role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole")),
            health_check: false,
            needs_execution_role: true,
            crashes_after: None,
            execution_role_denied: false,
            network_mode: None,
            never_healthy: false,
            task_role_arn: None,
            tags: BTreeMap::new(),
        }
    }
}

/// One ECS API call the model served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub operation: &'static str,
    pub modify: bool,
    pub at: DateTime<Utc>,
    pub throttled: bool,
}

#[derive(Clone, Debug)]
struct InstanceModel {
    id: String,
    ec2_instance_id: String,
    provider: String,
    status: InstanceStatus,
    agent_connected: bool,
    registered: Resources,
    attributes: BTreeMap<String, Option<String>>,
    version: i64,
    registered_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
struct TaskModel {
    id: String,
    instance_id: String,
    definition: String,
    group: String,
    started_by: Option<String>,
    tags: BTreeMap<String, String>,
    /// StartTask's container overrides: environment variables per container.
    environment: BTreeMap<String, BTreeMap<String, String>>,
    execute_command: bool,
    last_status: TaskStatus,
    desired_status: TaskStatus,
    health: HealthStatus,
    stop_code: Option<String>,
    stopped_reason: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    stopped_at: Option<DateTime<Utc>>,
    /// Next scheduled change and what it is.
    due: Option<(DateTime<Utc>, Due)>,
    cpu: i64,
    memory_mib: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Due {
    Run,
    FailToStart(String),
    Healthy,
    Crash,
    Stop,
}

#[derive(Clone, Debug)]
struct ClusterState {
    providers: Vec<String>,
    instances: BTreeMap<String, InstanceModel>,
    tasks: BTreeMap<String, TaskModel>,
}

#[derive(Clone, Debug)]
struct PendingEvent {
    deliver_at: DateTime<Utc>,
    sequence: u64,
    body: Value,
}

/// Counts of what the event faults did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    pub emitted: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
    /// Events delivered after one that was emitted later.
    pub reordered: u64,
}

struct Bucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    fn new(capacity: f64, per_second: f64, at: DateTime<Utc>) -> Self {
        Self {
            tokens: capacity,
            capacity,
            per_second,
            at,
        }
    }

    fn take(&mut self, now: DateTime<Utc>) -> bool {
        let elapsed = (now - self.at).num_milliseconds().max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct World {
    config: ModelConfig,
    now: DateTime<Utc>,
    rng: Rng,
    next_id: u64,
    clusters: BTreeMap<String, ClusterState>,
    definitions: BTreeMap<String, (i32, TaskDefinitionModel)>,
    revisions: BTreeMap<String, i32>,
    /// Kinds set by the test; any other provider a cluster names is an Auto Scaling group
    /// provider with managed scaling and managed termination protection off (the model's
    /// Auto Scaling part, where standalone copies are right).
    provider_kinds: BTreeMap<String, CapacityProviderKind>,
    events: Vec<PendingEvent>,
    stats: EventStats,
    /// The newest emission delivered so far (to count reorderings).
    last_delivered: u64,
    /// Every call is throttled until then (a throttling burst).
    throttled_until: Option<DateTime<Utc>>,
    calls: Vec<CallRecord>,
    modify_bucket: Bucket,
    read_bucket: Bucket,
    /// Daemon stops the controller asked for while another task still ran on a DRAINING instance.
    early_drain_stops: Vec<String>,
    /// Stops of the only live copy of a daemon on an ACTIVE instance.
    lone_copy_stops: Vec<String>,
    /// Instances registered so far (each one's zone follows from it).
    registered_count: u64,
    /// Auto Scaling groups (one per capacity provider) with terminate hooks, and the
    /// lifecycle actions waiting on them.
    lifecycle: autoscaling::Lifecycle,
    cloudwatch: alarms::CloudWatch,
    /// ECS's managed daemons on Managed Instances providers.
    native: daemons::NativeDaemons,
    /// DAEMON-strategy services and their scheduler.
    services: services::DaemonServices,
    /// Managed scaling of Auto Scaling group providers, and the applications driving it.
    scaling: scaling::Scaling,
}

/// The cluster model. Share it behind an `Arc` between the engine and the test.
pub struct ClusterModel {
    world: Mutex<World>,
}

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .single()
        .expect("valid model epoch")
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The ARN the model (and the local stack serving it) gives a cluster.
pub fn cluster_arn(cluster: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}")
}

fn instance_arn(cluster: &str, id: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{id}")
}

fn task_arn(cluster: &str, id: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{id}")
}

fn definition_arn(definition: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{definition}")
}

/// `family:rev` out of a bare pin or a task definition ARN.
fn definition_key(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!(
            "{prefix}{:012x}{:08x}",
            self.rng.next_u64() >> 16,
            self.next_id
        )
    }

    /// A provider as DescribeCapacityProviders answers it, if the model knows it: Fargate's two
    /// predefined names, a kind the test set (Managed Instances ones only within a cluster
    /// that has them attached: they are cluster-scoped), or a provider some cluster names.
    fn capacity_provider(&self, cluster: &str, name: &str) -> Option<CapacityProvider> {
        let attached = |c: &str| {
            self.clusters
                .get(c)
                .is_some_and(|state| state.providers.iter().any(|p| p == name))
        };
        let kind = if FARGATE_PROVIDERS.contains(&name) {
            CapacityProviderKind::Fargate
        } else {
            match self.provider_kinds.get(name) {
                Some(CapacityProviderKind::ManagedInstances { .. }) if !attached(cluster) => {
                    return None
                }
                Some(kind) => kind.clone(),
                None if self.clusters.keys().any(|c| attached(c)) => {
                    CapacityProviderKind::AutoScalingGroup {
                        managed_scaling: false,
                        managed_termination_protection: false,
                    }
                }
                None => return None,
            }
        };
        Some(CapacityProvider {
            arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:capacity-provider/{name}"),
            name: name.into(),
            status: "ACTIVE".into(),
            kind,
        })
    }

    fn cluster(
        &mut self,
        cluster: &str,
        operation: &'static str,
    ) -> Result<&mut ClusterState, EcsError> {
        self.clusters.get_mut(cluster).ok_or_else(|| {
            EcsError::new(
                operation,
                format!("cluster {cluster}"),
                EcsErrorKind::NotFound,
                "ClusterNotFoundException",
                "Cluster not found.",
            )
        })
    }

    fn call(
        &mut self,
        operation: &'static str,
        modify: bool,
        target: &str,
    ) -> Result<(), EcsError> {
        let now = self.now;
        let limited = self.config.rate_limits
            && !(if modify {
                self.modify_bucket.take(now)
            } else {
                self.read_bucket.take(now)
            });
        let throttled = limited
            || self.throttled_until.is_some_and(|until| now < until)
            || self.rng.chance(self.config.faults.throttle_calls);
        self.calls.push(CallRecord {
            operation,
            modify,
            at: now,
            throttled,
        });
        if throttled {
            return Err(EcsError::new(
                operation,
                target,
                EcsErrorKind::Throttled,
                "ThrottlingException",
                "Rate exceeded",
            ));
        }
        Ok(())
    }

    fn emit(&mut self, body: Value) {
        self.stats.emitted += 1;
        let faults = self.config.faults.clone();
        // Dropped events stand for ECS state changes EventBridge never matched, which the
        // coverage check repairs. A lifecycle event is not lost that way: its rule retries the
        // function for a day and then dead-letters it (the alarm), so it is only delayed here.
        let droppable = body["source"] != AUTOSCALING_SOURCE_NAME;
        if droppable && self.rng.chance(faults.drop_events) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(faults.duplicate_events) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for copy in 0..copies {
            // The duplicate may come much later (EventBridge and SQS redeliver late).
            let max_delay = if copy == 0 {
                faults.max_event_delay
            } else {
                faults.max_event_delay.max(faults.max_duplicate_delay)
            };
            let delay = Duration::milliseconds(
                self.rng
                    .below(max_delay.num_milliseconds().max(0) as u64 + 1) as i64,
            );
            self.next_id += 1;
            self.events.push(PendingEvent {
                deliver_at: self.now + delay,
                sequence: self.next_id,
                body: body.clone(),
            });
        }
    }

    fn envelope(&mut self, detail_type: &str, resource: &str, detail: Value) -> Value {
        let id = self.id("");
        json!({
            "version": "0",
            "id": format!("{}-{}-{}-{}-{}", &id[0..8], &id[8..12], &id[12..16], &id[16..20], &id[4..16]),
            "detail-type": detail_type,
            "source": "aws.ecs",
            "account": ACCOUNT,
            "time": iso(self.now),
            "region": REGION,
            "resources": [resource],
            "detail": detail,
        })
    }

    fn used(cluster: &ClusterState, instance_id: &str) -> (Resources, i32, i32) {
        let mut used = Resources::default();
        let (mut running, mut pending) = (0, 0);
        for task in cluster
            .tasks
            .values()
            .filter(|t| t.instance_id == instance_id && !t.last_status.is_terminal())
        {
            used.cpu += task.cpu;
            used.memory_mib += task.memory_mib;
            // API reference, `ContainerInstance`: runningTasksCount is "the number of tasks on
            // the container instance that have a desired status (desiredStatus) of RUNNING",
            // pendingTasksCount "the number of tasks ... that are in the PENDING status". So a
            // task told to stop but still running (its stop timeout) is in neither count, and
            // a PENDING task meant to run is, read literally, in both: the model takes both
            // readings, the pessimistic ones for anything that decides from the counts.
            if task.desired_status == TaskStatus::Running {
                running += 1;
            }
            if task.last_status == TaskStatus::Pending {
                pending += 1;
            }
        }
        (used, running, pending)
    }

    fn describe_instance(
        cluster_name: &str,
        cluster: &ClusterState,
        instance: &InstanceModel,
    ) -> ContainerInstance {
        let (used, running, pending) = Self::used(cluster, &instance.id);
        ContainerInstance {
            arn: instance_arn(cluster_name, &instance.id),
            ec2_instance_id: Some(instance.ec2_instance_id.clone()),
            status: instance.status.clone(),
            status_reason: None,
            agent_connected: instance.agent_connected,
            capacity_provider: Some(instance.provider.clone()),
            registered: instance.registered,
            remaining: Resources {
                cpu: instance.registered.cpu - used.cpu,
                memory_mib: instance.registered.memory_mib - used.memory_mib,
            },
            running_tasks: running,
            pending_tasks: pending,
            attributes: instance.attributes.clone(),
            version: instance.version,
            registered_at: Some(instance.registered_at),
        }
    }

    fn describe_task(cluster_name: &str, task: &TaskModel) -> Task {
        Task {
            arn: task_arn(cluster_name, &task.id),
            task_definition_arn: definition_arn(&task.definition),
            container_instance_arn: Some(instance_arn(cluster_name, &task.instance_id)),
            last_status: task.last_status.clone(),
            desired_status: task.desired_status.clone(),
            health: task.health.clone(),
            group: Some(task.group.clone()),
            started_by: task.started_by.clone(),
            stop_code: task.stop_code.clone(),
            stopped_reason: task.stopped_reason.clone(),
            version: task.version,
            created_at: Some(task.created_at),
            started_at: task.started_at,
            stopped_at: task.stopped_at,
            tags: task.tags.clone(),
        }
    }

    fn instance_event(&mut self, cluster_name: &str, instance_id: &str) {
        let Some(cluster) = self.clusters.get(cluster_name) else {
            return;
        };
        let Some(instance) = cluster.instances.get(instance_id) else {
            return;
        };
        let described = Self::describe_instance(cluster_name, cluster, instance);
        let resources = |r: Resources| {
            json!([
                {"name": "CPU", "type": "INTEGER", "integerValue": r.cpu},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": r.memory_mib},
            ])
        };
        let detail = json!({
            "clusterArn": cluster_arn(cluster_name),
            "containerInstanceArn": described.arn,
            "ec2InstanceId": described.ec2_instance_id,
            "capacityProviderName": described.capacity_provider,
            "status": described.status,
            "agentConnected": described.agent_connected,
            "version": described.version,
            "registeredResources": resources(described.registered),
            "remainingResources": resources(described.remaining),
            "runningTasksCount": described.running_tasks,
            "pendingTasksCount": described.pending_tasks,
            "attributes": described.attributes.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
            "registeredAt": described.registered_at.map(iso),
            "updatedAt": iso(self.now),
            "accountType": "ec2_instance",
        });
        let arn = described.arn.clone();
        let body = self.envelope(INSTANCE_STATE_CHANGE, &arn, detail);
        self.emit(body);
    }

    fn task_event(&mut self, cluster_name: &str, task_id: &str) {
        let Some(task) = self
            .clusters
            .get(cluster_name)
            .and_then(|c| c.tasks.get(task_id))
        else {
            return;
        };
        let described = Self::describe_task(cluster_name, task);
        let detail = json!({
            "clusterArn": cluster_arn(cluster_name),
            "taskArn": described.arn,
            "taskDefinitionArn": described.task_definition_arn,
            "containerInstanceArn": described.container_instance_arn,
            "lastStatus": described.last_status,
            "desiredStatus": described.desired_status,
            "healthStatus": described.health,
            "group": described.group,
            "startedBy": described.started_by,
            "stopCode": described.stop_code,
            "stoppedReason": described.stopped_reason,
            "version": described.version,
            "launchType": "EC2",
            "createdAt": described.created_at.map(iso),
            "startedAt": described.started_at.map(iso),
            "stoppedAt": described.stopped_at.map(iso),
            "updatedAt": iso(self.now),
            "containers": [{"name": "main", "lastStatus": described.last_status, "healthStatus": described.health}],
        });
        let arn = described.arn.clone();
        let body = self.envelope(TASK_STATE_CHANGE, &arn, detail);
        self.emit(body);
    }

    /// Changes a task, bumps its version, and emits its event (and the instance's, when resources move).
    fn change_task(
        &mut self,
        cluster_name: &str,
        task_id: &str,
        change: impl FnOnce(&mut TaskModel, DateTime<Utc>),
    ) {
        let now = self.now;
        let Some(task) = self
            .clusters
            .get_mut(cluster_name)
            .and_then(|c| c.tasks.get_mut(task_id))
        else {
            return;
        };
        let was_terminal = task.last_status.is_terminal();
        change(task, now);
        task.version += 1;
        let freed = !was_terminal && task.last_status.is_terminal();
        let instance_id = task.instance_id.clone();
        self.task_event(cluster_name, task_id);
        if freed {
            self.bump_instance(cluster_name, &instance_id);
            // A DAEMON service replaces its stopped task; a drain may now let one stop.
            self.notice_services(cluster_name, Some(&instance_id));
        }
    }

    fn bump_instance(&mut self, cluster_name: &str, instance_id: &str) {
        if let Some(instance) = self
            .clusters
            .get_mut(cluster_name)
            .and_then(|c| c.instances.get_mut(instance_id))
        {
            instance.version += 1;
            self.instance_event(cluster_name, instance_id);
        }
    }

    fn stop_task(&mut self, cluster_name: &str, task_id: &str, code: &str, reason: &str) {
        let stop_at = self.now + self.config.stop_latency;
        let (code, reason) = (code.to_string(), reason.to_string());
        self.change_task(cluster_name, task_id, |task, _| {
            task.desired_status = TaskStatus::Stopped;
            task.stop_code = Some(code);
            task.stopped_reason = Some(reason);
            task.due = Some((stop_at, Due::Stop));
        });
    }

    /// Runs every scheduled change due by `until`, in time order.
    fn run_due(&mut self, until: DateTime<Utc>) {
        loop {
            let next = self
                .clusters
                .iter()
                .flat_map(|(name, c)| {
                    c.tasks.values().filter_map(move |t| {
                        t.due
                            .as_ref()
                            .map(|(at, _)| (*at, name.clone(), t.id.clone()))
                    })
                })
                .filter(|(at, _, _)| *at <= until)
                .min();
            let Some((at, cluster_name, task_id)) = next else {
                break;
            };
            self.now = self.now.max(at);
            let Some(task) = self
                .clusters
                .get(&cluster_name)
                .and_then(|c| c.tasks.get(&task_id))
            else {
                break;
            };
            let Some((_, due)) = task.due.clone() else {
                break;
            };
            let definition = self
                .definitions
                .get(&task.definition)
                .map(|(_, d)| d.clone());
            match due {
                Due::Run => {
                    let health_at = self.now + self.config.health_grace;
                    let crash_at = definition
                        .as_ref()
                        .and_then(|d| d.crashes_after)
                        .map(|after| self.now + after);
                    let checked = definition.as_ref().is_some_and(|d| d.health_check);
                    self.change_task(&cluster_name, &task_id, |task, now| {
                        task.last_status = TaskStatus::Running;
                        task.started_at = Some(now);
                        // A health-checked task turns HEALTHY first; a crash is scheduled from there.
                        task.due = if checked {
                            Some((health_at, Due::Healthy))
                        } else {
                            crash_at.map(|at| (at, Due::Crash))
                        };
                    });
                }
                Due::Healthy if definition.as_ref().is_some_and(|d| d.never_healthy) => {
                    // API reference, HealthCheck: "If a task is run manually, and not as part
                    // of a service, the task will continue its lifecycle regardless of its
                    // health status. For tasks that are part of a service, if the task reports
                    // as unhealthy then the task will be stopped and the service scheduler
                    // will replace it."
                    let stop_at = self.now + self.config.stop_latency;
                    self.change_task(&cluster_name, &task_id, |task, _| {
                        task.health = HealthStatus::Unhealthy;
                        task.due = None;
                        if task.group.starts_with("service:") {
                            task.desired_status = TaskStatus::Stopped;
                            task.stop_code = Some("ServiceSchedulerInitiated".into());
                            task.stopped_reason =
                                Some("Task failed container health checks".into());
                            task.due = Some((stop_at, Due::Stop));
                        }
                    });
                }
                Due::Healthy => {
                    let crash_at = definition
                        .as_ref()
                        .and_then(|d| d.crashes_after)
                        .map(|after| self.now + after);
                    self.change_task(&cluster_name, &task_id, |task, _| {
                        task.health = HealthStatus::Healthy;
                        task.due = crash_at.map(|at| (at, Due::Crash));
                    });
                }
                Due::Crash => {
                    let stop_at = self.now + self.config.stop_latency;
                    self.change_task(&cluster_name, &task_id, |task, _| {
                        task.desired_status = TaskStatus::Stopped;
                        task.health = HealthStatus::Unhealthy;
                        task.stop_code = Some("EssentialContainerExited".into());
                        task.stopped_reason = Some("Essential container in task exited".into());
                        task.due = Some((stop_at, Due::Stop));
                    });
                }
                Due::FailToStart(reason) => {
                    self.change_task(&cluster_name, &task_id, |task, now| {
                        task.last_status = TaskStatus::Stopped;
                        task.desired_status = TaskStatus::Stopped;
                        task.stop_code = Some("TaskFailedToStart".into());
                        task.stopped_reason = Some(reason);
                        task.stopped_at = Some(now);
                        task.due = None;
                    });
                }
                Due::Stop => {
                    self.change_task(&cluster_name, &task_id, |task, now| {
                        task.last_status = TaskStatus::Stopped;
                        task.desired_status = TaskStatus::Stopped;
                        task.stopped_at = Some(now);
                        task.due = None;
                    });
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// `UpdateContainerInstancesState DRAINING` (developer guide, *Container instance
    /// draining*): "ECS prevents new tasks from being scheduled for placement", service tasks
    /// are stopped, "Any standalone tasks in the PENDING or RUNNING state are unaffected",
    /// and DAEMON-service tasks stop last (`services.rs`).
    fn drain(&mut self, cluster: &str, id: &str) {
        let world = self;
        let id = id.to_string();
        let Some(state) = world.clusters.get_mut(cluster) else {
            return;
        };
        let Some(model) = state.instances.get_mut(&id) else {
            return;
        };
        model.status = InstanceStatus::Draining;
        let services: Vec<String> = state
            .tasks
            .values()
            .filter(|t| {
                t.instance_id == id
                    && !t.last_status.is_terminal()
                    && t.group.starts_with("service:")
            })
            .map(|t| (t.id.clone(), t.group.clone()))
            .collect::<Vec<_>>()
            .into_iter()
            // DAEMON-service tasks stop last, when their scheduler looks (`services.rs`).
            .filter(|(_, group)| !world.is_daemon_service_task(cluster, group))
            .map(|(task, _)| task)
            .collect();
        if world.config.draining_emits_instance_event {
            world.bump_instance(cluster, &id);
        } else if let Some(instance) = world
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.instances.get_mut(&id))
        {
            instance.version += 1;
        }
        // Stopping the service tasks emits their task events (and, through the resources
        // they free, instance events: the list's "service scheduler starts or stops a task").
        for task in services {
            world.stop_task(
                cluster,
                &task,
                "ServiceSchedulerInitiated",
                "Container instance is draining",
            );
        }
        world.notice_services(cluster, Some(&id));
    }

    /// The instance leaves the cluster (terminated): its tasks are gone.
    fn deregister(&mut self, cluster: &str, id: &str) {
        let world = self;
        let id = id.to_string();
        let Some(state) = world.clusters.get_mut(cluster) else {
            return;
        };
        let live: Vec<String> = state
            .tasks
            .values()
            .filter(|t| t.instance_id == id && !t.last_status.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for task in live {
            world.change_task(cluster, &task, |task, now| {
                task.last_status = TaskStatus::Stopped;
                task.desired_status = TaskStatus::Stopped;
                task.stop_code = Some("TerminationNotice".into());
                task.stopped_reason = Some("Host EC2 instance terminated".into());
                task.stopped_at = Some(now);
                task.due = None;
            });
        }
        if let Some(model) = world
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.instances.get_mut(&id))
        {
            model.status = InstanceStatus::Inactive;
            model.agent_connected = false;
        }
        world.bump_instance(cluster, &id);
        if let Some(state) = world.clusters.get_mut(cluster) {
            state.instances.remove(&id);
        }
        world.forget_instance_for_services(cluster, &id);
        world.forget_instance_for_scaling(cluster, &id);
    }

    /// An EC2 instance registers through `provider`: REGISTERING, then ACTIVE; answers its id.
    fn register(&mut self, cluster: &str, provider: &str, cpu: i64, memory_mib: i64) -> String {
        let world = self;
        let id = world.id("");
        world.registered_count += 1;
        let ec2 = format!("i-0{}", &id[..16]);
        let now = world.now;
        let instance = InstanceModel {
            id: id.clone(),
            ec2_instance_id: ec2,
            provider: provider.into(),
            status: InstanceStatus::Registering,
            agent_connected: false,
            registered: Resources { cpu, memory_mib },
            // ECS's own attributes of every container instance (developer guide,
            // task-placement-constraints.md, "Attributes": ecs.availability-zone,
            // ecs.instance-type, ecs.os-type, ecs.cpu-architecture, …); the zone cycles
            // through three, the type follows the size.
            attributes: BTreeMap::from([
                ("ecs.os-type".to_string(), Some("linux".to_string())),
                (
                    "ecs.cpu-architecture".to_string(),
                    Some("x86_64".to_string()),
                ),
                (
                    "ecs.availability-zone".to_string(),
                    Some(availability_zone(world.registered_count).to_string()),
                ),
                ("ecs.instance-type".to_string(), Some(instance_type(cpu))),
                (
                    "ecs.capability.secrets.asm.environment-variables".to_string(),
                    None,
                ),
            ]),
            version: 1,
            registered_at: now,
        };
        if let Some(state) = world.clusters.get_mut(cluster) {
            state.instances.insert(id.clone(), instance);
        }
        world.instance_event(cluster, &id);
        if let Some(instance) = world
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.instances.get_mut(&id))
        {
            instance.status = InstanceStatus::Active;
            instance.agent_connected = true;
        }
        world.bump_instance(cluster, &id);
        world.notice_services(cluster, Some(&id));
        id
    }

    /// A service places one application task, like a service whose placement constraint is
    /// `memberOf(attribute:ecs-daemons.ready == true)`: only on ready, ACTIVE instances with room.
    /// On `provider`'s instances only, where one is named. Answers the task's id.
    fn place_application(
        &mut self,
        cluster: &str,
        service: &str,
        definition: &str,
        provider: Option<&str>,
    ) -> Option<String> {
        let world = self;
        let model = world.definitions.get(definition).map(|(_, d)| d.clone())?;
        let state = world.clusters.get(cluster)?;
        let candidates: Vec<String> = state
            .instances
            .values()
            .filter(|i| i.status == InstanceStatus::Active && i.agent_connected)
            .filter(|i| provider.is_none_or(|p| i.provider == p))
            .filter(|i| {
                i.attributes
                    .get(ecs_daemons::plan::READY_ATTRIBUTE)
                    .is_some_and(|v| v.as_deref() == Some("true"))
            })
            .filter(|i| {
                let (used, _, _) = World::used(state, &i.id);
                i.registered.cpu - used.cpu >= model.cpu
                    && i.registered.memory_mib - used.memory_mib >= model.memory_mib
            })
            .map(|i| i.id.clone())
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let pick = candidates[world.rng.below(candidates.len() as u64) as usize].clone();
        let group = format!("service:{service}");
        let started_by = format!("ecs-svc/{service}");
        world
            .place(
                cluster,
                &pick,
                definition,
                &group,
                Some(&started_by),
                BTreeMap::new(),
            )
            .ok()
    }

    fn next_task_change(&self) -> Option<DateTime<Utc>> {
        self.clusters
            .values()
            .flat_map(|c| {
                c.tasks
                    .values()
                    .filter_map(|t| t.due.as_ref().map(|(at, _)| *at))
            })
            .min()
    }

    /// Task changes, the DAEMON scheduler's looks and managed scaling, each at its own moment.
    fn run_tasks_and_services(&mut self, until: DateTime<Utc>) {
        while let Some(next) = [
            self.next_task_change(),
            self.next_service_look(),
            self.next_scaling_moment(),
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|at| *at <= until)
        {
            self.run_due(next);
            self.run_services(next);
            self.run_scaling(next);
        }
        self.run_due(until);
    }

    fn place(
        &mut self,
        cluster_name: &str,
        instance_id: &str,
        definition: &str,
        group: &str,
        started_by: Option<&str>,
        tags: BTreeMap<String, String>,
    ) -> Result<String, String> {
        let (revision_known, model) = match self.definitions.get(definition) {
            Some((_, model)) => (true, model.clone()),
            None => (false, TaskDefinitionModel::new("unknown", 0, 0)),
        };
        if !revision_known {
            return Err("MISSING".into());
        }
        let cluster = self.clusters.get(cluster_name).ok_or("MISSING")?;
        let instance = cluster.instances.get(instance_id).ok_or("MISSING")?;
        if !instance.agent_connected {
            return Err("AGENT".into());
        }
        if instance.status != InstanceStatus::Active && instance.status != InstanceStatus::Draining
        {
            return Err("INACTIVE".into());
        }
        let (used, _, _) = Self::used(cluster, instance_id);
        if instance.registered.cpu - used.cpu < model.cpu {
            return Err("RESOURCE:CPU".into());
        }
        if instance.registered.memory_mib - used.memory_mib < model.memory_mib {
            return Err("RESOURCE:MEMORY".into());
        }
        let id = self.id("");
        let now = self.now;
        let due = if model.execution_role_denied {
            Due::FailToStart(format!(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
                 unable to retrieve ecr registry auth: AccessDeniedException: User: {} is not authorized to perform: \
                 ecr:GetAuthorizationToken",
                model.execution_role_arn.clone().unwrap_or_default()
            ))
        } else if model.needs_execution_role && model.execution_role_arn.is_none() {
            Due::FailToStart(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: \
                 the task definition has no execution role (executionRoleArn) to read them with"
                    .into(),
            )
        } else {
            Due::Run
        };
        let task = TaskModel {
            id: id.clone(),
            instance_id: instance_id.into(),
            definition: definition.into(),
            group: group.into(),
            started_by: started_by.map(str::to_string),
            tags,
            environment: BTreeMap::new(),
            execute_command: false,
            last_status: TaskStatus::Pending,
            desired_status: TaskStatus::Running,
            health: HealthStatus::Unknown,
            stop_code: None,
            stopped_reason: None,
            version: 1,
            created_at: now,
            started_at: None,
            stopped_at: None,
            due: Some((now + self.config.start_latency, due)),
            cpu: model.cpu,
            memory_mib: model.memory_mib,
        };
        self.clusters
            .get_mut(cluster_name)
            .ok_or("MISSING")?
            .tasks
            .insert(id.clone(), task);
        self.task_event(cluster_name, &id);
        self.bump_instance(cluster_name, instance_id);
        Ok(id)
    }
}

/// A view of one task for invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub instance_id: String,
    pub group: String,
    pub definition: String,
    pub started_by: Option<String>,
    pub last_status: TaskStatus,
    pub desired_status: TaskStatus,
    pub health: HealthStatus,
    pub created_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Why it was told to stop (StopTask's reason, or ECS's own).
    pub stopped_reason: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Environment variables StartTask's overrides set, per container.
    pub environment: BTreeMap<String, BTreeMap<String, String>>,
    /// Started with `enableExecuteCommand`.
    pub execute_command: bool,
}

/// A StartTask's tags as ECS puts them on the task (API reference, *StartTask*, `tags`: at
/// most 50 per resource, the `aws:` prefix reserved and not counted): the request's, the
/// task definition's with `propagateTags: TASK_DEFINITION`, and ECS's managed
/// `aws:ecs:clusterName` with `enableECSManagedTags` (developer guide, *Tagging your Amazon
/// ECS resources*; ECS adds more managed tags than the model does).
fn launch_tags(
    world: &World,
    cluster: &str,
    definition: &str,
    request: &StartTaskRequest,
) -> Result<BTreeMap<String, String>, String> {
    let reserved = |text: &str| {
        text.get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
    };
    if let Some((key, _)) = request
        .tags
        .iter()
        .find(|(key, value)| reserved(key) || reserved(value))
    {
        return Err(format!("Tag {key}: the aws: prefix is reserved."));
    }
    let mut tags: BTreeMap<String, String> = request.tags.iter().cloned().collect();
    if request.propagate_tags.as_deref() == Some("TASK_DEFINITION") {
        if let Some((_, model)) = world.definitions.get(definition) {
            for (key, value) in &model.tags {
                tags.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    if tags.len() > 50 {
        return Err(format!("Too many tags: {} given, at most 50.", tags.len()));
    }
    if request.enable_ecs_managed_tags {
        tags.insert("aws:ecs:clusterName".into(), cluster.into());
    }
    Ok(tags)
}

/// A StartTask's container overrides (API reference, *StartTask*, `overrides`: at most 8192
/// characters; each must name a container of the task definition, whose only container in
/// the model is `main`).
fn launch_environment(
    request: &StartTaskRequest,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    if ecs_daemons::launch::overrides_characters(&request.environment)
        > ecs_daemons::launch::MAX_OVERRIDES_CHARACTERS
    {
        return Err("Container Overrides length must be at most 8192".into());
    }
    let mut environment = BTreeMap::new();
    for (container, variables) in &request.environment {
        if container != "main" {
            return Err(format!(
                "Override for container named {container} is not a container in the TaskDefinition."
            ));
        }
        environment.insert(container.clone(), variables.iter().cloned().collect());
    }
    Ok(environment)
}

impl ClusterModel {
    pub fn new(config: ModelConfig) -> Self {
        let now = config.start_at;
        let world = World {
            rng: Rng::new(config.seed),
            modify_bucket: Bucket::new(100.0, 40.0, now),
            // ECS's read bucket as the API reference's throttling example gives it (50).
            read_bucket: Bucket::new(
                ecs_daemons::pacing::ECS_LIMITS.read.burst,
                ecs_daemons::pacing::ECS_LIMITS.read.per_second,
                now,
            ),
            config,
            now,
            next_id: 0,
            clusters: BTreeMap::new(),
            definitions: BTreeMap::new(),
            revisions: BTreeMap::new(),
            provider_kinds: BTreeMap::new(),
            events: Vec::new(),
            stats: EventStats::default(),
            last_delivered: 0,
            throttled_until: None,
            calls: Vec::new(),
            early_drain_stops: Vec::new(),
            lone_copy_stops: Vec::new(),
            registered_count: 0,
            lifecycle: autoscaling::Lifecycle::default(),
            cloudwatch: alarms::CloudWatch::default(),
            native: daemons::NativeDaemons::default(),
            services: services::DaemonServices::default(),
            scaling: scaling::Scaling::default(),
        };
        Self {
            world: Mutex::new(world),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // Each model operation leaves the world consistent before it can panic.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.world().now
    }

    pub fn seed(&self) -> u64 {
        self.world().config.seed
    }

    pub fn set_faults(&self, faults: Faults) {
        self.world().config.faults = faults;
    }

    /// A throttling burst: every call is refused with `ThrottlingException` until `until`.
    pub fn throttle_until(&self, until: DateTime<Utc>) {
        self.world().throttled_until = Some(until);
    }

    pub fn create_cluster(&self, cluster: &str, providers: &[&str]) {
        self.world().clusters.insert(
            cluster.into(),
            ClusterState {
                providers: providers.iter().map(|p| p.to_string()).collect(),
                instances: BTreeMap::new(),
                tasks: BTreeMap::new(),
            },
        );
    }

    /// Sets what kind of capacity provider `provider` is (see `provider_kinds`).
    pub fn set_capacity_provider_kind(&self, provider: &str, kind: CapacityProviderKind) {
        self.world().provider_kinds.insert(provider.into(), kind);
    }

    /// Registers a new revision; answers `family:revision`.
    pub fn register_task_definition(&self, definition: TaskDefinitionModel) -> String {
        let mut world = self.world();
        let revision = world
            .revisions
            .entry(definition.family.clone())
            .or_insert(0);
        *revision += 1;
        let key = format!("{}:{}", definition.family, revision);
        let revision = *revision;
        world
            .definitions
            .insert(key.clone(), (revision, definition));
        key
    }

    /// An EC2 instance joins through the given capacity provider: REGISTERING, then ACTIVE a second later.
    pub fn add_instance(&self, cluster: &str, provider: &str, cpu: i64, memory_mib: i64) -> String {
        let id = self.world().register(cluster, provider, cpu, memory_mib);
        instance_arn(cluster, &id)
    }

    /// `UpdateContainerInstancesState DRAINING`, as the model drains (developer guide,
    /// *Container instance draining*; see `World::drain`).
    pub fn drain_instance(&self, cluster: &str, instance: &str) {
        self.world().drain(cluster, resource_id(instance));
    }

    /// Puts (or with `None` value, puts valueless) a custom attribute on an instance, as
    /// PutAttributes would.
    pub fn set_instance_attribute(
        &self,
        cluster: &str,
        instance: &str,
        name: &str,
        value: Option<&str>,
    ) {
        let mut world = self.world();
        if let Some(model) = world
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.instances.get_mut(resource_id(instance)))
        {
            model
                .attributes
                .insert(name.to_string(), value.map(str::to_string));
            model.version += 1;
        }
    }

    /// The instance leaves the cluster (scale-in finished): its tasks are gone.
    pub fn deregister_instance(&self, cluster: &str, instance: &str) {
        self.world().deregister(cluster, resource_id(instance));
    }

    /// A service places one application task, like a service whose placement constraint is
    /// `memberOf(attribute:ecs-daemons.ready == true)`: only on ready, ACTIVE instances with room.
    pub fn run_service_task(
        &self,
        cluster: &str,
        service: &str,
        definition: &str,
    ) -> Option<String> {
        self.world()
            .place_application(cluster, service, definition, None)
            .map(|id| task_arn(cluster, &id))
    }

    /// A task someone else started on an instance (another tool, a person, RunTask with a
    /// look-alike group): ecs-daemons must leave it alone, whatever its group says.
    pub fn start_foreign_task(
        &self,
        cluster: &str,
        instance: &str,
        definition: &str,
        group: &str,
        started_by: Option<&str>,
    ) -> Option<String> {
        let mut world = self.world();
        let instance_id = resource_id(instance).to_string();
        world
            .place(
                cluster,
                &instance_id,
                definition,
                group,
                started_by,
                BTreeMap::new(),
            )
            .ok()
            .map(|id| task_arn(cluster, &id))
    }

    /// The essential container of a task dies.
    pub fn crash_task(&self, cluster: &str, task: &str) {
        let mut world = self.world();
        let id = resource_id(task).to_string();
        let running = world
            .clusters
            .get(cluster)
            .and_then(|c| c.tasks.get(&id))
            .is_some_and(|t| !t.last_status.is_terminal());
        if running {
            world.change_task(cluster, &id, |task, now| {
                task.last_status = TaskStatus::Stopped;
                task.desired_status = TaskStatus::Stopped;
                task.health = HealthStatus::Unhealthy;
                task.stop_code = Some("EssentialContainerExited".into());
                task.stopped_reason = Some("Essential container in task exited".into());
                task.stopped_at = Some(now);
                task.due = None;
            });
        }
    }

    pub fn set_agent_connected(&self, cluster: &str, instance: &str, connected: bool) {
        let mut world = self.world();
        let id = resource_id(instance).to_string();
        if let Some(model) = world
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.instances.get_mut(&id))
        {
            model.agent_connected = connected;
        }
        world.bump_instance(cluster, &id);
        world.notice_services(cluster, Some(&id));
    }

    /// Moves time forward, running every scheduled change on the way.
    pub fn advance(&self, by: Duration) {
        let timed_out = {
            let mut world = self.world();
            let until = world.now + by;
            world.run_native(until);
            world.run_tasks_and_services(until);
            world.lifecycle_timeouts()
        };
        // A hook nobody completed or heartbeated: Auto Scaling lets the instance go.
        for (cluster, instance) in timed_out {
            self.deregister_instance(&cluster, &instance);
        }
    }

    /// Events whose delivery time has come, in delivery order.
    pub fn take_due_events(&self) -> Vec<Value> {
        let mut world = self.world();
        let now = world.now;
        world.events.sort_by_key(|e| (e.deliver_at, e.sequence));
        let due = world
            .events
            .iter()
            .take_while(|e| e.deliver_at <= now)
            .count();
        let taken: Vec<PendingEvent> = world.events.drain(..due).collect();
        world.stats.delivered += taken.len() as u64;
        for event in &taken {
            if event.sequence < world.last_delivered {
                world.stats.reordered += 1;
            }
            world.last_delivered = world.last_delivered.max(event.sequence);
        }
        taken.into_iter().map(|e| e.body).collect()
    }

    pub fn pending_events(&self) -> usize {
        self.world().events.len()
    }

    pub fn event_stats(&self) -> EventStats {
        self.world().stats.clone()
    }

    /// Every call served so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.world().calls.clone()
    }

    pub fn call_count(&self) -> usize {
        self.world().calls.len()
    }

    /// Daemon stops asked for while another task still ran on the DRAINING instance.
    pub fn early_drain_stops(&self) -> Vec<String> {
        self.world().early_drain_stops.clone()
    }

    /// Stops of the only live copy of a daemon on an ACTIVE instance (legitimate only when
    /// the instance is no longer targeted or the daemon no longer declared).
    pub fn lone_copy_stops(&self) -> Vec<String> {
        self.world().lone_copy_stops.clone()
    }

    pub fn instances(&self, cluster: &str) -> Vec<ContainerInstance> {
        let world = self.world();
        let Some(state) = world.clusters.get(cluster) else {
            return Vec::new();
        };
        state
            .instances
            .values()
            .map(|i| World::describe_instance(cluster, state, i))
            .collect()
    }

    pub fn tasks(&self, cluster: &str) -> Vec<TaskView> {
        let world = self.world();
        let Some(state) = world.clusters.get(cluster) else {
            return Vec::new();
        };
        state
            .tasks
            .values()
            .map(|t| TaskView {
                id: t.id.clone(),
                instance_id: t.instance_id.clone(),
                group: t.group.clone(),
                definition: t.definition.clone(),
                started_by: t.started_by.clone(),
                last_status: t.last_status.clone(),
                desired_status: t.desired_status.clone(),
                health: t.health.clone(),
                created_at: t.created_at,
                stopped_at: t.stopped_at,
                stopped_reason: t.stopped_reason.clone(),
                tags: t.tags.clone(),
                environment: t.environment.clone(),
                execute_command: t.execute_command,
            })
            .collect()
    }
}

fn custom_attributes(attributes: &BTreeMap<String, Option<String>>) -> usize {
    attributes
        .keys()
        .filter(|name| !name.starts_with("ecs."))
        .count()
}

/// Pages of 100 as ECS serves them; the token is the offset of the next page.
fn page_of(arns: Vec<String>, next_token: Option<String>) -> Page {
    const PAGE: usize = 100;
    let start = next_token
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0)
        .min(arns.len());
    let end = (start + PAGE).min(arns.len());
    Page {
        next_token: (end < arns.len()).then(|| end.to_string()),
        arns: arns[start..end].to_vec(),
    }
}

impl Ecs for ClusterModel {
    async fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        let state = world.cluster(cluster, "ListContainerInstances")?;
        let arns: Vec<String> = state
            .instances
            .values()
            .filter(|i| match &status {
                Some(wanted) => &i.status == wanted,
                None => matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining),
            })
            .map(|i| instance_arn(cluster, &i.id))
            .collect();
        world.call("ListContainerInstances", false, &target)?;
        Ok(page_of(arns, next_token))
    }

    async fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> Result<Vec<String>, EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        let state = world.cluster(cluster, "ListContainerInstances")?;
        let arns: Vec<String> = state
            .instances
            .values()
            .filter(|i| {
                i.ec2_instance_id == ec2_instance_id
                    && matches!(i.status, InstanceStatus::Active | InstanceStatus::Draining)
            })
            .map(|i| instance_arn(cluster, &i.id))
            .collect();
        world.call("ListContainerInstances", false, &target)?;
        Ok(arns)
    }

    async fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<(), EcsError> {
        for batch in instances.chunks(ecs_daemons::ecs::DRAIN_BATCH) {
            {
                let mut world = self.world();
                world.cluster(cluster, "UpdateContainerInstancesState")?;
                world.call(
                    "UpdateContainerInstancesState",
                    true,
                    &format!("cluster {cluster}"),
                )?;
            }
            for instance in batch {
                self.drain_instance(cluster, instance);
            }
        }
        Ok(())
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<Vec<ContainerInstance>, EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        world.cluster(cluster, "DescribeContainerInstances")?;
        let mut described = Vec::new();
        for batch in instances.chunks(DESCRIBE_BATCH) {
            world.call("DescribeContainerInstances", false, &target)?;
            let state = world.cluster(cluster, "DescribeContainerInstances")?;
            for reference in batch {
                if let Some(instance) = state.instances.get(resource_id(reference)) {
                    described.push(World::describe_instance(cluster, state, instance));
                }
            }
        }
        Ok(described)
    }

    async fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster} ({filter})");
        let state = world.cluster(cluster, "ListTasks")?;
        // ECS lists tasks whose desired status is RUNNING unless told otherwise; STOPPED "limits
        // the results to tasks that Amazon ECS has set the desired status to STOPPED", stopping
        // ones included, and "recently stopped tasks might appear" (API reference, ListTasks;
        // older editions: "for at least one hour"). The model lists them all, the pessimistic
        // reading for cost; nothing may rely on a stopped task being listed.
        let arns: Vec<String> = state
            .tasks
            .values()
            .filter(|t| match filter {
                TaskFilter::StartedBy(marker) => {
                    t.desired_status == TaskStatus::Running
                        && t.started_by.as_deref() == Some(marker.as_str())
                }
                TaskFilter::ContainerInstance(instance) => {
                    t.desired_status == TaskStatus::Running
                        && t.instance_id == resource_id(instance)
                }
                TaskFilter::StoppingOnInstance(instance) => {
                    t.desired_status == TaskStatus::Stopped
                        && t.instance_id == resource_id(instance)
                }
                TaskFilter::ServiceName(service) => {
                    t.desired_status == TaskStatus::Running
                        && t.group.strip_prefix("service:") == Some(service.as_str())
                }
            })
            .map(|t| task_arn(cluster, &t.id))
            .collect();
        world.call("ListTasks", false, &target)?;
        Ok(page_of(arns, next_token))
    }

    async fn describe_tasks(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Task>, EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        world.cluster(cluster, "DescribeTasks")?;
        let mut described = Vec::new();
        for batch in tasks.chunks(DESCRIBE_BATCH) {
            world.call("DescribeTasks", false, &target)?;
            let state = world.cluster(cluster, "DescribeTasks")?;
            for reference in batch {
                if let Some(task) = state.tasks.get(resource_id(reference)) {
                    described.push(World::describe_task(cluster, task));
                }
            }
        }
        Ok(described)
    }

    async fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> Result<StartTaskOutcome, EcsError> {
        request.validate(cluster)?;
        let mut world = self.world();
        let target = format!("{} in cluster {cluster}", request.task_definition);
        world.cluster(cluster, "StartTask")?;
        world.call("StartTask", true, &target)?;
        let definition = definition_key(&request.task_definition).to_string();
        if !world.definitions.contains_key(&definition) {
            return Err(EcsError::new(
                "StartTask",
                target,
                EcsErrorKind::Invalid,
                "ClientException",
                "TaskDefinition not found.",
            ));
        }
        let invalid_parameter = |message: String| {
            EcsError::new(
                "StartTask",
                target.clone(),
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                message,
            )
        };
        let tags = launch_tags(&world, cluster, &definition, request).map_err(invalid_parameter)?;
        let environment = launch_environment(request).map_err(invalid_parameter)?;
        let mut outcome = StartTaskOutcome::default();
        for reference in &request.container_instances {
            let instance_id = resource_id(reference).to_string();
            match world.place(
                cluster,
                &instance_id,
                &definition,
                &request.group,
                Some(&request.started_by),
                tags.clone(),
            ) {
                Ok(id) => {
                    let state = world.cluster(cluster, "StartTask")?;
                    if let Some(task) = state.tasks.get_mut(&id) {
                        task.environment = environment.clone();
                        task.execute_command = request.enable_execute_command;
                        outcome.tasks.push(World::describe_task(cluster, task));
                    }
                }
                Err(reason) => outcome.failures.push(Failure {
                    arn: Some(instance_arn(cluster, &instance_id)),
                    reason,
                    detail: None,
                }),
            }
        }
        Ok(outcome)
    }

    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<Task, EcsError> {
        let mut world = self.world();
        let target = format!("task {task} in cluster {cluster}");
        world.cluster(cluster, "StopTask")?;
        world.call("StopTask", true, &target)?;
        let id = resource_id(task).to_string();
        let state = world.cluster(cluster, "StopTask")?;
        let Some(model) = state.tasks.get(&id).cloned() else {
            return Err(EcsError::new(
                "StopTask",
                target,
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                "The referenced task was not found.",
            ));
        };
        // The drain-last invariant, checked where it matters: at the stop request.
        if let Some(instance) = state.instances.get(&model.instance_id) {
            let others = state
                .tasks
                .values()
                .filter(|t| {
                    t.instance_id == model.instance_id
                        && !t.last_status.is_terminal()
                        && t.group.starts_with("service:")
                })
                .count();
            if instance.status == InstanceStatus::Draining
                && others > 0
                && model.group.starts_with("daemon:")
            {
                world.early_drain_stops.push(format!(
                    "{} ({}) on {} with {others} application task(s) left",
                    model.id,
                    model.group.trim_start_matches("daemon:"),
                    model.instance_id
                ));
            }
        }
        let live = !model.last_status.is_terminal() && model.desired_status != TaskStatus::Stopped;
        // The lone-copy invariant, checked at the stop request too: a copy of a daemon (a
        // standalone one or one of its DAEMON services) stopped on an ACTIVE instance where
        // no other copy of it is meant to run. A copy ECS calls UNHEALTHY serves nothing (the
        // product counts it missing): replacing it, once its unhealthyGraceSeconds passed,
        // opens no gap.
        let daemon_of = |group: &str| -> Option<String> {
            group
                .strip_prefix("daemon:")
                .map(str::to_string)
                .or_else(|| {
                    ecs_daemons::placement::services::daemon_of_group(group)
                        .map(|(d, _)| d.to_string())
                })
        };
        let mut lone = None;
        let serving = model.health != HealthStatus::Unhealthy;
        if let (true, true, Some(daemon)) = (live, serving, daemon_of(&model.group)) {
            let state = world.cluster(cluster, "StopTask")?;
            let active = state
                .instances
                .get(&model.instance_id)
                .is_some_and(|i| i.status == InstanceStatus::Active);
            let others = state.tasks.values().any(|t| {
                t.id != model.id
                    && t.instance_id == model.instance_id
                    && !t.last_status.is_terminal()
                    && t.desired_status == TaskStatus::Running
                    && daemon_of(&t.group).as_deref() == Some(daemon.as_str())
            });
            if active && !others {
                lone = Some(format!(
                    "{} ({daemon}) on {}: {reason}",
                    model.id, model.instance_id
                ));
            }
        }
        world.lone_copy_stops.extend(lone);
        if live {
            world.stop_task(cluster, &id, "UserInitiated", clip_reason(reason));
        }
        let state = world.cluster(cluster, "StopTask")?;
        Ok(World::describe_task(cluster, &state.tasks[&id]))
    }

    async fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        world.cluster(cluster, "PutAttributes")?;
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            world.call("PutAttributes", true, &target)?;
            let state = world.cluster(cluster, "PutAttributes")?;
            for attribute in batch {
                let Some(instance) = state
                    .instances
                    .get_mut(resource_id(&attribute.container_instance))
                else {
                    return Err(EcsError::new(
                        "PutAttributes",
                        target,
                        EcsErrorKind::NotFound,
                        "TargetNotFoundException",
                        format!("Could not find {}", attribute.container_instance),
                    ));
                };
                let custom_before = custom_attributes(&instance.attributes);
                let previous = instance
                    .attributes
                    .insert(attribute.name.clone(), attribute.value.clone());
                // "You can apply up to 10 custom attributes per resource" (API reference,
                // PutAttributes, AttributeLimitExceededException); ECS's own `ecs.*` ones
                // do not count.
                if custom_attributes(&instance.attributes) > custom_before.max(10) {
                    match previous {
                        Some(value) => instance.attributes.insert(attribute.name.clone(), value),
                        None => instance.attributes.remove(&attribute.name),
                    };
                    return Err(EcsError::new(
                        "PutAttributes",
                        target,
                        EcsErrorKind::Invalid,
                        "AttributeLimitExceededException",
                        "You can apply up to 10 custom attributes per resource.",
                    ));
                }
            }
            for attribute in batch {
                let id = resource_id(&attribute.container_instance).to_string();
                world.notice_services(cluster, Some(&id));
            }
        }
        Ok(())
    }

    async fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        let mut world = self.world();
        let target = format!("cluster {cluster}");
        world.cluster(cluster, "DeleteAttributes")?;
        // The trait's contract, which the SDK adapter keeps by deleting one by one after
        // ECS's TargetNotFoundException: a gone instance fails nothing.
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            world.call("DeleteAttributes", true, &target)?;
            let state = world.cluster(cluster, "DeleteAttributes")?;
            for attribute in batch {
                if let Some(instance) = state
                    .instances
                    .get_mut(resource_id(&attribute.container_instance))
                {
                    instance.attributes.remove(&attribute.name);
                }
            }
            for attribute in batch {
                let id = resource_id(&attribute.container_instance).to_string();
                world.notice_services(cluster, Some(&id));
            }
        }
        Ok(())
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinition, EcsError> {
        let mut world = self.world();
        world.call("DescribeTaskDefinition", false, task_definition)?;
        let key = definition_key(task_definition);
        let Some((revision, model)) = world.definitions.get(key) else {
            return Err(EcsError::new(
                "DescribeTaskDefinition",
                task_definition,
                EcsErrorKind::NotFound,
                "ClientException",
                "Unable to describe task definition.",
            ));
        };
        Ok(TaskDefinition {
            arn: definition_arn(key),
            family: model.family.clone(),
            revision: *revision,
            status: "ACTIVE".into(),
            execution_role_arn: model.execution_role_arn.clone(),
            task_role_arn: model.task_role_arn.clone(),
            cpu: Some(model.cpu),
            memory_mib: Some(model.memory_mib),
            containers: vec![ContainerDefinition {
                name: "main".into(),
                essential: true,
                has_health_check: model.health_check,
                // ECS's defaults (interval 30 s, timeout 5 s, 3 retries).
                health_check_grace_seconds: model.health_check.then_some(105),
            }],
            network_mode: model.network_mode.clone(),
        })
    }

    async fn cluster_capacity_providers(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        let mut world = self.world();
        world.call("DescribeClusters", false, &format!("cluster {cluster}"))?;
        Ok(world
            .cluster(cluster, "DescribeClusters")?
            .providers
            .clone())
    }

    async fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<CapacityProvider>, EcsError> {
        let mut world = self.world();
        let mut described = Vec::new();
        for batch in names.chunks(CAPACITY_PROVIDER_BATCH) {
            world.call(
                "DescribeCapacityProviders",
                false,
                &format!("cluster {cluster}"),
            )?;
            described.extend(
                batch
                    .iter()
                    .filter_map(|name| world.capacity_provider(cluster, name)),
            );
        }
        Ok(described)
    }
}

/// The zone of the `n`th instance registered (three zones, in turn).
fn availability_zone(n: u64) -> &'static str {
    ["us-east-1a", "us-east-1b", "us-east-1c"][(n % 3) as usize]
}

/// An m5 type of the instance's vCPUs (1,024 CPU units each; m5 starts at 2 vCPUs).
fn instance_type(cpu: i64) -> String {
    match cpu / 1024 {
        ..=2 => "m5.large".into(),
        3..=4 => "m5.xlarge".into(),
        vcpus => format!("m5.{}xlarge", vcpus / 4),
    }
}
