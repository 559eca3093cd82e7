//! Drives the engine against the cluster model the way AWS drives the Lambda
//! functions: EventBridge events to `instance-events` / `task-events`, a
//! scheduled `coverage-check`, manual `deploy`. Used by the simulation tests
//! and the demo. Invocations can be made to crash after any number of calls.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::cluster_model::{ClusterModel, ModelConfig, Rng};
use crate::deploy::{
    deploy, rollback, DeployAnswer, DeployError, DeployRequest, RollbackAnswer, RollbackRequest,
};
use crate::ecs::{
    Ecs, EcsError, EcsErrorKind, InstanceAttribute, StartTaskOutcome, StartTaskRequest, TaskFilter,
};
use crate::engine::{Engine, EngineConfig, EngineError, Outcome};
use crate::events::{INSTANCE_STATE_CHANGE, TASK_STATE_CHANGE};
use crate::model::{ContainerInstance, InstanceStatus, Task, TaskDefinition};
use crate::store::{
    DaemonSpec, EventSeen, Expected, ItemKey, MemoryStore, Record, Store, StoreError, Versioned,
};

/// Calls an invocation may still make before it "crashes"; negative means no limit.
#[derive(Debug, Default)]
pub struct CrashBudget(AtomicI64, std::sync::atomic::AtomicUsize);

impl CrashBudget {
    pub fn unlimited() -> Self {
        Self(AtomicI64::new(-1), Default::default())
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
        $call.await
    }};
}

