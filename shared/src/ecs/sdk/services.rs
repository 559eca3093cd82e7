//! `EcsServices` on aws-sdk-ecs: DAEMON services and their answers.

use aws_sdk_ecs::types as sdk;

use super::convert::{call_error, malformed, tag_pairs, to_chrono};
use super::SdkEcs;
use crate::ecs::services::*;
use crate::ecs::EcsError;

fn sdk_tags(tags: &[(String, String)]) -> Vec<sdk::Tag> {
    tags.iter()
        .map(|(key, value)| sdk::Tag::builder().key(key).value(value).build())
        .collect()
}

fn service_state(
    operation: &'static str,
    target: &str,
    item: Option<&sdk::Service>,
) -> Result<ServiceState, EcsError> {
    let item = item.ok_or_else(|| malformed(operation, target, "service"))?;
    Ok(ServiceState {
        arn: item
            .service_arn()
            .ok_or_else(|| malformed(operation, target, "serviceArn"))?
            .to_string(),
        name: item.service_name().unwrap_or_default().to_string(),
        status: item.status().unwrap_or("ACTIVE").to_string(),
        scheduling_strategy: item
            .scheduling_strategy()
            .map_or("REPLICA", |s| s.as_str())
            .to_string(),
        launch_type: item.launch_type().map(|l| l.as_str().to_string()),
        task_definition: item.task_definition().unwrap_or_default().to_string(),
        running_count: item.running_count(),
        pending_count: item.pending_count(),
        member_of: item
            .placement_constraints()
            .iter()
            .filter(|c| c.r#type() == Some(&sdk::PlacementConstraintType::MemberOf))
            .filter_map(|c| c.expression().map(str::to_string))
            .collect(),
        deployments: item
            .deployments()
            .iter()
            .map(|d| ServiceDeploymentState {
                id: d.id().unwrap_or_default().to_string(),
                status: d.status().unwrap_or_default().to_string(),
                task_definition: d.task_definition().unwrap_or_default().to_string(),
                rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                running_count: d.running_count(),
                pending_count: d.pending_count(),
                failed_tasks: d.failed_tasks(),
                created_at: to_chrono(d.created_at()),
            })
            .collect(),
        created_at: to_chrono(item.created_at()),
        tags: tag_pairs(item.tags()).collect(),
    })
}

impl EcsServices for SdkEcs {
    async fn create_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
        client_token: &str,
    ) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "CreateService";
        let target = format!("service {} in {cluster}", declaration.service_name);
        let constraints = declaration
            .member_of
            .iter()
            .map(|expression| {
                sdk::PlacementConstraint::builder()
                    .r#type(sdk::PlacementConstraintType::MemberOf)
                    .expression(expression)
                    .build()
            })
            .collect();
        let answer = self
            .client
            .create_service()
            .cluster(cluster)
            .service_name(&declaration.service_name)
            .task_definition(&declaration.task_definition)
            .scheduling_strategy(sdk::SchedulingStrategy::Daemon)
            .launch_type(sdk::LaunchType::Ec2)
            .set_placement_constraints(Some(constraints))
            .deployment_configuration(
                sdk::DeploymentConfiguration::builder()
                    .maximum_percent(100)
                    .minimum_healthy_percent(0)
                    .build(),
            )
            .propagate_tags(sdk::PropagateTags::from(
                declaration.propagate_tags.as_str(),
            ))
            .enable_ecs_managed_tags(true)
            .enable_execute_command(declaration.enable_execute_command)
            .set_tags(Some(sdk_tags(&declaration.tags)))
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, &target, e))?;
        service_state(OPERATION, &target, answer.service())
    }

    async fn update_daemon_service(
        &self,
        cluster: &str,
        declaration: &DaemonServiceDeclaration,
    ) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "UpdateService";
        let target = format!("service {} in {cluster}", declaration.service_name);
        let answer = self
            .client
            .update_service()
            .cluster(cluster)
            .service(&declaration.service_name)
            .task_definition(&declaration.task_definition)
            .propagate_tags(sdk::PropagateTags::from(
                declaration.propagate_tags.as_str(),
            ))
            .enable_ecs_managed_tags(true)
            .enable_execute_command(declaration.enable_execute_command)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, &target, e))?;
        service_state(OPERATION, &target, answer.service())
    }

    async fn tag_service(
        &self,
        service_arn: &str,
        tags: &[(String, String)],
    ) -> Result<(), EcsError> {
        self.client
            .tag_resource()
            .resource_arn(service_arn)
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map_err(|e| call_error("TagResource", service_arn, e))?;
        Ok(())
    }

    async fn untag_service(&self, service_arn: &str, keys: &[String]) -> Result<(), EcsError> {
        self.client
            .untag_resource()
            .resource_arn(service_arn)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("UntagResource", service_arn, e))?;
        Ok(())
    }

    async fn describe_services(
        &self,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ServiceState>, EcsError> {
        const OPERATION: &str = "DescribeServices";
        let target = format!("cluster {cluster}");
        let mut described = Vec::with_capacity(services.len());
        for batch in services.chunks(DESCRIBE_SERVICES_BATCH) {
            let answer = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch.to_vec()))
                .include(sdk::ServiceField::Tags)
                .send()
                .await
                .map_err(|e| call_error(OPERATION, &target, e))?;
            for item in answer.services() {
                described.push(service_state(OPERATION, &target, Some(item))?);
            }
        }
        Ok(described)
    }

    async fn delete_service(&self, cluster: &str, service: &str) -> Result<ServiceState, EcsError> {
        const OPERATION: &str = "DeleteService";
        let target = format!("service {service} in {cluster}");
        let answer = self
            .client
            .delete_service()
            .cluster(cluster)
            .service(service)
            .send()
            .await
            .map_err(|e| call_error(OPERATION, &target, e))?;
        service_state(OPERATION, &target, answer.service())
    }

    async fn active_services_count(&self, cluster: &str) -> Result<usize, EcsError> {
        let found = self.describe_cluster(cluster).await?;
        Ok(usize::try_from(found.active_services_count()).unwrap_or(0))
    }
}
