//! DAEMON-strategy services: the part of ECS's service API the services placement calls
//! (DESIGN.md, "Placements"), and its vocabulary. Sources: the API reference pages of
//! `CreateService`, `UpdateService`, `DescribeServices`, `DeleteService` and the developer
//! guide's *Amazon ECS service deployment controllers and strategies* (daemon scheduling
//! strategy) and *Amazon ECS task placement constraints*.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EcsError;

/// `DescribeServices` takes at most this many services ("You may specify up to 10 services
/// to describe", API reference).
pub const DESCRIBE_SERVICES_BATCH: usize = 10;
/// Longest service name: "Up to 255 letters (uppercase and lowercase), numbers, underscores,
/// and hyphens are allowed" (CreateService `serviceName`).
pub const SERVICE_NAME_MAX_LEN: usize = 255;
/// Longest custom attribute name and value (API reference, *Attribute*: "between 1 and 128
/// characters").
pub const ATTRIBUTE_MAX_LEN: usize = 128;
/// Custom attributes one container instance may carry (developer guide, *Amazon ECS service
/// quotas*: "Custom attributes per resource: 10", not adjustable).
pub const CUSTOM_ATTRIBUTES_PER_INSTANCE: usize = 10;
/// Services one cluster may hold (developer guide, *Amazon ECS service quotas*: "Services
/// per cluster … 5,000", adjustable; ECS's Service Quotas integration shows no applied value,
/// so a raised quota is configured: `SERVICES_PER_CLUSTER_QUOTA`).
pub const SERVICES_PER_CLUSTER: usize = 5_000;

/// What ecs-daemons asks of one DAEMON service. The rest is fixed by the placement: launch
/// type EC2 (a DAEMON service takes no capacity provider strategy), `maximumPercent` 100 and
/// `minimumHealthyPercent` 0 (the daemon defaults: "the maximum percent parameter must be
/// 100"), ECS's managed tags on. The launch options (`propagate_tags`,
/// `enable_execute_command`) are the daemon's, as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonServiceDeclaration {
    pub service_name: String,
    /// Pinned `family:revision` or ARN.
    pub task_definition: String,
    /// `memberOf` placement constraint expressions (cluster query language).
    pub member_of: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// `SERVICE`, `TASK_DEFINITION` or `NONE`: whose tags the service's tasks get.
    pub propagate_tags: String,
    pub enable_execute_command: bool,
}

