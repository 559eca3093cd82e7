//! Drives the engine against the cluster model the way AWS drives the Lambda
//! functions: EventBridge events to `instance-events` / `task-events`, a
//! scheduled `coverage-check`, manual `deploy`. Used by the simulation tests
//! and the demo. Invocations can be made to crash after any number of calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::cluster_model::{ClusterModel, ModelConfig, Rng};
use crate::memory_store::MemoryStore;
use ecs_daemons::coverage_time::CoverageTime;
use ecs_daemons::deploy::{
    deploy, rollback, DeployAnswer, DeployError, DeployRequest, RollbackAnswer, RollbackRequest,
};
use ecs_daemons::ecs::{
    DaemonChange, DaemonDeclaration, DaemonDeployment, DaemonRevision, DaemonServiceDeclaration,
    DaemonState, DaemonTaskDefinition, Ecs, EcsDaemons, EcsError, EcsErrorKind, EcsServices,
    InstanceAttribute, Page, ServiceState, StartTaskOutcome, StartTaskRequest, TaskFilter,
};
use ecs_daemons::engine::{Engine, EngineConfig, EngineError, EventKind, Outcome};
use ecs_daemons::events::{
    DAEMON_DEPLOYMENT_STATE_CHANGE, DAEMON_SERVICE_ACTION, INSTANCE_STATE_CHANGE, TASK_STATE_CHANGE,
};
use ecs_daemons::holds::TerminationHold;
use ecs_daemons::model::{
    CapacityProvider, ContainerInstance, InstanceStatus, Task, TaskDefinition,
};
use ecs_daemons::pacing::{Clock, Paced, Pacing};
use ecs_daemons::rollout::Rollout;
use ecs_daemons::slot::Slot;
use ecs_daemons::spec::DaemonSpec;
use ecs_daemons::store::{
    EventSeen, Expected, ItemKey, PreparedPut, Record, RecordKind, Store, StoreError, Versioned,
};

/// Calls an invocation may still make before it "crashes" (negative means no limit), the
/// DynamoDB calls made, and the chance that a conditional update loses a race.
#[derive(Debug, Default)]
pub struct CrashBudget(
    AtomicI64,
    std::sync::atomic::AtomicUsize,
    std::sync::Mutex<LostRaces>,
    /// Every AWS operation that went through, in order (ECS, DynamoDB and Auto Scaling).
    std::sync::Mutex<Vec<&'static str>>,
);

/// Injected DynamoDB conflicts: another invocation writes the item first.
#[derive(Debug, Default)]
struct LostRaces {
    chance: f64,
    rng: Option<Rng>,
    lost: u64,
}

impl CrashBudget {
    pub fn unlimited() -> Self {
        Self(
            AtomicI64::new(-1),
            Default::default(),
            Default::default(),
            Default::default(),
        )
    }

    /// From now on, each versioned update first loses a race with this chance.
    pub fn lose_races(&self, chance: f64, seed: u64) {
        let mut races = self.races();
        races.chance = chance;
        races.rng = Some(Rng::new(seed));
    }

    /// Races lost so far (each one a `Conflict` the engine saw).
    pub fn races_lost(&self) -> u64 {
        self.races().lost
    }

    fn races(&self) -> std::sync::MutexGuard<'_, LostRaces> {
        self.2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn loses_race(&self) -> bool {
        let mut races = self.races();
        let chance = races.chance;
        let lost = races.rng.as_mut().is_some_and(|rng| rng.chance(chance));
        races.lost += u64::from(lost);
        lost
    }

    fn note_operation(&self, operation: &'static str) {
        self.3
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(operation);
    }

    /// AWS operations made so far, all services together.
    pub fn operation_count(&self) -> usize {
        self.3
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// The AWS operations made since the `from`-th.
    pub fn operations_since(&self, from: usize) -> Vec<&'static str> {
        let operations = self
            .3
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        operations.get(from..).unwrap_or_default().to_vec()
    }

    /// DynamoDB calls made so far (the model counts the ECS ones).
    pub fn store_calls(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }

    fn note_store_call(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }

