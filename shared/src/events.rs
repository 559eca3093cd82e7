//! Typed ECS events inside `aws_lambda_events`' EventBridge envelope.
//!
//! EventBridge delivers at least once and out of order; the typed detail keeps
//! `version` so callers can drop stale events. Unknown fields are ignored and
//! every field AWS may leave out is optional, so a new ECS field never breaks
//! parsing. A malformed event is an [`EventError`] naming the field at fault.

use std::collections::BTreeMap;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::arn;
use crate::model::{HealthStatus, InstanceStatus, Resources, TaskStatus};

pub const ECS_SOURCE: &str = "aws.ecs";
pub const INSTANCE_STATE_CHANGE: &str = "ECS Container Instance State Change";
pub const TASK_STATE_CHANGE: &str = "ECS Task State Change";

/// The task events the task-events rule lets through (template.yaml, `TaskStateChangeRule`):
/// every event of a task whose group is one of ecs-daemons' (its standalone copies, its
/// DAEMON services' tasks, and look-alikes, which the engine then refuses), and of any other
/// task only its end, where drain-last may let an instance go. An application task's other
/// changes are nothing to do (`Engine::event_work` skips them), and at a couple of thousand
/// an hour they would be most of the functions' invocations.
pub const TASK_RULE_GROUP_PREFIXES: [&str; 2] = [crate::plan::GROUP_PREFIX, "service:ecs-daemons-"];
pub const TASK_RULE_LAST_STATUSES: [&str; 2] = ["STOPPED", "DELETED"];

/// Whether the task-events rule delivers this ECS Task State Change: EventBridge's `$or` of
/// a `prefix` match on `detail.group` and an exact match on `detail.lastStatus` (EventBridge
/// user guide, *Content filtering in Amazon EventBridge event patterns*).
pub fn task_rule_passes(event: &Value) -> bool {
    let detail = &event["detail"];
    let group = detail["group"].as_str().unwrap_or_default();
    let status = detail["lastStatus"].as_str().unwrap_or_default();
    TASK_RULE_GROUP_PREFIXES
        .iter()
        .any(|prefix| group.starts_with(prefix))
        || TASK_RULE_LAST_STATUSES.contains(&status)
}
/// ECS's managed daemons (Managed Instances): a daemon task that could not start
/// (`DAEMON_TASK_START_IMPAIRED`), *Daemon events* in the ECS developer guide.
pub const DAEMON_SERVICE_ACTION: &str = "ECS Daemon Service Action";
/// ECS's managed daemons: a daemon deployment changed state (`DAEMON_DEPLOYMENT_*`).
pub const DAEMON_DEPLOYMENT_STATE_CHANGE: &str = "ECS Daemon Deployment State Change";
/// The `eventName` of an impaired daemon task start.
pub const DAEMON_TASK_START_IMPAIRED: &str = "DAEMON_TASK_START_IMPAIRED";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is not an EventBridge event: {0}")]
    Envelope(String),
    #[error(
        "the event has no `id`; EventBridge always sets one, so this did not come from EventBridge"
    )]
    MissingId,
    #[error(
        "expected source `{expected}`, got `{found}`: check the EventBridge rule's event pattern"
    )]
    WrongSource {
        expected: &'static str,
        found: String,
    },
    #[error("expected detail-type `{expected}`, got `{found}`: this function is wired to the wrong EventBridge rule")]
    WrongDetailType { expected: String, found: String },
    #[error("malformed `{detail_type}` detail at `{path}`: {message}")]
    Detail {
        detail_type: String,
        path: String,
        message: String,
    },
}

/// ECS counts versions from 1: anything else did not come from ECS (and would make a stale
/// event look new, or a new one stale).
fn positive_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let version = i64::deserialize(deserializer)?;
    if version < 1 {
        return Err(serde::de::Error::custom(format!(
            "a version is 1 or more, got {version}"
        )));
    }
    Ok(version)
}

