//! The ECS vocabulary shared by events, the `Ecs` trait and the planner.
//! Status strings AWS may extend are kept as `Other(..)` rather than refused.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            /// A value this version does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(text) => text,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self::from(text.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.as_str().to_string()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use open_enum;

open_enum!(
    /// Container instance status (`ListContainerInstances` / `DescribeContainerInstances`).
    InstanceStatus {
        Registering => "REGISTERING",
        RegistrationFailed => "REGISTRATION_FAILED",
        Active => "ACTIVE",
        Draining => "DRAINING",
        Deregistering => "DEREGISTERING",
        Inactive => "INACTIVE",
    }
);

open_enum!(
    /// Task last/desired status.
    TaskStatus {
        Provisioning => "PROVISIONING",
        Pending => "PENDING",
        Activating => "ACTIVATING",
        Running => "RUNNING",
        Deactivating => "DEACTIVATING",
        Stopping => "STOPPING",
        Deprovisioning => "DEPROVISIONING",
        Stopped => "STOPPED",
        Deleted => "DELETED",
    }
);

open_enum!(
    /// Task or container health.
    HealthStatus {
        Healthy => "HEALTHY",
        Unhealthy => "UNHEALTHY",
        Unknown => "UNKNOWN",
    }
);

impl TaskStatus {
    /// Stopped for good: nothing will run again under this task.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Stopped | Self::Deleted)
    }
}

/// CPU units and MiB of memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: i64,
    pub memory_mib: i64,
}

/// One container instance as `DescribeContainerInstances` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstance {
    pub arn: String,
    pub ec2_instance_id: Option<String>,
    pub status: InstanceStatus,
    pub status_reason: Option<String>,
    pub agent_connected: bool,
    pub capacity_provider: Option<String>,
    pub registered: Resources,
    pub remaining: Resources,
    pub running_tasks: i32,
    pub pending_tasks: i32,
    /// Attribute name → value (`None` for value-less attributes such as capabilities).
    pub attributes: BTreeMap<String, Option<String>>,
    /// Grows with every change of the instance; events carry the same counter.
    pub version: i64,
    pub registered_at: Option<DateTime<Utc>>,
}

impl ContainerInstance {
    pub fn id(&self) -> &str {
        crate::arn::resource_id(&self.arn)
    }
}

/// One task as `DescribeTasks` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub arn: String,
    pub task_definition_arn: String,
    pub container_instance_arn: Option<String>,
    pub last_status: TaskStatus,
    pub desired_status: TaskStatus,
    pub health: HealthStatus,
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub stop_code: Option<String>,
    pub stopped_reason: Option<String>,
    pub version: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

impl Task {
    pub fn id(&self) -> &str {
        crate::arn::resource_id(&self.arn)
    }
}

/// What the controller needs to know of a task definition revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub status: String,
    pub execution_role_arn: Option<String>,
    /// The role the containers' code (and ECS Exec's agent) acts with.
    #[serde(default)]
    pub task_role_arn: Option<String>,
    /// Task-level CPU and memory when set, else the containers' sums (reservation when no hard limit).
    pub cpu: Option<i64>,
    pub memory_mib: Option<i64>,
    pub containers: Vec<ContainerDefinition>,
    /// `bridge`, `host`, `awsvpc` or `none` (ECS's default on EC2 is `bridge`).
    #[serde(default)]
    pub network_mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    pub essential: bool,
    pub has_health_check: bool,
    /// With a health check: how long ECS may take to call a copy that never passes it
    /// UNHEALTHY (`startPeriod + retries × (interval + timeout)`).
    #[serde(default)]
    pub health_check_grace_seconds: Option<u32>,
}

/// `startPeriod + retries × (interval + timeout)` of a container health check, with ECS's
/// defaults for what is not set (API reference, *HealthCheck*: interval 30 s, timeout 5 s,
/// retries 3, no start period).
pub fn health_check_grace_seconds(
    interval: Option<i32>,
    timeout: Option<i32>,
    retries: Option<i32>,
    start_period: Option<i32>,
) -> u32 {
    let positive = |value: Option<i32>, default: i32| value.unwrap_or(default).max(0) as u32;
    positive(start_period, 0)
        + positive(retries, 3) * (positive(interval, 30) + positive(timeout, 5))
}