    /// The next invocation dies after `calls` more calls (ECS and DynamoDB counted together).
    pub fn crash_after(&self, calls: i64) {
        self.0.store(calls, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.0.store(-1, Ordering::SeqCst);
    }

    /// Whether this call may go through.
    fn spend(&self) -> bool {
        let mut current = self.0.load(Ordering::SeqCst);
        loop {
            if current < 0 {
                return true;
            }
            if current == 0 {
                return false;
            }
            match self
                .0
                .compare_exchange(current, current - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    pub fn crashed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

fn crashed_ecs(operation: &'static str) -> EcsError {
    EcsError::new(
        operation,
        "-",
        EcsErrorKind::Transient,
        "InjectedCrash",
        "the invocation crashed before this call",
    )
}

fn crashed_store(operation: &'static str) -> StoreError {
    StoreError::Call {
        operation,
        target: "-".into(),
        code: "InjectedCrash".into(),
        message: "the invocation crashed before this call".into(),
        retryable: true,
    }
}

/// `Ecs` that stops answering once its invocation "crashed".
pub struct Crashing<T> {
    inner: T,
    budget: Arc<CrashBudget>,
}

impl<T> Crashing<T> {
    pub fn new(inner: T, budget: Arc<CrashBudget>) -> Self {
        Self { inner, budget }
    }
}

macro_rules! guarded {
    ($self:ident, $operation:literal, $crashed:ident, $call:expr) => {{
        if !$self.budget.spend() {
            return Err($crashed($operation));
        }
        $self.budget.note_operation($operation);
        $call.await
    }};
}

impl<T: Ecs> Ecs for Crashing<T> {
    async fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> Result<Vec<String>, EcsError> {
        guarded!(
            self,
            "ListContainerInstances",
            crashed_ecs,
            self.inner
                .list_container_instances_of_ec2(cluster, ec2_instance_id)
        )
    }
    async fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<(), EcsError> {
        guarded!(
            self,
            "UpdateContainerInstancesState",
            crashed_ecs,
            self.inner.drain_container_instances(cluster, instances)
        )
    }
    async fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        guarded!(
            self,
            "ListContainerInstances",
            crashed_ecs,
            self.inner
                .list_container_instances_page(cluster, status, next_token)
        )
    }
    async fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<Vec<ContainerInstance>, EcsError> {
        guarded!(
            self,
            "DescribeContainerInstances",
            crashed_ecs,
            self.inner.describe_container_instances(cluster, instances)
        )
    }
    async fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        guarded!(
            self,
            "ListTasks",
            crashed_ecs,
            self.inner.list_tasks_page(cluster, filter, next_token)
        )
    }
    async fn describe_tasks(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Task>, EcsError> {
        guarded!(
            self,
            "DescribeTasks",
            crashed_ecs,
            self.inner.describe_tasks(cluster, tasks)
        )
    }
    async fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> Result<StartTaskOutcome, EcsError> {
        guarded!(
            self,
            "StartTask",
            crashed_ecs,
            self.inner.start_task(cluster, request)
        )
    }
    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<Task, EcsError> {
        guarded!(
            self,
            "StopTask",
            crashed_ecs,
            self.inner.stop_task(cluster, task, reason)
        )
    }
    async fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        guarded!(
            self,
            "PutAttributes",
            crashed_ecs,
            self.inner.put_attributes(cluster, attributes)
        )
    }
    async fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        guarded!(
            self,
            "DeleteAttributes",
            crashed_ecs,
            self.inner.delete_attributes(cluster, attributes)
        )
    }
    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinition, EcsError> {
        guarded!(
            self,
            "DescribeTaskDefinition",
            crashed_ecs,
            self.inner.describe_task_definition(task_definition)
        )
    }
    async fn cluster_capacity_providers(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        guarded!(
            self,
            "DescribeClusters",
            crashed_ecs,
            self.inner.cluster_capacity_providers(cluster)
        )
    }
    async fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<CapacityProvider>, EcsError> {
        guarded!(
            self,
            "DescribeCapacityProviders",
            crashed_ecs,
            self.inner.describe_capacity_providers(cluster, names)
        )
    }
}

impl<T: Ecs> EcsServices for Crashing<T> {
    async fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> Result<ServiceState, EcsError> {
        guarded!(
            self,
            "CreateService",
            crashed_ecs,
            self.inner
                .create_daemon_service(cluster, declaration, client_token)
        )
    }
    async fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> Result<ServiceState, EcsError> {
        guarded!(
            self,
            "UpdateService",
            crashed_ecs,
            self.inner.update_daemon_service(cluster, declaration)
        )
    }
    async fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> Result<(), EcsError> {
        guarded!(
            self,
            "TagResource",
            crashed_ecs,
            self.inner.tag_service(service_arn, tags)
        )
    }
    async fn untag_service(&self, service_arn: &str, keys: &[String]) -> Result<(), EcsError> {
        guarded!(
            self,
            "UntagResource",
            crashed_ecs,
            self.inner.untag_service(service_arn, keys)
        )
    }
    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, EcsError> {
        guarded!(
            self,
            "DescribeServices",
            crashed_ecs,
            self.inner.describe_services(cluster, services)
        )
    }
    async fn delete_service(&self, cluster: &str, service: &str) -> Result<ServiceState, EcsError> {
        guarded!(
            self,
            "DeleteService",
            crashed_ecs,
            self.inner.delete_service(cluster, service)
        )
    }
    async fn active_services_count(&self, cluster: &str) -> Result<usize, EcsError> {
        guarded!(
            self,
            "DescribeClusters",
            crashed_ecs,
            self.inner.active_services_count(cluster)
        )
    }
}

impl<T: Ecs> EcsDaemons for Crashing<T> {
    async fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> Result<DaemonTaskDefinition, EcsError> {
        guarded!(
            self,
            "DescribeDaemonTaskDefinition",
            crashed_ecs,
            self.inner.describe_daemon_task_definition(reference)
        )
    }
    async fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> Result<DaemonChange, EcsError> {
        guarded!(
            self,
            "CreateDaemon",
            crashed_ecs,
            self.inner.create_daemon(declaration, client_token)
        )
    }
    async fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> Result<DaemonChange, EcsError> {
        guarded!(
            self,
            "UpdateDaemon",
            crashed_ecs,
            self.inner.update_daemon(daemon_arn, declaration)
        )
    }
    async fn delete_daemon(&self, daemon_arn: &str) -> Result<DaemonChange, EcsError> {
        guarded!(
            self,
            "DeleteDaemon",
            crashed_ecs,
            self.inner.delete_daemon(daemon_arn)
        )
    }
    async fn describe_daemon(&self, daemon_arn: &str) -> Result<DaemonState, EcsError> {
        guarded!(
            self,
            "DescribeDaemon",
            crashed_ecs,
            self.inner.describe_daemon(daemon_arn)
        )
    }
    async fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> Result<Vec<DaemonDeployment>, EcsError> {
        guarded!(
            self,
            "DescribeDaemonDeployments",
            crashed_ecs,
            self.inner.describe_daemon_deployments(deployment_arns)
        )
    }
    async fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> Result<Vec<DaemonRevision>, EcsError> {
        guarded!(
            self,
            "DescribeDaemonRevisions",
            crashed_ecs,
            self.inner.describe_daemon_revisions(revision_arns)
        )
    }
}

/// Rewrites a stored record unchanged: its version moves on, as after another writer's update.
async fn touch<T: Store, R: Record>(store: &T, key: &ItemKey) -> Result<(), StoreError> {
    if let Some(current) = store.get::<R>(key).await? {
        store.put(&current.record, current.expected()).await?;
    }
    Ok(())
}

impl<T: Store> Store for Crashing<T> {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        self.budget.note_store_call();
        guarded!(self, "GetItem", crashed_store, self.inner.get(key))
    }
    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        self.budget.note_store_call();
        if matches!(expected, Expected::Version(_)) && self.budget.loses_race() {
            // Another invocation updated the item a moment earlier (same content, next
            // version): this write must find the newer version and fail with Conflict.
            if let Some(current) = self.inner.get::<R>(&record.key()).await? {
                self.inner.put(&current.record, current.expected()).await?;
            }
        }
        guarded!(
            self,
            "PutItem",
            crashed_store,
            self.inner.put(record, expected)
        )
    }
    async fn put_all(&self, puts: &[PreparedPut]) -> Result<Vec<u64>, StoreError> {
        self.budget.note_store_call();
        let versioned = puts
            .iter()
            .find(|p| matches!(p.expected, Expected::Version(_)));
        if let Some(put) = versioned.filter(|_| self.budget.loses_race()) {
            // Another invocation updated one of the items a moment earlier (same content,
            // next version): the whole transaction must fail with Conflict.
            match put.kind {
                RecordKind::Spec => touch::<_, DaemonSpec>(&self.inner, &put.key).await?,
                RecordKind::Rollout => touch::<_, Rollout>(&self.inner, &put.key).await?,
                RecordKind::Slot => touch::<_, Slot>(&self.inner, &put.key).await?,
                RecordKind::Hold => touch::<_, TerminationHold>(&self.inner, &put.key).await?,
                RecordKind::CoverageTime => touch::<_, CoverageTime>(&self.inner, &put.key).await?,
                RecordKind::ManagedDaemon => {
                    touch::<_, ecs_daemons::managed::ManagedDaemon>(&self.inner, &put.key).await?
                }
            }
        }
        guarded!(
            self,
            "TransactWriteItems",
            crashed_store,
            self.inner.put_all(puts)
        )
    }
    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "DeleteItem",
            crashed_store,
            self.inner.delete(key, expected_version)
        )
    }
    async fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "Query",
            crashed_store,
            self.inner.query(cluster, daemon)
        )
    }
    async fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "Query",
            crashed_store,
            self.inner.list_in_cluster(cluster)
        )
    }
    async fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<EventSeen, StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "PutItem",
            crashed_store,
            self.inner.remember_event(event_id, now, ttl)
        )
    }
    async fn forget_event(&self, event_id: &str) -> Result<(), StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "DeleteItem",
            crashed_store,
            self.inner.forget_event(event_id)
        )
    }
    async fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ecs_daemons::store::WakeBooking, StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "PutItem",
            crashed_store,
            self.inner.book_wake(cluster, at, now)
        )
    }
}

