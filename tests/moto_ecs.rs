//! The aws-sdk-ecs `Ecs` adapter against moto: every operation over real HTTP,
//! describes of more than 100 ids, and errors naming the call and its target.

mod common;

use aws_sdk_ecs::types::{AutoScalingGroupProvider, ContainerInstanceStatus};
use ecs_daemons::arn;
use ecs_daemons::ecs::{
    Ecs, EcsErrorKind, InstanceAttribute, SdkEcs, StartTaskRequest, TaskFilter,
};
use ecs_daemons::model::{InstanceStatus, Resources, TaskStatus};

struct Fixture {
    client: aws_sdk_ecs::Client,
    ecs: SdkEcs,
    cluster: String,
    instances: Vec<String>,
}

async fn fixture(instances: usize) -> Fixture {
    let config = common::sdk_config().await;
    let client = aws_sdk_ecs::Client::new(&config);
    let cluster = common::unique("prod");
    let instances = common::cluster_with_instances(&client, &cluster, instances).await;
    Fixture {
        ecs: SdkEcs::new(client.clone()),
        client,
        cluster,
        instances,
    }
}

fn request(task_definition: &str, instances: &[String]) -> StartTaskRequest {
    StartTaskRequest {
        task_definition: task_definition.into(),
        container_instances: instances.to_vec(),
        started_by: "ecs-daemons".into(),
        group: "daemon:cloudwatch-agent".into(),
        tags: vec![("ecs-daemons:daemon".into(), "cloudwatch-agent".into())],
        propagate_tags: None,
        enable_ecs_managed_tags: false,
        enable_execute_command: false,
        environment: vec![],
    }
}

#[tokio::test]
async fn container_instances_are_listed_and_described_beyond_100() {
    let f = fixture(120).await;
    let mut listed = f
        .ecs
        .list_container_instances(&f.cluster, None)
        .await
        .unwrap();
    listed.sort();
    let mut registered = f.instances.clone();
    registered.sort();
    assert_eq!(listed, registered);

    let described = f
        .ecs
        .describe_container_instances(&f.cluster, &listed)
        .await
        .unwrap();
    assert_eq!(
        described.len(),
        120,
        "two DescribeContainerInstances batches"
    );
    let first = described.iter().find(|i| i.arn == f.instances[0]).unwrap();
    assert_eq!(first.status, InstanceStatus::Active);
    assert!(first.agent_connected);
    assert!(first.ec2_instance_id.as_deref().unwrap().starts_with("i-"));
    assert_eq!(
        first.registered,
        Resources {
            cpu: 4096,
            memory_mib: 7482
        }
    );
    assert_eq!(
        first.attributes.get("ecs.os-type"),
        Some(&Some("linux".to_string()))
    );
    assert!(first.registered_at.is_some());

    // Describing by bare id works too (the old ARN form carries only the id).
    let by_id = f
        .ecs
        .describe_container_instances(&f.cluster, &[arn::resource_id(&f.instances[1]).to_string()])
        .await;
    assert_eq!(by_id.unwrap()[0].arn, f.instances[1]);

    f.client
        .update_container_instances_state()
        .cluster(&f.cluster)
        .container_instances(&f.instances[0])
        .container_instances(&f.instances[1])
        .status(ContainerInstanceStatus::Draining)
        .send()
        .await
        .unwrap();
    let mut draining = f
        .ecs
        .list_container_instances(&f.cluster, Some(InstanceStatus::Draining))
        .await
        .unwrap();
    draining.sort();
    let mut expected = vec![f.instances[0].clone(), f.instances[1].clone()];
    expected.sort();
    assert_eq!(draining, expected);
    let active = f
        .ecs
        .list_container_instances(&f.cluster, Some(InstanceStatus::Active))
        .await
        .unwrap();
    assert_eq!(active.len(), 118);
}

/// The launch options reach ECS as StartTask's own fields through the SDK: user tags beside
/// ecs-daemons' own, propagateTags, managed tags, ECS Exec and a container's environment.
#[tokio::test]
async fn a_copy_starts_with_its_launch_options() {
    let f = fixture(2).await;
    let definition =
        common::register_daemon_definition(&f.client, &common::unique("agent"), None, false).await;
    let mut with_options = request(&definition, &f.instances[..2]);
    with_options.tags.push(("team".into(), "platform".into()));
    with_options.propagate_tags = Some("TASK_DEFINITION".into());
    with_options.enable_ecs_managed_tags = true;
    with_options.enable_execute_command = true;
    with_options.environment = vec![("agent".into(), vec![("LOG_LEVEL".into(), "debug".into())])];
    let outcome = f.ecs.start_task(&f.cluster, &with_options).await.unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(outcome.tasks.len(), 2);
    let arns: Vec<String> = outcome.tasks.iter().map(|t| t.arn.clone()).collect();
    let described = f.ecs.describe_tasks(&f.cluster, &arns).await.unwrap();
    for task in &described {
        assert_eq!(task.tags.get("team").map(String::as_str), Some("platform"));
        assert_eq!(
            task.tags.get("ecs-daemons:daemon").map(String::as_str),
            Some("cloudwatch-agent")
        );
    }
}