/// Treats JSON `null` like an absent field (ECS sends both).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// One entry of `registeredResources` / `remainingResources`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceEntry {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub integer_value: Option<i64>,
    #[serde(default)]
    pub long_value: Option<i64>,
    #[serde(default)]
    pub double_value: Option<f64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub string_set_value: Vec<String>,
}

/// CPU and MEMORY out of an ECS resource list (other resources are ignored).
pub fn resources_of(entries: &[ResourceEntry]) -> Resources {
    let value = |name: &str| {
        entries
            .iter()
            .find(|entry| entry.name == name)
            .and_then(|entry| {
                entry
                    .integer_value
                    .or(entry.long_value)
                    .or(entry.double_value.map(|value| value as i64))
            })
            .unwrap_or(0)
    };
    Resources {
        cpu: value("CPU"),
        memory_mib: value("MEMORY"),
    }
}

/// Detail of "ECS Container Instance State Change" (shaped like `ContainerInstance`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceStateChange {
    pub cluster_arn: String,
    pub container_instance_arn: String,
    pub status: InstanceStatus,
    #[serde(deserialize_with = "positive_version")]
    pub version: i64,
    #[serde(default)]
    pub ec2_instance_id: Option<String>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub agent_connected: Option<bool>,
    #[serde(default)]
    pub capacity_provider_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub attributes: Vec<Attribute>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub registered_resources: Vec<ResourceEntry>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub remaining_resources: Vec<ResourceEntry>,
    #[serde(default)]
    pub running_tasks_count: Option<i32>,
    #[serde(default)]
    pub pending_tasks_count: Option<i32>,
    #[serde(default)]
    pub agent_update_status: Option<String>,
    #[serde(default)]
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl ContainerInstanceStateChange {
    pub fn cluster_name(&self) -> &str {
        arn::cluster_name(&self.cluster_arn)
    }

    /// The container instance id, the same for both ARN forms.
    pub fn instance_id(&self) -> &str {
        arn::resource_id(&self.container_instance_arn)
    }

    pub fn registered(&self) -> Resources {
        resources_of(&self.registered_resources)
    }

    pub fn remaining(&self) -> Resources {
        resources_of(&self.remaining_resources)
    }

    pub fn attribute_map(&self) -> BTreeMap<String, Option<String>> {
        self.attributes
            .iter()
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect()
    }
}

/// One container inside a task state change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateChange {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_arn: Option<String>,
    #[serde(default)]
    pub last_status: Option<TaskStatus>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub health_status: Option<HealthStatus>,
}

/// Detail of "ECS Task State Change" (shaped like `Task`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    pub cluster_arn: String,
    pub task_arn: String,
    pub task_definition_arn: String,
    pub last_status: TaskStatus,
    pub desired_status: TaskStatus,
    #[serde(deserialize_with = "positive_version")]
    pub version: i64,
    /// Absent for Fargate tasks.
    #[serde(default)]
    pub container_instance_arn: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub capacity_provider_name: Option<String>,
    #[serde(default)]
    pub health_status: Option<HealthStatus>,
    #[serde(default)]
    pub stop_code: Option<String>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<ContainerStateChange>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stopping_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl TaskStateChange {
    pub fn cluster_name(&self) -> &str {
        arn::cluster_name(&self.cluster_arn)
    }

    pub fn task_id(&self) -> &str {
        arn::resource_id(&self.task_arn)
    }

    /// The container instance id, whichever ARN form the event used.
    pub fn instance_id(&self) -> Option<&str> {
        self.container_instance_arn.as_deref().map(arn::resource_id)
    }

    /// Task health, falling back to the containers' own when the task-level field is absent.
    pub fn health(&self) -> HealthStatus {
        if let Some(health) = &self.health_status {
            return health.clone();
        }
        let mut with_health = self
            .containers
            .iter()
            .filter_map(|c| c.health_status.as_ref())
            .peekable();
        if with_health.peek().is_none() {
            return HealthStatus::Unknown;
        }
        let all: Vec<&HealthStatus> = with_health.collect();
        if all.iter().any(|h| **h == HealthStatus::Unhealthy) {
            HealthStatus::Unhealthy
        } else if all.iter().all(|h| **h == HealthStatus::Healthy) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    }
}