impl<T: ecs_daemons::autoscaling::AutoScaling> ecs_daemons::autoscaling::AutoScaling
    for Crashing<T>
{
    fn waiting_terminations<'a>(
        &'a self,
        groups: &'a [String],
    ) -> ecs_daemons::autoscaling::WaitingAnswer<'a> {
        if !self.budget.spend() {
            let error = ecs_daemons::autoscaling::AutoScalingError {
                operation: "DescribeAutoScalingGroups",
                instance: groups.join(","),
                kind: ecs_daemons::autoscaling::AutoScalingErrorKind::Transient,
                code: "InjectedCrash".into(),
                message: "the invocation crashed before this call".into(),
            };
            return Box::pin(async move { Err(error) });
        }
        self.budget.note_operation("DescribeAutoScalingGroups");
        self.inner.waiting_terminations(groups)
    }
    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a ecs_daemons::autoscaling::LifecycleAction,
    ) -> ecs_daemons::autoscaling::AutoScalingAnswer<'a> {
        if !self.budget.spend() {
            return Box::pin(
                async move { Err(crashed_autoscaling("CompleteLifecycleAction", action)) },
            );
        }
        self.budget.note_operation("CompleteLifecycleAction");
        self.inner.complete_lifecycle_action(action)
    }
    fn record_lifecycle_action_heartbeat<'a>(
        &'a self,
        action: &'a ecs_daemons::autoscaling::LifecycleAction,
    ) -> ecs_daemons::autoscaling::AutoScalingAnswer<'a> {
        if !self.budget.spend() {
            return Box::pin(async move {
                Err(crashed_autoscaling(
                    "RecordLifecycleActionHeartbeat",
                    action,
                ))
            });
        }
        self.budget.note_operation("RecordLifecycleActionHeartbeat");
        self.inner.record_lifecycle_action_heartbeat(action)
    }
}