/// One service deployment as `DescribeServices` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDeploymentState {
    pub id: String,
    /// `PRIMARY`, `ACTIVE` (an older one still draining) or `INACTIVE`.
    pub status: String,
    pub task_definition: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED` where ECS reports it.
    pub rollout_state: Option<String>,
    pub running_count: i32,
    pub pending_count: i32,
    pub failed_tasks: i32,
    pub created_at: Option<DateTime<Utc>>,
}

/// One service as `DescribeServices` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    pub arn: String,
    pub name: String,
    /// `ACTIVE`, `DRAINING` (being deleted) or `INACTIVE`.
    pub status: String,
    /// `DAEMON` or `REPLICA`.
    pub scheduling_strategy: String,
    pub launch_type: Option<String>,
    /// The task definition ARN of the primary deployment.
    pub task_definition: String,
    pub running_count: i32,
    pub pending_count: i32,
    pub member_of: Vec<String>,
    pub deployments: Vec<ServiceDeploymentState>,
    pub created_at: Option<DateTime<Utc>>,
    /// The service's own tags (DescribeServices with `include: TAGS`).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl ServiceState {
    /// Whether the service is still there to place tasks (not being deleted or gone).
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }
}

/// The DAEMON-service calls. Every adapter of [`super::Ecs`] serves them.
pub trait EcsServices: Send + Sync {
    /// Creates a DAEMON service; the same `client_token` answers the same service again
    /// (CreateService `clientToken`: "ensure the idempotency of the request … Up to 36 ASCII
    /// characters").
    fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send;

    /// Points a service at the declaration's task definition and launch options
    /// (`propagateTags`, `enableExecuteCommand`): a new deployment, which on a DAEMON service
    /// stops each old task before starting its replacement (`maximumPercent` 100). Its
    /// placement constraints and tags stay as they are.
    fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send;

    /// Adds or overwrites tags on a service (TagResource: no deployment; tasks get a
    /// service's tags when they start, API reference, *CreateService* `propagateTags`).
    fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    /// Removes tags from a service by key (UntagResource).
    fn untag_service(
        &self,
        service_arn: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), EcsError>> + Send;

    /// Services by name, [`DESCRIBE_SERVICES_BATCH`] per call; unknown ones are left out
    /// (ECS names them among `failures` with reason `MISSING`).
    fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> impl Future<Output = Result<Vec<ServiceState>, EcsError>> + Send;

    /// Deletes a service: DRAINING while its tasks stop, then INACTIVE ("no need to scale
    /// to zero" is only REPLICA's concern: `force` "is only necessary … REPLICA").
    fn delete_service(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send;

    /// How many services the cluster runs in the ACTIVE state (`DescribeClusters`
    /// `activeServicesCount`), for the services-per-cluster quota.
    fn active_services_count(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<usize, EcsError>> + Send;
}

impl<T: EcsServices> EcsServices for std::sync::Arc<T> {
    fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send {
        (**self).create_daemon_service(cluster, declaration, client_token)
    }
    fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send {
        (**self).update_daemon_service(cluster, declaration)
    }
    fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), EcsError>> + Send {
        (**self).tag_service(service_arn, tags)
    }
    fn untag_service(
        &self,
        service_arn: &str,
        keys: &[String],
    ) -> impl Future<Output = Result<(), EcsError>> + Send {
        (**self).untag_service(service_arn, keys)
    }
    fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> impl Future<Output = Result<Vec<ServiceState>, EcsError>> + Send {
        (**self).describe_services(cluster, services)
    }
    fn delete_service(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = Result<ServiceState, EcsError>> + Send {
        (**self).delete_service(cluster, service)
    }
    fn active_services_count(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<usize, EcsError>> + Send {
        (**self).active_services_count(cluster)
    }
}

/// A `memberOf` expression of the form ECS's cluster query language gives for a set of
/// attribute values: `attribute:<name> in [<v1>, <v2>]` (developer guide, *Create
/// expressions to define container instances*: "attribute:ecs.instance-type in [t2.small,
/// t2.medium]"). The only form the services placement writes, and the only one the model
/// evaluates.
pub fn member_of_values(attribute: &str, values: &[&str]) -> String {
    format!("attribute:{attribute} in [{}]", values.join(", "))
}

/// Reads back an expression [`member_of_values`] wrote (or `attribute:<name> == <value>`):
/// the attribute and the values it admits. `None` for any other form.
pub fn parse_member_of(expression: &str) -> Option<(String, Vec<String>)> {
    let rest = expression.trim().strip_prefix("attribute:")?;
    if let Some((name, values)) = rest.split_once(" in ") {
        let list = values.trim().strip_prefix('[')?.strip_suffix(']')?;
        let values = list
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return Some((name.trim().to_string(), values));
    }
    let (name, value) = rest.split_once("==")?;
    Some((name.trim().to_string(), vec![value.trim().to_string()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_of_expressions_read_back_as_written() {
        let expression = member_of_values("ecs-daemons.slot.agent", &["a", "ab"]);
        assert_eq!(expression, "attribute:ecs-daemons.slot.agent in [a, ab]");
        assert_eq!(
            parse_member_of(&expression),
            Some((
                "ecs-daemons.slot.agent".into(),
                vec!["a".into(), "ab".into()]
            ))
        );
        assert_eq!(
            parse_member_of("attribute:ecs-daemons.ready == true"),
            Some(("ecs-daemons.ready".into(), vec!["true".into()]))
        );
        assert_eq!(parse_member_of("task:group == service:web"), None);
        assert_eq!(parse_member_of("attribute:x in a, b"), None);
    }
}