impl TaskDefinition {
    /// `family:revision`, the pinned form deploys use.
    pub fn family_revision(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }

    pub fn has_health_check(&self) -> bool {
        self.containers.iter().any(|c| c.has_health_check)
    }

    /// The longest health-check grace of its containers (none without a health check).
    pub fn health_check_grace_seconds(&self) -> Option<u32> {
        self.containers
            .iter()
            .filter_map(|c| c.health_check_grace_seconds)
            .max()
    }
}

/// What kind of capacity a provider gives: it decides how a daemon's copies can exist there
/// (DESIGN.md, "Placements"). From `DescribeCapacityProviders` (API reference, *CapacityProvider*:
/// `type` is `EC2_AUTOSCALING`, `MANAGED_INSTANCES`, `FARGATE` or `FARGATE_SPOT`; older answers
/// carry only `autoScalingGroupProvider` or `managedInstancesProvider`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CapacityProviderKind {
    /// An EC2 Auto Scaling group. Managed scaling and managed termination protection count
    /// only DAEMON-service tasks as daemons (developer guide, *Amazon ECS managed scaling
    /// behavior*; *Control the instances Amazon ECS terminates*).
    #[serde(rename_all = "camelCase")]
    AutoScalingGroup {
        managed_scaling: bool,
        managed_termination_protection: bool,
    },
    /// ECS Managed Instances: ECS launches the instances, and only its native managed daemons
    /// run a daemon there ("ECS Managed Daemons is only supported for Amazon ECS Managed
    /// Instances Capacity Providers", API reference, *CreateDaemon*).
    #[serde(rename_all = "camelCase")]
    ManagedInstances { sizes: InstanceSizes },
    /// `FARGATE` and `FARGATE_SPOT`: no container instances, so nothing for a daemon to run on.
    Fargate,
    /// A kind this version does not know; kept verbatim and refused by deploy.
    Other { name: String },
}

/// The instance sizes a Managed Instances provider may launch, from its launch template's
/// `instanceRequirements` (`vCpuCount`, `memoryMiB`; API reference, *InstanceRequirementsRequest*).
/// CPU in CPU units (1,024 per vCPU). `None` where the provider sets no bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSizes {
    pub smallest_cpu: Option<i64>,
    pub largest_cpu: Option<i64>,
    pub smallest_memory_mib: Option<i64>,
    pub largest_memory_mib: Option<i64>,
}

impl CapacityProviderKind {
    /// A Managed Instances provider whose instance sizes are not bounded.
    pub fn managed_instances() -> Self {
        Self::ManagedInstances {
            sizes: InstanceSizes::default(),
        }
    }
}

/// One capacity provider as `DescribeCapacityProviders` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProvider {
    pub name: String,
    pub arn: String,
    /// `ACTIVE` or `INACTIVE`: only an active provider can be used in a cluster.
    pub status: String,
    #[serde(flatten)]
    pub kind: CapacityProviderKind,
}

/// The names ECS predefines for Fargate (developer guide, *Fargate capacity providers*).
pub const FARGATE_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

/// One failure item of `StartTask` / `Describe*` (ECS's own reason, e.g. `RESOURCE:MEMORY`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub arn: Option<String>,
    pub reason: String,
    pub detail: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(arn) = &self.arn {
            write!(f, " on {arn}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_is_kept_verbatim() {
        assert_eq!(InstanceStatus::from("ACTIVE"), InstanceStatus::Active);
        let other = InstanceStatus::from("HIBERNATING");
        assert_eq!(other, InstanceStatus::Other("HIBERNATING".into()));
        assert_eq!(other.to_string(), "HIBERNATING");
        let json = serde_json::to_string(&TaskStatus::Running).unwrap();
        assert_eq!(json, "\"RUNNING\"");
        let back: TaskStatus = serde_json::from_str("\"STOPPED\"").unwrap();
        assert!(back.is_terminal());
    }
}
