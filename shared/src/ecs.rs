//! The ECS calls the controller makes, behind a small trait so that the
//! engine runs the same against AWS (the SDK adapter), moto, and the
//! in-process cluster model.

use std::fmt;
use std::future::Future;

use crate::model::{
    CapacityProvider, ContainerInstance, Failure, InstanceStatus, Task, TaskDefinition,
};

mod daemons;
mod sdk;
mod services;
pub use daemons::*;
pub use sdk::SdkEcs;
pub use services::*;

/// `Describe*` calls take at most this many ids.
pub const DESCRIBE_BATCH: usize = 100;
/// `StartTask` takes at most this many container instances.
pub const START_TASK_MAX_INSTANCES: usize = 10;
/// `PutAttributes` / `DeleteAttributes` take at most this many attributes.
pub const ATTRIBUTE_BATCH: usize = 10;
/// Capacity providers per `DescribeCapacityProviders` page (API reference: `maxResults` 1 to 10).
pub const CAPACITY_PROVIDER_BATCH: usize = 10;
/// `UpdateContainerInstancesState` takes at most this many container instances.
pub const DRAIN_BATCH: usize = 10;
/// ECS limit on `startedBy`.
pub const STARTED_BY_MAX_LEN: usize = 36;
/// ECS limit on a `StopTask` reason.
pub const STOP_REASON_MAX_LEN: usize = 255;

/// What went wrong with an ECS call, so callers can choose retry, report or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcsErrorKind {
    /// Cluster, task definition, instance or task does not exist.
    NotFound,
    /// Still throttled after the SDK's own retries with backoff.
    Throttled,
    /// The caller's IAM role may not do this.
    AccessDenied,
    /// ECS refused the request as invalid (a client error that retrying will not fix).
    Invalid,
    /// Network trouble, timeouts, 5xx after retries: worth another try later.
    Transient,
    /// The answer lacked something ECS always sends.
    Malformed,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ECS {operation} on {target} failed ({code}): {message}")]
pub struct EcsError {
    pub operation: &'static str,
    /// What the call was about: a cluster, task definition, task or instance.
    pub target: String,
    pub kind: EcsErrorKind,
    /// ECS's error code (`ClusterNotFoundException`, `ThrottlingException`, …) or ours.
    pub code: String,
    pub message: String,
}

impl EcsError {
    pub fn new(
        operation: &'static str,
        target: impl Into<String>,
        kind: EcsErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            target: target.into(),
            kind,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, EcsErrorKind::Throttled | EcsErrorKind::Transient)
    }
}

/// A daemon copy to start on named container instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartTaskRequest {
    /// Pinned `family:revision` or a task definition ARN.
    pub task_definition: String,
    /// Up to [`START_TASK_MAX_INSTANCES`] container instance ARNs or ids.
    pub container_instances: Vec<String>,
    /// The system's fixed marker; up to [`STARTED_BY_MAX_LEN`] characters.
    pub started_by: String,
    /// `daemon:<name>`.
    pub group: String,
    pub tags: Vec<(String, String)>,
    /// `TASK_DEFINITION` or `NONE` (none given: not propagated).
    pub propagate_tags: Option<String>,
    pub enable_ecs_managed_tags: bool,
    pub enable_execute_command: bool,
    /// Container overrides: `(container, [(name, value)])` environment variables.
    pub environment: Vec<(String, Vec<(String, String)>)>,
}

impl StartTaskRequest {
    /// Checks the limits ECS enforces, before a call is spent on them.
    pub fn validate(&self, cluster: &str) -> Result<(), EcsError> {
        let invalid = |message: String| {
            Err(EcsError::new(
                "StartTask",
                format!("cluster {cluster}"),
                EcsErrorKind::Invalid,
                "InvalidRequest",
                message,
            ))
        };
        if self.container_instances.is_empty()
            || self.container_instances.len() > START_TASK_MAX_INSTANCES
        {
            return invalid(format!(
                "StartTask takes 1 to {START_TASK_MAX_INSTANCES} container instances, got {}",
                self.container_instances.len()
            ));
        }
        if self.started_by.is_empty() || self.started_by.len() > STARTED_BY_MAX_LEN {
            return invalid(format!(
                "startedBy must be 1 to {STARTED_BY_MAX_LEN} characters, got {:?}",
                self.started_by
            ));
        }
        Ok(())
    }
}

