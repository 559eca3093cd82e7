//! The ECS cluster model served over HTTP with the ECS JSON protocol (awsJson1_1: `POST /`,
//! `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`), for exactly the
//! operations `SdkEcs` calls. The unchanged aws-sdk-ecs client reaches it through
//! `AWS_ENDPOINT_URL_ECS`. Errors answer 400 with `__type` and `message`, as ECS does, so
//! the SDK's own retry policy handles `ThrottlingException`.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ecs_daemons::ecs::{
    Ecs, EcsError, EcsErrorKind, InstanceAttribute, StartTaskRequest, TaskFilter,
};
use ecs_daemons::model::{
    CapacityProvider, CapacityProviderKind, ContainerInstance, Failure, InstanceStatus, Resources,
    Task, TaskDefinition,
};
use ecs_daemons_sim::cluster_model::{cluster_arn, ClusterModel, ACCOUNT, REGION};
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::http::{encode, read_message};

mod daemons;
mod services;

const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// Page size when a List* request names none (ECS's own default is 100).
const DEFAULT_PAGE: usize = 100;

/// Binds a free loopback port and serves the model there until the returned task is aborted.
pub async fn serve(
    model: Arc<ClusterModel>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let model = model.clone();
            tokio::spawn(async move {
                let peer = peer.to_string();
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                // Keep-alive: the SDK reuses its connections.
                while let Ok(Some(request)) = read_message(&mut reader, &peer).await {
                    let (status, body) = answer(&model, &request).await;
                    let bytes = serde_json::to_vec(&body).unwrap_or_default();
                    let response = encode(
                        &format!("HTTP/1.1 {status}"),
                        &[
                            ("content-type", "application/x-amz-json-1.1"),
                            ("x-amzn-requestid", "local-stack"),
                        ],
                        &bytes,
                    );
                    if write.write_all(&response).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((address, server))
}

async fn answer(model: &ClusterModel, request: &crate::http::Message) -> (&'static str, Value) {
    let operation = request
        .header("x-amz-target")
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .unwrap_or_default();
    let input: Value = match serde_json::from_slice(&request.body) {
        Ok(input) => input,
        Err(error) => {
            return bad_request("SerializationException", &format!("request body: {error}"));
        }
    };
    match dispatch(model, operation, &input).await {
        Ok(output) => ("200 OK", output),
        Err(error) => bad_request(&error.code, &error.message),
    }
}

fn bad_request(code: &str, message: &str) -> (&'static str, Value) {
    (
        "400 Bad Request",
        json!({"__type": code, "message": message}),
    )
}

fn invalid(operation: &'static str, message: impl Into<String>) -> EcsError {
    EcsError::new(
        operation,
        "request",
        EcsErrorKind::Invalid,
        "InvalidParameterException",
        message,
    )
}

fn text<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

fn strings(input: &Value, field: &str) -> Vec<String> {
    input
        .get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// ECS pages lists; the token is the offset of the next page.
fn page(mut items: Vec<String>, input: &Value, field: &str) -> Value {
    let size = input
        .get("maxResults")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_PAGE, |n| n.clamp(1, 100) as usize);
    let start = text(input, "nextToken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0)
        .min(items.len());
    let end = (start + size).min(items.len());
    let rest = items.split_off(end);
    let mut output = json!({ field: items.split_off(start) });
    if !rest.is_empty() {
        output["nextToken"] = json!(end.to_string());
    }
    output
}

async fn dispatch(model: &ClusterModel, operation: &str, input: &Value) -> Result<Value, EcsError> {
    let cluster = text(input, "cluster").unwrap_or("default");
    let cluster = ecs_daemons::arn::cluster_name(cluster).to_string();
    match operation {
        "ListContainerInstances" => {
            let status = text(input, "status").map(InstanceStatus::from);
            let arns = model.list_container_instances(&cluster, status).await?;
            Ok(page(arns, input, "containerInstanceArns"))
        }
        "DescribeContainerInstances" => {
            let described = model
                .describe_container_instances(&cluster, &strings(input, "containerInstances"))
                .await?;
            Ok(json!({
                "containerInstances": described.iter().map(container_instance).collect::<Vec<_>>(),
                "failures": [],
            }))
        }
        "ListTasks" => {
            let stopped = text(input, "desiredStatus") == Some("STOPPED");
            let filter = match (
                text(input, "startedBy"),
                text(input, "containerInstance"),
                text(input, "serviceName"),
            ) {
                (None, None, Some(service)) if !stopped => TaskFilter::ServiceName(service.into()),
                (Some(marker), None, None) if !stopped => TaskFilter::StartedBy(marker.into()),
                (None, Some(instance), None) if stopped => {
                    TaskFilter::StoppingOnInstance(instance.into())
                }
                (None, Some(instance), None) => TaskFilter::ContainerInstance(instance.into()),
                _ => {
                    return Err(invalid(
                        "ListTasks",
                        "the model serves ListTasks by startedBy, containerInstance or serviceName",
                    ))
                }
            };
            let arns = model.list_tasks(&cluster, &filter).await?;
            Ok(page(arns, input, "taskArns"))
        }
        "DescribeTasks" => {
            let described = model
                .describe_tasks(&cluster, &strings(input, "tasks"))
                .await?;
            Ok(json!({
                "tasks": described.iter().map(|t| task(&cluster, t)).collect::<Vec<_>>(),
                "failures": [],
            }))
        }
        "StartTask" => {
            let request = StartTaskRequest {
                task_definition: text(input, "taskDefinition")
                    .ok_or_else(|| invalid("StartTask", "taskDefinition is required"))?
                    .into(),
                container_instances: strings(input, "containerInstances"),
                started_by: text(input, "startedBy").unwrap_or_default().into(),
                group: text(input, "group").unwrap_or_default().into(),
                tags: input
                    .get("tags")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| Some((text(t, "key")?.into(), text(t, "value")?.into())))
                    .collect(),
                propagate_tags: text(input, "propagateTags").map(str::to_string),
                enable_ecs_managed_tags: input
                    .get("enableECSManagedTags")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                enable_execute_command: input
                    .get("enableExecuteCommand")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                environment: container_environment(input),
            };
            let outcome = model.start_task(&cluster, &request).await?;
            Ok(json!({
                "tasks": outcome.tasks.iter().map(|t| task(&cluster, t)).collect::<Vec<_>>(),
                "failures": outcome.failures.iter().map(failure).collect::<Vec<_>>(),
            }))
        }
        "StopTask" => {
            let task_arn =
                text(input, "task").ok_or_else(|| invalid("StopTask", "task is required"))?;
            let stopped = model
                .stop_task(
                    &cluster,
                    task_arn,
                    text(input, "reason").unwrap_or_default(),
                )
                .await?;
            Ok(json!({ "task": task(&cluster, &stopped) }))
        }
        "PutAttributes" | "DeleteAttributes" => {
            let attributes: Vec<InstanceAttribute> = input
                .get("attributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some(InstanceAttribute {
                        container_instance: text(a, "targetId")?.into(),
                        name: text(a, "name")?.into(),
                        value: text(a, "value").map(str::to_string),
                    })
                })
                .collect();
            if operation == "PutAttributes" {
                model.put_attributes(&cluster, &attributes).await?;
            } else {
                model.delete_attributes(&cluster, &attributes).await?;
            }
            Ok(json!({ "attributes": input.get("attributes").cloned().unwrap_or(json!([])) }))
        }
        "DescribeTaskDefinition" => {
            let name = text(input, "taskDefinition")
                .ok_or_else(|| invalid("DescribeTaskDefinition", "taskDefinition is required"))?;
            let definition = model.describe_task_definition(name).await?;
            Ok(json!({ "taskDefinition": task_definition(&definition) }))
        }
        "DescribeClusters" => {
            let mut clusters = Vec::new();
            let mut failures = Vec::new();
            for requested in strings(input, "clusters") {
                let name = ecs_daemons::arn::cluster_name(&requested).to_string();
                match model.cluster_capacity_providers(&name).await {
                    Ok(providers) => clusters.push(json!({
                        "clusterArn": cluster_arn(&name),
                        "clusterName": name,
                        "status": "ACTIVE",
                        "capacityProviders": providers,
                        "activeServicesCount": ecs_daemons::ecs::EcsServices::active_services_count(model, &name).await?,
                    })),
                    Err(error) if error.kind == EcsErrorKind::NotFound => failures.push(json!({
                        "arn": cluster_arn(&name),
                        "reason": "MISSING",
                    })),
                    Err(error) => return Err(error),
                }
            }
            Ok(json!({ "clusters": clusters, "failures": failures }))
        }
        "DescribeCapacityProviders" => {
            let cluster = text(input, "cluster").unwrap_or("default");
            let cluster = ecs_daemons::arn::cluster_name(cluster).to_string();
            let names = strings(input, "capacityProviders");
            let described = model.describe_capacity_providers(&cluster, &names).await?;
            let failures: Vec<Value> = names
                .iter()
                .filter(|name| !described.iter().any(|p| &&p.name == name))
                .map(|name| json!({ "arn": name, "reason": "MISSING" }))
                .collect();
            let providers: Vec<Value> = described.iter().map(capacity_provider).collect();
            Ok(json!({ "capacityProviders": providers, "failures": failures }))
        }
        other => match daemons::dispatch(model, other, input).await {
            Some(answer) => answer,
            None => match services::dispatch(model, &cluster, other, input).await {
                Some(answer) => answer,
                None => Err(EcsError::new(
                    "Unknown",
                    other,
                    EcsErrorKind::Invalid,
                    "UnknownOperationException",
                    format!("the local ECS model does not serve {other:?}"),
                )),
            },
        },
    }
}