impl<T: ecs_daemons::alarms::Alarms> ecs_daemons::alarms::Alarms for Crashing<T> {
    fn describe_alarms<'a>(&'a self, names: &'a [String]) -> ecs_daemons::alarms::AlarmsAnswer<'a> {
        if !self.budget.spend() {
            let error = ecs_daemons::alarms::AlarmsError {
                operation: "DescribeAlarms",
                kind: ecs_daemons::alarms::AlarmsErrorKind::Transient,
                code: "InjectedCrash".into(),
                message: "the invocation crashed before this call".into(),
            };
            return Box::pin(async move { Err(error) });
        }
        self.budget.note_operation("DescribeAlarms");
        self.inner.describe_alarms(names)
    }
}

impl<T: ecs_daemons::wake::WakeQueue> ecs_daemons::wake::WakeQueue for Crashing<T> {
    fn send<'a>(&'a self, wake: &'a ecs_daemons::wake::Wake) -> ecs_daemons::wake::WakeSent<'a> {
        if !self.budget.spend() {
            let error = ecs_daemons::wake::WakeError {
                code: "InjectedCrash".into(),
                message: "the invocation crashed before this call".into(),
            };
            return Box::pin(async move { Err(error) });
        }
        self.budget.note_operation("SendMessage");
        self.inner.send(wake)
    }
}

fn crashed_autoscaling(
    operation: &'static str,
    action: &ecs_daemons::autoscaling::LifecycleAction,
) -> ecs_daemons::autoscaling::AutoScalingError {
    ecs_daemons::autoscaling::AutoScalingError {
        operation,
        instance: action.ec2_instance_id.clone(),
        kind: ecs_daemons::autoscaling::AutoScalingErrorKind::Transient,
        code: "InjectedCrash".into(),
        message: "the invocation crashed before this call".into(),
    }
}

/// The model's simulated clock: a paced call waits by letting model time pass, so the
/// cluster moves on meanwhile, as it would while a Lambda waits.
pub struct ModelClock(pub Arc<ClusterModel>);

impl Clock for ModelClock {
    fn seconds(&self) -> f64 {
        self.0.now().timestamp_millis() as f64 / 1000.0
    }

    async fn sleep(&self, seconds: f64) {
        self.0
            .advance(Duration::milliseconds((seconds * 1000.0).ceil() as i64));
    }
}

pub type SimEcs = Paced<Crashing<Arc<ClusterModel>>, ModelClock>;
pub type SimEngine = Engine<SimEcs, Crashing<Arc<MemoryStore>>>;

/// Most events one invocation of an event function takes (the SQS batch size in template.yaml).
pub const EVENT_BATCH: usize = 100;
/// The wake queue's BatchSize (template.yaml, `CoverageCheckFunction`'s `Wakes`).
pub const WAKE_BATCH: usize = 10;

/// What one delivered event or scheduled run led to.
#[derive(Debug)]
pub struct Invocation {
    pub function: &'static str,
    /// Model time of the invocation.
    pub at: DateTime<Utc>,
    /// The events of the batch (none for scheduled and manual runs).
    pub events: Vec<Value>,
    /// The batch's outcomes merged into one, or the first failure.
    pub result: Result<Outcome, EngineError>,
    /// ECS calls this invocation made.
    pub ecs_calls: usize,
    /// DynamoDB calls this invocation made.
    pub store_calls: usize,
    pub crashed: bool,
}

/// The engine wired to the model and an in-memory store, like the deployed functions.
pub struct Harness {
    pub model: Arc<ClusterModel>,
    pub store: Arc<MemoryStore>,
    pub budget: Arc<CrashBudget>,
    /// The task-events function's engine (tests call it directly too); every function runs
    /// in its own process with its own pacing share, as deployed.
    pub engine: SimEngine,
    instance_engine: SimEngine,
    check_engine: SimEngine,
    /// deploy and rollback.
    manual_engine: SimEngine,
    lifecycle_engine: SimEngine,
    pub cluster: String,
    /// Chance that an invocation crashes after a random number of calls.
    pub crash_chance: f64,
    /// Invocations that crashed.
    pub crashes: u64,
    rng: Rng,
    invocations: u64,
    /// The wake queue every function that books wakes sends to; the coverage-check receives.
    pub wakes: Arc<crate::wake_queue::WakeQueueModel>,
    /// The schedule's interval and the period of its last run (`run_scheduled`).
    schedule_period: Option<(i64, i64)>,
    /// Lifecycle events whose invocation failed: Lambda retries an asynchronous invocation
    /// twice (about 1 and 2 minutes later). (due, event, attempts so far)
    termination_retries: Vec<(DateTime<Utc>, Value, u32)>,
    /// The function of the invocation under way, and the operation count at its start.
    current: (&'static str, usize),
    /// Every AWS operation each function made (the policy check reads it).
    operations_by_function: BTreeMap<&'static str, BTreeSet<&'static str>>,
    /// The last coverage-check a new rollout record started through the table's stream.
    last_stream_check: Option<Invocation>,
}

impl Harness {
    pub fn new(cluster: &str, providers: &[&str], config: ModelConfig) -> Self {
        Self::with_pacing(cluster, providers, config, Pacing::share)
    }

