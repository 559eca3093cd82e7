//! Critical daemons on EC2 providers, on the cluster model: an instance where a critical
//! daemon crash-loops is set DRAINING (its applications move), reported, and never more than
//! `maxCriticalDrains` of the daemon's instances draining at once; a daemon not critical is
//! only reported; a revision that crash-loops during its rollout is the breaker's to stop,
//! never a reason to drain the fleet.

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const AGENT: &str = "agent";
const PROVIDER: &str = "general";

fn critical_request(revision: &str, max: Option<Amount>) -> DeployRequest {
    DeployRequest {
        critical: Some(true),
        max_critical_drains: max,
        ..DeployRequest::new(CLUSTER, AGENT, revision, &[PROVIDER], 0)
    }
}

/// Six instances, each with an application task; the agent's revision.
fn fleet() -> (Harness, String) {
    let harness = Harness::new(CLUSTER, &[PROVIDER], ModelConfig::default());
    for _ in 0..6 {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256));
    (harness, agent)
}

fn instance_ids(harness: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .iter()
        .map(|i| i.id().to_string())
        .collect();
    ids.sort();
    ids
}

fn draining(harness: &Harness) -> Vec<String> {
    harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Draining)
        .map(|i| i.id().to_string())
        .collect()
}

/// Runs `seconds`, a coverage check every minute, killing every copy of the agent on
/// `sick` as soon as it runs: its instances crash-loop.
async fn run_crashing(harness: &mut Harness, seconds: i64, sick: &[String]) {
    run_killing(harness, seconds, sick, &format!("daemon:{AGENT}")).await;
}

/// [`run_crashing`] for the copies whose task group starts with `group`.
async fn run_killing(harness: &mut Harness, seconds: i64, sick: &[String], group: &str) {
    for _ in 0..seconds {
        harness.model.advance(Duration::seconds(1));
        let running: Vec<String> = harness
            .model
            .tasks(CLUSTER)
            .iter()
            .filter(|t| t.group.starts_with(group) && sick.contains(&t.instance_id))
            .filter(|t| t.last_status == TaskStatus::Running)
            .map(|t| t.id.clone())
            .collect();
        for task in running {
            harness.model.crash_task(CLUSTER, &task);
        }
        harness.deliver_events().await;
        harness.deliver_wakes().await;
        if harness.model.now().timestamp() % 60 == 0 {
            let check = harness.scheduled_check().await;
            assert!(check.result.is_ok(), "{:?}", check.result);
        }
    }
}

#[tokio::test]
async fn a_critical_daemon_drains_where_it_crash_loops_two_at_most() {
    let (mut harness, agent) = fleet();
    harness
        .deploy(critical_request(&agent, Some(Amount::Count(2))))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let ids = instance_ids(&harness);
    for _ in &ids {
        harness.model.run_service_task(CLUSTER, "web", "web:1");
    }
    let sick: Vec<String> = ids[..3].to_vec();

    run_crashing(&mut harness, 900, &sick).await;
    let drained = draining(&harness);
    assert_eq!(drained.len(), 2, "two at most: {drained:?}");
    assert!(drained.iter().all(|i| sick.contains(i)), "{drained:?}");
    let held = sick.iter().find(|i| !drained.contains(i)).unwrap().clone();
    // The applications left the drained instances (ECS stops their service tasks).
    let web_on_drained = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.group.starts_with("service:web") && drained.contains(&t.instance_id))
        .filter(|t| !t.last_status.is_terminal())
        .count();
    assert_eq!(web_on_drained, 0);
    let status = harness.daemon_status(AGENT).await;
    assert_eq!(status.max_critical_drains, Some(Amount::Count(2)));
    let marked: Vec<&str> = status
        .slots_in_trouble
        .iter()
        .filter(|s| s.critical_drain_at.is_some())
        .map(|s| s.instance_id.as_str())
        .collect();
    assert_eq!(marked.len(), 2, "{:?}", status.slots_in_trouble);
    let check = harness.scheduled_check().await;
    let outcome = check.result.unwrap();
    let trouble = &outcome.coverage[AGENT].trouble;
    assert!(
        trouble.iter().any(|t| t.instance_id == held
            && t.reason
                .contains("2 of its instances are DRAINING already (maxCriticalDrains 2)")),
        "the held one says why: {trouble:?}"
    );

    // One drained instance is replaced (deregistered): the held one drains next.
    harness.model.deregister_instance(CLUSTER, &drained[0]);
    run_crashing(&mut harness, 120, &sick).await;
    let now_draining = draining(&harness);
    assert!(now_draining.contains(&held), "{now_draining:?}");
    assert_eq!(now_draining.len(), 2);
}

