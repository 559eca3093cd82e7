//! The managed-daemon operations of the local ECS server, in ECS's JSON shapes (API
//! reference: the request and response syntax of each operation).

use chrono::{DateTime, Utc};
use ecs_daemons::ecs::{
    DaemonChange, DaemonDeclaration, DaemonDeploymentSettings, EcsDaemons, EcsError,
};
use ecs_daemons_sim::cluster_model::ClusterModel;
use serde_json::{json, Value};

use super::{invalid, strings, text};

fn epoch(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.timestamp_millis() as f64 / 1000.0))
}

/// The declaration CreateDaemon and UpdateDaemon carry.
fn declaration(operation: &'static str, input: &Value) -> Result<DaemonDeclaration, EcsError> {
    let configuration = input
        .get("deploymentConfiguration")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(DaemonDeclaration {
        daemon_name: text(input, "daemonName").unwrap_or_default().to_string(),
        cluster_arn: text(input, "clusterArn").unwrap_or("default").to_string(),
        daemon_task_definition_arn: text(input, "daemonTaskDefinitionArn")
            .ok_or_else(|| invalid(operation, "daemonTaskDefinitionArn is required"))?
            .to_string(),
        capacity_provider_arns: strings(input, "capacityProviderArns"),
        deployment: DaemonDeploymentSettings {
            drain_percent: configuration.get("drainPercent").and_then(Value::as_f64),
            bake_time_in_minutes: configuration
                .get("bakeTimeInMinutes")
                .and_then(Value::as_i64)
                .map(|m| m as i32),
            alarm_names: strings(
                configuration.get("alarms").unwrap_or(&Value::Null),
                "alarmNames",
            ),
        },
        critical: input
            .get("critical")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        tags: input
            .get("tags")
            .and_then(Value::as_array)
            .map(|tags| {
                tags.iter()
                    .map(|t| {
                        (
                            text(t, "key").unwrap_or_default().to_string(),
                            text(t, "value").unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        launch: ecs_daemons::ecs::DaemonLaunch {
            propagate_tags: text(input, "propagateTags").map(str::to_string),
            enable_ecs_managed_tags: flag(input, "enableECSManagedTags"),
            enable_execute_command: flag(input, "enableExecuteCommand"),
        },
    })
}

fn flag(input: &Value, field: &str) -> bool {
    input.get(field).and_then(Value::as_bool).unwrap_or(false)
}

fn change(change: DaemonChange) -> Value {
    json!({
        "daemonArn": change.daemon_arn,
        "status": change.status,
        "deploymentArn": change.deployment_arn,
    })
}

/// Serves one managed-daemon operation, or `None` when `operation` is not one.
pub(super) async fn dispatch(
    model: &ClusterModel,
    operation: &str,
    input: &Value,
) -> Option<Result<Value, EcsError>> {
    let required = |field: &str, operation: &'static str| {
        text(input, field)
            .map(str::to_string)
            .ok_or_else(|| invalid(operation, format!("{field} is required")))
    };
    let answer = match operation {
        "DescribeDaemonTaskDefinition" => async {
            let reference = required("daemonTaskDefinition", "DescribeDaemonTaskDefinition")?;
            let definition = model.describe_daemon_task_definition(&reference).await?;
            Ok(json!({"daemonTaskDefinition": {
                "daemonTaskDefinitionArn": definition.arn,
                "family": definition.family,
                "revision": definition.revision,
                "status": definition.status,
                "executionRoleArn": definition.execution_role_arn,
                "taskRoleArn": definition.task_role_arn,
                "cpu": definition.cpu.map(|c| c.to_string()),
                "memory": definition.memory_mib.map(|m| m.to_string()),
            }}))
        }
        .await,
        "CreateDaemon" => async {
            let token = text(input, "clientToken").unwrap_or_default().to_string();
            let created = model
                .create_daemon(&declaration("CreateDaemon", input)?, &token)
                .await?;
            Ok(change(created))
        }
        .await,
        "UpdateDaemon" => async {
            let daemon = required("daemonArn", "UpdateDaemon")?;
            let updated = model
                .update_daemon(&daemon, &declaration("UpdateDaemon", input)?)
                .await?;
            Ok(change(updated))
        }
        .await,
        "DeleteDaemon" => async {
            let daemon = required("daemonArn", "DeleteDaemon")?;
            Ok(change(model.delete_daemon(&daemon).await?))
        }
        .await,
        "DescribeDaemon" => async {
            let daemon = required("daemonArn", "DescribeDaemon")?;
            let state = model.describe_daemon(&daemon).await?;
            let revisions: Vec<Value> = state
                .current_revisions
                .iter()
                .map(|r| {
                    json!({
                        "arn": r.revision_arn,
                        "capacityProviders": r.providers.iter().map(|p| json!({
                            "arn": p.capacity_provider_arn,
                            "runningCount": p.running,
                            "withoutDaemonCount": p.without_daemon,
                        })).collect::<Vec<_>>(),
                        "totalRunningCount": r.providers.iter().map(|p| p.running).sum::<i32>(),
                        "totalWithoutDaemonCount": r.providers.iter().map(|p| p.without_daemon).sum::<i32>(),
                    })
                })
                .collect();
            Ok(json!({"daemon": {
                "daemonArn": state.daemon_arn,
                "status": state.status,
                "deploymentArn": state.deployment_arn,
                "currentRevisions": revisions,
                "updatedAt": epoch(state.updated_at),
            }}))
        }
        .await,
        "DescribeDaemonDeployments" => async {
            let arns = strings(input, "daemonDeploymentArns");
            let deployments = model.describe_daemon_deployments(&arns).await?;
            let items: Vec<Value> = deployments
                .iter()
                .map(|d| {
                    json!({
                        "daemonDeploymentArn": d.deployment_arn,
                        "status": d.status.as_str(),
                        "statusReason": d.status_reason,
                        "targetDaemonRevision": {
                            "arn": d.target_revision_arn,
                            "totalRunningInstanceCount": d.target_running,
                            "totalWithoutDaemonInstanceCount": d.target_without_daemon,
                            "totalDrainingInstanceCount": d.target_draining,
                        },
                        "circuitBreaker": d.circuit_breaker.as_ref().map(|b| json!({
                            "status": b.status,
                            "failureCount": b.failure_count,
                            "threshold": b.threshold,
                        })),
                        "rollback": d.rollback.as_ref().map(|r| json!({
                            "reason": r.reason,
                            "rollbackTargetDaemonRevisionArn": r.target_revision_arn,
                        })),
                        "alarms": {"triggeredAlarmNames": d.triggered_alarm_names},
                        "createdAt": epoch(d.created_at),
                        "finishedAt": epoch(d.finished_at),
                    })
                })
                .collect();
            Ok(json!({"daemonDeployments": items, "failures": []}))
        }
        .await,
        "DescribeDaemonRevisions" => async {
            let arns = strings(input, "daemonRevisionArns");
            let revisions = model.describe_daemon_revisions(&arns).await?;
            let items: Vec<Value> = revisions
                .iter()
                .map(|r| {
                    json!({
                        "daemonRevisionArn": r.revision_arn,
                        "daemonTaskDefinitionArn": r.daemon_task_definition_arn,
                    })
                })
                .collect();
            Ok(json!({"daemonRevisions": items, "failures": []}))
        }
        .await,
        _ => return None,
    };
    Some(answer)
}