    /// The harness with each function's pacing given by `pacing` (benchmarks measure the
    /// control loop alone with unbounded pacing on a model without ECS's rate limits).
    pub fn with_pacing(
        cluster: &str,
        providers: &[&str],
        config: ModelConfig,
        pacing: impl Fn(&str) -> Pacing,
    ) -> Self {
        let model = Arc::new(ClusterModel::new(config));
        model.create_cluster(cluster, providers);
        let store = Arc::new(MemoryStore::new());
        let budget = Arc::new(CrashBudget::unlimited());
        let wakes = Arc::new(crate::wake_queue::WakeQueueModel::new(Arc::clone(&model)));
        let engine_of = |function: &str| {
            let engine = Engine::new(
                Paced::new(
                    Crashing::new(Arc::clone(&model), Arc::clone(&budget)),
                    ModelClock(Arc::clone(&model)),
                    pacing(function),
                ),
                Crashing::new(Arc::clone(&store), Arc::clone(&budget)),
                EngineConfig {
                    clusters: vec![cluster.to_string()],
                    ..EngineConfig::default()
                },
            );
            // As deployed (`runtime::production_engine`): only the functions whose role
            // allows lifecycle actions hold terminations, only those whose role may read
            // alarms read them.
            let engine = if ecs_daemons::runtime::holds_terminations(function) {
                engine.with_autoscaling(Arc::new(Crashing::new(
                    Arc::clone(&model),
                    Arc::clone(&budget),
                )))
            } else {
                engine
            };
            let engine = if ecs_daemons::runtime::reads_alarms(function) {
                engine.with_alarms(Arc::new(Crashing::new(
                    Arc::clone(&model),
                    Arc::clone(&budget),
                )))
            } else {
                engine
            };
            if ecs_daemons::runtime::books_wakes(function) {
                engine.with_wakes(Arc::new(Crashing::new(
                    Arc::clone(&wakes),
                    Arc::clone(&budget),
                )))
            } else {
                engine
            }
        };
        let engine = engine_of("task-events");
        let instance_engine = engine_of("instance-events");
        let check_engine = engine_of("coverage-check");
        let manual_engine = engine_of("deploy");
        let lifecycle_engine = engine_of("lifecycle-hook");
        let rng = Rng::new(config_seed(&model));
        Self {
            model,
            store,
            budget,
            engine,
            instance_engine,
            check_engine,
            manual_engine,
            lifecycle_engine,
            cluster: cluster.into(),
            crash_chance: 0.0,
            crashes: 0,
            rng,
            invocations: 0,
            wakes,
            schedule_period: None,
            termination_retries: Vec::new(),
            current: ("", 0),
            operations_by_function: BTreeMap::new(),
            last_stream_check: None,
        }
    }

    /// Every AWS operation (ECS, DynamoDB, Auto Scaling) each function has made so far.
    pub fn operations_by_function(&self) -> &BTreeMap<&'static str, BTreeSet<&'static str>> {
        &self.operations_by_function
    }

    /// Names the next invocation (of `function`) and, by chance, arms its crash.
    fn invocation_id(&mut self, function: &'static str) -> String {
        self.current = (function, self.budget.operation_count());
        self.invocations += 1;
        if self.rng.chance(self.crash_chance) {
            self.budget.crash_after(self.rng.below(8) as i64);
        }
        format!("invocation-{}", self.invocations)
    }

    fn finish(&mut self) -> bool {
        let (function, from) = self.current;
        self.operations_by_function
            .entry(function)
            .or_default()
            .extend(self.budget.operations_since(from));
        let crashed = self.budget.crashed();
        self.budget.disarm();
        self.crashes += u64::from(crashed);
        crashed
    }

    /// Delivers every due event to the function its rule targets, through its queue: the
    /// events of the moment in batches of up to [`EVENT_BATCH`] (Lambda's batching window).
    pub async fn deliver_events(&mut self) -> Vec<Invocation> {
        let mut instance_events = Vec::new();
        let mut task_events = Vec::new();
        let mut terminations = Vec::new();
        for event in self.model.take_due_events() {
            match event["detail-type"].as_str() {
                Some(INSTANCE_STATE_CHANGE) => instance_events.push(event),
                // The daemon events' rule feeds the task-events queue too (template.yaml).
                // The task rule lets through daemon copies' changes and other tasks' ends.
                Some(TASK_STATE_CHANGE) if ecs_daemons::events::task_rule_passes(&event) => {
                    task_events.push(event)
                }
                Some(DAEMON_SERVICE_ACTION | DAEMON_DEPLOYMENT_STATE_CHANGE) => {
                    task_events.push(event)
                }
                Some(ecs_daemons::autoscaling::TERMINATE_ACTION) => terminations.push(event),
                _ => {}
            }
        }
        let mut done = Vec::new();
        // The lifecycle rule invokes its function directly, one event at a time; a failed
        // invocation is retried by Lambda.
        let now = self.model.now();
        let mut due: Vec<(Value, u32)> = terminations.into_iter().map(|e| (e, 0)).collect();
        let (retry_now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.termination_retries)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.termination_retries = later;
        due.extend(
            retry_now
                .into_iter()
                .map(|(_, event, attempts)| (event, attempts)),
        );
        for (event, attempts) in due {
            let invocation = self.deliver_termination(event.clone()).await;
            let failed =
                invocation.crashed || invocation.result.as_ref().is_err_and(|e| e.is_retryable());
            if failed && attempts < 2 {
                let at = self.model.now() + Duration::seconds(60 * i64::from(attempts + 1));
                self.termination_retries.push((at, event, attempts + 1));
            }
            done.push(invocation);
        }
        for (function, events) in [
            ("instance-events", instance_events),
            ("task-events", task_events),
        ] {
            for batch in events.chunks(EVENT_BATCH) {
                done.push(self.deliver_batch(function, batch.to_vec()).await);
            }
        }
        done
    }

