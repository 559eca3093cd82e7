//! Authorization and durability: ecs-daemons touches only its own daemon tasks and its own
//! attribute, whatever events say; a function killed between any two calls loses no recorded
//! progress (the next invocation finishes the work); and no DynamoDB write path overwrites a
//! record without a version check.

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::ecs::{Ecs, InstanceAttribute};
use ecs_daemons::engine::EventKind;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::Rollout;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons::slot::Slot;
use ecs_daemons::store::{Store, Versioned};
use ecs_daemons_sim::cluster_model::{cluster_arn, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;
use serde_json::{json, Value};

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";

async fn covered(instances: usize) -> (Harness, Vec<String>) {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let revisions: Vec<String> = (0..2)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(DAEMON, 512, 512))
        })
        .collect();
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    harness
        .deploy(DeployRequest::new(
            CLUSTER,
            DAEMON,
            &revisions[0],
            &["general"],
            0,
        ))
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(30), Duration::seconds(1))
        .await;
    (harness, revisions)
}

fn live(harness: &Harness, task_arn: &str) -> bool {
    harness.model.tasks(CLUSTER).iter().any(|t| {
        task_arn.ends_with(&t.id)
            && !t.last_status.is_terminal()
            && t.desired_status == TaskStatus::Running
    })
}

/// Live copies of the daemon (ours: started by ecs-daemons) per instance.
fn own_copies(harness: &Harness) -> Vec<(String, usize, bool)> {
    let tasks = harness.model.tasks(CLUSTER);
    harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| {
            let copies = tasks
                .iter()
                .filter(|t| {
                    t.instance_id == i.id()
                        && t.group == format!("daemon:{DAEMON}")
                        && t.started_by.as_deref() == Some("ecs-daemons")
                        && !t.last_status.is_terminal()
                        && t.desired_status == TaskStatus::Running
                })
                .count();
            let ready = i
                .attributes
                .get(READY_ATTRIBUTE)
                .is_some_and(|v| v.as_deref() == Some("true"));
            (i.id().to_string(), copies, ready)
        })
        .collect()
}

/// A task event that lies about a task: it claims the task is one of ours.
fn lying_task_event(id: &str, task_arn: &str, instance_arn: &str, status: &str) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": "111122223333", "time": "2026-11-24T09:00:40Z", "region": "us-east-1",
        "resources": [task_arn],
        "detail": {
            "clusterArn": cluster_arn(CLUSTER), "containerInstanceArn": instance_arn,
            "taskArn": task_arn, "taskDefinitionArn": "arn:aws:ecs:us-east-1:111122223333:task-definition/agent:1",
            "group": format!("daemon:{DAEMON}"), "startedBy": "ecs-daemons",
            "lastStatus": status, "desiredStatus": "RUNNING", "version": 99,
            "createdAt": "2026-11-24T09:00:30Z", "containers": [], "overrides": {"containerOverrides": []},
            "launchType": "EC2", "cpu": "512", "memory": "512", "attachments": [], "attributes": [],
            "updatedAt": "2026-11-24T09:00:40Z"
        }
    })
}