/// A capacity provider in ECS's shape: `type`, and the block of its kind.
fn capacity_provider(provider: &CapacityProvider) -> Value {
    let enabled = |on: bool| if on { "ENABLED" } else { "DISABLED" };
    let mut item = json!({
        "capacityProviderArn": provider.arn,
        "name": provider.name,
        "status": provider.status,
    });
    match &provider.kind {
        CapacityProviderKind::AutoScalingGroup {
            managed_scaling,
            managed_termination_protection,
        } => {
            item["type"] = json!("EC2_AUTOSCALING");
            item["autoScalingGroupProvider"] = json!({
                "autoScalingGroupArn": format!(
                    "arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:00000000-0000-0000-0000-000000000000:autoScalingGroupName/{}",
                    provider.name
                ),
                "managedScaling": { "status": enabled(*managed_scaling) },
                "managedTerminationProtection": enabled(*managed_termination_protection),
            });
        }
        CapacityProviderKind::ManagedInstances { sizes } => {
            item["type"] = json!("MANAGED_INSTANCES");
            let range = |smallest: Option<i64>, largest: Option<i64>, per: i64| {
                let mut range = json!({ "min": smallest.map_or(0, |s| s / per) });
                if let Some(largest) = largest {
                    range["max"] = json!(largest / per);
                }
                range
            };
            item["managedInstancesProvider"] = json!({
                "instanceLaunchTemplate": {
                    "ec2InstanceProfileArn": format!("arn:aws:iam::{ACCOUNT}:instance-profile/ecsInstanceRole"),
                    "networkConfiguration": { "subnets": ["subnet-0local"] },
                    "instanceRequirements": {
                        "vCpuCount": range(sizes.smallest_cpu, sizes.largest_cpu, 1024),
                        "memoryMiB": range(sizes.smallest_memory_mib, sizes.largest_memory_mib, 1),
                    }
                }
            });
        }
        CapacityProviderKind::Fargate => item["type"] = json!(provider.name),
        CapacityProviderKind::Other { name } => item["type"] = json!(name),
    }
    item
}

