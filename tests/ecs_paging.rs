//! What moto cannot show: ECS list pagination (moto answers every list in one
//! page), exact batch sizes, and throttling retried by the SDK's retry policy.
//! The SDK's own replay client serves documented ECS JSON answers.

use std::time::Duration;

use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use ecs_daemons::ecs::{Ecs, EcsErrorKind, InstanceAttribute, SdkEcs, TaskFilter};

fn answer(status: u16, body: &str) -> ReplayEvent {
    let mut response = http::Response::builder().status(status);
    if status != 200 {
        let kind = serde_json::from_str::<serde_json::Value>(body).unwrap()["__type"]
            .as_str()
            .unwrap()
            .to_string();
        response = response.header("x-amzn-errortype", kind);
    }
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://ecs.us-east-1.amazonaws.com/")
            .body(SdkBody::empty())
            .unwrap(),
        response.body(SdkBody::from(body.to_string())).unwrap(),
    )
}

fn replay(events: Vec<ReplayEvent>) -> (SdkEcs, StaticReplayClient) {
    let http_client = StaticReplayClient::new(events);
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "replay"))
        .http_client(http_client.clone())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    (
        SdkEcs::new(aws_sdk_ecs::Client::from_conf(config)),
        http_client,
    )
}

fn bodies(client: &StaticReplayClient) -> Vec<serde_json::Value> {
    client
        .actual_requests()
        .map(|request| {
            serde_json::from_slice(request.body().bytes().expect("in-memory body")).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn list_tasks_follows_next_token_through_every_page() {
    let (ecs, client) = replay(vec![
        answer(
            200,
            r#"{"taskArns":["arn:t/1","arn:t/2"],"nextToken":"page-2"}"#,
        ),
        answer(200, r#"{"taskArns":["arn:t/3"],"nextToken":"page-3"}"#),
        answer(200, r#"{"taskArns":[]}"#),
    ]);
    let tasks = ecs
        .list_tasks("prod", &TaskFilter::StartedBy("ecs-daemons".into()))
        .await
        .unwrap();
    assert_eq!(tasks, vec!["arn:t/1", "arn:t/2", "arn:t/3"]);
    let sent = bodies(&client);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0]["startedBy"], "ecs-daemons");
    assert_eq!(sent[0]["maxResults"], 100);
    assert!(sent[0].get("nextToken").is_none());
    assert_eq!(sent[1]["nextToken"], "page-2");
    assert_eq!(sent[2]["nextToken"], "page-3");
}

#[tokio::test]
async fn list_container_instances_pages_and_passes_status() {
    let (ecs, client) = replay(vec![
        answer(
            200,
            r#"{"containerInstanceArns":["arn:ci/1"],"nextToken":"n"}"#,
        ),
        answer(200, r#"{"containerInstanceArns":["arn:ci/2"]}"#),
    ]);
    let listed = ecs
        .list_container_instances("prod", Some(ecs_daemons::model::InstanceStatus::Draining))
        .await
        .unwrap();
    assert_eq!(listed, vec!["arn:ci/1", "arn:ci/2"]);
    let sent = bodies(&client);
    assert_eq!(sent[0]["status"], "DRAINING");
    assert_eq!(sent[1]["nextToken"], "n");
}

#[tokio::test]
async fn describes_are_cut_into_batches_of_100() {
    let empty = r#"{"containerInstances":[],"failures":[]}"#;
    let (ecs, client) = replay(vec![
        answer(200, empty),
        answer(200, empty),
        answer(200, empty),
    ]);
    let ids: Vec<String> = (0..250).map(|i| format!("ci-{i}")).collect();
    ecs.describe_container_instances("prod", &ids)
        .await
        .unwrap();
    let sizes: Vec<usize> = bodies(&client)
        .iter()
        .map(|b| b["containerInstances"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
}

#[tokio::test]
async fn attributes_are_put_ten_per_call() {
    let (ecs, client) = replay(vec![
        answer(200, r#"{"attributes":[]}"#),
        answer(200, r#"{"attributes":[]}"#),
        answer(200, r#"{"attributes":[]}"#),
    ]);
    let attributes: Vec<InstanceAttribute> = (0..25)
        .map(|i| InstanceAttribute {
            container_instance: format!("arn:aws:ecs:us-east-1:1:container-instance/prod/{i}"),
            name: "ecs-daemons.ready".into(),
            value: Some("true".into()),
        })
        .collect();
    ecs.put_attributes("prod", &attributes).await.unwrap();
    let sent = bodies(&client);
    let sizes: Vec<usize> = sent
        .iter()
        .map(|b| b["attributes"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert!(
        sent[0]["attributes"][0].get("targetType").is_none(),
        "a full ARN goes without targetType"
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_reported() {
    let throttled = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let (ecs, client) = replay(vec![
        answer(400, throttled),
        answer(200, r#"{"taskArns":["arn:t/1"]}"#),
    ]);
    let tasks = ecs
        .list_tasks("prod", &TaskFilter::ContainerInstance("ci-1".into()))
        .await
        .unwrap();
    assert_eq!(tasks, vec!["arn:t/1"]);
    assert_eq!(
        client.actual_requests().count(),
        2,
        "one throttled attempt, one retry"
    );

    let (ecs, client) = replay(vec![
        answer(400, throttled),
        answer(400, throttled),
        answer(400, throttled),
    ]);
    let error = ecs.stop_task("prod", "arn:t/9", "test").await.unwrap_err();
    assert_eq!(
        client.actual_requests().count(),
        3,
        "every attempt the retry policy allows"
    );
    assert_eq!(error.kind, EcsErrorKind::Throttled);
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "ECS StopTask on task arn:t/9 in cluster prod failed (ThrottlingException): Rate exceeded"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_ecs_words() {
    let (ecs, client) = replay(vec![answer(
        400,
        r#"{"__type":"ClientException","message":"Unable to describe task definition."}"#,
    )]);
    let error = ecs.describe_task_definition("agent:99").await.unwrap_err();
    assert_eq!(client.actual_requests().count(), 1);
    assert_eq!(error.kind, EcsErrorKind::NotFound);
    assert_eq!(error.target, "agent:99");

    let (ecs, _) = replay(vec![answer(
        400,
        r#"{"__type":"AccessDeniedException","message":"User is not authorized to perform: ecs:StartTask"}"#,
    )]);
    let request = ecs_daemons::ecs::StartTaskRequest {
        task_definition: "agent:1".into(),
        container_instances: vec!["ci-1".into()],
        started_by: "ecs-daemons".into(),
        group: "daemon:agent".into(),
        ..Default::default()
    };
    let error = ecs.start_task("prod", &request).await.unwrap_err();
    assert_eq!(error.kind, EcsErrorKind::AccessDenied);
    assert!(error.to_string().contains("ecs:StartTask"), "{error}");
}

#[tokio::test]
async fn production_config_retries_throttling_with_backoff() {
    // No endpoint is contacted: this only reads the assembled retry policy.
    let config = ecs_daemons::aws::load_config().await;
    let retry = config.retry_config().expect("retry policy set");
    assert_eq!(retry.max_attempts(), ecs_daemons::aws::MAX_ATTEMPTS);
    assert!(retry.max_attempts() >= 5);
    assert_eq!(
        retry.mode(),
        aws_sdk_ecs::config::retry::RetryMode::Standard
    );
    // The budgets the template's timeouts are checked against are the ones in force.
    let timeouts = config.timeout_config().expect("timeouts set");
    assert_eq!(
        timeouts.operation_timeout(),
        Some(Duration::from_secs(
            ecs_daemons::aws::OPERATION_TIMEOUT_SECONDS
        ))
    );
    assert_eq!(
        timeouts.operation_attempt_timeout(),
        Some(Duration::from_secs(
            ecs_daemons::aws::ATTEMPT_TIMEOUT_SECONDS
        ))
    );
}

#[tokio::test]
async fn a_terminating_instance_is_looked_up_with_the_cluster_query_and_drained_in_tens() {
    let (ecs, client) = replay(vec![
        answer(200, r#"{"containerInstanceArns":["arn:ci/1"]}"#),
        answer(200, r#"{"containerInstances":[],"failures":[]}"#),
        answer(
            200,
            r#"{"containerInstances":[],"failures":[{"arn":"arn:ci/gone","reason":"MISSING"}]}"#,
        ),
        answer(
            200,
            r#"{"containerInstances":[],"failures":[{"arn":"arn:ci/x","reason":"INACTIVE","detail":"not active"}]}"#,
        ),
    ]);
    let found = ecs
        .list_container_instances_of_ec2("prod", "i-0a1b2c3d4e5f60718")
        .await
        .unwrap();
    assert_eq!(found, vec!["arn:ci/1"]);
    let eleven: Vec<String> = (0..11).map(|i| format!("arn:ci/{i}")).collect();
    ecs.drain_container_instances("prod", &eleven)
        .await
        .unwrap();
    let sent = bodies(&client);
    assert_eq!(sent[0]["filter"], "ec2InstanceId == i-0a1b2c3d4e5f60718");
    assert_eq!(sent[0]["cluster"], "prod");
    assert_eq!(sent[1]["status"], "DRAINING");
    assert_eq!(sent[1]["containerInstances"].as_array().unwrap().len(), 10);
    assert_eq!(sent[2]["containerInstances"].as_array().unwrap().len(), 1);
    // A failure other than MISSING is an error that names it.
    let error = ecs
        .drain_container_instances("prod", &["arn:ci/x".to_string()])
        .await
        .unwrap_err();
    assert_eq!(error.code, "INACTIVE", "{error}");
}

#[tokio::test]
async fn standalone_task_placement_answers_each_instance_in_order_with_ecs_reason() {
    use ecs_daemons::placement::{CopyAnswer, CopyRequest, Placement, StandaloneTasks};
    // StartTask's documented answer: placed tasks, and a failure per instance that took none
    // (its `arn` names the container instance, its `reason` is e.g. RESOURCE:MEMORY).
    let (ecs, client) = replay(vec![answer(
        200,
        r#"{"tasks":[{"taskArn":"arn:aws:ecs:us-east-1:111122223333:task/prod/t2",
             "taskDefinitionArn":"arn:aws:ecs:us-east-1:111122223333:task-definition/agent:3",
             "containerInstanceArn":"arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-2",
             "lastStatus":"PENDING","desiredStatus":"RUNNING","group":"daemon:agent",
             "startedBy":"ecs-daemons","version":1}],
           "failures":[{"arn":"arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-1",
             "reason":"RESOURCE:MEMORY"}]}"#,
    )]);
    let placement = StandaloneTasks {
        ecs: &ecs,
        started_by: "ecs-daemons",
    };
    let instances = vec![
        "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-1".to_string(),
        "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-2".to_string(),
        "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-3".to_string(),
    ];
    let request = CopyRequest {
        daemon: "agent",
        task_definition: "agent:3",
        instances: &instances,
        rollout_id: Some("r-7"),
        launch: &Default::default(),
        provider: None,
    };
    let answers = placement.make_copies("prod", &request).await.unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(
        matches!(&answers[0], CopyAnswer::Refused(reason) if reason.contains("RESOURCE:MEMORY")),
        "{answers:?}"
    );
    match &answers[1] {
        CopyAnswer::Started(task) => {
            assert!(task.arn.ends_with("/t2"));
            assert!(placement.is_copy(task), "our marker and daemon group");
        }
        other => panic!("ci-2 got its copy: {other:?}"),
    }
    assert_eq!(
        answers[2],
        CopyAnswer::Refused("StartTask placed no task on the instance".into())
    );
    let sent = &bodies(&client)[0];
    assert_eq!(sent["startedBy"], "ecs-daemons");
    assert_eq!(sent["group"], "daemon:agent");
    assert_eq!(sent["containerInstances"].as_array().unwrap().len(), 3);
    let tags = sent["tags"].to_string();
    assert!(
        tags.contains("ecs-daemons:daemon") && tags.contains("agent"),
        "{tags}"
    );
    assert!(
        tags.contains("ecs-daemons:rollout") && tags.contains("r-7"),
        "{tags}"
    );
}

#[tokio::test]
async fn the_lookup_by_ec2_id_reads_past_empty_pages_and_bounds_the_reading() {
    // A filtered ListContainerInstances may answer fewer results than maxResults, even none,
    // with a nextToken (API reference): the instance is on a later page.
    let found = "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-9";
    let (ecs, client) = replay(vec![
        answer(200, r#"{"containerInstanceArns":[],"nextToken":"t1"}"#),
        answer(200, r#"{"containerInstanceArns":[],"nextToken":"t2"}"#),
        answer(200, &format!(r#"{{"containerInstanceArns":["{found}"]}}"#)),
    ]);
    let arns = ecs
        .list_container_instances_of_ec2("prod", "i-0abc123")
        .await
        .unwrap();
    assert_eq!(arns, vec![found.to_string()]);
    let sent = bodies(&client);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0]["filter"], "ec2InstanceId == i-0abc123");
    assert_eq!(sent[1]["nextToken"], "t1");
    assert_eq!(sent[2]["nextToken"], "t2");

    // A list that never ends is an error to retry, never "not a container instance".
    let endless = (0..200)
        .map(|_| answer(200, r#"{"containerInstanceArns":[],"nextToken":"again"}"#))
        .collect();
    let (ecs, _) = replay(endless);
    let error = ecs
        .list_container_instances_of_ec2("prod", "i-0abc123")
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test]
async fn attributes_are_deleted_by_name_and_target_and_a_gone_instance_spares_the_rest() {
    let gone = r#"{"__type":"TargetNotFoundException","message":"Could not find arn:aws:ecs:us-east-1:111122223333:container-instance/prod/ci-2"}"#;
    let (ecs, client) = replay(vec![
        // The batch of three is refused whole because ci-2 is gone...
        answer(400, gone),
        // ...then each is deleted alone: ci-1 and ci-3 go, ci-2 has nothing to clear.
        answer(200, r#"{"attributes":[]}"#),
        answer(400, gone),
        answer(200, r#"{"attributes":[]}"#),
    ]);
    let attribute = |id: &str| InstanceAttribute {
        container_instance: format!(
            "arn:aws:ecs:us-east-1:111122223333:container-instance/prod/{id}"
        ),
        name: "ecs-daemons.ready".into(),
        value: Some("true".into()),
    };
    let all = vec![attribute("ci-1"), attribute("ci-2"), attribute("ci-3")];
    ecs.delete_attributes("prod", &all).await.unwrap();
    let sent = bodies(&client);
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert_eq!(sent[0]["attributes"].as_array().unwrap().len(), 3);
    for (request, id) in sent[1..].iter().zip(["ci-1", "ci-2", "ci-3"]) {
        assert_eq!(request["attributes"].as_array().unwrap().len(), 1);
        assert!(request["attributes"][0]["targetId"]
            .as_str()
            .unwrap()
            .ends_with(id));
    }
    // "For custom attributes, specify the attribute name and target ID, but don't specify
    // the value" (API reference, DeleteAttributes).
    for request in &sent {
        for item in request["attributes"].as_array().unwrap() {
            assert!(item.get("value").is_none(), "a value was sent: {item}");
            assert_eq!(item["name"], "ecs-daemons.ready");
        }
    }
}

/// DescribeCapacityProviders answers in the API reference's shape (*CapacityProvider*): the
/// kind comes from `type`, from the provider block when an older answer has no `type`, or
/// from Fargate's predefined names; names are sent ten per call with the cluster (Managed
/// Instances providers are cluster-scoped).
#[tokio::test]
async fn capacity_providers_are_described_ten_per_call_with_their_kinds() {
    let asg = |name: &str, scaling: &str, protection: &str| {
        serde_json::json!({
            "capacityProviderArn": format!("arn:aws:ecs:us-east-1:111122223333:capacity-provider/{name}"),
            "name": name, "status": "ACTIVE", "type": "EC2_AUTOSCALING",
            "autoScalingGroupProvider": {
                "autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:111122223333:autoScalingGroup:1:autoScalingGroupName/g",
                "managedScaling": {"status": scaling, "targetCapacity": 100},
                "managedTerminationProtection": protection
            }
        })
    };
    let first: Vec<serde_json::Value> = (0..9)
        .map(|i| asg(&format!("asg-{i}"), "DISABLED", "DISABLED"))
        .chain([serde_json::json!({
            "capacityProviderArn": "arn:aws:ecs:us-east-1:111122223333:capacity-provider/mi",
            "name": "mi", "status": "ACTIVE", "type": "MANAGED_INSTANCES", "cluster": "prod",
            "managedInstancesProvider": {"infrastructureRoleArn": "arn:aws:iam::111122223333:role/infra"}
        })])
        .collect();
    let mut old_shape = asg("scaled", "ENABLED", "ENABLED");
    old_shape.as_object_mut().unwrap().remove("type");
    let second = vec![
        old_shape,
        serde_json::json!({"capacityProviderArn": "arn:aws:ecs:us-east-1:111122223333:capacity-provider/FARGATE",
                           "name": "FARGATE", "status": "ACTIVE"}),
    ];
    let (ecs, client) = replay(vec![
        answer(200, &serde_json::json!({"capacityProviders": first}).to_string()),
        answer(
            200,
            &serde_json::json!({"capacityProviders": second, "failures": [{"arn": "gone", "reason": "MISSING"}]})
                .to_string(),
        ),
    ]);
    let mut names: Vec<String> = (0..9).map(|i| format!("asg-{i}")).collect();
    names.extend(["mi", "scaled", "FARGATE", "gone"].map(String::from));
    let described = ecs
        .describe_capacity_providers("prod", &names)
        .await
        .unwrap();

    use ecs_daemons::model::CapacityProviderKind as Kind;
    let kinds: Vec<(&str, &Kind)> = described
        .iter()
        .map(|p| (p.name.as_str(), &p.kind))
        .collect();
    let plain = Kind::AutoScalingGroup {
        managed_scaling: false,
        managed_termination_protection: false,
    };
    let scaled = Kind::AutoScalingGroup {
        managed_scaling: true,
        managed_termination_protection: true,
    };
    assert_eq!(kinds.len(), 12, "the one ECS did not find is left out");
    assert_eq!(kinds[0], ("asg-0", &plain));
    assert_eq!(kinds[9], ("mi", &Kind::managed_instances()));
    assert_eq!(kinds[10], ("scaled", &scaled));
    assert_eq!(kinds[11], ("FARGATE", &Kind::Fargate));
    let sent = bodies(&client);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["capacityProviders"].as_array().unwrap().len(), 10);
    assert_eq!(sent[1]["capacityProviders"].as_array().unwrap().len(), 3);
    assert!(sent
        .iter()
        .all(|b| b["cluster"] == "prod" && b["maxResults"] == 10));
}
