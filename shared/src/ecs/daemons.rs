//! ECS's native managed daemons, which run only on Managed Instances capacity providers: the
//! part of their API ecs-daemons calls, and its vocabulary. Sources: the API reference pages
//! of each operation and the doc comments of aws-sdk-ecs 1.157 (`CreateDaemon`,
//! `UpdateDaemon`, `DeleteDaemon`, `DescribeDaemon`, `DescribeDaemonDeployments`,
//! `DescribeDaemonRevisions`, `DescribeDaemonTaskDefinition`), and the developer guide's
//! *Amazon ECS Managed Daemons* pages.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EcsError;
use crate::model::open_enum;

/// `DescribeDaemonRevisions` takes at most this many ARNs ("You can specify up to 20").
pub const DAEMON_REVISION_BATCH: usize = 20;
/// `DescribeDaemonDeployments` takes at most this many ARNs ("You can specify up to 20").
pub const DAEMON_DEPLOYMENT_BATCH: usize = 20;
/// Longest daemon name ECS accepts: "Up to 255 letters (uppercase and lowercase), numbers,
/// underscores, and hyphens" (CreateDaemon).
pub const DAEMON_NAME_MAX_LEN: usize = 255;
/// Longest `clientToken` of CreateDaemon: "Up to 36 ASCII characters".
pub const CLIENT_TOKEN_MAX_LEN: usize = 36;

open_enum! {
    /// Where a daemon deployment is (developer guide, *Daemon deployments*: PENDING →
    /// IN_PROGRESS → SUCCESSFUL, or STOPPED; a breaker or alarm rolls back).
    DaemonDeploymentStatus {
        Pending => "PENDING",
        InProgress => "IN_PROGRESS",
        Successful => "SUCCESSFUL",
        StopRequested => "STOP_REQUESTED",
        Stopped => "STOPPED",
        RollbackInProgress => "ROLLBACK_IN_PROGRESS",
        RollbackSuccessful => "ROLLBACK_SUCCESSFUL",
        RollbackFailed => "ROLLBACK_FAILED",
    }
}

impl DaemonDeploymentStatus {
    /// A deployment that will change nothing more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Successful | Self::Stopped | Self::RollbackSuccessful | Self::RollbackFailed
        )
    }
}

/// What ecs-daemons needs of a daemon task definition revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonTaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    /// `ACTIVE`, `DELETE_IN_PROGRESS` or `DELETED`.
    pub status: String,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    /// Task-level CPU units and memory (MiB), as registered.
    pub cpu: Option<i64>,
    pub memory_mib: Option<i64>,
}

impl DaemonTaskDefinition {
    pub fn family_revision(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

/// The deployment settings of a daemon (API reference, *DaemonDeploymentConfiguration*).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonDeploymentSettings {
    /// Share of instances drained at once, 0 to 100 (ECS's default 25).
    pub drain_percent: Option<f64>,
    /// Wait after each successful step (ECS's default 0).
    pub bake_time_in_minutes: Option<i32>,
    /// CloudWatch alarms that roll the deployment back; empty for none.
    pub alarm_names: Vec<String>,
}

/// What CreateDaemon and UpdateDaemon are told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonDeclaration {
    pub daemon_name: String,
    pub cluster_arn: String,
    pub daemon_task_definition_arn: String,
    pub capacity_provider_arns: Vec<String>,
    pub deployment: DaemonDeploymentSettings,
    /// A failed daemon drains and replaces its instance (ECS's default true).
    pub critical: bool,
    /// The daemon's own tags (CreateDaemon only: UpdateDaemon takes none).
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub launch: DaemonLaunch,
}

/// How ECS launches a managed daemon's tasks (API reference, *CreateDaemon* and
/// *UpdateDaemon*: `propagateTags`, `enableECSManagedTags`, `enableExecuteCommand`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonLaunch {
    /// `DAEMON` or `NONE`; none: not sent ("If you don't specify a value, the tags aren't
    /// propagated").
    pub propagate_tags: Option<String>,
    pub enable_ecs_managed_tags: bool,
    pub enable_execute_command: bool,
}

/// What CreateDaemon, UpdateDaemon and DeleteDaemon answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonChange {
    pub daemon_arn: String,
    /// `ACTIVE`, `DELETE_IN_PROGRESS`, …
    pub status: String,
    /// The deployment the change started, if any.
    pub deployment_arn: Option<String>,
}

