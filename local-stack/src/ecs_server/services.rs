//! The DAEMON-service operations of the local ECS server, in ECS's JSON shapes (API
//! reference: CreateService, UpdateService, DescribeServices, DeleteService, and
//! TagResource and UntagResource on a service). Only what the
//! services placement sends is read; anything a DAEMON service may not carry (a desired
//! count, a placement strategy, a capacity provider strategy) is refused as ECS refuses it.

use chrono::{DateTime, Utc};
use ecs_daemons::ecs::{DaemonServiceDeclaration, EcsError, EcsServices, ServiceState};
use ecs_daemons_sim::cluster_model::ClusterModel;
use serde_json::{json, Value};

use super::{invalid, strings, text};

fn epoch(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.timestamp_millis() as f64 / 1000.0))
}

fn service(state: &ServiceState) -> Value {
    json!({
        "serviceArn": state.arn,
        "serviceName": state.name,
        "status": state.status,
        "schedulingStrategy": state.scheduling_strategy,
        "launchType": state.launch_type,
        "taskDefinition": state.task_definition,
        "runningCount": state.running_count,
        "pendingCount": state.pending_count,
        "desiredCount": state.running_count + state.pending_count,
        "placementConstraints": state.member_of.iter().map(|expression| json!({
            "type": "memberOf",
            "expression": expression,
        })).collect::<Vec<_>>(),
        "deployments": state.deployments.iter().map(|d| json!({
            "id": d.id,
            "status": d.status,
            "taskDefinition": d.task_definition,
            "rolloutState": d.rollout_state,
            "runningCount": d.running_count,
            "pendingCount": d.pending_count,
            "failedTasks": d.failed_tasks,
            "createdAt": epoch(d.created_at),
        })).collect::<Vec<_>>(),
        "createdAt": epoch(state.created_at),
        "tags": tags_json(&state.tags),
    })
}

fn tags_json(tags: &[(String, String)]) -> Value {
    tags.iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect()
}

fn tags_of(input: &Value) -> Vec<(String, String)> {
    input
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((text(t, "key")?.to_string(), text(t, "value")?.to_string())))
        .collect()
}

/// CreateService as the services placement sends it; ECS's refusals of what a DAEMON
/// service cannot take ("The daemon scheduling strategy does not support a desired count
/// for services", and the like).
fn declaration(input: &Value) -> Result<DaemonServiceDeclaration, EcsError> {
    const OPERATION: &str = "CreateService";
    if !input
        .get("enableECSManagedTags")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(invalid(
            OPERATION,
            "the local ECS model serves services with ECS's managed tags on only",
        ));
    }
    if text(input, "schedulingStrategy") != Some("DAEMON") {
        return Err(invalid(
            OPERATION,
            "the local ECS model serves DAEMON services only",
        ));
    }
    for (field, why) in [
        (
            "desiredCount",
            "The daemon scheduling strategy does not support a desired count for services.",
        ),
        (
            "placementStrategy",
            "The daemon scheduling strategy does not support placement strategies.",
        ),
        (
            "capacityProviderStrategy",
            "The daemon scheduling strategy does not support a capacity provider strategy.",
        ),
    ] {
        if input.get(field).is_some_and(|v| !v.is_null()) {
            return Err(invalid(OPERATION, why));
        }
    }
    let maximum = input
        .get("deploymentConfiguration")
        .and_then(|c| c.get("maximumPercent"))
        .and_then(Value::as_i64);
    if maximum.is_some_and(|m| m != 100) {
        return Err(invalid(
            OPERATION,
            "The maximumPercent of a daemon service must be 100.",
        ));
    }
    Ok(DaemonServiceDeclaration {
        service_name: text(input, "serviceName")
            .ok_or_else(|| invalid(OPERATION, "serviceName is required"))?
            .to_string(),
        task_definition: text(input, "taskDefinition")
            .ok_or_else(|| invalid(OPERATION, "taskDefinition is required"))?
            .to_string(),
        member_of: input
            .get("placementConstraints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| text(c, "type") == Some("memberOf"))
            .filter_map(|c| text(c, "expression").map(str::to_string))
            .collect(),
        tags: tags_of(input),
        // "If no value is specified, the tags aren't propagated" (CreateService).
        propagate_tags: text(input, "propagateTags").unwrap_or("NONE").to_string(),
        enable_execute_command: input
            .get("enableExecuteCommand")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

pub(super) async fn dispatch(
    model: &ClusterModel,
    cluster: &str,
    operation: &str,
    input: &Value,
) -> Option<Result<Value, EcsError>> {
    let name = |operation: &'static str| {
        text(input, "service")
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
            .ok_or_else(|| invalid(operation, "service is required"))
    };
    let answer = match operation {
        "CreateService" => {
            async {
                let token = text(input, "clientToken").unwrap_or_default().to_string();
                let created = model
                    .create_daemon_service(cluster, &declaration(input)?, &token)
                    .await?;
                Ok(json!({ "service": service(&created) }))
            }
            .await
        }
        "UpdateService" => {
            async {
                const OPERATION: &str = "UpdateService";
                let required = |field: &str| {
                    text(input, field).ok_or_else(|| {
                        invalid(
                            OPERATION,
                            format!("the local ECS model needs {field} on UpdateService"),
                        )
                    })
                };
                let declaration = DaemonServiceDeclaration {
                    service_name: name(OPERATION)?,
                    task_definition: required("taskDefinition")?.to_string(),
                    member_of: Vec::new(),
                    tags: Vec::new(),
                    propagate_tags: required("propagateTags")?.to_string(),
                    enable_execute_command: input
                        .get("enableExecuteCommand")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                };
                let updated = model.update_daemon_service(cluster, &declaration).await?;
                Ok(json!({ "service": service(&updated) }))
            }
            .await
        }
        "DescribeServices" => {
            async {
                let names: Vec<String> = strings(input, "services")
                    .iter()
                    .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                    .collect();
                let described = model.describe_services(cluster, &names).await?;
                let failures: Vec<Value> = names
                    .iter()
                    .filter(|n| !described.iter().any(|s| &s.name == *n))
                    .map(|n| json!({ "arn": n, "reason": "MISSING" }))
                    .collect();
                Ok(json!({
                    "services": described.iter().map(service).collect::<Vec<_>>(),
                    "failures": failures,
                }))
            }
            .await
        }
        "DeleteService" => {
            async {
                let deleted = model
                    .delete_service(cluster, &name("DeleteService")?)
                    .await?;
                Ok(json!({ "service": service(&deleted) }))
            }
            .await
        }
        "TagResource" => {
            async {
                let arn = text(input, "resourceArn")
                    .ok_or_else(|| invalid("TagResource", "resourceArn is required"))?;
                model.tag_service(arn, &tags_of(input)).await?;
                Ok(json!({}))
            }
            .await
        }
        "UntagResource" => {
            async {
                let arn = text(input, "resourceArn")
                    .ok_or_else(|| invalid("UntagResource", "resourceArn is required"))?;
                model.untag_service(arn, &strings(input, "tagKeys")).await?;
                Ok(json!({}))
            }
            .await
        }
        _ => return None,
    };
    Some(answer)
}