/// ECS's timestamps: epoch seconds, fractional.
fn epoch_seconds(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.timestamp_millis() as f64 / 1000.0))
}

fn resources(resources: &Resources) -> Value {
    json!([
        {"name": "CPU", "type": "INTEGER", "integerValue": resources.cpu},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": resources.memory_mib},
    ])
}

fn container_instance(instance: &ContainerInstance) -> Value {
    json!({
        "containerInstanceArn": instance.arn,
        "ec2InstanceId": instance.ec2_instance_id,
        "status": instance.status.as_str(),
        "statusReason": instance.status_reason,
        "agentConnected": instance.agent_connected,
        "capacityProviderName": instance.capacity_provider,
        "registeredResources": resources(&instance.registered),
        "remainingResources": resources(&instance.remaining),
        "runningTasksCount": instance.running_tasks,
        "pendingTasksCount": instance.pending_tasks,
        "attributes": instance
            .attributes
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>(),
        "version": instance.version,
        "registeredAt": epoch_seconds(instance.registered_at),
    })
}

fn task(cluster: &str, task: &Task) -> Value {
    json!({
        "taskArn": task.arn,
        "clusterArn": cluster_arn(cluster),
        "taskDefinitionArn": task.task_definition_arn,
        "containerInstanceArn": task.container_instance_arn,
        "lastStatus": task.last_status.as_str(),
        "desiredStatus": task.desired_status.as_str(),
        "healthStatus": task.health.as_str(),
        "group": task.group,
        "startedBy": task.started_by,
        "stopCode": task.stop_code,
        "stoppedReason": task.stopped_reason,
        "version": task.version,
        "createdAt": epoch_seconds(task.created_at),
        "startedAt": epoch_seconds(task.started_at),
        "stoppedAt": epoch_seconds(task.stopped_at),
        "tags": task
            .tags
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect::<Vec<_>>(),
    })
}

