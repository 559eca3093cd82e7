//! Undeploy on EC2 providers, on the cluster model: every copy stopped at once (drain-last
//! does not apply, the daemon is going), readiness recomputed so no instance waits for a
//! daemon that is gone, DAEMON services and slot attributes removed, the declaration kept
//! retired with its history; and copies of a daemon whose declaration vanished stopped by the
//! full reconcile whatever else is declared.

use chrono::Duration;
use ecs_daemons::deploy::{
    DeployError, DeployRequest, RollbackRequest, StatusRequest, UndeployRequest,
};
use ecs_daemons::ecs::EcsServices;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::placement::services::{service_name, slot_attribute, Letter};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutKind, RolloutState};
use ecs_daemons::spec::DaemonSpec;
use ecs_daemons::store::{ItemKey, Store};
use ecs_daemons_sim::cluster_model::{ManagedScaling, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const AGENT: &str = "agent";
const LOGS: &str = "logs";
const PROVIDER: &str = "general";

fn deploy_request(daemon: &str, task_definition: &str, start_order: i32) -> DeployRequest {
    DeployRequest {
        rollout: Some(RolloutConfig {
            max_parallel: Amount::Count(1),
            min_healthy_seconds: 60,
            ..RolloutConfig::default()
        }),
        ..DeployRequest::new(CLUSTER, daemon, task_definition, &[PROVIDER], start_order)
    }
}

fn undeploy_request(daemon: &str) -> UndeployRequest {
    UndeployRequest {
        cluster: CLUSTER.into(),
        daemon: daemon.into(),
        undeploy: true,
        dry_run: false,
    }
}

/// Live copies of `daemon` in the cluster (standalone or from its DAEMON services).
fn live_copies(harness: &Harness, daemon: &str) -> usize {
    let standalone = format!("daemon:{daemon}");
    let services = format!("service:ecs-daemons-{daemon}-");
    harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.group == standalone || t.group.starts_with(&services))
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .count()
}

fn ready_instances(harness: &Harness) -> usize {
    harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter(|i| i.attributes.get(READY_ATTRIBUTE) == Some(&Some("true".into())))
        .count()
}

/// Two daemons on three instances, settled; the agent's revisions.
async fn two_daemons() -> (Harness, Vec<String>) {
    let mut harness = Harness::new(CLUSTER, &[PROVIDER], ModelConfig::default());
    for _ in 0..3 {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    let agent: Vec<String> = (0..2)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256))
        })
        .collect();
    let logs = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(LOGS, 128, 128));
    harness
        .deploy(deploy_request(LOGS, &logs, 0))
        .await
        .unwrap();
    harness
        .deploy(deploy_request(AGENT, &agent[0], 1))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(
        (live_copies(&harness, AGENT), live_copies(&harness, LOGS)),
        (3, 3)
    );
    assert_eq!(ready_instances(&harness), 3);
    (harness, agent)
}

