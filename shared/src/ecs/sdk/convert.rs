//! From aws-sdk-ecs's types to the model's, and SDK errors to [`EcsError`]s.

use std::collections::BTreeMap;

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types as sdk;
use chrono::{DateTime, Utc};

use crate::ecs::{EcsError, EcsErrorKind, InstanceAttribute};
use crate::model::{
    CapacityProvider, CapacityProviderKind, ContainerDefinition, ContainerInstance, Failure,
    HealthStatus, InstanceSizes, InstanceStatus, Resources, Task, TaskDefinition, TaskStatus,
};

/// Maps an SDK error to an [`EcsError`], classifying by ECS's error code.
pub(super) fn call_error<E>(
    operation: &'static str,
    target: impl Into<String>,
    error: SdkError<E, HttpResponse>,
) -> EcsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or("").to_string();
    let message = error
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| DisplayErrorContext(&error).to_string());
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let kind = match (&error, code.as_str()) {
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => EcsErrorKind::Transient,
        (
            _,
            "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded",
        ) => EcsErrorKind::Throttled,
        (_, "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation") => {
            EcsErrorKind::AccessDenied
        }
        (
            _,
            "ClusterNotFoundException"
            | "TargetNotFoundException"
            | "ResourceNotFoundException"
            | "DaemonNotFoundException",
        ) => EcsErrorKind::NotFound,
        // ECS answers an unknown task definition with a ClientException of this wording; an
        // unknown daemon task definition is assumed to be answered alike.
        (_, "ClientException") if message.contains("Unable to describe") => EcsErrorKind::NotFound,
        (_, "ServerException" | "ServiceUnavailableException" | "InternalFailure") => {
            EcsErrorKind::Transient
        }
        _ if status.is_some_and(|status| status >= 500) => EcsErrorKind::Transient,
        _ => EcsErrorKind::Invalid,
    };
    let code = if code.is_empty() {
        status.map_or("NoResponse".to_string(), |s| format!("HTTP {s}"))
    } else {
        code
    };
    EcsError::new(operation, target, kind, code, message)
}

pub(super) fn malformed(
    operation: &'static str,
    target: impl Into<String>,
    missing: &str,
) -> EcsError {
    EcsError::new(
        operation,
        target,
        EcsErrorKind::Malformed,
        "MalformedResponse",
        format!("the answer has no {missing}"),
    )
}

/// ECS's tags as (key, value); a tag without a key is left out, one without a value has "".
pub(super) fn tag_pairs(tags: &[sdk::Tag]) -> impl Iterator<Item = (String, String)> + '_ {
    tags.iter().filter_map(|t| {
        Some((
            t.key()?.to_string(),
            t.value().unwrap_or_default().to_string(),
        ))
    })
}