/// Detail of the two daemon events, as the guide's examples show them (*Daemon events*:
/// `DAEMON_TASK_START_IMPAIRED` with `failureType`, `reason`, `containerInstanceArn`,
/// `taskArn` when a task was created; `DAEMON_DEPLOYMENT_*` with `daemonDeploymentArn` and
/// `targetDaemonRevisionArn`). The guide documents them by example only, so every field but
/// the cluster is optional: the events are triggers to read ECS again, never the truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonEventDetail {
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub event_name: Option<String>,
    /// Present in every example; when absent the cluster is read from `daemonArn`.
    #[serde(default)]
    pub cluster_arn: Option<String>,
    #[serde(default)]
    pub daemon_arn: Option<String>,
    #[serde(default)]
    pub daemon_deployment_arn: Option<String>,
    #[serde(default)]
    pub target_daemon_revision_arn: Option<String>,
    #[serde(default)]
    pub daemon_revision_arn: Option<String>,
    #[serde(default)]
    pub daemon_task_definition_arn: Option<String>,
    #[serde(default)]
    pub container_instance_arn: Option<String>,
    #[serde(default)]
    pub task_arn: Option<String>,
    #[serde(default)]
    pub capacity_provider_name: Option<String>,
    /// `TASK_FAILED_TO_RUN` or `TASK_CREATION_FAILED`.
    #[serde(default)]
    pub failure_type: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl DaemonEventDetail {
    /// The cluster's name, from `clusterArn` or else the cluster inside `daemonArn`
    /// (`…:daemon/<cluster>/<name>`).
    pub fn cluster_name(&self) -> Option<&str> {
        match (&self.cluster_arn, &self.daemon_arn) {
            (Some(cluster), _) => Some(arn::cluster_name(cluster)),
            (None, Some(daemon)) => arn::cluster_in_arn(daemon),
            (None, None) => None,
        }
    }

    /// The daemon's name, from the last segment of `daemonArn`.
    pub fn daemon_name(&self) -> Option<&str> {
        self.daemon_arn.as_deref().map(arn::resource_id)
    }

    pub fn is_impaired_start(&self) -> bool {
        self.event_name.as_deref() == Some(DAEMON_TASK_START_IMPAIRED)
    }
}

/// An ECS event after validation: envelope facts plus the typed detail.
#[derive(Clone, Debug, PartialEq)]
pub struct EcsEvent<D> {
    pub id: String,
    pub time: Option<DateTime<Utc>>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub detail: D,
}

pub type InstanceEvent = EcsEvent<ContainerInstanceStateChange>;
pub type TaskEvent = EcsEvent<TaskStateChange>;
pub type DaemonEvent = EcsEvent<DaemonEventDetail>;

/// Any ECS event this system consumes.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyEcsEvent {
    Instance(Box<InstanceEvent>),
    Task(Box<TaskEvent>),
    Daemon(Box<DaemonEvent>),
}

