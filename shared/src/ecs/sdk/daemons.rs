//! `EcsDaemons` on aws-sdk-ecs: the managed-daemon operations and their answers.

use aws_sdk_ecs::types as sdk;

use super::convert::{call_error, malformed, parse_size, to_chrono};
use super::SdkEcs;
use crate::ecs::daemons::*;
use crate::ecs::EcsError;

fn deployment_configuration(
    settings: &DaemonDeploymentSettings,
) -> sdk::DaemonDeploymentConfiguration {
    let alarms = (!settings.alarm_names.is_empty()).then(|| {
        sdk::DaemonAlarmConfiguration::builder()
            .set_alarm_names(Some(settings.alarm_names.clone()))
            .enable(true)
            .build()
    });
    sdk::DaemonDeploymentConfiguration::builder()
        .set_drain_percent(settings.drain_percent)
        .set_bake_time_in_minutes(settings.bake_time_in_minutes)
        .set_alarms(alarms)
        .build()
}

fn tags(declaration: &DaemonDeclaration) -> Option<Vec<sdk::Tag>> {
    (!declaration.tags.is_empty()).then(|| {
        declaration
            .tags
            .iter()
            .map(|(key, value)| sdk::Tag::builder().key(key).value(value).build())
            .collect()
    })
}

fn propagate_tags(declaration: &DaemonDeclaration) -> Option<sdk::DaemonPropagateTags> {
    declaration
        .launch
        .propagate_tags
        .as_deref()
        .map(sdk::DaemonPropagateTags::from)
}

fn change(
    operation: &'static str,
    target: &str,
    daemon_arn: Option<&str>,
    status: Option<&sdk::DaemonStatus>,
    deployment_arn: Option<&str>,
) -> Result<DaemonChange, EcsError> {
    Ok(DaemonChange {
        daemon_arn: daemon_arn
            .ok_or_else(|| malformed(operation, target, "daemonArn"))?
            .to_string(),
        status: status.map_or("ACTIVE", |s| s.as_str()).to_string(),
        deployment_arn: deployment_arn.map(str::to_string),
    })
}

fn revision_counts(item: &sdk::DaemonRevisionDetail) -> DaemonRevisionCounts {
    DaemonRevisionCounts {
        revision_arn: item.arn().unwrap_or_default().to_string(),
        providers: item
            .capacity_providers()
            .iter()
            .map(|p| DaemonProviderCounts {
                capacity_provider_arn: p.arn().unwrap_or_default().to_string(),
                running: p.running_count(),
                without_daemon: p.without_daemon_count(),
            })
            .collect(),
    }
}

fn deployment(item: &sdk::DaemonDeployment) -> Option<DaemonDeployment> {
    let target = item.target_daemon_revision();
    Some(DaemonDeployment {
        deployment_arn: item.daemon_deployment_arn()?.to_string(),
        status: item
            .status()
            .map_or(DaemonDeploymentStatus::Pending, |s| s.as_str().into()),
        status_reason: item.status_reason().map(str::to_string),
        target_revision_arn: target.and_then(|t| t.arn()).map(str::to_string),
        target_running: target
            .and_then(|t| t.total_running_instance_count())
            .unwrap_or(0),
        target_without_daemon: target
            .and_then(|t| t.total_without_daemon_instance_count())
            .unwrap_or(0),
        target_draining: target
            .and_then(|t| t.total_draining_instance_count())
            .unwrap_or(0),
        circuit_breaker: item.circuit_breaker().map(|b| DaemonCircuitBreaker {
            status: b.status().map_or("", |s| s.as_str()).to_string(),
            failure_count: b.failure_count(),
            threshold: b.threshold(),
        }),
        rollback: item.rollback().map(|r| DaemonRollback {
            reason: r.reason().map(str::to_string),
            target_revision_arn: r.rollback_target_daemon_revision_arn().map(str::to_string),
        }),
        triggered_alarm_names: item
            .alarms()
            .map(|a| a.triggered_alarm_names().to_vec())
            .unwrap_or_default(),
        created_at: to_chrono(item.created_at()),
        finished_at: to_chrono(item.finished_at()),
    })
}