    /// One invocation of `lifecycle-hook` with a terminate lifecycle event.
    pub async fn deliver_termination(&mut self, event: Value) -> Invocation {
        let id = self.invocation_id("lifecycle-hook");
        let now = self.model.now();
        let before = self.model.call_count();
        let store_before = self.budget.store_calls();
        let result = self
            .lifecycle_engine
            .on_terminate_event(event.clone(), now, &id)
            .await
            .map(|answer| {
                let mut outcome = answer.reconcile.unwrap_or_else(|| Outcome {
                    cluster: answer.cluster.clone().unwrap_or_default(),
                    ..Outcome::default()
                });
                outcome.terminations.extend(answer.terminations);
                outcome
            });
        let crashed = self.finish();
        Invocation {
            function: "lifecycle-hook",
            at: now,
            events: vec![event],
            result,
            ecs_calls: self.model.call_count() - before,
            store_calls: self.budget.store_calls() - store_before,
            crashed,
        }
    }

    /// One invocation of an event function with this batch (what SQS hands it).
    pub async fn deliver_batch(
        &mut self,
        function: &'static str,
        events: Vec<Value>,
    ) -> Invocation {
        let id = self.invocation_id(function);
        let now = self.model.now();
        let before = self.model.call_count();
        let store_before = self.budget.store_calls();
        let (engine, kind) = if function == "instance-events" {
            (&self.instance_engine, EventKind::Instance)
        } else {
            (&self.engine, EventKind::Task)
        };
        let batch = engine.on_events(events.clone(), kind, now, &id).await;
        let result = match batch.failures.into_iter().next() {
            Some(failure) => Err(failure.error),
            None => Ok(merged(batch.outcomes)),
        };
        let crashed = self.finish();
        Invocation {
            function,
            at: now,
            events,
            result,
            ecs_calls: self.model.call_count() - before,
            store_calls: self.budget.store_calls() - store_before,
            crashed,
        }
    }

    /// Every function's heartbeat interval and drain limit for held terminations.
    /// The terminate hook whose lost events the coverage check adopts (only it, as deployed:
    /// `runtime::production_engine`).
    pub fn set_terminate_hook(&mut self, hook: ecs_daemons::autoscaling::TerminateHook) {
        self.configure_all(|config| config.hook_name = hook.name.clone());
        self.check_engine
            .configure(|config| config.terminate_hook = Some(hook));
    }

    pub fn set_hold_settings(&mut self, settings: ecs_daemons::holds::HoldSettings) {
        self.configure_all(|config| config.holds = settings);
    }

    /// The services-per-cluster quota the stack is configured with.
    pub fn set_services_per_cluster(&mut self, quota: usize) {
        self.configure_all(|config| config.services_per_cluster = quota);
    }

    /// The same change to every function's configuration (as one stack's environment).
    fn configure_all(&mut self, change: impl Fn(&mut EngineConfig)) {
        for engine in [
            &mut self.engine,
            &mut self.instance_engine,
            &mut self.check_engine,
            &mut self.manual_engine,
            &mut self.lifecycle_engine,
        ] {
            engine.configure(&change);
        }
    }

    /// Seconds each function's pacer held ECS calls back: task-events, instance-events,
    /// coverage-check, deploy.
    pub fn paced_seconds_by_function(&self) -> [f64; 4] {
        [
            self.engine.ecs().waited_seconds(),
            self.instance_engine.ecs().waited_seconds(),
            self.check_engine.ecs().waited_seconds(),
            self.manual_engine.ecs().waited_seconds(),
        ]
    }

    /// Seconds the functions' pacers held ECS calls back, all functions together.
    pub fn paced_seconds(&self) -> f64 {
        [
            &self.engine,
            &self.instance_engine,
            &self.check_engine,
            &self.manual_engine,
        ]
        .iter()
        .map(|engine| engine.ecs().waited_seconds())
        .sum()
    }

    /// The scheduled `coverage-check`.
    pub async fn coverage_check(&mut self) -> Invocation {
        let id = self.invocation_id("coverage-check");
        let now = self.model.now();
        let before = self.model.call_count();
        let store_before = self.budget.store_calls();
        let result = self
            .check_engine
            .coverage_check_cluster(&self.cluster.clone(), now, &id)
            .await;
        let crashed = self.finish();
        Invocation {
            function: "coverage-check",
            at: now,
            events: Vec::new(),
            result,
            ecs_calls: self.model.call_count() - before,
            store_calls: self.budget.store_calls() - store_before,
            crashed,
        }
    }

    /// The scheduled `coverage-check`: one reconcile (its wakes are booked like any other's).
    pub async fn scheduled_check(&mut self) -> Invocation {
        self.coverage_check().await
    }

