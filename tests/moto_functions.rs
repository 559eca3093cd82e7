//! The functions' handlers over the production engine (SDK adapters, DynamoDB
//! table) against moto: payloads in, answers and clear errors out.

mod common;

use ecs_daemons::ecs::SdkEcs;
use ecs_daemons::engine::{Engine, EngineConfig};
use ecs_daemons::pacing::{Paced, Pacing, SystemClock};
use ecs_daemons::runtime::{self, ProductionEngine};
use ecs_daemons::store::{create_table, DynamoStore};
use serde_json::{json, Value};

async fn engine(cluster: &str) -> ProductionEngine {
    let config = common::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = common::unique("ecs-daemons-fn");
    create_table(&dynamodb, &table).await.expect("table");
    Engine::new(
        Paced::new(
            SdkEcs::from_config(&config),
            SystemClock::default(),
            Pacing::share("deploy"),
        ),
        DynamoStore::new(dynamodb, table),
        EngineConfig {
            clusters: vec![cluster.to_string()],
            ..EngineConfig::default()
        },
    )
}

fn sample(name: &str, cluster: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("cluster/prod", &format!("cluster/{cluster}"));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn handlers_answer_payloads_and_refuse_bad_ones_clearly() {
    let config = common::sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let cluster = common::unique("fn");
    common::cluster_with_instances(&ecs, &cluster, 2).await;
    let provider = common::unique("asg");
    ecs.create_capacity_provider()
        .name(&provider)
        .auto_scaling_group_provider(
            aws_sdk_ecs::types::AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1:autoScalingGroupName/g")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    ecs.put_cluster_capacity_providers()
        .cluster(&cluster)
        .capacity_providers(&provider)
        .set_default_capacity_provider_strategy(Some(vec![]))
        .send()
        .await
        .unwrap();
    let role = "arn:aws:iam::123456789012:role/ecsTaskExecutionRole";
    let definition =
        common::register_daemon_definition(&ecs, &common::unique("agent"), Some(role), false).await;
    let engine = engine(&cluster).await;

    let payload = json!({"cluster": cluster, "daemon": "agent", "taskDefinition": definition, "capacityProviders": [provider]});
    let answer = runtime::deploy(&engine, payload.clone(), "req-1".into())
        .await
        .unwrap();
    assert_eq!(answer["recorded"], "created");
    // moto reports no capacity provider on instances: none is targeted yet, and the answer says so.
    assert!(
        answer["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no instance of"),
        "{answer}"
    );
    assert_eq!(
        runtime::deploy(&engine, payload, "req-2".into())
            .await
            .unwrap()["recorded"],
        "unchanged"
    );

    let status = runtime::status(&engine, json!({"cluster": cluster}), "req-3".into())
        .await
        .unwrap();
    assert_eq!(status["daemons"][0]["daemon"], "agent");
    assert_eq!(status["daemons"][0]["taskDefinition"], definition);

    let checks = runtime::coverage_check(&engine, json!({"cluster": cluster}), "req-4".into())
        .await
        .unwrap();
    assert_eq!(checks[0]["cluster"], json!(cluster));
    let scheduled = json!({"version": "0", "id": "s-1", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    assert_eq!(
        runtime::coverage_check(&engine, scheduled, "req-5".into())
            .await
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The table's stream: a new rollout record's cluster is reconciled once; another
    // deployment's cluster is not this one's to touch.
    let key = |cluster: &str| ecs_daemons::store::ItemKey::rollout(cluster, "agent", "r-1");
    let recorded = runtime::stream_batch_of_inserts(&[key(&cluster), key(&cluster)]);
    let checks = runtime::coverage_check(&engine, recorded, "req-5b".into())
        .await
        .unwrap();
    assert_eq!(
        checks.as_array().map(Vec::len),
        Some(1),
        "one reconcile per cluster"
    );
    assert_eq!(checks[0]["cluster"], json!(cluster));
    let elsewhere = runtime::stream_batch_of_inserts(&[key("someone-else")]);
    assert!(runtime::coverage_check(&engine, elsewhere, "req-5c".into())
        .await
        .unwrap()
        .as_array()
        .is_some_and(Vec::is_empty));

    let event = sample("instance-active.json", &cluster);
    let outcome = runtime::instance_event(&engine, event.clone(), "req-6".into())
        .await
        .unwrap();
    assert_eq!(
        outcome["skipped"],
        "the container instance is no longer registered"
    );
    let again = runtime::instance_event(&engine, event, "req-7".into())
        .await
        .unwrap();
    assert!(again["skipped"]
        .as_str()
        .unwrap()
        .contains("already handled"));
    let task = runtime::task_event(
        &engine,
        sample("task-running.json", &cluster),
        "req-8".into(),
    )
    .await
    .unwrap();
    assert_eq!(
        task["skipped"], "the container instance is no longer registered",
        "{task:?}"
    );

    // As deployed: an SQS batch. Events that can never succeed (not an ECS event, a cluster
    // not managed here, a body that is not JSON) are logged and dropped, not retried.
    let mut batch = ecs_daemons::sqs::batch_of(&[
        sample("task-stopped-essential-exit.json", &cluster),
        sample("task-running.json", "someone-elses"),
        json!({"detail-type": "ECS Task State Change"}),
    ]);
    batch["Records"]
        .as_array_mut()
        .unwrap()
        .push(json!({"eventSource": "aws:sqs", "messageId": "m-bad", "body": "{"}));
    let answer = runtime::task_event(&engine, batch, "req-9".into())
        .await
        .unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));

    let refusals: Vec<(Result<Value, runtime::FunctionError>, &str)> = vec![
        (
            runtime::deploy(&engine, json!({"cluster": cluster}), "x".into()).await,
            "missing field `daemon`",
        ),
        (
            runtime::deploy(&engine, json!("deploy please"), "x".into()).await,
            "must be a JSON object",
        ),
        (
            runtime::status(
                &engine,
                json!({"cluster": cluster, "daemon": "ghost"}),
                "x".into(),
            )
            .await,
            "unknown daemon ghost",
        ),
        (
            runtime::status(&engine, json!({"cluster": "someone-elses"}), "x".into()).await,
            "not managed by this deployment",
        ),
        (
            runtime::rollback(
                &engine,
                json!({"cluster": cluster, "daemon": "agent"}),
                "x".into(),
            )
            .await,
            "is already on",
        ),
        (
            runtime::rollback(
                &engine,
                json!({"cluster": cluster, "daemon": "agent", "toRevision": "two"}),
                "x".into(),
            )
            .await,
            "`toRevision`",
        ),
    ];
    for (result, expected) in refusals {
        let error = result.unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    let error = runtime::coverage_check(&engine, json!({"clusterName": cluster}), "x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("coverage-check takes"), "{error}");
    let error = runtime::task_event(
        &engine,
        sample("task-running.json", "someone-elses"),
        "x".into(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("not managed"), "{error}");
    let error = runtime::instance_event(
        &engine,
        json!({"detail-type": "ECS Task State Change"}),
        "x".into(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("not an EventBridge event"), "{error}");
}

/// The wake queue over moto's SQS: a wake sent with its timer stays hidden until its moment,
/// then the coverage-check's wake batch reconciles its cluster and answers no failure; a
/// wake of a cluster not managed here is dropped, not retried.
#[tokio::test]
async fn a_wake_travels_through_sqs_and_reconciles_its_cluster_when_due() {
    use ecs_daemons::wake::{SqsWakeQueue, Wake, WakeQueue};
    let config = common::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name(common::unique("ecs-daemons-wakes"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let cluster = common::unique("wakes");
    let ecs = aws_sdk_ecs::Client::new(&config);
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let queue = SqsWakeQueue::new(&config, url.clone());
    let engine = engine(&cluster)
        .await
        .with_wakes(std::sync::Arc::new(queue.clone()));
    let wake = Wake {
        cluster: cluster.clone(),
        at: chrono::Utc::now() + chrono::Duration::seconds(2),
    };
    queue.send(&wake).await.unwrap();
    let receive = || async {
        sqs.receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
    };
    assert!(receive().await.is_empty(), "hidden until its timer ends");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let messages = receive().await;
    assert_eq!(messages.len(), 1, "visible once its timer ended");
    let record = |id: &str, body: &str| {
        json!({"messageId": id, "receiptHandle": "h", "body": body, "attributes": {},
               "messageAttributes": {}, "eventSource": "aws:sqs",
               "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:wakes", "awsRegion": "us-east-1"})
    };
    let body = messages[0].body.clone().unwrap();
    let stranger = Wake {
        cluster: "someone-else".into(),
        at: chrono::Utc::now(),
    };
    let batch = json!({"Records": [record("m-1", &body), record("m-2", &stranger.body())]});
    let answer = runtime::coverage_check(&engine, batch, "req-wake".into())
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"batchItemFailures": []}),
        "the due cluster reconciled, the stranger dropped"
    );
}
