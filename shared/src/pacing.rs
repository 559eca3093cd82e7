//! Pacing of ECS calls. ECS limits calls per account and region with token buckets
//! (cluster modify calls: burst 100, 40/s; cluster read calls: burst 50, 20/s, as the
//! API reference's "Request throttling" example gives them) and answers
//! `ThrottlingException` beyond. Each function process takes a share of those rates through
//! its own two buckets and waits before a call instead of being throttled; the SDK's retry
//! stays a safety net, not the plan. Shares are set per function in template.yaml so that
//! their sum, at the concurrency the template allows, stays under the account's limits.

use std::future::Future;
use std::sync::Mutex;

use crate::ecs::{
    DaemonChange, DaemonDeclaration, DaemonDeployment, DaemonRevision, DaemonServiceDeclaration,
    DaemonState, DaemonTaskDefinition, Ecs, EcsDaemons, EcsError, EcsServices, InstanceAttribute,
    Page, ServiceState, StartTaskOutcome, StartTaskRequest, TaskFilter, ATTRIBUTE_BATCH,
    CAPACITY_PROVIDER_BATCH, DAEMON_DEPLOYMENT_BATCH, DAEMON_REVISION_BATCH, DESCRIBE_BATCH,
    DESCRIBE_SERVICES_BATCH,
};
use crate::model::{CapacityProvider, ContainerInstance, InstanceStatus, Task, TaskDefinition};

/// A sustained rate with a burst on top.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The two buckets of one process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    pub read: Rate,
    pub modify: Rate,
}

/// ECS's documented limits for cluster read and modify calls (per account and region). The
/// read burst is the throttling example's 50 ("cluster read actions … a bucket size of 50
/// tokens"), the smaller of the figures AWS gives.
pub const ECS_LIMITS: Pacing = Pacing {
    read: Rate {
        per_second: 20.0,
        burst: 50.0,
    },
    modify: Rate {
        per_second: 40.0,
        burst: 100.0,
    },
};

impl Pacing {
    const fn of(
        read_per_second: f64,
        read_burst: f64,
        modify_per_second: f64,
        modify_burst: f64,
    ) -> Self {
        Self {
            read: Rate {
                per_second: read_per_second,
                burst: read_burst,
            },
            modify: Rate {
                per_second: modify_per_second,
                burst: modify_burst,
            },
        }
    }