    /// The wake queue's messages delivered by now, in batches of up to [`WAKE_BATCH`] (the
    /// event source's BatchSize): each batch one coverage-check, as `runtime::coverage_check`
    /// runs it (due clusters reconciled after the fraction of a second their timers left,
    /// far wakes sent on). A batch that failed is delivered again after the visibility timeout.
    pub async fn deliver_wakes(&mut self) -> Vec<Invocation> {
        let mut done = Vec::new();
        loop {
            let received = self.wakes.receive(self.model.now(), WAKE_BATCH);
            if received.is_empty() {
                return done;
            }
            let messages = received
                .iter()
                .map(|(id, wake)| ecs_daemons::sqs::Message {
                    message_id: id.clone(),
                    body: serde_json::from_str(&wake.body()).map_err(|e| e.to_string()),
                })
                .collect();
            let plan = ecs_daemons::runtime::plan_wakes(
                messages,
                &self.check_engine.config().clusters,
                self.model.now(),
            );
            let id = self.invocation_id("coverage-check");
            let mut retry = Vec::new();
            for (message_id, wake) in &plan.send_again {
                if self.check_engine.send_wake_again(wake).await.is_err() {
                    retry.push(message_id.clone());
                }
            }
            self.model.advance(plan.wait.max(Duration::zero()));
            for (cluster, message_ids) in plan.reconcile {
                let now = self.model.now();
                let before = self.model.call_count();
                let store_before = self.budget.store_calls();
                let result = self
                    .check_engine
                    .coverage_check_cluster(&cluster, now, &id)
                    .await;
                if result.as_ref().is_err_and(EngineError::is_retryable) {
                    retry.extend(message_ids);
                }
                done.push(Invocation {
                    function: "coverage-check",
                    at: now,
                    events: Vec::new(),
                    result,
                    ecs_calls: self.model.call_count() - before,
                    store_calls: self.budget.store_calls() - store_before,
                    crashed: false,
                });
            }
            let crashed = self.finish();
            if let Some(last) = done.last_mut() {
                last.crashed |= crashed;
            }
            // A crashed invocation answers nothing: its whole batch comes again.
            let delivered: Vec<String> = received
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !crashed && !retry.contains(id))
                .collect();
            self.wakes.delete(&delivered);
        }
    }

    /// Runs `duration`, second by second: events as they come, the schedule every
    /// `interval` seconds, and the wake queue's messages at their own moments.
    pub async fn run_scheduled(&mut self, duration: Duration, interval: i64) -> Vec<Invocation> {
        let mut done = Vec::new();
        let end = self.model.now() + duration;
        // The schedule's last period is the harness's, not this call's: a wake-up that a
        // previous call ran across a period's start must not swallow that period's run.
        let mut period = self
            .schedule_period
            .filter(|(every, _)| *every == interval)
            .map_or_else(
                || self.model.now().timestamp().div_euclid(interval),
                |(_, period)| period,
            );
        while self.model.now() < end {
            let tick = self.model.now() + Duration::seconds(1);
            done.extend(self.wakes_before(tick).await);
            // Paced calls let model time pass inside invocations: catch up to the tick.
            self.model
                .advance((tick - self.model.now()).max(Duration::zero()));
            done.extend(self.deliver_events().await);
            let now_period = self.model.now().timestamp().div_euclid(interval);
            if now_period != period {
                period = now_period;
                self.schedule_period = Some((interval, period));
                done.push(self.scheduled_check().await);
            }
        }
        done
    }

    /// The wake queue's deliveries before `tick`, each at its own moment.
    async fn wakes_before(&mut self, tick: DateTime<Utc>) -> Vec<Invocation> {
        let mut done = Vec::new();
        while let Some(at) = self.wakes.next_delivery().filter(|at| *at < tick) {
            self.model
                .advance((at - self.model.now()).max(Duration::zero()));
            let delivered = self.deliver_wakes().await;
            if delivered.is_empty() && self.wakes.next_delivery() == Some(at) {
                break;
            }
            done.extend(delivered);
        }
        done
    }

    /// The engine of `function` as deployed (its clients and pacing share): for tests that
    /// invoke a function's handler directly.
    pub fn engine_of(&self, function: &str) -> &SimEngine {
        match function {
            "instance-events" => &self.instance_engine,
            "coverage-check" => &self.check_engine,
            "deploy" | "rollback" | "status" => &self.manual_engine,
            "lifecycle-hook" => &self.lifecycle_engine,
            _ => &self.engine,
        }
    }

    pub async fn deploy(&mut self, request: DeployRequest) -> Result<DeployAnswer, DeployError> {
        let id = self.invocation_id("deploy");
        let now = self.model.now();
        let answer = deploy(&self.manual_engine, request, now, &id).await;
        self.finish();
        if answer
            .as_ref()
            .is_ok_and(|a| a.first_reconcile_by.is_some())
        {
            self.rollout_recorded().await;
        }
        answer
    }

    /// The coverage-check the table's stream invokes for a new rollout record (template.yaml,
    /// `RolloutRecorded`): one reconcile, no wake-up window. Lambda runs the function once at
    /// a time, and the harness runs one invocation at a time, so it comes right after.
    /// (A failed one is left to the schedule, as the stream's retries end within its minute.)
    async fn rollout_recorded(&mut self) {
        let check = self.coverage_check().await;
        self.last_stream_check = Some(check);
    }

    /// The outcome of the coverage-check the last new rollout record started (the first
    /// wave a deploy or rollback now leaves to it).
    pub fn last_stream_check(&self) -> Option<&Outcome> {
        self.last_stream_check.as_ref()?.result.as_ref().ok()
    }

