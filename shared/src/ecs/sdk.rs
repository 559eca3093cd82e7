//! `Ecs` on aws-sdk-ecs. Throttling and transient failures are retried by the
//! SDK's retry configuration (see `aws::load_config`); what is left is mapped to
//! an [`EcsError`] naming the call and its target.

use std::collections::BTreeMap;

use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types as sdk;
use chrono::{DateTime, Utc};

use super::{
    clip_reason, Ecs, EcsError, EcsErrorKind, InstanceAttribute, Page, StartTaskOutcome,
    StartTaskRequest, TaskFilter, ATTRIBUTE_BATCH, DESCRIBE_BATCH, DRAIN_BATCH,
};
use crate::model::{
    ContainerDefinition, ContainerInstance, Failure, HealthStatus, InstanceStatus, Resources, Task,
    TaskDefinition, TaskStatus,
};

/// The production `Ecs`: one SDK client, shared by every call of an invocation.
#[derive(Clone, Debug)]
pub struct SdkEcs {
    client: aws_sdk_ecs::Client,
}

impl SdkEcs {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self { client }
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_ecs::Client::new(config))
    }
}

/// Maps an SDK error to an [`EcsError`], classifying by ECS's error code.
fn call_error<E>(
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
            "ClusterNotFoundException" | "TargetNotFoundException" | "ResourceNotFoundException",
        ) => EcsErrorKind::NotFound,
        // ECS answers an unknown task definition with a ClientException of this wording.
        (_, "ClientException") if message.contains("Unable to describe task definition") => {
            EcsErrorKind::NotFound
        }
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

fn malformed(operation: &'static str, target: impl Into<String>, missing: &str) -> EcsError {
    EcsError::new(
        operation,
        target,
        EcsErrorKind::Malformed,
        "MalformedResponse",
        format!("the answer has no {missing}"),
    )
}