    /// The share of ECS's rates one process of a function takes. Reads: every process of
    /// every function bursting at once (at the concurrency template.yaml allows: 2 per event
    /// function and for lifecycle-hook, 1 for the others) stays within ECS's read bucket,
    /// 50 of 50 burst and 19.5 of 20/s (a template test adds them up); the coverage-check,
    /// which reads the whole cluster, has the largest share. Modifies are not bounded that
    /// way: the coverage-check takes ECS's whole modify burst for a rollout's batch boundary
    /// (one StopTask per instance plus one StartTask per ten) and runs one at a time; the
    /// others' starts and stops are rare beside it, and the SDK's retry absorbs a collision.
    pub fn share(function: &str) -> Self {
        match function {
            "coverage-check" => Self::of(12.0, 26.0, 40.0, 100.0),
            // A batch of events: one read per 100 instances and tasks, a joining instance's starts.
            "instance-events" | "task-events" => Self::of(0.75, 3.0, 10.0, 30.0),
            // One terminating instance per invocation.
            "lifecycle-hook" => Self::of(0.25, 2.0, 10.0, 30.0),
            // One full reconcile each (two reads per 100 instances and per 100 tasks).
            "deploy" | "rollback" => Self::of(1.5, 3.0, 10.0, 30.0),
            // status only reads.
            _ => Self::of(1.0, 2.0, 10.0, 30.0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct PacingError {
    pub variable: &'static str,
    pub problem: String,
}

impl Pacing {
    /// `ECS_READ_RATE`, `ECS_READ_BURST`, `ECS_MODIFY_RATE`, `ECS_MODIFY_BURST` (calls per
    /// second and calls), each optional; unset ones keep `defaults`.
    pub fn from_env(
        defaults: Self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, PacingError> {
        let mut pacing = defaults;
        let fields: [(&'static str, &mut f64, f64); 4] = [
            (
                "ECS_READ_RATE",
                &mut pacing.read.per_second,
                ECS_LIMITS.read.per_second,
            ),
            (
                "ECS_READ_BURST",
                &mut pacing.read.burst,
                ECS_LIMITS.read.burst,
            ),
            (
                "ECS_MODIFY_RATE",
                &mut pacing.modify.per_second,
                ECS_LIMITS.modify.per_second,
            ),
            (
                "ECS_MODIFY_BURST",
                &mut pacing.modify.burst,
                ECS_LIMITS.modify.burst,
            ),
        ];
        for (variable, field, limit) in fields {
            let Some(text) = lookup(variable).filter(|t| !t.trim().is_empty()) else {
                continue;
            };
            let value: f64 = text.trim().parse().map_err(|_| PacingError {
                variable,
                problem: format!("`{text}` is not a number"),
            })?;
            if !(value >= 1.0 && value <= limit) {
                return Err(PacingError {
                    variable,
                    problem: format!(
                        "{value} is outside 1..={limit} (ECS's own limit for the whole account)"
                    ),
                });
            }
            *field = value;
        }
        Ok(pacing)
    }
}

/// A token bucket that hands out reservations: a caller takes a token now, possibly one
/// that refills only later, and waits until then. Concurrent callers queue up in order.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    at: f64,
}

impl TokenBucket {
    /// A full bucket at `now` (seconds on the caller's clock).
    pub fn new(rate: Rate, now: f64) -> Self {
        Self {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes `calls` tokens; the seconds to wait before making those calls.
    pub fn reserve(&mut self, now: f64, calls: f64) -> f64 {
        let elapsed = (now - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        self.at = self.at.max(now);
        self.tokens -= calls;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate.per_second
        }
    }
}

/// Where the pacer reads the time and waits: the wall clock in Lambda, the model's
/// simulated clock in simulations and benchmarks.
pub trait Clock: Send + Sync {
    /// Seconds since a fixed start.
    fn seconds(&self) -> f64;
    fn sleep(&self, seconds: f64) -> impl Future<Output = ()> + Send;
}

/// The process's monotonic clock and tokio's timer.
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    async fn sleep(&self, seconds: f64) {
        tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum CallClass {
    Read,
    Modify,
}

struct Buckets {
    read: TokenBucket,
    modify: TokenBucket,
    /// Seconds spent waiting so far (reported by benchmarks).
    waited: f64,
}

/// An `Ecs` whose every ECS call waits for its bucket. Batches are cut to ECS's sizes here,
/// so each token is one real call.
pub struct Paced<E, C> {
    inner: E,
    clock: C,
    buckets: Mutex<Buckets>,
}

impl<E, C: Clock> Paced<E, C> {
    pub fn new(inner: E, clock: C, pacing: Pacing) -> Self {
        let now = clock.seconds();
        Self {
            inner,
            buckets: Mutex::new(Buckets {
                read: TokenBucket::new(pacing.read, now),
                modify: TokenBucket::new(pacing.modify, now),
                waited: 0.0,
            }),
            clock,
        }
    }

    /// Seconds this pacer made calls wait.
    pub fn waited_seconds(&self) -> f64 {
        self.buckets.lock().map(|b| b.waited).unwrap_or_default()
    }

    async fn wait(&self, class: CallClass) {
        let now = self.clock.seconds();
        let wait = match self.buckets.lock() {
            Ok(mut buckets) => {
                let wait = match class {
                    CallClass::Read => buckets.read.reserve(now, 1.0),
                    CallClass::Modify => buckets.modify.reserve(now, 1.0),
                };
                buckets.waited += wait;
                wait
            }
            // A panic elsewhere poisoned the lock: pacing is best effort, the call goes on.
            Err(_) => 0.0,
        };
        if wait > 0.0 {
            self.clock.sleep(wait).await;
        }
    }
}

impl<E: Ecs, C: Clock> Ecs for Paced<E, C> {
    fn clock_seconds(&self) -> Option<f64> {
        Some(self.clock.seconds())
    }

    async fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner
            .list_container_instances_page(cluster, status, next_token)
            .await
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<Vec<ContainerInstance>, EcsError> {
        let mut described = Vec::with_capacity(instances.len());
        for batch in instances.chunks(DESCRIBE_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(
                self.inner
                    .describe_container_instances(cluster, batch)
                    .await?,
            );
        }
        Ok(described)
    }

    async fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner
            .list_tasks_page(cluster, filter, next_token)
            .await
    }

    async fn describe_tasks(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Task>, EcsError> {
        let mut described = Vec::with_capacity(tasks.len());
        for batch in tasks.chunks(DESCRIBE_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(self.inner.describe_tasks(cluster, batch).await?);
        }
        Ok(described)
    }

    async fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> Result<StartTaskOutcome, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.start_task(cluster, request).await
    }

    async fn stop_task(&self, cluster: &str, task: &str, reason: &str) -> Result<Task, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.stop_task(cluster, task, reason).await
    }

    async fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            self.wait(CallClass::Modify).await;
            self.inner.put_attributes(cluster, batch).await?;
        }
        Ok(())
    }

    async fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            self.wait(CallClass::Modify).await;
            self.inner.delete_attributes(cluster, batch).await?;
        }
        Ok(())
    }

    async fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> Result<Vec<String>, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner
            .list_container_instances_of_ec2(cluster, ec2_instance_id)
            .await
    }

    async fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<(), EcsError> {
        for batch in instances.chunks(crate::ecs::DRAIN_BATCH) {
            self.wait(CallClass::Modify).await;
            self.inner.drain_container_instances(cluster, batch).await?;
        }
        Ok(())
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinition, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner.describe_task_definition(task_definition).await
    }

    async fn cluster_capacity_providers(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner.cluster_capacity_providers(cluster).await
    }

    async fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<CapacityProvider>, EcsError> {
        let mut described = Vec::with_capacity(names.len());
        for batch in names.chunks(CAPACITY_PROVIDER_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(
                self.inner
                    .describe_capacity_providers(cluster, batch)
                    .await?,
            );
        }
        Ok(described)
    }
}

/// The service calls take from the same buckets (ECS's throttling page lists the cluster's
/// read and modify actions by bucket and does not single out the service API: the shared
/// buckets are the pessimistic reading).
impl<E: Ecs, C: Clock> EcsServices for Paced<E, C> {
    async fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> Result<ServiceState, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner
            .create_daemon_service(cluster, declaration, client_token)
            .await
    }