/// Mid-rollout, the undeploy ends the rollout, stops every copy in its own invoke, and makes
/// ready an instance that waited only for the undeployed daemon; status keeps its history,
/// rollback refuses it, a deploy starts it afresh.
#[tokio::test]
async fn undeploy_on_ec2_stops_every_copy_at_once_and_frees_readiness() {
    let (mut harness, agent) = two_daemons().await;
    // An instance too small for the agent (not for the logs): it waits for the agent.
    let small = harness.model.add_instance(CLUSTER, PROVIDER, 200, 200);
    harness
        .deploy(deploy_request(AGENT, &agent[1], 1))
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(90), 60).await;
    assert_eq!(ready_instances(&harness), 3, "the small instance waits");

    let preview = harness
        .undeploy(UndeployRequest {
            dry_run: true,
            ..undeploy_request(AGENT)
        })
        .await
        .unwrap();
    assert_eq!(preview.recorded, "would undeploy");
    assert!(preview.would_stop.unwrap() >= 3, "{preview:?}");
    assert_eq!(preview.ended_rollouts.len(), 1);
    assert!(
        live_copies(&harness, AGENT) >= 3,
        "a dry run changes nothing"
    );

    let answer = harness.undeploy(undeploy_request(AGENT)).await.unwrap();
    assert_eq!(answer.recorded, "undeployed");
    assert_eq!(answer.ended_rollouts, preview.ended_rollouts);
    let reconcile = answer.reconcile.expect("the undeploy reconciles at once");
    assert!(reconcile.stopped.len() >= 3, "{:?}", reconcile.stopped);
    assert!(reconcile
        .stopped
        .iter()
        .all(|s| s.daemon == AGENT && s.reason.contains("no longer declared")));
    let small_id = small.rsplit('/').next().unwrap().to_string();
    assert!(
        reconcile.ready_set.contains(&small_id),
        "{:?}",
        reconcile.ready_set
    );
    harness.model.advance(Duration::seconds(40));
    assert_eq!(live_copies(&harness, AGENT), 0);
    assert_eq!(live_copies(&harness, LOGS), 4);
    assert_eq!(ready_instances(&harness), 4);
    let ended = harness
        .store
        .get::<ecs_daemons::rollout::Rollout>(&ItemKey::rollout(
            CLUSTER,
            AGENT,
            &answer.ended_rollouts[0],
        ))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(ended.state, RolloutState::Superseded);
    assert_eq!(ended.reason.as_deref(), Some("the daemon was undeployed"));
    assert!(
        harness
            .store
            .query::<ecs_daemons::slot::Slot>(CLUSTER, AGENT)
            .await
            .unwrap()
            .is_empty(),
        "its slots are deleted"
    );

    // A retry changes nothing; the schedule starts nothing of it again; a new instance is
    // ready with the logs alone.
    let again = harness.undeploy(undeploy_request(AGENT)).await.unwrap();
    assert_eq!(again.recorded, "already undeployed");
    harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 0);
    assert_eq!(ready_instances(&harness), 5);
    // Nothing left of it: recorded clean, its partition no longer read by every reconcile.
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let retired = harness
        .store
        .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(retired.cleaned_up_at.is_some(), "{retired:?}");

    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(AGENT.into()),
        })
        .await
        .unwrap();
    let shown = &status.daemons[0];
    assert!(shown.undeployed_at.is_some());
    assert_eq!(shown.coverage.targeted, 0);
    assert_eq!(
        shown.rollout.as_ref().map(|r| r.state),
        Some(RolloutState::Superseded)
    );
    let rollback = harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: AGENT.into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(rollback, DeployError::UnknownDaemon { .. }),
        "{rollback}"
    );

    // Deployed again (the small instance gone: the deploy would refuse the agent too large
    // for it): afresh, on every instance.
    harness.model.deregister_instance(CLUSTER, &small);
    let redeployed = harness
        .deploy(deploy_request(AGENT, &agent[0], 1))
        .await
        .unwrap();
    assert_eq!(redeployed.recorded, "created");
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 4);
    let spec = harness
        .store
        .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(spec.retired_at.is_none() && spec.active_rollout.is_none());
    assert!(spec.cleaned_up_at.is_none(), "a deploy starts it afresh");
}

/// An undeploy cut off at any call is finished by the same invoke again, or by the schedule.
#[tokio::test]
async fn an_undeploy_cut_off_anywhere_is_finished() {
    for crash_after in 0..12 {
        let (mut harness, _) = two_daemons().await;
        harness.budget.crash_after(crash_after);
        let _ = harness.undeploy(undeploy_request(AGENT)).await;
        harness.budget.disarm();
        // Even crash points invoke again; odd ones leave it to the schedule (which finishes
        // it if the retirement was written, and otherwise changes nothing).
        if crash_after % 2 == 0 {
            let again = harness.undeploy(undeploy_request(AGENT)).await;
            again.unwrap_or_else(|e| panic!("crash point {crash_after}: {e}"));
        }
        harness.run_scheduled(Duration::minutes(2), 60).await;
        let retired = harness
            .store
            .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
            .await
            .unwrap()
            .unwrap()
            .record
            .retired_at
            .is_some();
        let expected = if retired { 0 } else { 3 };
        assert_eq!(
            live_copies(&harness, AGENT),
            expected,
            "crash point {crash_after} (retired: {retired})"
        );
        assert_eq!(live_copies(&harness, LOGS), 3, "crash point {crash_after}");
        assert_eq!(ready_instances(&harness), 3, "crash point {crash_after}");
    }
}