#[tokio::test]
async fn only_own_daemon_tasks_and_the_ready_attribute_are_ever_touched() {
    let (mut harness, revisions) = covered(3).await;
    let instances = harness.model.instances(CLUSTER);
    let (first, second) = (&instances[0].arn, &instances[1].arn);
    // Look-alikes of a second copy that are not ours: same group, started by someone else or
    // by no one; and a task with our startedBy that is not a daemon at all.
    let impostor = harness
        .model
        .start_foreign_task(
            CLUSTER,
            first,
            &revisions[0],
            "daemon:agent",
            Some("platform-team"),
        )
        .unwrap();
    let unmarked = harness
        .model
        .start_foreign_task(CLUSTER, first, &revisions[0], "daemon:agent", None)
        .unwrap();
    let not_a_daemon = harness
        .model
        .start_foreign_task(
            CLUSTER,
            second,
            &revisions[0],
            "service:web",
            Some("ecs-daemons"),
        )
        .unwrap();
    let foreign = ["team.owner", "ecs-daemons.something-else"];
    let attributes: Vec<InstanceAttribute> = instances
        .iter()
        .flat_map(|i| {
            foreign.iter().map(|name| InstanceAttribute {
                container_instance: i.arn.clone(),
                name: name.to_string(),
                value: Some("kept".into()),
            })
        })
        .collect();
    harness
        .model
        .put_attributes(CLUSTER, &attributes)
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(10), Duration::seconds(1))
        .await;

    // Events that say the look-alikes are ours (RUNNING: "a duplicate to stop"), and that our
    // own copies' instance is someone else's cluster.
    let lies = vec![
        lying_task_event("lie-1", &impostor, first, "RUNNING"),
        lying_task_event("lie-2", &unmarked, first, "RUNNING"),
        lying_task_event("lie-3", &not_a_daemon, second, "RUNNING"),
    ];
    let batch = harness
        .engine
        .on_events(lies, EventKind::Task, harness.model.now(), "lies")
        .await;
    assert!(batch.failures.is_empty(), "{:?}", batch.failures.len());
    harness.coverage_check().await;
    // A rollout replaces every copy of ours; the look-alikes stay.
    let rollout = RolloutConfig {
        max_parallel: Amount::Count(3),
        min_healthy_seconds: 10,
        ..RolloutConfig::default()
    };
    harness
        .deploy(DeployRequest {
            rollout: Some(rollout),
            ..DeployRequest::new(CLUSTER, DAEMON, &revisions[1], &["general"], 0)
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(300), 60).await;

    for (name, task) in [
        ("impostor", &impostor),
        ("unmarked", &unmarked),
        ("not a daemon", &not_a_daemon),
    ] {
        assert!(live(&harness, task), "the {name} task was stopped");
    }
    for instance in harness.model.instances(CLUSTER) {
        for name in foreign {
            assert_eq!(
                instance.attributes.get(name),
                Some(&Some("kept".to_string())),
                "{name} on {}",
                instance.id()
            );
        }
    }
    for (instance, copies, ready) in own_copies(&harness) {
        assert!(
            copies == 1 && ready,
            "{instance}: {copies} own copies, ready {ready}"
        );
    }
    let revisions_running: Vec<String> = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.started_by.as_deref() == Some("ecs-daemons") && t.group == "daemon:agent")
        .filter(|t| !t.last_status.is_terminal())
        .map(|t| t.definition.clone())
        .collect();
    assert!(revisions_running.iter().all(|r| r == &revisions[1]));
}

#[tokio::test]
async fn a_deploy_killed_at_any_call_is_finished_by_its_retry() {
    let mut points = 0;
    for crash_after in 0.. {
        let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
        let agent = harness
            .model
            .register_task_definition(TaskDefinitionModel::new(DAEMON, 512, 512));
        for _ in 0..4 {
            harness.model.add_instance(CLUSTER, "general", 4096, 8192);
        }
        harness
            .run_for(Duration::seconds(5), Duration::seconds(1))
            .await;
        let request = DeployRequest::new(CLUSTER, DAEMON, &agent, &["general"], 0);
        harness.budget.crash_after(crash_after);
        let crashes = harness.crashes;
        let first = harness.deploy(request.clone()).await;
        if harness.crashes == crashes {
            assert!(first.is_ok(), "{first:?}");
            break;
        }
        points += 1;
        // The user sees an error and invokes again; the events of whatever was done arrive.
        let retry = harness.deploy(request).await;
        assert!(retry.is_ok(), "crash point {crash_after}: {retry:?}");
        harness.run_scheduled(Duration::seconds(120), 60).await;
        for (instance, copies, ready) in own_copies(&harness) {
            assert!(
                copies == 1 && ready,
                "crash point {crash_after}: {instance} has {copies} copies, ready {ready}"
            );
        }
    }
    assert!(
        points >= 5,
        "the deploy makes calls to crash between ({points})"
    );
}