    async fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> Result<ServiceState, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.update_daemon_service(cluster, declaration).await
    }

    async fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> Result<(), EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.tag_service(service_arn, tags).await
    }

    async fn untag_service(&self, service_arn: &str, keys: &[String]) -> Result<(), EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.untag_service(service_arn, keys).await
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, EcsError> {
        let mut described = Vec::with_capacity(services.len());
        for batch in services.chunks(DESCRIBE_SERVICES_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(self.inner.describe_services(cluster, batch).await?);
        }
        Ok(described)
    }

    async fn delete_service(&self, cluster: &str, service: &str) -> Result<ServiceState, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.delete_service(cluster, service).await
    }

    async fn active_services_count(&self, cluster: &str) -> Result<usize, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner.active_services_count(cluster).await
    }
}

/// The managed-daemon calls take from the same buckets: ECS documents no buckets of their
/// own, so they are assumed to share the cluster read and modify buckets (the pessimistic
/// reading).
impl<E: Ecs, C: Clock> EcsDaemons for Paced<E, C> {
    async fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> Result<DaemonTaskDefinition, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner.describe_daemon_task_definition(reference).await
    }

    async fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> Result<DaemonChange, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.create_daemon(declaration, client_token).await
    }

    async fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> Result<DaemonChange, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.update_daemon(daemon_arn, declaration).await
    }

    async fn delete_daemon(&self, daemon_arn: &str) -> Result<DaemonChange, EcsError> {
        self.wait(CallClass::Modify).await;
        self.inner.delete_daemon(daemon_arn).await
    }

    async fn describe_daemon(&self, daemon_arn: &str) -> Result<DaemonState, EcsError> {
        self.wait(CallClass::Read).await;
        self.inner.describe_daemon(daemon_arn).await
    }

    async fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> Result<Vec<DaemonDeployment>, EcsError> {
        let mut described = Vec::with_capacity(deployment_arns.len());
        for batch in deployment_arns.chunks(DAEMON_DEPLOYMENT_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(self.inner.describe_daemon_deployments(batch).await?);
        }
        Ok(described)
    }

    async fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> Result<Vec<DaemonRevision>, EcsError> {
        let mut described = Vec::with_capacity(revision_arns.len());
        for batch in revision_arns.chunks(DAEMON_REVISION_BATCH) {
            self.wait(CallClass::Read).await;
            described.extend(self.inner.describe_daemon_revisions(batch).await?);
        }
        Ok(described)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_full_bucket_serves_its_burst_at_once_then_paces_at_the_rate() {
        let mut bucket = TokenBucket::new(RATE, 0.0);
        let waits: Vec<f64> = (0..8).map(|_| bucket.reserve(0.0, 1.0)).collect();
        assert_eq!(&waits[..5], &[0.0; 5]);
        // Reservations queue: the 6th call waits one refill, the 8th three.
        for (wait, expected) in waits[5..].iter().zip([0.1, 0.2, 0.3]) {
            assert!((wait - expected).abs() < 1e-9, "{waits:?}");
        }
    }

    #[test]
    fn the_bucket_refills_with_time_up_to_its_burst() {
        let mut bucket = TokenBucket::new(RATE, 0.0);
        for _ in 0..5 {
            bucket.reserve(0.0, 1.0);
        }
        // 0.3 s later three tokens are back.
        assert_eq!(bucket.reserve(0.3, 3.0), 0.0);
        assert!(bucket.reserve(0.3, 1.0) > 0.0);
        // A long pause refills to the burst, never beyond.
        let mut rested = TokenBucket::new(RATE, 0.0);
        assert_eq!(rested.reserve(1_000.0, 5.0), 0.0);
        assert!(rested.reserve(1_000.0, 1.0) > 0.0);
    }

    #[test]
    fn over_any_window_the_calls_stay_within_burst_plus_rate() {
        // Calls made as soon as the bucket lets them: in every window of w seconds at most
        // burst + rate × w of them start.
        let mut bucket = TokenBucket::new(RATE, 0.0);
        let mut now = 0.0;
        let mut starts = Vec::new();
        for _ in 0..200 {
            let wait = bucket.reserve(now, 1.0);
            now += wait;
            starts.push(now);
        }
        for (i, first) in starts.iter().enumerate() {
            for window in [0.5, 1.0, 5.0] {
                let inside = starts[i..]
                    .iter()
                    .take_while(|s| **s < first + window)
                    .count();
                assert!(
                    inside as f64 <= RATE.burst + RATE.per_second * window + 1e-9,
                    "{inside} calls in {window} s from {first}"
                );
            }
        }
    }

    #[test]
    fn pacing_comes_from_the_environment_within_ecs_limits() {
        let defaults = Pacing::share("deploy");
        let none = Pacing::from_env(defaults, |_| None).unwrap();
        assert_eq!(none, defaults);
        let set = Pacing::from_env(defaults, |name| match name {
            "ECS_READ_RATE" => Some("4".into()),
            "ECS_MODIFY_BURST" => Some(" 20 ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(set.read.per_second, 4.0);
        assert_eq!(set.modify.burst, 20.0);
        assert_eq!(set.read.burst, defaults.read.burst);
        let too_fast = Pacing::from_env(defaults, |name| {
            (name == "ECS_READ_RATE").then(|| "25".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            too_fast.contains("ECS_READ_RATE") && too_fast.contains("1..=20"),
            "{too_fast}"
        );
        let not_a_number = Pacing::from_env(defaults, |name| {
            (name == "ECS_MODIFY_RATE").then(|| "fast".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            not_a_number.contains("`fast` is not a number"),
            "{not_a_number}"
        );
    }
}