    /// `deploy` with `"dryRun": true`.
    pub async fn deploy_dry_run(
        &mut self,
        request: DeployRequest,
    ) -> Result<ecs_daemons::dry_run::DryRunAnswer, DeployError> {
        self.invocation_id("deploy");
        let now = self.model.now();
        let answer = ecs_daemons::deploy::deploy_dry_run(&self.manual_engine, request, now).await;
        self.finish();
        answer
    }

    /// `rollback` with `"dryRun": true`.
    pub async fn rollback_dry_run(
        &mut self,
        request: RollbackRequest,
    ) -> Result<ecs_daemons::dry_run::DryRunAnswer, DeployError> {
        self.invocation_id("rollback");
        let now = self.model.now();
        let answer = ecs_daemons::deploy::rollback_dry_run(&self.manual_engine, request, now).await;
        self.finish();
        answer
    }

    pub async fn rollback(
        &mut self,
        request: RollbackRequest,
    ) -> Result<RollbackAnswer, DeployError> {
        let id = self.invocation_id("rollback");
        let now = self.model.now();
        let answer = rollback(&self.manual_engine, request, now, &id).await;
        self.finish();
        if answer
            .as_ref()
            .is_ok_and(|a| a.first_reconcile_by.is_some())
        {
            self.rollout_recorded().await;
        }
        answer
    }

    /// `deploy` in its undeploy mode.
    pub async fn undeploy(
        &mut self,
        request: ecs_daemons::deploy::UndeployRequest,
    ) -> Result<ecs_daemons::deploy::UndeployAnswer, DeployError> {
        let id = self.invocation_id("deploy");
        let now = self.model.now();
        let answer = ecs_daemons::deploy::undeploy(&self.manual_engine, request, now, &id).await;
        self.finish();
        answer
    }

    /// `rollback` in its rollout-control mode: pause, resume or promote.
    pub async fn control_rollout(
        &mut self,
        request: ecs_daemons::deploy::RolloutControlRequest,
    ) -> Result<ecs_daemons::deploy::RolloutControlAnswer, DeployError> {
        let id = self.invocation_id("rollback");
        let now = self.model.now();
        let answer =
            ecs_daemons::deploy::control_rollout(&self.manual_engine, request, now, &id).await;
        self.finish();
        answer
    }

    /// One daemon's part of a `status` invoke on the harness's cluster (tests: the daemon
    /// must be declared).
    pub async fn daemon_status(&mut self, daemon: &str) -> ecs_daemons::deploy::DaemonStatus {
        let request = ecs_daemons::deploy::StatusRequest {
            cluster: self.cluster.clone(),
            daemon: Some(daemon.into()),
        };
        let mut answer = self.status(request).await.expect("status answers");
        assert_eq!(answer.daemons.len(), 1, "status of {daemon}");
        answer.daemons.remove(0)
    }

    /// One `status` invoke.
    pub async fn status(
        &mut self,
        request: ecs_daemons::deploy::StatusRequest,
    ) -> Result<ecs_daemons::deploy::StatusAnswer, DeployError> {
        self.invocation_id("status");
        let now = self.model.now();
        let answer = ecs_daemons::deploy::status(&self.manual_engine, request, now).await;
        self.finish();
        answer
    }

    /// Moves time forward one `tick` at a time, delivering events after each tick.
    pub async fn run_for(&mut self, duration: Duration, tick: Duration) -> Vec<Invocation> {
        let mut done = Vec::new();
        let end = self.model.now() + duration;
        while self.model.now() < end {
            let next = self.model.now() + tick;
            done.extend(self.wakes_before(next).await);
            self.model
                .advance((next - self.model.now()).max(Duration::zero()));
            done.extend(self.deliver_events().await);
        }
        done
    }
}

/// The outcomes of one batch as one: what was done, added up; skipped only if all were.
fn merged(outcomes: Vec<Outcome>) -> Outcome {
    let mut outcomes = outcomes.into_iter();
    let Some(mut all) = outcomes.next() else {
        return Outcome::default();
    };
    for outcome in outcomes {
        if all.skipped.is_some() && outcome.skipped.is_none() {
            let done = std::mem::replace(&mut all, outcome);
            all.conflicts += done.conflicts;
            all.terminations.extend(done.terminations);
            all.errors.extend(done.errors);
            continue;
        }
        if outcome.skipped.is_some() {
            all.terminations.extend(outcome.terminations);
            all.errors.extend(outcome.errors);
            continue;
        }
        all.instance = None;
        all.started.extend(outcome.started);
        all.requested.extend(outcome.requested);
        all.stopped_early.extend(outcome.stopped_early);
        all.start_failures.extend(outcome.start_failures);
        all.stopped.extend(outcome.stopped);
        all.ready_set.extend(outcome.ready_set);
        all.ready_cleared.extend(outcome.ready_cleared);
        all.rollouts_started.extend(outcome.rollouts_started);
        all.rollouts_ended.extend(outcome.rollouts_ended);
        all.conflicts += outcome.conflicts;
        all.terminations.extend(outcome.terminations);
        all.coverage_times.extend(outcome.coverage_times);
        all.drain_reads.extend(outcome.drain_reads);
        all.errors.extend(outcome.errors);
        all.wake_at = match (all.wake_at, outcome.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    all
}

/// The crash generator follows the model's seed, so one seed replays one run.
fn config_seed(model: &ClusterModel) -> u64 {
    model.seed().wrapping_mul(0x2545_F491_4F6C_DD1D)
}