/// What `StartTask` answered: the tasks it placed and, per instance, ECS's reason where it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartTaskOutcome {
    pub tasks: Vec<Task>,
    pub failures: Vec<Failure>,
}

/// Which tasks `ListTasks` should return (ECS allows `startedBy` only on its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFilter {
    /// Every task of the cluster started with this marker (desired status RUNNING).
    StartedBy(String),
    /// Every task on one container instance (desired status RUNNING).
    ContainerInstance(String),
    /// Every task on one container instance that was asked to stop (desired status STOPPED):
    /// still stopping, and perhaps some stopped recently ("recently stopped tasks might
    /// appear", API reference, ListTasks).
    StoppingOnInstance(String),
    /// Every task of one service (desired status RUNNING).
    ServiceName(String),
}

impl fmt::Display for TaskFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartedBy(marker) => write!(f, "startedBy={marker}"),
            Self::ContainerInstance(instance) => write!(f, "containerInstance={instance}"),
            Self::StoppingOnInstance(instance) => {
                write!(f, "containerInstance={instance}, desiredStatus=STOPPED")
            }
            Self::ServiceName(service) => write!(f, "serviceName={service}"),
        }
    }
}

/// One page of a list call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub arns: Vec<String>,
    pub next_token: Option<String>,
}

/// A custom attribute on one container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceAttribute {
    /// Container instance ARN (either form) or bare id.
    pub container_instance: String,
    pub name: String,
    pub value: Option<String>,
}

/// The ECS API surface of ecs-daemons. Implementations page and batch on their own:
/// callers pass any number of ids and get every result.
pub trait Ecs: EcsDaemons + EcsServices + Send + Sync {
    /// Seconds on the clock this client's calls wait by (the pacer's), when it has one: how
    /// long a series of reads took, in the time the calls were made in.
    fn clock_seconds(&self) -> Option<f64> {
        None
    }

    /// One page (up to 100) of a cluster's container instance ARNs; `None` gives ACTIVE and
    /// DRAINING (the ECS default). One ECS call.
    fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, EcsError>> + Send;

