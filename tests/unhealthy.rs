//! Copies that run but never turn healthy, on the cluster model: ECS leaves a standalone
//! task running whatever its health, so ecs-daemons replaces it after `unhealthyGraceSeconds`
//! like a dead one (same backoff, same crash-loop report), and counts it missing meanwhile.

use chrono::Duration;
use ecs_daemons::deploy::{DeployRequest, StatusRequest};
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::slot::SlotState;
use ecs_daemons::spec::RestartPolicy;
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";

fn ready(harness: &Harness) -> usize {
    harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter(|i| i.attributes.get(READY_ATTRIBUTE) == Some(&Some("true".into())))
        .count()
}

#[tokio::test]
async fn a_copy_that_never_turns_healthy_is_replaced_then_reported_crash_looping() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let sick = harness.model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        never_healthy: true,
        ..TaskDefinitionModel::new("agent", 256, 256)
    });
    let fixed = harness.model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        ..TaskDefinitionModel::new("agent", 256, 256)
    });
    let policy = RestartPolicy {
        max_consecutive_failures: 3,
        base_backoff_seconds: 10,
        unhealthy_grace_seconds: Some(60),
        ..RestartPolicy::default()
    };
    let request = |task_definition: &str| DeployRequest {
        restart: Some(policy.clone()),
        ..DeployRequest::new(CLUSTER, "agent", task_definition, &["general"], 0)
    };
    harness.deploy(request(&sick)).await.unwrap();
    // Within the grace: UNHEALTHY counts as missing, not as starting; nothing stopped yet.
    harness.run_scheduled(Duration::seconds(40), 60).await;
    let early = harness.coverage_check().await.result.unwrap();
    let coverage = &early.coverage["agent"];
    assert_eq!(
        (coverage.missing, coverage.starting, coverage.covered),
        (2, 0, 0)
    );
    assert!(early.stopped.is_empty());
    assert_eq!(ready(&harness), 0);

    // Past it: stopped and restarted with backoff, three times, then crash-looping.
    harness.run_scheduled(Duration::minutes(10), 60).await;
    let tasks = harness.model.tasks(CLUSTER);
    let replaced = tasks
        .iter()
        .filter(|t| t.last_status == TaskStatus::Stopped && t.definition == sick)
        .count();
    assert_eq!(replaced, 6, "three copies per instance, each replaced");
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some("agent".into()),
        })
        .await
        .unwrap();
    let troubled = &status.daemons[0].slots_in_trouble;
    assert_eq!(troubled.len(), 2, "{troubled:?}");
    assert!(troubled.iter().all(|s| s.state == SlotState::CrashLooping
        && s.last_stop_reason
            .as_deref()
            .is_some_and(|r| r.contains("UNHEALTHY") && r.contains("unhealthyGraceSeconds 60"))));
    assert_eq!(ready(&harness), 0);

    // A revision that passes its health check heals it.
    harness.deploy(request(&fixed)).await.unwrap();
    harness.run_scheduled(Duration::minutes(5), 60).await;
    assert_eq!(ready(&harness), 2);
}