/// Everything recorded about the daemon: slot and rollout records with their versions.
async fn records(harness: &Harness) -> (Vec<Versioned<Slot>>, Vec<Versioned<Rollout>>) {
    (
        harness.store.query(CLUSTER, DAEMON).await.unwrap(),
        harness.store.query(CLUSTER, DAEMON).await.unwrap(),
    )
}

#[tokio::test]
async fn a_rollout_killed_at_any_call_resumes_without_losing_progress() {
    let mut points = 0;
    for crash_after in 0.. {
        let (mut harness, revisions) = covered(6).await;
        let rollout = RolloutConfig {
            max_parallel: Amount::Count(2),
            min_healthy_seconds: 10,
            ..RolloutConfig::default()
        };
        harness
            .deploy(DeployRequest {
                rollout: Some(rollout),
                ..DeployRequest::new(CLUSTER, DAEMON, &revisions[1], &["general"], 0)
            })
            .await
            .unwrap();
        // Mid-rollout: the first batch has settled; the next check stops its old copies and
        // surges the next batch. That check is the one killed.
        harness
            .run_for(Duration::seconds(25), Duration::seconds(1))
            .await;
        let (slots_before, rollouts_before) = records(&harness).await;
        let done_before = slots_before
            .iter()
            .filter(|s| {
                s.record
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.step == ecs_daemons::rollout::RolloutStep::Done)
            })
            .count();
        harness.budget.crash_after(crash_after);
        let check = harness.coverage_check().await;
        if !check.crashed {
            break;
        }
        points += 1;
        let (slots_after, rollouts_after) = records(&harness).await;
        // Nothing recorded is lost or goes back to an older version.
        for before in &slots_before {
            let after = slots_after
                .iter()
                .find(|s| s.record.instance_id == before.record.instance_id)
                .unwrap_or_else(|| {
                    panic!(
                        "crash point {crash_after}: slot {} lost",
                        before.record.instance_id
                    )
                });
            assert!(after.version >= before.version, "crash point {crash_after}");
        }
        for before in &rollouts_before {
            let after = rollouts_after
                .iter()
                .find(|r| r.record.id == before.record.id)
                .unwrap_or_else(|| panic!("crash point {crash_after}: rollout record lost"));
            assert!(after.version >= before.version, "crash point {crash_after}");
        }
        let done_after = slots_after
            .iter()
            .filter(|s| {
                s.record
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.step == ecs_daemons::rollout::RolloutStep::Done)
            })
            .count();
        assert!(
            done_after >= done_before,
            "crash point {crash_after}: done {done_before} → {done_after}"
        );
        // The next runs finish the rollout: every instance on the new revision, never a gap.
        harness.run_scheduled(Duration::seconds(600), 60).await;
        let (_, rollouts) = records(&harness).await;
        let update = rollouts
            .iter()
            .find(|r| r.record.to_task_definition == revisions[1])
            .unwrap();
        assert_eq!(
            update.record.state,
            RolloutState::Succeeded,
            "crash point {crash_after}: {:?}",
            update.record
        );
        for (instance, copies, ready) in own_copies(&harness) {
            assert!(
                copies == 1 && ready,
                "crash point {crash_after}: {instance} has {copies} copies, ready {ready}"
            );
        }
        assert!(
            harness.model.lone_copy_stops().is_empty(),
            "crash point {crash_after}: a gap"
        );
    }
    assert!(
        points >= 5,
        "the check makes calls to crash between ({points})"
    );
}