#[tokio::test]
async fn daemon_tasks_start_list_describe_and_stop() {
    let f = fixture(12).await;
    let definition =
        common::register_daemon_definition(&f.client, &common::unique("agent"), None, false).await;

    // 11 StartTask calls of 10 instances each: 110 daemon tasks, more than one describe batch.
    let mut started = Vec::new();
    for round in 0..11 {
        let targets = &f.instances[round % 3..round % 3 + 10];
        let outcome = f
            .ecs
            .start_task(&f.cluster, &request(&definition, targets))
            .await
            .unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.tasks.len(), 10);
        started.extend(outcome.tasks.into_iter().map(|t| t.arn));
    }
    let mut listed = f
        .ecs
        .list_tasks(&f.cluster, &TaskFilter::StartedBy("ecs-daemons".into()))
        .await
        .unwrap();
    listed.sort();
    let mut expected = started.clone();
    expected.sort();
    assert_eq!(listed, expected);

    let described = f.ecs.describe_tasks(&f.cluster, &listed).await.unwrap();
    assert_eq!(described.len(), 110, "two DescribeTasks batches");
    for task in &described {
        assert_eq!(task.group.as_deref(), Some("daemon:cloudwatch-agent"));
        assert_eq!(task.started_by.as_deref(), Some("ecs-daemons"));
        assert_eq!(
            task.tags.get("ecs-daemons:daemon").map(String::as_str),
            Some("cloudwatch-agent")
        );
        assert!(task
            .task_definition_arn
            .ends_with(&format!("task-definition/{definition}")));
        assert_eq!(task.last_status, TaskStatus::Running);
        assert!(task.container_instance_arn.is_some());
    }

    // Tasks on one instance: instance 0 appears only in round 0, 3, 6, 9 (offset 0).
    let on_first = f
        .ecs
        .list_tasks(
            &f.cluster,
            &TaskFilter::ContainerInstance(f.instances[0].clone()),
        )
        .await
        .unwrap();
    assert_eq!(on_first.len(), 4);

    let stopped = f
        .ecs
        .stop_task(&f.cluster, &started[0], "replaced by revision 2")
        .await
        .unwrap();
    assert_eq!(stopped.arn, started[0]);
    assert_eq!(stopped.desired_status, TaskStatus::Stopped);
    let again = f
        .ecs
        .describe_tasks(&f.cluster, &started[..1])
        .await
        .unwrap();
    assert_eq!(again[0].desired_status, TaskStatus::Stopped);
    assert_eq!(
        again[0].stopped_reason.as_deref(),
        Some("replaced by revision 2")
    );

    // Drain-last's fresh read: every task on the instance, the one told to stop included
    // (ListTasks desired RUNNING, ListTasks desired STOPPED, DescribeTasks).
    let fresh = f
        .ecs
        .tasks_on_instance(&f.cluster, &f.instances[0])
        .await
        .unwrap();
    let mut arns: Vec<&str> = fresh.iter().map(|t| t.arn.as_str()).collect();
    arns.sort_unstable();
    let mut expected: Vec<&str> = on_first.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(arns, expected, "the stopped task among them, listed once");
    assert!(fresh
        .iter()
        .any(|t| t.arn == started[0] && t.desired_status == TaskStatus::Stopped));
}

#[tokio::test]
async fn start_task_limits_are_refused_before_any_call() {
    let f = fixture(11).await;
    let error = f
        .ecs
        .start_task(&f.cluster, &request("agent:1", &f.instances))
        .await
        .unwrap_err();
    assert_eq!(error.kind, EcsErrorKind::Invalid);
    assert!(
        error
            .to_string()
            .contains("1 to 10 container instances, got 11"),
        "{error}"
    );
}

#[tokio::test]
async fn readiness_attribute_is_put_and_deleted_in_batches() {
    let f = fixture(12).await;
    let ready = |instance: &String| InstanceAttribute {
        container_instance: instance.clone(),
        name: "ecs-daemons.ready".into(),
        value: Some("true".into()),
    };
    let mut all: Vec<InstanceAttribute> = f.instances.iter().map(ready).collect();
    // One of them addressed by bare id, as the old ARN form gives it.
    all[11].container_instance = arn::resource_id(&f.instances[11]).to_string();
    f.ecs.put_attributes(&f.cluster, &all).await.unwrap();
    let described = f
        .ecs
        .describe_container_instances(&f.cluster, &f.instances)
        .await
        .unwrap();
    assert!(described
        .iter()
        .all(|i| i.attributes.get("ecs-daemons.ready") == Some(&Some("true".into()))));

    // Deletes send name and target only, as the API reference asks; moto deletes an
    // attribute only when a value is sent and matches, so against moto the call is checked
    // for being accepted in batches, and the request's shape by the replay test
    // (ecs_paging: attributes_are_deleted_by_name_and_target_and_a_gone_instance_spares_the_rest).
    f.ecs.delete_attributes(&f.cluster, &all).await.unwrap();
}