    /// ARNs of a cluster's container instances, all pages.
    fn list_container_instances(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send {
        async move {
            let mut arns = Vec::new();
            let mut next_token = None;
            loop {
                let page = self
                    .list_container_instances_page(cluster, status.clone(), next_token)
                    .await?;
                arns.extend(page.arns);
                match page.next_token {
                    Some(token) => next_token = Some(token),
                    None => return Ok(arns),
                }
            }
        }
    }

    /// The container instance ARNs of one EC2 instance in a cluster (none if it is not a
    /// container instance there), by the cluster query `ec2InstanceId == <id>`. One ECS call.
    fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send;

    /// Sets container instances DRAINING (`UpdateContainerInstancesState`,
    /// [`DRAIN_BATCH`] per call): ECS stops their service tasks and places nothing new.
    fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    /// Container instances by ARN or id, in batches of [`DESCRIBE_BATCH`]; unknown ones are left out.
    fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerInstance>, EcsError>> + Send;

    /// One page (up to 100) of the task ARNs matching the filter. One ECS call.
    fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, EcsError>> + Send;

    /// Task ARNs matching the filter, all pages.
    fn list_tasks(
        &self,
        cluster: &str,
        filter: &TaskFilter,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send {
        async move {
            let mut arns = Vec::new();
            let mut next_token = None;
            loop {
                let page = self.list_tasks_page(cluster, filter, next_token).await?;
                arns.extend(page.arns);
                match page.next_token {
                    Some(token) => next_token = Some(token),
                    None => return Ok(arns),
                }
            }
        }
    }

    /// Every task on one container instance, whoever started it, read fresh: the tasks meant
    /// to run, those still stopping, and any recently stopped ones ECS still lists (which
    /// corrects older news about them; nothing depends on their being listed). The instance's
    /// `runningTasksCount` cannot tell this: it counts only tasks whose desired status is
    /// RUNNING (API reference, `ContainerInstance`), so a task in its stop timeout (an
    /// application flushing its last logs, a daemon copy told to stop) is in no count.
    /// Two ListTasks (desired RUNNING, desired STOPPED) and one DescribeTasks per 100.
    fn tasks_on_instance(
        &self,
        cluster: &str,
        instance: &str,
    ) -> impl Future<Output = Result<Vec<Task>, EcsError>> + Send {
        async move {
            let mut arns = self
                .list_tasks(
                    cluster,
                    &TaskFilter::ContainerInstance(instance.to_string()),
                )
                .await?;
            arns.extend(
                self.list_tasks(
                    cluster,
                    &TaskFilter::StoppingOnInstance(instance.to_string()),
                )
                .await?,
            );
            arns.sort();
            arns.dedup();
            if arns.is_empty() {
                return Ok(Vec::new());
            }
            self.describe_tasks(cluster, &arns).await
        }
    }

    /// Tasks by ARN, in batches of [`DESCRIBE_BATCH`]; unknown ones are left out.
    fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> impl Future<Output = Result<Vec<Task>, EcsError>> + Send;

    fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> impl Future<Output = Result<StartTaskOutcome, EcsError>> + Send;

    /// Stops one task; the reason is cut to ECS's limit.
    fn stop_task(
        &self,
        cluster: &str,
        task: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Task, EcsError>> + Send;

    /// Puts custom attributes, [`ATTRIBUTE_BATCH`] per call.
    fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    /// Deletes custom attributes, [`ATTRIBUTE_BATCH`] per call (name and target; no value is
    /// sent). An instance that is gone has nothing to clear: it fails neither the call nor
    /// the other attributes of its batch.
    fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> impl Future<Output = Result<TaskDefinition, EcsError>> + Send;

    /// Capacity providers attached to the cluster.
    fn cluster_capacity_providers(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send;

    /// The named capacity providers with their kinds, [`CAPACITY_PROVIDER_BATCH`] per call;
    /// one ECS does not know is left out. The cluster is named because Managed Instances
    /// providers are cluster-scoped (API reference, *DescribeCapacityProviders*: "When
    /// specified, only capacity providers associated with this cluster are returned,
    /// including Amazon ECS Managed Instances capacity providers").
    fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<CapacityProvider>, EcsError>> + Send;

    /// Container instances of one capacity provider. ECS has no list filter for the
    /// provider, so this lists and describes (a full reconcile describes them anyway).
    fn container_instances_of_provider(
        &self,
        cluster: &str,
        capacity_provider: &str,
        status: Option<InstanceStatus>,
    ) -> impl Future<Output = Result<Vec<ContainerInstance>, EcsError>> + Send {
        async move {
            let arns = self.list_container_instances(cluster, status).await?;
            let instances = self.describe_container_instances(cluster, &arns).await?;
            Ok(of_provider(instances, capacity_provider))
        }
    }
}

/// Keeps the instances of one capacity provider.
pub fn of_provider(
    instances: Vec<ContainerInstance>,
    capacity_provider: &str,
) -> Vec<ContainerInstance> {
    instances
        .into_iter()
        .filter(|instance| instance.capacity_provider.as_deref() == Some(capacity_provider))
        .collect()
}

/// Cuts a stop reason to ECS's limit on a character boundary.
pub fn clip_reason(reason: &str) -> &str {
    if reason.len() <= STOP_REASON_MAX_LEN {
        return reason;
    }
    let mut end = STOP_REASON_MAX_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Shared handles (the model is shared between the engine and the test that drives it).
impl<T: Ecs> Ecs for std::sync::Arc<T> {
    fn clock_seconds(&self) -> Option<f64> {
        (**self).clock_seconds()
    }
    fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, EcsError>> + Send {
        (**self).list_container_instances_page(cluster, status, next_token)
    }
    fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send {
        (**self).list_container_instances_of_ec2(cluster, ec2_instance_id)
    }
    fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> impl Future<Output = Result<(), EcsError>> + Send {
        (**self).drain_container_instances(cluster, instances)
    }
    fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerInstance>, EcsError>> + Send {
        (**self).describe_container_instances(cluster, instances)
    }
    fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> impl Future<Output = Result<Page, EcsError>> + Send {
        (**self).list_tasks_page(cluster, filter, next_token)
    }
    fn describe_tasks(
        &self,
        cluster: &str,
        tasks: &[String],
    ) -> impl Future<Output = Result<Vec<Task>, EcsError>> + Send {
        (**self).describe_tasks(cluster, tasks)
    }
    fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> impl Future<Output = Result<StartTaskOutcome, EcsError>> + Send {
        (**self).start_task(cluster, request)
    }
    fn stop_task(
        &self,
        cluster: &str,
        task: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Task, EcsError>> + Send {
        (**self).stop_task(cluster, task, reason)
    }
    fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> impl Future<Output = Result<(), EcsError>> + Send {
        (**self).put_attributes(cluster, attributes)
    }
    fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> impl Future<Output = Result<(), EcsError>> + Send {
        (**self).delete_attributes(cluster, attributes)
    }
    fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> impl Future<Output = Result<TaskDefinition, EcsError>> + Send {
        (**self).describe_task_definition(task_definition)
    }
    fn cluster_capacity_providers(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send {
        (**self).cluster_capacity_providers(cluster)
    }
    fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<CapacityProvider>, EcsError>> + Send {
        (**self).describe_capacity_providers(cluster, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(instances: usize, started_by: &str) -> StartTaskRequest {
        StartTaskRequest {
            task_definition: "agent:1".into(),
            container_instances: (0..instances).map(|i| format!("ci-{i}")).collect(),
            started_by: started_by.into(),
            group: "daemon:agent".into(),
            tags: vec![],
            propagate_tags: None,
            enable_ecs_managed_tags: false,
            enable_execute_command: false,
            environment: vec![],
        }
    }

    #[test]
    fn start_task_limits_are_checked_before_the_call() {
        assert!(request(10, "ecs-daemons").validate("prod").is_ok());
        let too_many = request(11, "ecs-daemons").validate("prod").unwrap_err();
        assert_eq!(too_many.kind, EcsErrorKind::Invalid);
        assert!(too_many.to_string().contains("got 11"), "{too_many}");
        assert!(request(0, "ecs-daemons").validate("prod").is_err());
        assert!(request(1, &"x".repeat(37)).validate("prod").is_err());
    }

    #[test]
    fn reasons_are_clipped_on_char_boundaries() {
        assert_eq!(clip_reason("short"), "short");
        let long = "é".repeat(200);
        let clipped = clip_reason(&long);
        assert!(clipped.len() <= STOP_REASON_MAX_LEN);
        assert!(long.starts_with(clipped));
    }

    #[test]
    fn provider_filter_keeps_only_that_provider() {
        let instance = |arn: &str, provider: Option<&str>| ContainerInstance {
            arn: arn.into(),
            ec2_instance_id: None,
            status: InstanceStatus::Active,
            status_reason: None,
            agent_connected: true,
            capacity_provider: provider.map(str::to_string),
            registered: Default::default(),
            remaining: Default::default(),
            running_tasks: 0,
            pending_tasks: 0,
            attributes: Default::default(),
            version: 1,
            registered_at: None,
        };
        let kept = of_provider(
            vec![
                instance("a", Some("general")),
                instance("b", Some("gpu")),
                instance("c", None),
            ],
            "general",
        );
        assert_eq!(
            kept.iter().map(|i| i.arn.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
    }
}