#[tokio::test]
async fn an_event_batch_killed_at_any_call_is_handled_when_sqs_delivers_it_again() {
    let mut points = 0;
    for crash_after in 0.. {
        let (mut harness, revisions) = covered(1).await;
        let _ = revisions;
        // Two instances join: their ACTIVE events come in one batch, and that invocation dies.
        for _ in 0..2 {
            harness.model.add_instance(CLUSTER, "general", 4096, 8192);
        }
        harness.model.advance(Duration::seconds(5));
        let events: Vec<Value> = harness.model.take_due_events();
        harness.budget.crash_after(crash_after);
        let crashes = harness.crashes;
        let first = harness
            .deliver_batch("instance-events", events.clone())
            .await;
        if harness.crashes == crashes {
            assert!(first.result.is_ok());
            break;
        }
        points += 1;
        // SQS makes the messages visible again after the visibility timeout (360 s); no
        // coverage-check runs meanwhile, so only the redelivery can cover the instances.
        harness.model.advance(Duration::seconds(360));
        harness.model.take_due_events();
        let again = harness.deliver_batch("instance-events", events).await;
        assert!(
            again.result.is_ok(),
            "crash point {crash_after}: {:?}",
            again.result
        );
        harness
            .run_for(Duration::seconds(30), Duration::seconds(1))
            .await;
        for (instance, copies, ready) in own_copies(&harness) {
            assert!(
                copies == 1 && ready,
                "crash point {crash_after}: {instance} has {copies} copies, ready {ready}"
            );
        }
    }
    assert!(
        points >= 3,
        "the batch makes calls to crash between ({points})"
    );
}

/// Every DynamoDB write in the adapter carries a condition; nothing else writes to DynamoDB.
#[test]
fn every_dynamodb_write_is_conditional() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let adapter = std::fs::read_to_string(format!("{root}/shared/src/store/dynamodb.rs")).unwrap();
    let writes = [
        ".put_item()",
        ".update_item()",
        ".delete_item()",
        ".batch_write_item()",
        ".transact_write_items()",
    ];
    // Event markers are not records: deleting one only lets its event be handled again.
    let unconditional_allowed = ["forget_event"];
    let mut checked = 0;
    for write in writes {
        for (at, _) in adapter.match_indices(write) {
            let function = adapter[..at]
                .rfind("async fn ")
                .map(|start| {
                    adapter[start + 9..]
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let end = adapter[at..].find(".send()").expect("a request is sent") + at;
            let request = &adapter[at..end];
            if unconditional_allowed.contains(&function) {
                continue;
            }
            checked += 1;
            if write == ".transact_write_items()" {
                // A transaction's items are built before the call: each one a Put under a
                // condition, "absent" or "exactly the expected version", like put_item's.
                let start = adapter[..at].rfind("async fn ").expect("inside a function");
                let mut body = adapter[start..at].to_string();
                // Items built by a helper of the adapter are read where that helper is.
                if let Some(helper) = body
                    .find(".transaction_put(")
                    .and(adapter.find("fn transaction_put("))
                {
                    let end = adapter[helper..]
                        .find("\n    }\n")
                        .map_or(adapter.len(), |e| helper + e);
                    body.push_str(&adapter[helper..end]);
                }
                let body = body.as_str();
                assert_eq!(
                    body.matches("Put::builder()").count(),
                    1,
                    "{function}: one kind of item"
                );
                assert!(
                    !body.contains("Delete::builder()") && !body.contains("Update::builder()"),
                    "{function}: only conditional puts in a transaction"
                );
                let put = &body[body.find("Put::builder()").unwrap_or(0)..];
                assert!(
                    put.contains(r#".condition_expression("attribute_not_exists(pk)")"#)
                        && put.contains(r##".condition_expression("#version = :expected")"##),
                    "{function}: a transaction item without its condition"
                );
                continue;
            }
            assert!(
                request.contains(".condition_expression("),
                "{function}: {write} without a condition"
            );
            assert!(
                write == ".put_item()" || write == ".delete_item()",
                "{function}: {write} is a write path this test does not know"
            );
        }
    }
    assert!(
        checked >= 3,
        "put, delete and the event marker were found ({checked})"
    );
    // No other module reaches DynamoDB's write calls.
    let mut stack = vec![std::path::PathBuf::from(format!("{root}/shared/src"))];
    stack.push(format!("{root}/functions").into());
    stack.push(format!("{root}/local-stack/src").into());
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path.ends_with("store/dynamodb.rs")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            for write in writes {
                assert!(!text.contains(write), "{} calls {write}", path.display());
            }
        }
    }
}
