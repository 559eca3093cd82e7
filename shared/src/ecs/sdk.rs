//! `Ecs` on aws-sdk-ecs. Throttling and transient failures are retried by the
//! SDK's retry configuration (see `aws::load_config`); what is left is mapped to
//! an [`EcsError`] naming the call and its target.

use aws_sdk_ecs::types as sdk;

use super::{
    clip_reason, Ecs, EcsError, EcsErrorKind, InstanceAttribute, Page, StartTaskOutcome,
    StartTaskRequest, TaskFilter, ATTRIBUTE_BATCH, CAPACITY_PROVIDER_BATCH, DESCRIBE_BATCH,
    DRAIN_BATCH,
};
use crate::model::{CapacityProvider, ContainerInstance, InstanceStatus, Task, TaskDefinition};

/// The production `Ecs`: one SDK client, shared by every call of an invocation.
#[derive(Clone, Debug)]
pub struct SdkEcs {
    client: aws_sdk_ecs::Client,
}

impl SdkEcs {
    pub fn new(client: aws_sdk_ecs::Client) -> Self {
        Self { client }
    }

    /// One DeleteAttributes call (up to [`ATTRIBUTE_BATCH`] attributes).
    async fn delete_attribute_batch(
        &self,
        cluster: &str,
        batch: &[InstanceAttribute],
    ) -> Result<(), EcsError> {
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
        Ok(())
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_ecs::Client::new(config))
    }
}

mod convert;
mod daemons;
mod services;

/// Pages of a lookup by EC2 instance id before giving up (with an error to retry): a cluster
/// holds at most 5,000 container instances (service quotas), 50 pages of 100.
const EC2_LOOKUP_MAX_PAGES: usize = 100;
use convert::*;

impl SdkEcs {
    /// The cluster as `DescribeClusters` answers it; an INACTIVE or unknown one is not found.
    pub(crate) async fn describe_cluster(
        &self,
        cluster: &str,
    ) -> Result<aws_sdk_ecs::types::Cluster, EcsError> {
        let answer = self
            .client
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .map_err(|e| call_error("DescribeClusters", format!("cluster {cluster}"), e))?;
        answer
            .clusters()
            .iter()
            .find(|c| c.status() != Some("INACTIVE"))
            .cloned()
            .ok_or_else(|| {
                EcsError::new(
                    "DescribeClusters",
                    format!("cluster {cluster}"),
                    EcsErrorKind::NotFound,
                    "ClusterNotFoundException",
                    format!("cluster {cluster} does not exist in this account and region"),
                )
            })
    }
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
        // A filtered list may answer a page with fewer results than asked, even none, and a
        // nextToken ("If maxResults was provided, it's possible the number of results to be
        // fewer than maxResults", API reference, ListContainerInstances): "not found" is
        // final only once nextToken is null. Bounded: an endless list is an error to retry,
        // never "no such instance" (which would let the instance terminate undrained).
        let mut arns = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..EC2_LOOKUP_MAX_PAGES {
            let page = self
                .client
                .list_container_instances()
                .cluster(cluster)
                .filter(format!("ec2InstanceId == {ec2_instance_id}"))
                .max_results(100)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| {
                    call_error("ListContainerInstances", format!("cluster {cluster}"), e)
                })?;
            arns.extend(page.container_instance_arns().iter().cloned());
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => return Ok(arns),
            }
        }
        Err(EcsError::new(
            "ListContainerInstances",
            format!("cluster {cluster}"),
            EcsErrorKind::Transient,
            "TooManyPages",
            format!(
                "ec2InstanceId == {ec2_instance_id} still had more pages after {EC2_LOOKUP_MAX_PAGES}"
            ),
        ))
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
            TaskFilter::ServiceName(service) => request.service_name(service),
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
        let overrides = (!request.environment.is_empty()).then(|| {
            let containers = request
                .environment
                .iter()
                .map(|(container, variables)| {
                    let environment = variables
                        .iter()
                        .map(|(name, value)| {
                            sdk::KeyValuePair::builder().name(name).value(value).build()
                        })
                        .collect();
                    sdk::ContainerOverride::builder()
                        .name(container)
                        .set_environment(Some(environment))
                        .build()
                })
                .collect();
            sdk::TaskOverride::builder()
                .set_container_overrides(Some(containers))
                .build()
        });
        let answer = self
            .client
            .start_task()
            .cluster(cluster)
            .task_definition(&request.task_definition)
            .set_container_instances(Some(request.container_instances.clone()))
            .started_by(&request.started_by)
            .group(&request.group)
            .set_tags((!tags.is_empty()).then_some(tags))
            .set_propagate_tags(
                request
                    .propagate_tags
                    .as_deref()
                    .map(sdk::PropagateTags::from),
            )
            .set_enable_ecs_managed_tags(request.enable_ecs_managed_tags.then_some(true))
            .set_enable_execute_command(request.enable_execute_command.then_some(true))
            .set_overrides(overrides)
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
            match self.delete_attribute_batch(cluster, batch).await {
                // One instance of the batch is gone (TargetNotFoundException refuses the whole
                // request): the others are deleted one by one, and a gone one has nothing
                // left to clear.
                Err(error) if error.code == "TargetNotFoundException" && batch.len() > 1 => {
                    for attribute in batch {
                        match self
                            .delete_attribute_batch(cluster, std::slice::from_ref(attribute))
                            .await
                        {
                            Err(error) if error.code == "TargetNotFoundException" => {}
                            other => other?,
                        }
                    }
                }
                Err(error) if error.code == "TargetNotFoundException" => {}
                other => other?,
            }
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
        Ok(self
            .describe_cluster(cluster)
            .await?
            .capacity_providers()
            .to_vec())
    }

    async fn describe_capacity_providers(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<CapacityProvider>, EcsError> {
        let mut described = Vec::with_capacity(names.len());
        // One page per batch: a batch never names more than a page holds.
        for batch in names.chunks(CAPACITY_PROVIDER_BATCH) {
            let answer = self
                .client
                .describe_capacity_providers()
                .cluster(cluster)
                .set_capacity_providers(Some(batch.to_vec()))
                .max_results(CAPACITY_PROVIDER_BATCH as i32)
                .send()
                .await
                .map_err(|e| {
                    call_error("DescribeCapacityProviders", format!("cluster {cluster}"), e)
                })?;
            described.extend(
                answer
                    .capacity_providers()
                    .iter()
                    .filter_map(capacity_provider),
            );
        }
        Ok(described)
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