pub(super) fn to_chrono(time: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<DateTime<Utc>> {
    time.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

pub(super) fn resources(entries: &[sdk::Resource]) -> Resources {
    let value = |name: &str| {
        entries
            .iter()
            .find(|r| r.name() == Some(name))
            .map_or(0, |r| {
                if r.integer_value() != 0 {
                    i64::from(r.integer_value())
                } else if r.long_value() != 0 {
                    r.long_value()
                } else {
                    r.double_value() as i64
                }
            })
    };
    Resources {
        cpu: value("CPU"),
        memory_mib: value("MEMORY"),
    }
}

pub(super) fn failures(items: &[sdk::Failure]) -> Vec<Failure> {
    items
        .iter()
        .map(|f| Failure {
            arn: f.arn().map(str::to_string),
            reason: f.reason().unwrap_or("UNKNOWN").to_string(),
            detail: f.detail().map(str::to_string),
        })
        .collect()
}

pub(super) fn container_instance(
    cluster: &str,
    item: &sdk::ContainerInstance,
) -> Result<ContainerInstance, EcsError> {
    let arn = item.container_instance_arn().ok_or_else(|| {
        malformed(
            "DescribeContainerInstances",
            format!("cluster {cluster}"),
            "containerInstanceArn",
        )
    })?;
    Ok(ContainerInstance {
        arn: arn.to_string(),
        ec2_instance_id: item.ec2_instance_id().map(str::to_string),
        status: InstanceStatus::from(item.status().unwrap_or("")),
        status_reason: item.status_reason().map(str::to_string),
        agent_connected: item.agent_connected(),
        capacity_provider: item.capacity_provider_name().map(str::to_string),
        registered: resources(item.registered_resources()),
        remaining: resources(item.remaining_resources()),
        running_tasks: item.running_tasks_count(),
        pending_tasks: item.pending_tasks_count(),
        attributes: item
            .attributes()
            .iter()
            .map(|a| (a.name().to_string(), a.value().map(str::to_string)))
            .collect(),
        version: item.version(),
        registered_at: to_chrono(item.registered_at()),
    })
}

pub(super) fn task(cluster: &str, item: &sdk::Task) -> Result<Task, EcsError> {
    let target = || format!("cluster {cluster}");
    let arn = item
        .task_arn()
        .ok_or_else(|| malformed("DescribeTasks", target(), "taskArn"))?;
    let container_health = || {
        let states: Vec<&sdk::HealthStatus> = item
            .containers()
            .iter()
            .filter_map(|c| c.health_status())
            .collect();
        if states.contains(&&sdk::HealthStatus::Unhealthy) {
            HealthStatus::Unhealthy
        } else if !states.is_empty() && states.iter().all(|s| **s == sdk::HealthStatus::Healthy) {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unknown
        }
    };
    Ok(Task {
        arn: arn.to_string(),
        task_definition_arn: item.task_definition_arn().unwrap_or_default().to_string(),
        container_instance_arn: item.container_instance_arn().map(str::to_string),
        last_status: TaskStatus::from(item.last_status().unwrap_or("")),
        desired_status: TaskStatus::from(item.desired_status().unwrap_or("")),
        health: item
            .health_status()
            .map_or_else(container_health, |h| HealthStatus::from(h.as_str())),
        group: item.group().map(str::to_string),
        started_by: item.started_by().map(str::to_string),
        stop_code: item.stop_code().map(|c| c.as_str().to_string()),
        stopped_reason: item.stopped_reason().map(str::to_string),
        version: item.version(),
        created_at: to_chrono(item.created_at()),
        started_at: to_chrono(item.started_at()),
        stopped_at: to_chrono(item.stopped_at()),
        tags: tag_pairs(item.tags()).collect::<BTreeMap<_, _>>(),
    })
}

/// Parses a task-level CPU or memory string: `"1024"`, `"1 vCPU"`, `"0.5 GB"`.
pub(super) fn parse_size(text: &str, unit_per_whole: f64) -> Option<i64> {
    let text = text.trim();
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    let lower = text.to_ascii_lowercase();
    let number = lower.trim_end_matches("vcpu").trim_end_matches("gb").trim();
    number
        .parse::<f64>()
        .ok()
        .map(|value| (value * unit_per_whole).round() as i64)
}

pub(super) fn task_definition(
    requested: &str,
    item: &sdk::TaskDefinition,
) -> Result<TaskDefinition, EcsError> {
    let arn = item
        .task_definition_arn()
        .ok_or_else(|| malformed("DescribeTaskDefinition", requested, "taskDefinitionArn"))?;
    let containers = item.container_definitions();
    let sum = |value: fn(&sdk::ContainerDefinition) -> Option<i64>| -> Option<i64> {
        let values: Vec<i64> = containers.iter().filter_map(value).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let cpu = item
        .cpu()
        .and_then(|cpu| parse_size(cpu, 1024.0))
        .or_else(|| sum(|c| (c.cpu() > 0).then(|| i64::from(c.cpu()))));
    let memory_mib = item
        .memory()
        .and_then(|memory| parse_size(memory, 1024.0))
        .or_else(|| sum(|c| c.memory().or(c.memory_reservation()).map(i64::from)));
    Ok(TaskDefinition {
        arn: arn.to_string(),
        family: item.family().unwrap_or_default().to_string(),
        revision: item.revision(),
        status: item.status().map_or("UNKNOWN", |s| s.as_str()).to_string(),
        execution_role_arn: item.execution_role_arn().map(str::to_string),
        task_role_arn: item.task_role_arn().map(str::to_string),
        cpu,
        memory_mib,
        containers: containers
            .iter()
            .map(|c| ContainerDefinition {
                name: c.name().unwrap_or_default().to_string(),
                essential: c.essential().unwrap_or(true),
                has_health_check: c.health_check().is_some(),
                health_check_grace_seconds: c.health_check().map(|check| {
                    crate::model::health_check_grace_seconds(
                        check.interval(),
                        check.timeout(),
                        check.retries(),
                        check.start_period(),
                    )
                }),
            })
            .collect(),
        network_mode: item.network_mode().map(|m| m.as_str().to_string()),
    })
}

/// PutAttributes/DeleteAttributes want the full ARN alone, or a bare id with its target type.
/// Deletes send no value: "For custom attributes, specify the attribute name and target ID,
/// but don't specify the value" (API reference, DeleteAttributes). (moto deletes only when a
/// value is sent and matches; AWS is followed, not moto.)
pub(super) fn sdk_attribute(
    operation: &'static str,
    attribute: &InstanceAttribute,
) -> Result<sdk::Attribute, EcsError> {
    let value = match operation {
        "DeleteAttributes" => None,
        _ => attribute.value.clone(),
    };
    let mut builder = sdk::Attribute::builder()
        .name(&attribute.name)
        .target_id(&attribute.container_instance)
        .set_value(value);
    if !attribute.container_instance.starts_with("arn:") {
        builder = builder.target_type(sdk::TargetType::ContainerInstance);
    }
    builder.build().map_err(|error| {
        EcsError::new(
            operation,
            &attribute.container_instance,
            EcsErrorKind::Invalid,
            "InvalidRequest",
            error.to_string(),
        )
    })
}

/// A capacity provider and its kind: `type` where ECS sends it, else which provider block it
/// carries (answers from before Managed Instances have no `type`), else Fargate by its
/// predefined name (aws-cli's `describe-capacity-providers` example answers FARGATE with
/// only its name, ARN and status).
pub(super) fn capacity_provider(item: &sdk::CapacityProvider) -> Option<CapacityProvider> {
    let name = item.name()?.to_string();
    let asg = item.auto_scaling_group_provider();
    let on = |status: Option<&str>| status == Some("ENABLED");
    let kind = match item.r#type().map(|t| t.as_str()) {
        Some("MANAGED_INSTANCES") => CapacityProviderKind::ManagedInstances {
            sizes: instance_sizes(item),
        },
        Some("FARGATE" | "FARGATE_SPOT") => CapacityProviderKind::Fargate,
        Some("EC2_AUTOSCALING") | None if asg.is_some() => CapacityProviderKind::AutoScalingGroup {
            managed_scaling: on(asg
                .and_then(|a| a.managed_scaling())
                .and_then(|m| m.status())
                .map(|s| s.as_str())),
            managed_termination_protection: on(asg
                .and_then(|a| a.managed_termination_protection())
                .map(|p| p.as_str())),
        },
        None if item.managed_instances_provider().is_some() => {
            CapacityProviderKind::ManagedInstances {
                sizes: instance_sizes(item),
            }
        }
        None if crate::model::FARGATE_PROVIDERS.contains(&name.as_str()) => {
            CapacityProviderKind::Fargate
        }
        other => CapacityProviderKind::Other {
            name: other.unwrap_or("unknown").to_string(),
        },
    };
    Some(CapacityProvider {
        arn: item.capacity_provider_arn().unwrap_or_default().to_string(),
        status: item.status().map_or("ACTIVE", |s| s.as_str()).to_string(),
        name,
        kind,
    })
}

/// The sizes a Managed Instances provider's launch template allows.
fn instance_sizes(item: &sdk::CapacityProvider) -> InstanceSizes {
    let requirements = item
        .managed_instances_provider()
        .and_then(|p| p.instance_launch_template())
        .and_then(|t| t.instance_requirements());
    let cpu = requirements.and_then(|r| r.v_cpu_count());
    let memory = requirements.and_then(|r| r.memory_mib());
    InstanceSizes {
        smallest_cpu: cpu.map(|c| i64::from(c.min()) * 1024).filter(|c| *c > 0),
        largest_cpu: cpu.and_then(|c| c.max()).map(|max| i64::from(max) * 1024),
        smallest_memory_mib: memory.map(|m| i64::from(m.min())).filter(|m| *m > 0),
        largest_memory_mib: memory.and_then(|m| m.max()).map(i64::from),
    }
}