#[tokio::test]
async fn a_daemon_not_critical_crash_loops_without_a_drain() {
    let (mut harness, agent) = fleet();
    harness
        .deploy(DeployRequest::new(CLUSTER, AGENT, &agent, &[PROVIDER], 0))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let sick = instance_ids(&harness)[..2].to_vec();
    run_crashing(&mut harness, 900, &sick).await;
    assert!(draining(&harness).is_empty());
    let status = harness.daemon_status(AGENT).await;
    assert_eq!(status.coverage.crash_looping, 2, "{:?}", status.coverage);
}

#[tokio::test]
async fn a_revision_crash_looping_in_its_rollout_trips_the_breaker_and_drains_nothing() {
    let (mut harness, agent) = fleet();
    // A patient breaker: instances that join mid-rollout get the new revision alone and
    // crash-loop there long before it trips.
    let config = RolloutConfig {
        max_parallel: Amount::Count(1),
        failure_threshold: Amount::Count(40),
        ..RolloutConfig::default()
    };
    harness
        .deploy(DeployRequest {
            rollout: Some(config.clone()),
            ..critical_request(&agent, Some(Amount::Percent(50)))
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let crashing = harness.model.register_task_definition(TaskDefinitionModel {
        crashes_after: Some(Duration::seconds(3)),
        ..TaskDefinitionModel::new(AGENT, 256, 256)
    });
    harness
        .deploy(DeployRequest {
            rollout: Some(config),
            ..critical_request(&crashing, Some(Amount::Percent(50)))
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(1), 60).await;
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    let mut crash_looped = false;
    for _ in 0..30 {
        harness.run_scheduled(Duration::minutes(1), 60).await;
        assert!(draining(&harness).is_empty(), "{:?}", draining(&harness));
        crash_looped |= harness.daemon_status(AGENT).await.coverage.crash_looping > 0;
    }
    assert!(
        crash_looped,
        "the joined instances crash-looped on the new revision"
    );
    let status = harness.daemon_status(AGENT).await;
    let failed = status
        .history
        .iter()
        .chain(status.rollout.iter())
        .find(|r| r.to_task_definition == crashing)
        .unwrap();
    assert_eq!(failed.state, RolloutState::Failed);
}

#[tokio::test]
async fn on_daemon_services_a_critical_daemon_drains_where_it_crash_loops() {
    let mut harness = Harness::new(CLUSTER, &["scaled"], ModelConfig::default());
    harness.model.enable_managed_scaling(
        CLUSTER,
        "scaled",
        ecs_daemons_sim::cluster_model::ManagedScaling::new(4, 10, 4096, 8192),
    );
    for _ in 0..4 {
        harness.model.add_instance(CLUSTER, "scaled", 4096, 8192);
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256));
    harness
        .deploy(DeployRequest {
            critical: Some(true),
            ..DeployRequest::new(CLUSTER, AGENT, &agent, &["scaled"], 0)
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    let sick = instance_ids(&harness)[..2].to_vec();
    run_killing(&mut harness, 900, &sick, "service:ecs-daemons-agent-").await;
    let drained = draining(&harness);
    assert_eq!(drained.len(), 1, "one at most (the default): {drained:?}");
    assert!(sick.contains(&drained[0]));
}