fn task_definition(definition: &TaskDefinition) -> Value {
    json!({
        "taskDefinitionArn": definition.arn,
        "family": definition.family,
        "revision": definition.revision,
        "status": definition.status,
        "executionRoleArn": definition.execution_role_arn,
        "cpu": definition.cpu.map(|c| c.to_string()),
        "memory": definition.memory_mib.map(|m| m.to_string()),
        "containerDefinitions": definition
            .containers
            .iter()
            .map(|c| {
                let mut container = json!({"name": c.name, "essential": c.essential});
                if c.has_health_check {
                    container["healthCheck"] = json!({"command": ["CMD-SHELL", "exit 0"]});
                }
                container
            })
            .collect::<Vec<_>>(),
    })
}

fn failure(failure: &Failure) -> Value {
    json!({"arn": failure.arn, "reason": failure.reason, "detail": failure.detail})
}

/// StartTask's `overrides.containerOverrides[].environment`, as the SDK sends them.
fn container_environment(input: &Value) -> Vec<(String, Vec<(String, String)>)> {
    input
        .pointer("/overrides/containerOverrides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|container| {
            let variables = container
                .get("environment")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| Some((text(v, "name")?.into(), text(v, "value")?.into())))
                .collect();
            Some((text(container, "name")?.to_string(), variables))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_paged_as_ecs_pages_them() {
        let items: Vec<String> = (0..250).map(|i| format!("arn-{i}")).collect();
        let first = page(items.clone(), &json!({"maxResults": 100}), "taskArns");
        assert_eq!(first["taskArns"].as_array().unwrap().len(), 100);
        assert_eq!(first["nextToken"], "100");
        let last = page(items.clone(), &json!({"nextToken": "200"}), "taskArns");
        assert_eq!(last["taskArns"][0], "arn-200");
        assert_eq!(last["taskArns"].as_array().unwrap().len(), 50);
        assert!(last.get("nextToken").is_none());
        let beyond = page(items, &json!({"nextToken": "999"}), "taskArns");
        assert_eq!(beyond["taskArns"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn container_overrides_are_read_as_the_sdk_sends_them() {
        let input = json!({"overrides": {"containerOverrides": [
            {"name": "main", "environment": [{"name": "LOG_LEVEL", "value": "debug"}]},
            {"environment": [{"name": "NO_CONTAINER", "value": "x"}]}
        ]}});
        assert_eq!(
            container_environment(&input),
            vec![(
                "main".to_string(),
                vec![("LOG_LEVEL".to_string(), "debug".to_string())]
            )]
        );
        assert!(container_environment(&json!({})).is_empty());
    }
}