impl<T: Ecs> Ecs for Crashing<T> {
    async fn list_container_instances(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
    ) -> Result<Vec<String>, EcsError> {
        guarded!(
            self,
            "ListContainerInstances",
            crashed_ecs,
            self.inner.list_container_instances(cluster, status)
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
    async fn list_tasks(
        &self,
        cluster: &str,
        filter: &TaskFilter,
    ) -> Result<Vec<String>, EcsError> {
        guarded!(
            self,
            "ListTasks",
            crashed_ecs,
            self.inner.list_tasks(cluster, filter)
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
}

impl<T: Store> Store for Crashing<T> {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        self.budget.note_store_call();
        guarded!(self, "GetItem", crashed_store, self.inner.get(key))
    }
    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        self.budget.note_store_call();
        guarded!(
            self,
            "PutItem",
            crashed_store,
            self.inner.put(record, expected)
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
    async fn list_specs(&self, cluster: &str) -> Result<Vec<Versioned<DaemonSpec>>, StoreError> {
        self.budget.note_store_call();
        guarded!(self, "Query", crashed_store, self.inner.list_specs(cluster))
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
}

pub type SimEngine = Engine<Crashing<Arc<ClusterModel>>, Crashing<Arc<MemoryStore>>>;

/// What one delivered event or scheduled run led to.
#[derive(Debug)]
pub struct Invocation {
    pub function: &'static str,
    /// Model time of the invocation.
    pub at: DateTime<Utc>,
    pub event: Option<Value>,
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
    pub engine: SimEngine,
    pub cluster: String,
    /// Chance that an invocation crashes after a random number of calls.
    pub crash_chance: f64,
    /// Invocations that crashed.
    pub crashes: u64,
    rng: Rng,
    invocations: u64,
    /// The scheduled coverage-check keeps waking for timed conditions until this moment.
    window_end: Option<DateTime<Utc>>,
    next_wake: Option<DateTime<Utc>>,
}

impl Harness {
    pub fn new(cluster: &str, providers: &[&str], config: ModelConfig) -> Self {
        let model = Arc::new(ClusterModel::new(config));
        model.create_cluster(cluster, providers);
        let store = Arc::new(MemoryStore::new());
        let budget = Arc::new(CrashBudget::unlimited());
        let engine = Engine::new(
            Crashing::new(Arc::clone(&model), Arc::clone(&budget)),
            Crashing::new(Arc::clone(&store), Arc::clone(&budget)),
            EngineConfig {
                clusters: vec![cluster.to_string()],
                ..EngineConfig::default()
            },
        );
        let rng = Rng::new(config_seed(&model));
        Self {
            model,
            store,
            budget,
            engine,
            cluster: cluster.into(),
            crash_chance: 0.0,
            crashes: 0,
            rng,
            invocations: 0,
            window_end: None,
            next_wake: None,
        }
    }

    /// Names the next invocation and, by chance, arms its crash.
    fn invocation_id(&mut self) -> String {
        self.invocations += 1;
        if self.rng.chance(self.crash_chance) {
            self.budget.crash_after(self.rng.below(8) as i64);
        }
        format!("invocation-{}", self.invocations)
    }

    fn finish(&mut self) -> bool {
        let crashed = self.budget.crashed();
        self.budget.disarm();
        self.crashes += u64::from(crashed);
        crashed
    }

    /// Delivers every due event to the function its rule targets.
    pub async fn deliver_events(&mut self) -> Vec<Invocation> {
        let mut done = Vec::new();
        for event in self.model.take_due_events() {
            let id = self.invocation_id();
            let now = self.model.now();
            let before = self.model.call_count();
            let store_before = self.budget.store_calls();
            let (function, result) = match event["detail-type"].as_str() {
                Some(INSTANCE_STATE_CHANGE) => (
                    "instance-events",
                    self.engine.on_instance_event(event.clone(), now, &id).await,
                ),
                Some(TASK_STATE_CHANGE) => (
                    "task-events",
                    self.engine.on_task_event(event.clone(), now, &id).await,
                ),
                _ => continue,
            };
            let crashed = self.finish();
            let ecs_calls = self.model.call_count() - before;
            done.push(Invocation {
                function,
                at: now,
                event: Some(event),
                result,
                ecs_calls,
                store_calls: self.budget.store_calls() - store_before,
                crashed,
            });
        }
        done
    }

    /// The scheduled `coverage-check`.
    pub async fn coverage_check(&mut self) -> Invocation {
        let id = self.invocation_id();
        let now = self.model.now();
        let before = self.model.call_count();
        let store_before = self.budget.store_calls();
        let result = self
            .engine
            .reconcile_cluster(&self.cluster.clone(), now, &id)
            .await;
        let crashed = self.finish();
        Invocation {
            function: "coverage-check",
            at: now,
            event: None,
            result,
            ecs_calls: self.model.call_count() - before,
            store_calls: self.budget.store_calls() - store_before,
            crashed,
        }
    }

    /// The scheduled `coverage-check` as deployed: a reconcile, then, within the same
    /// invocation, another one whenever a timed condition matures (see `runtime::coverage_check`).
    pub async fn scheduled_check(&mut self) -> Invocation {
        let check = self.coverage_check().await;
        self.window_end =
            Some(self.model.now() + Duration::seconds(crate::runtime::WAKE_WINDOW_SECONDS));
        self.next_wake = check.result.as_ref().ok().and_then(|o| o.wake_at);
        check
    }

    /// The wake-up inside the scheduled invocation's window, when one is due.
    pub async fn wake_if_due(&mut self) -> Option<Invocation> {
        let now = self.model.now();
        let due = self.next_wake.is_some_and(|at| at <= now)
            && self.window_end.is_some_and(|end| now <= end);
        if !due {
            return None;
        }
        let check = self.coverage_check().await;
        self.next_wake = check.result.as_ref().ok().and_then(|o| o.wake_at);
        Some(check)
    }

    /// Runs `duration`, second by second: events as they come, the schedule every
    /// `interval` seconds, and its wake-ups in between.
    pub async fn run_scheduled(&mut self, duration: Duration, interval: i64) -> Vec<Invocation> {
        let mut done = Vec::new();
        let end = self.model.now() + duration;
        while self.model.now() < end {
            self.model.advance(Duration::seconds(1));
            done.extend(self.deliver_events().await);
            if self.model.now().timestamp() % interval == 0 {
                done.push(self.scheduled_check().await);
            } else if let Some(check) = self.wake_if_due().await {
                done.push(check);
            }
        }
        done
    }

    pub async fn deploy(&mut self, request: DeployRequest) -> Result<DeployAnswer, DeployError> {
        let id = self.invocation_id();
        let now = self.model.now();
        let answer = deploy(&self.engine, request, now, &id).await;
        self.finish();
        answer
    }

    pub async fn rollback(
        &mut self,
        request: RollbackRequest,
    ) -> Result<RollbackAnswer, DeployError> {
        let id = self.invocation_id();
        let now = self.model.now();
        let answer = rollback(&self.engine, request, now, &id).await;
        self.finish();
        answer
    }

    /// Moves time forward one `tick` at a time, delivering events after each tick.
    pub async fn run_for(&mut self, duration: Duration, tick: Duration) -> Vec<Invocation> {
        let mut done = Vec::new();
        let end = self.model.now() + duration;
        while self.model.now() < end {
            self.model.advance(tick);
            done.extend(self.deliver_events().await);
        }
        done
    }
}

/// The crash generator follows the model's seed, so one seed replays one run.
fn config_seed(model: &ClusterModel) -> u64 {
    model.seed().wrapping_mul(0x2545_F491_4F6C_DD1D)
}