/// Daemon tasks of one revision on one capacity provider (API reference,
/// *DaemonCapacityProvider*: `withoutDaemonCount` counts instances of a non-critical daemon
/// that run without it, and they are not in `runningCount`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonProviderCounts {
    pub capacity_provider_arn: String,
    pub running: i32,
    pub without_daemon: i32,
}

/// One revision a daemon currently runs, with its counts per capacity provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRevisionCounts {
    pub revision_arn: String,
    pub providers: Vec<DaemonProviderCounts>,
}

/// What DescribeDaemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonState {
    pub daemon_arn: String,
    pub status: String,
    /// The most recent deployment.
    pub deployment_arn: Option<String>,
    pub current_revisions: Vec<DaemonRevisionCounts>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A daemon revision: the daemon task definition one deployment rolled out (revisions are
/// immutable snapshots, DescribeDaemonRevisions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRevision {
    pub revision_arn: String,
    pub daemon_task_definition_arn: String,
}

/// The circuit breaker of one deployment (API reference, *DaemonCircuitBreaker*).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonCircuitBreaker {
    /// `TRIGGERED`, `MONITORING`, `MONITORING_COMPLETE` or `DISABLED`.
    pub status: String,
    pub failure_count: i32,
    pub threshold: i32,
}

/// Why and to what a deployment rolled back (API reference, *DaemonRollback*).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRollback {
    pub reason: Option<String>,
    pub target_revision_arn: Option<String>,
}

/// One deployment as DescribeDaemonDeployments answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonDeployment {
    pub deployment_arn: String,
    pub status: DaemonDeploymentStatus,
    pub status_reason: Option<String>,
    pub target_revision_arn: Option<String>,
    /// Instances of the target revision running the daemon, without it, and being drained.
    pub target_running: i32,
    pub target_without_daemon: i32,
    pub target_draining: i32,
    pub circuit_breaker: Option<DaemonCircuitBreaker>,
    pub rollback: Option<DaemonRollback>,
    pub triggered_alarm_names: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The managed-daemon calls. Every adapter of [`super::Ecs`] serves them, so the engine's
/// one ECS client reaches both kinds of capacity.
pub trait EcsDaemons: Send + Sync {
    /// A daemon task definition by `family:revision` or ARN.
    fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<DaemonTaskDefinition, EcsError>> + Send;

    /// Creates the daemon; the same `client_token` answers the same daemon again
    /// (CreateDaemon: "Unique, case-sensitive identifier … to ensure the idempotency").
    fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send;

    /// Points the daemon at a new revision or settings; ECS starts a deployment.
    fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send;

    fn delete_daemon(
        &self,
        daemon_arn: &str,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send;

    fn describe_daemon(
        &self,
        daemon_arn: &str,
    ) -> impl Future<Output = Result<DaemonState, EcsError>> + Send;

    /// Deployments by ARN, [`DAEMON_DEPLOYMENT_BATCH`] per call; unknown ones are left out.
    fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> impl Future<Output = Result<Vec<DaemonDeployment>, EcsError>> + Send;

    /// Revisions by ARN, [`DAEMON_REVISION_BATCH`] per call; unknown ones are left out.
    fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> impl Future<Output = Result<Vec<DaemonRevision>, EcsError>> + Send;
}

impl<T: EcsDaemons> EcsDaemons for std::sync::Arc<T> {
    fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<DaemonTaskDefinition, EcsError>> + Send {
        (**self).describe_daemon_task_definition(reference)
    }
    fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send {
        (**self).create_daemon(declaration, client_token)
    }
    fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send {
        (**self).update_daemon(daemon_arn, declaration)
    }
    fn delete_daemon(
        &self,
        daemon_arn: &str,
    ) -> impl Future<Output = Result<DaemonChange, EcsError>> + Send {
        (**self).delete_daemon(daemon_arn)
    }
    fn describe_daemon(
        &self,
        daemon_arn: &str,
    ) -> impl Future<Output = Result<DaemonState, EcsError>> + Send {
        (**self).describe_daemon(daemon_arn)
    }
    fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> impl Future<Output = Result<Vec<DaemonDeployment>, EcsError>> + Send {
        (**self).describe_daemon_deployments(deployment_arns)
    }
    fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> impl Future<Output = Result<Vec<DaemonRevision>, EcsError>> + Send {
        (**self).describe_daemon_revisions(revision_arns)
    }
}