fn to_chrono(time: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<DateTime<Utc>> {
    time.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn resources(entries: &[sdk::Resource]) -> Resources {
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

fn failures(items: &[sdk::Failure]) -> Vec<Failure> {
    items
        .iter()
        .map(|f| Failure {
            arn: f.arn().map(str::to_string),
            reason: f.reason().unwrap_or("UNKNOWN").to_string(),
            detail: f.detail().map(str::to_string),
        })
        .collect()
}

fn container_instance(
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

fn task(cluster: &str, item: &sdk::Task) -> Result<Task, EcsError> {
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
        tags: item
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect::<BTreeMap<_, _>>(),
    })
}

/// Parses a task-level CPU or memory string: `"1024"`, `"1 vCPU"`, `"0.5 GB"`.
fn parse_size(text: &str, unit_per_whole: f64) -> Option<i64> {
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

fn task_definition(
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
        cpu,
        memory_mib,
        containers: containers
            .iter()
            .map(|c| ContainerDefinition {
                name: c.name().unwrap_or_default().to_string(),
                essential: c.essential().unwrap_or(true),
                has_health_check: c.health_check().is_some(),
            })
            .collect(),
    })
}

/// PutAttributes/DeleteAttributes want the full ARN alone, or a bare id with its target type.
/// The value goes along on deletes too: ECS ignores it, moto deletes only on a match.
fn sdk_attribute(
    operation: &'static str,
    attribute: &InstanceAttribute,
) -> Result<sdk::Attribute, EcsError> {
    let mut builder = sdk::Attribute::builder()
        .name(&attribute.name)
        .target_id(&attribute.container_instance)
        .set_value(attribute.value.clone());
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

impl Ecs for SdkEcs {
    async fn list_container_instances_page(
        &self,
        cluster: &str,
        status: Option<InstanceStatus>,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        let page = self
            .client
            .list_container_instances()
            .cluster(cluster)
            .set_status(
                status
                    .as_ref()
                    .map(|s| sdk::ContainerInstanceStatus::from(s.as_str())),
            )
            .max_results(100)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| call_error("ListContainerInstances", format!("cluster {cluster}"), e))?;
        Ok(Page {
            arns: page.container_instance_arns().to_vec(),
            next_token: page.next_token().map(str::to_string),
        })
    }

    async fn list_container_instances_of_ec2(
        &self,
        cluster: &str,
        ec2_instance_id: &str,
    ) -> Result<Vec<String>, EcsError> {
        // The id goes into a cluster query: anything but an EC2 instance id is refused first.
        let valid = ec2_instance_id.starts_with("i-")
            && ec2_instance_id.len() <= 32
            && ec2_instance_id[2..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(EcsError::new(
                "ListContainerInstances",
                format!("cluster {cluster}"),
                EcsErrorKind::Invalid,
                "InvalidParameterException",
                format!("{ec2_instance_id:?} is not an EC2 instance id"),
            ));
        }
        let page = self
            .client
            .list_container_instances()
            .cluster(cluster)
            .filter(format!("ec2InstanceId == {ec2_instance_id}"))
            .max_results(100)
            .send()
            .await
            .map_err(|e| call_error("ListContainerInstances", format!("cluster {cluster}"), e))?;
        Ok(page.container_instance_arns().to_vec())
    }

    async fn drain_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<(), EcsError> {
        for batch in instances.chunks(DRAIN_BATCH) {
            let answer = self
                .client
                .update_container_instances_state()
                .cluster(cluster)
                .set_container_instances(Some(batch.to_vec()))
                .status(sdk::ContainerInstanceStatus::Draining)
                .send()
                .await
                .map_err(|e| {
                    call_error(
                        "UpdateContainerInstancesState",
                        format!("cluster {cluster}"),
                        e,
                    )
                })?;
            // An instance that is gone (MISSING) needs no draining; anything else is an error.
            if let Some(failure) = answer
                .failures()
                .iter()
                .find(|f| f.reason() != Some("MISSING"))
            {
                return Err(EcsError::new(
                    "UpdateContainerInstancesState",
                    failure.arn().unwrap_or(cluster).to_string(),
                    EcsErrorKind::Invalid,
                    failure.reason().unwrap_or("Failure"),
                    failure.detail().unwrap_or("ECS did not drain the instance"),
                ));
            }
        }
        Ok(())
    }

    async fn describe_container_instances(
        &self,
        cluster: &str,
        instances: &[String],
    ) -> Result<Vec<ContainerInstance>, EcsError> {
        let mut described = Vec::with_capacity(instances.len());
        for batch in instances.chunks(DESCRIBE_BATCH) {
            let answer = self
                .client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    call_error(
                        "DescribeContainerInstances",
                        format!("cluster {cluster}"),
                        e,
                    )
                })?;
            for item in answer.container_instances() {
                described.push(container_instance(cluster, item)?);
            }
        }
        Ok(described)
    }

    async fn list_tasks_page(
        &self,
        cluster: &str,
        filter: &TaskFilter,
        next_token: Option<String>,
    ) -> Result<Page, EcsError> {
        let mut request = self
            .client
            .list_tasks()
            .cluster(cluster)
            .max_results(100)
            .set_next_token(next_token);
        request = match filter {
            TaskFilter::StartedBy(marker) => request.started_by(marker),
            TaskFilter::ContainerInstance(instance) => request.container_instance(instance),
            TaskFilter::StoppingOnInstance(instance) => request
                .container_instance(instance)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped),
        };
        let page = request
            .send()
            .await
            .map_err(|e| call_error("ListTasks", format!("cluster {cluster} ({filter})"), e))?;
        Ok(Page {
            arns: page.task_arns().to_vec(),
            next_token: page.next_token().map(str::to_string),
        })
    }

    async fn describe_tasks(&self, cluster: &str, tasks: &[String]) -> Result<Vec<Task>, EcsError> {
        let mut described = Vec::with_capacity(tasks.len());
        for batch in tasks.chunks(DESCRIBE_BATCH) {
            let answer = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(batch.to_vec()))
                .include(sdk::TaskField::Tags)
                .send()
                .await
                .map_err(|e| call_error("DescribeTasks", format!("cluster {cluster}"), e))?;
            for item in answer.tasks() {
                described.push(task(cluster, item)?);
            }
        }
        Ok(described)
    }

    async fn start_task(
        &self,
        cluster: &str,
        request: &StartTaskRequest,
    ) -> Result<StartTaskOutcome, EcsError> {
        request.validate(cluster)?;
        let tags = request
            .tags
            .iter()
            .map(|(key, value)| sdk::Tag::builder().key(key).value(value).build())
            .collect::<Vec<_>>();
        let answer = self
            .client
            .start_task()
            .cluster(cluster)
            .task_definition(&request.task_definition)
            .set_container_instances(Some(request.container_instances.clone()))
            .started_by(&request.started_by)
            .group(&request.group)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| {
                call_error(
                    "StartTask",
                    format!("{} in cluster {cluster}", request.task_definition),
                    e,
                )
            })?;
        Ok(StartTaskOutcome {
            tasks: answer
                .tasks()
                .iter()
                .map(|t| task(cluster, t))
                .collect::<Result<_, _>>()?,
            failures: failures(answer.failures()),
        })
    }

    async fn stop_task(
        &self,
        cluster: &str,
        task_arn: &str,
        reason: &str,
    ) -> Result<Task, EcsError> {
        let answer = self
            .client
            .stop_task()
            .cluster(cluster)
            .task(task_arn)
            .reason(clip_reason(reason))
            .send()
            .await
            .map_err(|e| {
                call_error(
                    "StopTask",
                    format!("task {task_arn} in cluster {cluster}"),
                    e,
                )
            })?;
        let stopped = answer
            .task()
            .ok_or_else(|| malformed("StopTask", task_arn, "task"))?;
        task(cluster, stopped)
    }

    async fn put_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            let items = batch
                .iter()
                .map(|a| sdk_attribute("PutAttributes", a))
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .put_attributes()
                .cluster(cluster)
                .set_attributes(Some(items))
                .send()
                .await
                .map_err(|e| call_error("PutAttributes", format!("cluster {cluster}"), e))?;
        }
        Ok(())
    }

    async fn delete_attributes(
        &self,
        cluster: &str,
        attributes: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
        for batch in attributes.chunks(ATTRIBUTE_BATCH) {
            let items = batch
                .iter()
                .map(|a| sdk_attribute("DeleteAttributes", a))
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .delete_attributes()
                .cluster(cluster)
                .set_attributes(Some(items))
                .send()
                .await
                .map_err(|e| call_error("DeleteAttributes", format!("cluster {cluster}"), e))?;
        }
        Ok(())
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinition, EcsError> {
        let answer = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| call_error("DescribeTaskDefinition", task_definition, e))?;
        let item = answer.task_definition().ok_or_else(|| {
            malformed("DescribeTaskDefinition", task_definition, "taskDefinition")
        })?;
        self::task_definition(task_definition, item)
    }

    async fn cluster_capacity_providers(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        let answer = self
            .client
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .map_err(|e| call_error("DescribeClusters", format!("cluster {cluster}"), e))?;
        match answer
            .clusters()
            .iter()
            .find(|c| c.status() != Some("INACTIVE"))
        {
            Some(found) => Ok(found.capacity_providers().to_vec()),
            None => Err(EcsError::new(
                "DescribeClusters",
                format!("cluster {cluster}"),
                EcsErrorKind::NotFound,
                "ClusterNotFoundException",
                format!("cluster {cluster} does not exist in this account and region"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_sizes_in_every_notation() {
        assert_eq!(parse_size("1024", 1024.0), Some(1024));
        assert_eq!(parse_size("1 vCPU", 1024.0), Some(1024));
        assert_eq!(parse_size("0.25 vcpu", 1024.0), Some(256));
        assert_eq!(parse_size("0.5 GB", 1024.0), Some(512));
        assert_eq!(parse_size("lots", 1024.0), None);
    }

    #[test]
    fn container_sums_stand_in_for_missing_task_sizes() {
        let definition = sdk::TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/agent:3")
            .family("agent")
            .revision(3)
            .container_definitions(
                sdk::ContainerDefinition::builder()
                    .name("a")
                    .cpu(256)
                    .memory(128)
                    .build(),
            )
            .container_definitions(
                sdk::ContainerDefinition::builder()
                    .name("b")
                    .cpu(128)
                    .memory_reservation(64)
                    .essential(false)
                    .health_check(
                        sdk::HealthCheck::builder()
                            .command("CMD")
                            .command("true")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build();
        let parsed = task_definition("agent:3", &definition).unwrap();
        assert_eq!(parsed.cpu, Some(384));
        assert_eq!(parsed.memory_mib, Some(192));
        assert_eq!(parsed.family_revision(), "agent:3");
        assert!(parsed.has_health_check());
        assert!(!parsed.containers[1].essential);
        assert_eq!(parsed.execution_role_arn, None);
    }
}
