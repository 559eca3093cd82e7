//! The placement seam: how a daemon's copies come to exist in ECS on a capacity provider,
//! and which tasks are copies. DESIGN.md, "Placements", names three ways, chosen per
//! capacity provider; the planner's rules (exactly one, order, readiness, drain-last, the
//! breaker) stay in `plan/`, and a placement only changes the calls that carry them out.
//!
//! - [`PlacementKind::Tasks`]: standalone `StartTask` copies ([`StandaloneTasks`], today's
//!   only implementation), for EC2 capacity providers without managed scaling.
//! - [`PlacementKind::Services`]: two DAEMON-strategy services per daemon, each placed by
//!   `memberOf` on a per-instance slot attribute. `make_copies` sets the attribute (the
//!   service's scheduler starts the copy later, so its answer is "requested", not a task),
//!   `remove_copy` takes the instance out of the service's attribute value, and
//!   `list_copies` lists the services' tasks.
//! - [`PlacementKind::Native`]: ECS's managed daemons on Managed Instances capacity
//!   providers. ECS places every copy itself; ecs-daemons declares the revision per capacity
//!   provider (CreateDaemon/UpdateDaemon) and watches. Per-instance starts and stops never
//!   reach it: the planner plans that capacity provider per daemon, not per instance.

use std::future::Future;

pub mod services;

use crate::arn::resource_id;
use crate::ecs::{Ecs, EcsError, StartTaskRequest, TaskFilter, START_TASK_MAX_INSTANCES};
use crate::model::Task;

/// The three ways a daemon's copies exist on a capacity provider (DESIGN.md, "Placements").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementKind {
    /// Standalone `StartTask` copies, one per instance, made and stopped by ecs-daemons.
    Tasks,
    /// DAEMON-strategy services steered per instance by a slot attribute.
    Services,
    /// ECS managed daemons on Managed Instances capacity providers.
    Native,
}

/// Copies of one revision of one daemon wanted on some instances.
#[derive(Clone, Copy, Debug)]
pub struct CopyRequest<'a> {
    pub daemon: &'a str,
    /// Pinned `family:revision` or a task definition ARN.
    pub task_definition: &'a str,
    /// Container instance ARNs, at most [`Placement::max_instances_per_request`].
    pub instances: &'a [String],
    /// The rollout the copies are started for, if any (tagged on each copy).
    pub rollout_id: Option<&'a str>,
    /// The daemon's launch options; `environment` for `provider`, which every instance of
    /// the request belongs to.
    pub launch: &'a crate::launch::LaunchOptions,
    pub provider: Option<&'a str>,
}

/// What became of a copy request on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyAnswer {
    /// The copy exists as this task.
    Started(Box<Task>),
    /// ECS placed nothing there; its reason (`RESOURCE:MEMORY`, …) where it gave one.
    Refused(String),
}

/// The one trait through which the engine makes copies exist and reads back which tasks
/// are copies. Errors are the whole request's: a retryable one may or may not have taken
/// effect (the engine keeps its claims and looks again), any other means ECS refused the
/// request itself.
pub trait Placement: Send + Sync {
    fn kind(&self) -> PlacementKind;

    /// The most instances one [`Placement::make_copies`] takes.
    fn max_instances_per_request(&self) -> usize;

    /// Makes a copy exist on each instance of the request; one answer per instance, in the
    /// request's order.
    fn make_copies(
        &self,
        cluster: &str,
        request: &CopyRequest<'_>,
    ) -> impl Future<Output = Result<Vec<CopyAnswer>, EcsError>> + Send;

    /// Removes one copy.
    fn remove_copy(
        &self,
        cluster: &str,
        task_arn: &str,
        reason: &str,
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    /// The ARNs of the cluster's tasks that are copies and meant to run (eventually
    /// consistent, as ListTasks is: callers add the tasks their records name).
    fn list_copies(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send;

    /// Whether a described task is one of this placement's copies. Nothing else is ever
    /// stopped or counted as a copy.
    fn is_copy(&self, task: &Task) -> bool;
}

/// Tag naming the daemon on each of its tasks.
pub const DAEMON_TAG: &str = "ecs-daemons:daemon";

/// Tag naming the rollout a copy was started for (absent outside rollouts).
pub const ROLLOUT_TAG: &str = "ecs-daemons:rollout";

/// Standalone copies: `StartTask` on named instances (up to 10 per call), `StopTask`, found
/// again by their `startedBy` marker and their `daemon:<name>` group.
pub struct StandaloneTasks<'a, E> {
    pub ecs: &'a E,
    /// The system's `startedBy` marker.
    pub started_by: &'a str,
}

impl<E: Ecs> Placement for StandaloneTasks<'_, E> {
    fn kind(&self) -> PlacementKind {
        PlacementKind::Tasks
    }

    fn max_instances_per_request(&self) -> usize {
        START_TASK_MAX_INSTANCES
    }

    async fn make_copies(
        &self,
        cluster: &str,
        request: &CopyRequest<'_>,
    ) -> Result<Vec<CopyAnswer>, EcsError> {
        let mut tags = vec![(DAEMON_TAG.into(), request.daemon.into())];
        if let Some(rollout) = request.rollout_id {
            tags.push((ROLLOUT_TAG.into(), rollout.into()));
        }
        let launch = request.launch;
        tags.extend(launch.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let start = StartTaskRequest {
            task_definition: request.task_definition.into(),
            container_instances: request.instances.to_vec(),
            started_by: self.started_by.into(),
            group: crate::plan::daemon_group(request.daemon),
            tags,
            propagate_tags: launch.propagate_tags.map(|p| p.as_str().to_string()),
            enable_ecs_managed_tags: launch.enable_ecs_managed_tags,
            enable_execute_command: launch.enable_execute_command,
            environment: launch.environment_on(request.provider),
        };
        let answer = self.ecs.start_task(cluster, &start).await?;
        Ok(request
            .instances
            .iter()
            .map(|instance_arn| {
                let instance_id = resource_id(instance_arn);
                let started = answer.tasks.iter().find(|t| {
                    t.container_instance_arn.as_deref().map(resource_id) == Some(instance_id)
                });
                if let Some(task) = started {
                    return CopyAnswer::Started(Box::new(task.clone()));
                }
                // StartTask names the instance in a failure's `arn` (API reference, Failure).
                CopyAnswer::Refused(
                    answer
                        .failures
                        .iter()
                        .find(|f| f.arn.as_deref().map(resource_id) == Some(instance_id))
                        .map_or_else(
                            || "StartTask placed no task on the instance".to_string(),
                            |f| format!("StartTask failed: {f}"),
                        ),
                )
            })
            .collect())
    }

    async fn remove_copy(
        &self,
        cluster: &str,
        task_arn: &str,
        reason: &str,
    ) -> Result<(), EcsError> {
        self.ecs
            .stop_task(cluster, task_arn, reason)
            .await
            .map(|_| ())
    }

    async fn list_copies(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        self.ecs
            .list_tasks(cluster, &TaskFilter::StartedBy(self.started_by.into()))
            .await
    }

    fn is_copy(&self, task: &Task) -> bool {
        task.started_by.as_deref() == Some(self.started_by)
            && task
                .group
                .as_deref()
                .is_some_and(|g| g.starts_with(crate::plan::GROUP_PREFIX))
    }
}