fn parse_envelope(raw: Value) -> Result<EventBridgeEvent<Value>, EventError> {
    if !raw.is_object() {
        return Err(EventError::Envelope(format!(
            "expected a JSON object, got {}",
            json_kind(&raw)
        )));
    }
    serde_path_to_error::deserialize(raw).map_err(|error| {
        let path = error.path().to_string();
        EventError::Envelope(format!("at `{path}`: {}", error.into_inner()))
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn typed<D: DeserializeOwned>(
    envelope: EventBridgeEvent<Value>,
    detail_type: &str,
) -> Result<EcsEvent<D>, EventError> {
    if envelope.source != ECS_SOURCE {
        return Err(EventError::WrongSource {
            expected: ECS_SOURCE,
            found: envelope.source,
        });
    }
    if envelope.detail_type != detail_type {
        return Err(EventError::WrongDetailType {
            expected: detail_type.to_string(),
            found: envelope.detail_type,
        });
    }
    let id = envelope
        .id
        .filter(|id| !id.is_empty())
        .ok_or(EventError::MissingId)?;
    let detail =
        serde_path_to_error::deserialize(envelope.detail).map_err(|error| EventError::Detail {
            detail_type: detail_type.to_string(),
            path: error.path().to_string(),
            message: error.into_inner().to_string(),
        })?;
    Ok(EcsEvent {
        id,
        time: envelope.time,
        account: envelope.account,
        region: envelope.region,
        detail,
    })
}

/// Parses an "ECS Container Instance State Change" event.
pub fn parse_instance_event(raw: Value) -> Result<InstanceEvent, EventError> {
    typed(parse_envelope(raw)?, INSTANCE_STATE_CHANGE)
}

/// Parses an "ECS Task State Change" event.
pub fn parse_task_event(raw: Value) -> Result<TaskEvent, EventError> {
    typed(parse_envelope(raw)?, TASK_STATE_CHANGE)
}

/// Parses either daemon event ("ECS Daemon Service Action" or "ECS Daemon Deployment State
/// Change"); one without a cluster is malformed.
pub fn parse_daemon_event(raw: Value) -> Result<DaemonEvent, EventError> {
    daemon_event(parse_envelope(raw)?)
}

fn daemon_event(envelope: EventBridgeEvent<Value>) -> Result<DaemonEvent, EventError> {
    let detail_type = envelope.detail_type.clone();
    if detail_type != DAEMON_SERVICE_ACTION && detail_type != DAEMON_DEPLOYMENT_STATE_CHANGE {
        return Err(EventError::WrongDetailType {
            expected: format!("`{DAEMON_SERVICE_ACTION}` or `{DAEMON_DEPLOYMENT_STATE_CHANGE}`"),
            found: detail_type,
        });
    }
    let event: DaemonEvent = typed(envelope, &detail_type)?;
    if event.detail.cluster_name().is_none() {
        return Err(EventError::Detail {
            detail_type,
            path: "clusterArn".into(),
            message: "missing: neither clusterArn nor daemonArn names the cluster".into(),
        });
    }
    Ok(event)
}

/// Parses a task event, or a daemon event (the daemon events' rule feeds the task-events
/// function's queue: both report copies of daemons).
pub fn parse_task_or_daemon_event(raw: Value) -> Result<AnyEcsEvent, EventError> {
    let envelope = parse_envelope(raw)?;
    match envelope.detail_type.as_str() {
        DAEMON_SERVICE_ACTION | DAEMON_DEPLOYMENT_STATE_CHANGE => {
            Ok(AnyEcsEvent::Daemon(Box::new(daemon_event(envelope)?)))
        }
        _ => Ok(AnyEcsEvent::Task(Box::new(typed(
            envelope,
            TASK_STATE_CHANGE,
        )?))),
    }
}

/// Parses any ECS event this system consumes, choosing by detail-type.
pub fn parse_ecs_event(raw: Value) -> Result<AnyEcsEvent, EventError> {
    let envelope = parse_envelope(raw)?;
    match envelope.detail_type.as_str() {
        DAEMON_SERVICE_ACTION | DAEMON_DEPLOYMENT_STATE_CHANGE => {
            Ok(AnyEcsEvent::Daemon(Box::new(daemon_event(envelope)?)))
        }
        INSTANCE_STATE_CHANGE => Ok(AnyEcsEvent::Instance(Box::new(typed(
            envelope,
            INSTANCE_STATE_CHANGE,
        )?))),
        TASK_STATE_CHANGE => Ok(AnyEcsEvent::Task(Box::new(typed(
            envelope,
            TASK_STATE_CHANGE,
        )?))),
        _ => Err(EventError::WrongDetailType {
            expected: format!("`{INSTANCE_STATE_CHANGE}`, `{TASK_STATE_CHANGE}` or a daemon event"),
            found: envelope.detail_type,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Value {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_task_rule_passes_daemon_copies_and_the_ends_of_other_tasks() {
        let event = |group: &str, status: &str| serde_json::json!({"detail": {"group": group, "lastStatus": status}});
        assert!(task_rule_passes(&event("daemon:agent", "PENDING")));
        assert!(task_rule_passes(&event(
            "service:ecs-daemons-agent-a",
            "RUNNING"
        )));
        assert!(task_rule_passes(&event("service:web", "STOPPED")));
        assert!(!task_rule_passes(&event("service:web", "RUNNING")));
        assert!(!task_rule_passes(&event("service:web", "PENDING")));
        assert!(!task_rule_passes(&event("family:batch", "DEACTIVATING")));
    }

    #[test]
    fn instance_samples_parse() {
        let registering = parse_instance_event(sample("instance-registering.json")).unwrap();
        assert_eq!(registering.detail.status, InstanceStatus::Registering);
        assert_eq!(registering.detail.agent_connected, Some(false));

        let active = parse_instance_event(sample("instance-active.json")).unwrap();
        assert_eq!(active.id, "0b1e2c3d-0002-4a5b-8c9d-0e1f2a3b4c5d");
        assert_eq!(active.detail.status, InstanceStatus::Active);
        assert_eq!(active.detail.cluster_name(), "prod");
        assert_eq!(active.detail.version, 2);
        assert_eq!(
            active.detail.capacity_provider_name.as_deref(),
            Some("asg-general")
        );
        assert_eq!(
            active.detail.registered(),
            Resources {
                cpu: 2048,
                memory_mib: 7680
            }
        );
        assert_eq!(
            active.detail.registered_at.unwrap().to_rfc3339(),
            "2026-11-24T09:00:01.127+00:00",
            "ISO timestamps are parsed"
        );

        let draining = parse_instance_event(sample("instance-draining.json")).unwrap();
        assert_eq!(draining.detail.status, InstanceStatus::Draining);
        assert_eq!(
            draining.detail.remaining(),
            Resources {
                cpu: 768,
                memory_mib: 6656
            }
        );
        assert_eq!(draining.detail.running_tasks_count, Some(2));
        // Old ARN form without the cluster: same instance id as the new form.
        assert_eq!(draining.detail.instance_id(), active.detail.instance_id());
        assert_eq!(
            draining.detail.attribute_map().get("ecs-daemons.ready"),
            Some(&None)
        );

        let disconnected =
            parse_instance_event(sample("instance-agent-disconnected.json")).unwrap();
        assert_eq!(disconnected.detail.agent_connected, Some(false));
        assert_eq!(disconnected.detail.status, InstanceStatus::Active);
    }

    #[test]
    fn task_samples_parse() {
        let pending = parse_task_event(sample("task-pending.json")).unwrap();
        assert_eq!(pending.detail.last_status, TaskStatus::Pending);
        assert_eq!(pending.detail.desired_status, TaskStatus::Running);
        assert_eq!(
            pending.detail.group.as_deref(),
            Some("daemon:cloudwatch-agent-daemon")
        );
        assert_eq!(pending.detail.started_by.as_deref(), Some("ecs-daemons"));
        assert_eq!(
            pending.detail.instance_id(),
            Some("7d3c4f2a9b8e4c1d8f6a5b4c3d2e1f00")
        );
        assert_eq!(pending.detail.health(), HealthStatus::Unknown);

        let running = parse_task_event(sample("task-running.json")).unwrap();
        assert_eq!(running.detail.last_status, TaskStatus::Running);
        assert!(running.detail.started_at.is_some());

        let healthy = parse_task_event(sample("task-running-healthy.json")).unwrap();
        assert_eq!(healthy.detail.health(), HealthStatus::Healthy);

        let failed = parse_task_event(sample("task-stopped-execution-role.json")).unwrap();
        assert_eq!(failed.detail.last_status, TaskStatus::Stopped);
        assert_eq!(
            failed.detail.stop_code.as_deref(),
            Some("TaskFailedToStart")
        );
        assert!(failed
            .detail
            .stopped_reason
            .as_deref()
            .unwrap()
            .contains("AccessDeniedException"));
        assert_eq!(failed.detail.containers[0].exit_code, None);

        let exited = parse_task_event(sample("task-stopped-essential-exit.json")).unwrap();
        assert_eq!(exited.detail.containers[0].exit_code, Some(137));
        assert_eq!(exited.detail.health(), HealthStatus::Unhealthy);
    }

    #[test]
    fn parse_any_dispatches_on_detail_type() {
        assert!(matches!(
            parse_ecs_event(sample("task-running.json")),
            Ok(AnyEcsEvent::Task(_))
        ));
        assert!(matches!(
            parse_ecs_event(sample("instance-active.json")),
            Ok(AnyEcsEvent::Instance(_))
        ));
    }

    #[test]
    fn daemon_event_samples_parse() {
        let impaired = parse_daemon_event(sample("daemon-start-impaired.json")).unwrap();
        assert!(impaired.detail.is_impaired_start());
        assert_eq!(impaired.detail.cluster_name(), Some("prod"));
        assert_eq!(impaired.detail.daemon_name(), Some("cloudwatch-agent"));
        assert_eq!(
            impaired.detail.failure_type.as_deref(),
            Some("TASK_FAILED_TO_RUN")
        );
        assert!(impaired
            .detail
            .reason
            .as_deref()
            .unwrap()
            .contains("CannotPullContainerError"));

        let deployment = parse_daemon_event(sample("daemon-deployment-in-progress.json")).unwrap();
        assert!(!deployment.detail.is_impaired_start());
        assert_eq!(
            deployment.detail.event_name.as_deref(),
            Some("DAEMON_DEPLOYMENT_IN_PROGRESS")
        );
        assert!(matches!(
            parse_task_or_daemon_event(sample("daemon-deployment-in-progress.json")),
            Ok(AnyEcsEvent::Daemon(_))
        ));
        assert!(matches!(
            parse_task_or_daemon_event(sample("task-running.json")),
            Ok(AnyEcsEvent::Task(_))
        ));
        assert!(matches!(
            parse_ecs_event(sample("daemon-start-impaired.json")),
            Ok(AnyEcsEvent::Daemon(_))
        ));
    }

    #[test]
    fn a_daemon_event_finds_its_cluster_or_is_refused() {
        let mut no_cluster_arn = sample("daemon-start-impaired.json");
        no_cluster_arn["detail"]
            .as_object_mut()
            .unwrap()
            .remove("clusterArn");
        let parsed = parse_daemon_event(no_cluster_arn.clone()).unwrap();
        assert_eq!(
            parsed.detail.cluster_name(),
            Some("prod"),
            "read from daemonArn"
        );
        no_cluster_arn["detail"]
            .as_object_mut()
            .unwrap()
            .remove("daemonArn");
        let error = parse_daemon_event(no_cluster_arn).unwrap_err();
        assert!(
            matches!(&error, EventError::Detail { path, .. } if path == "clusterArn"),
            "{error}"
        );
        let mut bad_time = sample("daemon-start-impaired.json");
        bad_time["detail"]["createdAt"] = json!("soon");
        let error = parse_daemon_event(bad_time).unwrap_err().to_string();
        assert!(error.contains("createdAt"), "{error}");
        let wrong = parse_daemon_event(sample("task-running.json")).unwrap_err();
        assert!(matches!(wrong, EventError::WrongDetailType { .. }));
    }

    #[test]
    fn container_health_is_used_when_task_health_is_absent() {
        let mut event = sample("task-running-healthy.json");
        event["detail"]
            .as_object_mut()
            .unwrap()
            .remove("healthStatus");
        assert_eq!(
            parse_task_event(event.clone()).unwrap().detail.health(),
            HealthStatus::Healthy
        );
        event["detail"]["containers"][0]["healthStatus"] = json!("UNHEALTHY");
        assert_eq!(
            parse_task_event(event).unwrap().detail.health(),
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn unknown_fields_and_nulls_are_tolerated() {
        let mut event = sample("instance-active.json");
        event["detail"]["someFieldFrom2030"] = json!({"nested": [1, 2]});
        event["detail"]["attributes"] = Value::Null;
        event["detail"]["status"] = json!("HIBERNATING");
        event["brandNewEnvelopeField"] = json!(true);
        let parsed = parse_instance_event(event).unwrap();
        assert!(parsed.detail.attributes.is_empty());
        assert_eq!(
            parsed.detail.status,
            InstanceStatus::Other("HIBERNATING".into())
        );
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let minimal = json!({
            "id": "e-1", "detail-type": TASK_STATE_CHANGE, "source": "aws.ecs",
            "detail": {
                "clusterArn": "arn:aws:ecs:us-east-1:1:cluster/prod",
                "taskArn": "arn:aws:ecs:us-east-1:1:task/prod/abc",
                "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/x:1",
                "lastStatus": "PENDING", "desiredStatus": "RUNNING", "version": 1
            }
        });
        let parsed = parse_task_event(minimal).unwrap();
        assert_eq!(parsed.detail.container_instance_arn, None);
        assert!(parsed.detail.containers.is_empty());
        assert_eq!(parsed.time, None);
    }

    #[test]
    fn malformed_events_name_what_is_wrong() {
        let not_object = parse_instance_event(json!([1, 2])).unwrap_err();
        assert_eq!(
            not_object,
            EventError::Envelope("expected a JSON object, got an array".into())
        );

        let mut no_detail_type = sample("instance-active.json");
        no_detail_type
            .as_object_mut()
            .unwrap()
            .remove("detail-type");
        let error = parse_instance_event(no_detail_type)
            .unwrap_err()
            .to_string();
        assert!(error.contains("detail-type"), "{error}");

        let wrong_type = parse_instance_event(sample("task-running.json")).unwrap_err();
        assert!(matches!(wrong_type, EventError::WrongDetailType { .. }));
        assert!(wrong_type.to_string().contains("ECS Task State Change"));

        let mut wrong_source = sample("instance-active.json");
        wrong_source["source"] = json!("aws.ec2");
        assert!(matches!(
            parse_instance_event(wrong_source),
            Err(EventError::WrongSource { .. })
        ));

        let mut no_id = sample("instance-active.json");
        no_id.as_object_mut().unwrap().remove("id");
        assert_eq!(parse_instance_event(no_id), Err(EventError::MissingId));

        let mut bad_version = sample("instance-active.json");
        bad_version["detail"]["version"] = json!("fourteen");
        let error = parse_instance_event(bad_version).unwrap_err();
        match &error {
            EventError::Detail { path, .. } => assert_eq!(path, "version"),
            other => panic!("unexpected {other:?}"),
        }

        let mut bad_nested = sample("task-running.json");
        bad_nested["detail"]["containers"][0]["exitCode"] = json!("zero");
        let error = parse_task_event(bad_nested).unwrap_err().to_string();
        assert!(error.contains("containers[0].exitCode"), "{error}");

        let mut missing_arn = sample("task-running.json");
        missing_arn["detail"]
            .as_object_mut()
            .unwrap()
            .remove("taskArn");
        let error = parse_task_event(missing_arn).unwrap_err().to_string();
        assert!(error.contains("taskArn"), "{error}");

        let mut bad_time = sample("task-running.json");
        bad_time["detail"]["stoppedAt"] = json!("yesterday");
        let error = parse_task_event(bad_time).unwrap_err().to_string();
        assert!(error.contains("stoppedAt"), "{error}");
    }
}