/// A daemon whose declaration vanished (deleted by hand) while it was the only one: the full
/// reconcile still reads the cluster and stops its copies.
#[tokio::test]
async fn copies_of_a_daemon_whose_declaration_vanished_are_stopped() {
    let mut harness = Harness::new(CLUSTER, &[PROVIDER], ModelConfig::default());
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256));
    harness
        .deploy(deploy_request(AGENT, &agent, 0))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 2);
    let spec = harness
        .store
        .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
        .await
        .unwrap()
        .unwrap();
    harness
        .store
        .delete(&ItemKey::spec(CLUSTER, AGENT), spec.version)
        .await
        .unwrap();
    let check = harness.scheduled_check().await.result.unwrap();
    assert_eq!(check.stopped.len(), 2, "{check:?}");
    harness.model.advance(Duration::seconds(40));
    assert_eq!(live_copies(&harness, AGENT), 0);
    // With nothing declared, a new instance is ready: there is nothing to wait for.
    harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    harness.run_scheduled(Duration::minutes(2), 60).await;
    assert_eq!(ready_instances(&harness), 3);
}

/// On DAEMON services: the services are deleted, the slot attributes removed, every copy
/// stopped; the daemon is deployed again once ECS has let the services' names go.
#[tokio::test]
async fn undeploy_on_services_deletes_the_services_and_slot_attributes() {
    let mut harness = Harness::new(CLUSTER, &["scaled"], ModelConfig::default());
    harness
        .model
        .enable_managed_scaling(CLUSTER, "scaled", ManagedScaling::new(1, 10, 4096, 8192));
    for _ in 0..3 {
        harness.model.add_instance(CLUSTER, "scaled", 4096, 8192);
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256));
    let request = DeployRequest::new(CLUSTER, AGENT, &agent, &["scaled"], 0);
    harness.deploy(request.clone()).await.unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 3);

    let answer = harness.undeploy(undeploy_request(AGENT)).await.unwrap();
    assert_eq!(answer.recorded, "undeployed");
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 0);
    let names = [
        service_name(AGENT, Letter::A),
        service_name(AGENT, Letter::B),
    ];
    let services = harness
        .model
        .describe_services(CLUSTER, &names)
        .await
        .unwrap();
    assert!(
        services.iter().all(|s| !s.is_active()),
        "{:?}",
        services.iter().map(|s| &s.status).collect::<Vec<_>>()
    );
    let attribute = slot_attribute(AGENT);
    assert!(harness
        .model
        .instances(CLUSTER)
        .iter()
        .all(|i| !i.attributes.contains_key(&attribute)));
    assert_eq!(ready_instances(&harness), 3);
    let spec = harness
        .store
        .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(
        spec.retired_at.is_some() && spec.services.is_none(),
        "recorded gone"
    );
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let cleaned = harness
        .store
        .get::<DaemonSpec>(&ItemKey::spec(CLUSTER, AGENT))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert!(cleaned.cleaned_up_at.is_some(), "{cleaned:?}");

    let again = harness.deploy(request).await.unwrap();
    assert_eq!(again.recorded, "created");
    assert!(
        again.rollout.is_none() || again.rollout.as_ref().unwrap().kind == RolloutKind::Initial
    );
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(live_copies(&harness, AGENT), 3);
}