#[tokio::test]
async fn task_definitions_are_described_with_role_sizes_and_health_checks() {
    let f = fixture(0).await;
    let role = "arn:aws:iam::123456789012:role/ecsTaskExecutionRole";
    let with_role =
        common::register_daemon_definition(&f.client, &common::unique("agent"), Some(role), true)
            .await;
    let described = f.ecs.describe_task_definition(&with_role).await.unwrap();
    assert_eq!(described.family_revision(), with_role);
    assert_eq!(described.execution_role_arn.as_deref(), Some(role));
    assert_eq!(described.cpu, Some(256));
    assert_eq!(described.memory_mib, Some(128));
    assert!(described.has_health_check());

    let without =
        common::register_daemon_definition(&f.client, &common::unique("bare"), None, false).await;
    let described = f.ecs.describe_task_definition(&without).await.unwrap();
    assert_eq!(described.execution_role_arn, None);
    assert!(!described.has_health_check());

    let missing = f
        .ecs
        .describe_task_definition("no-such-family:9")
        .await
        .unwrap_err();
    assert_eq!(missing.operation, "DescribeTaskDefinition");
    assert_eq!(missing.target, "no-such-family:9");
    assert!(!missing.is_retryable(), "{missing:?}");
}

#[tokio::test]
async fn capacity_providers_of_a_cluster() {
    let f = fixture(0).await;
    let provider = common::unique("asg-general");
    f.client
        .create_capacity_provider()
        .name(&provider)
        .auto_scaling_group_provider(
            AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn(
                    "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1:autoScalingGroupName/general",
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    f.client
        .put_cluster_capacity_providers()
        .cluster(&f.cluster)
        .capacity_providers(&provider)
        .set_default_capacity_provider_strategy(Some(vec![]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        f.ecs.cluster_capacity_providers(&f.cluster).await.unwrap(),
        vec![provider]
    );

    let missing = f
        .ecs
        .cluster_capacity_providers("no-such-cluster")
        .await
        .unwrap_err();
    assert_eq!(missing.kind, EcsErrorKind::NotFound);
    assert!(missing.to_string().contains("no-such-cluster"), "{missing}");
}

#[tokio::test]
async fn failing_calls_name_the_call_and_target() {
    let f = fixture(1).await;
    let error = f
        .ecs
        .stop_task(
            &f.cluster,
            "arn:aws:ecs:us-east-1:123456789012:task/x/nope",
            "test",
        )
        .await
        .unwrap_err();
    assert_eq!(error.operation, "StopTask");
    assert!(
        error
            .to_string()
            .contains("task arn:aws:ecs:us-east-1:123456789012:task/x/nope"),
        "{error}"
    );

    let error = f
        .ecs
        .list_tasks(
            "no-such-cluster",
            &TaskFilter::StartedBy("ecs-daemons".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(error.operation, "ListTasks");
    assert_eq!(error.kind, EcsErrorKind::NotFound, "{error:?}");
}

#[tokio::test]
async fn a_terminating_instance_is_found_by_its_ec2_id_and_drained() {
    let f = fixture(2).await;
    let described = f
        .ecs
        .describe_container_instances(&f.cluster, &f.instances)
        .await
        .unwrap();
    let ec2 = described[0]
        .ec2_instance_id
        .clone()
        .expect("an EC2 instance id");
    // moto ignores the cluster-query filter (it lists every instance); ECS applies it. The
    // engine checks the description's EC2 id either way.
    let found = f
        .ecs
        .list_container_instances_of_ec2(&f.cluster, &ec2)
        .await
        .unwrap();
    assert!(found.contains(&described[0].arn), "{found:?}");
    let refused = f
        .ecs
        .list_container_instances_of_ec2(&f.cluster, "i-1 or ec2InstanceId != x")
        .await
        .unwrap_err();
    assert_eq!(refused.kind, EcsErrorKind::Invalid, "{refused}");

    f.ecs
        .drain_container_instances(&f.cluster, std::slice::from_ref(&described[0].arn))
        .await
        .unwrap();
    let after = f
        .ecs
        .describe_container_instances(&f.cluster, &f.instances)
        .await
        .unwrap();
    let status = |arn: &str| after.iter().find(|i| i.arn == arn).unwrap().status.clone();
    assert_eq!(status(&described[0].arn), InstanceStatus::Draining);
    assert_eq!(status(&described[1].arn), InstanceStatus::Active);
}