impl EcsDaemons for SdkEcs {
    async fn describe_daemon_task_definition(
        &self,
        reference: &str,
    ) -> Result<DaemonTaskDefinition, EcsError> {
        const OPERATION: &str = "DescribeDaemonTaskDefinition";
        let answer = self
            .client
            .describe_daemon_task_definition()
            .daemon_task_definition(reference)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, reference, e))?;
        let item = answer
            .daemon_task_definition()
            .ok_or_else(|| malformed(OPERATION, reference, "daemonTaskDefinition"))?;
        Ok(DaemonTaskDefinition {
            arn: item
                .daemon_task_definition_arn()
                .ok_or_else(|| malformed(OPERATION, reference, "daemonTaskDefinitionArn"))?
                .to_string(),
            family: item.family().unwrap_or_default().to_string(),
            revision: item.revision(),
            status: item.status().map_or("UNKNOWN", |s| s.as_str()).to_string(),
            execution_role_arn: item.execution_role_arn().map(str::to_string),
            task_role_arn: item.task_role_arn().map(str::to_string),
            cpu: item.cpu().and_then(|cpu| parse_size(cpu, 1024.0)),
            memory_mib: item.memory().and_then(|memory| parse_size(memory, 1024.0)),
        })
    }

    async fn create_daemon(
        &self,
        declaration: &DaemonDeclaration,
        client_token: &str,
    ) -> Result<DaemonChange, EcsError> {
        const OPERATION: &str = "CreateDaemon";
        let target = format!("daemon {}", declaration.daemon_name);
        let answer = self
            .client
            .create_daemon()
            .daemon_name(&declaration.daemon_name)
            .cluster_arn(&declaration.cluster_arn)
            .daemon_task_definition_arn(&declaration.daemon_task_definition_arn)
            .set_capacity_provider_arns(Some(declaration.capacity_provider_arns.clone()))
            .deployment_configuration(deployment_configuration(&declaration.deployment))
            .critical(declaration.critical)
            .set_tags(tags(declaration))
            .set_propagate_tags(propagate_tags(declaration))
            .enable_ecs_managed_tags(declaration.launch.enable_ecs_managed_tags)
            .enable_execute_command(declaration.launch.enable_execute_command)
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, target.clone(), e))?;
        change(
            OPERATION,
            &target,
            answer.daemon_arn(),
            answer.status(),
            answer.deployment_arn(),
        )
    }

    async fn update_daemon(
        &self,
        daemon_arn: &str,
        declaration: &DaemonDeclaration,
    ) -> Result<DaemonChange, EcsError> {
        const OPERATION: &str = "UpdateDaemon";
        let answer = self
            .client
            .update_daemon()
            .daemon_arn(daemon_arn)
            .daemon_task_definition_arn(&declaration.daemon_task_definition_arn)
            .set_capacity_provider_arns(Some(declaration.capacity_provider_arns.clone()))
            .deployment_configuration(deployment_configuration(&declaration.deployment))
            .critical(declaration.critical)
            .set_propagate_tags(propagate_tags(declaration))
            .enable_ecs_managed_tags(declaration.launch.enable_ecs_managed_tags)
            .enable_execute_command(declaration.launch.enable_execute_command)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, daemon_arn, e))?;
        change(
            OPERATION,
            daemon_arn,
            answer.daemon_arn(),
            answer.status(),
            answer.deployment_arn(),
        )
    }

    async fn delete_daemon(&self, daemon_arn: &str) -> Result<DaemonChange, EcsError> {
        const OPERATION: &str = "DeleteDaemon";
        let answer = self
            .client
            .delete_daemon()
            .daemon_arn(daemon_arn)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, daemon_arn, e))?;
        change(
            OPERATION,
            daemon_arn,
            answer.daemon_arn(),
            answer.status(),
            answer.deployment_arn(),
        )
    }

    async fn describe_daemon(&self, daemon_arn: &str) -> Result<DaemonState, EcsError> {
        const OPERATION: &str = "DescribeDaemon";
        let answer = self
            .client
            .describe_daemon()
            .daemon_arn(daemon_arn)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, daemon_arn, e))?;
        let item = answer
            .daemon()
            .ok_or_else(|| malformed(OPERATION, daemon_arn, "daemon"))?;
        Ok(DaemonState {
            daemon_arn: item.daemon_arn().unwrap_or(daemon_arn).to_string(),
            status: item.status().map_or("ACTIVE", |s| s.as_str()).to_string(),
            deployment_arn: item.deployment_arn().map(str::to_string),
            current_revisions: item
                .current_revisions()
                .iter()
                .map(revision_counts)
                .collect(),
            updated_at: to_chrono(item.updated_at()),
        })
    }

    async fn describe_daemon_deployments(
        &self,
        deployment_arns: &[String],
    ) -> Result<Vec<DaemonDeployment>, EcsError> {
        let mut described = Vec::with_capacity(deployment_arns.len());
        for batch in deployment_arns.chunks(DAEMON_DEPLOYMENT_BATCH) {
            let answer = self
                .client
                .describe_daemon_deployments()
                .set_daemon_deployment_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| call_error("DescribeDaemonDeployments", batch.join(","), e))?;
            described.extend(answer.daemon_deployments().iter().filter_map(deployment));
        }
        Ok(described)
    }

    async fn describe_daemon_revisions(
        &self,
        revision_arns: &[String],
    ) -> Result<Vec<DaemonRevision>, EcsError> {
        let mut described = Vec::with_capacity(revision_arns.len());
        for batch in revision_arns.chunks(DAEMON_REVISION_BATCH) {
            let answer = self
                .client
                .describe_daemon_revisions()
                .set_daemon_revision_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| call_error("DescribeDaemonRevisions", batch.join(","), e))?;
            described.extend(answer.daemon_revisions().iter().filter_map(|r| {
                Some(DaemonRevision {
                    revision_arn: r.daemon_revision_arn()?.to_string(),
                    daemon_task_definition_arn: r.daemon_task_definition_arn()?.to_string(),
                })
            }));
        }
        Ok(described)
    }
}
