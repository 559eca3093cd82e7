//! The operator's hand on a rollout, on the cluster model: a paused rollout holds its place
//! (no new batch, no old copy stopped) until resumed, on standalone tasks and on DAEMON
//! services; a manual canary waits for `promote`; a deploy supersedes a paused rollout; and
//! every control that cannot apply is refused with what to do, changing nothing.

use chrono::Duration;
use ecs_daemons::deploy::{
    parse_payload, ControlVerb, DeployError, DeployRequest, RolloutControlRequest,
};
use ecs_daemons::model::CapacityProviderKind;
use ecs_daemons::rollout::{
    Amount, Canary, Promote, Rollout, RolloutConfig, RolloutState, RolloutStep,
};
use ecs_daemons::slot::Slot;
use ecs_daemons::store::{ItemKey, Store, Versioned};
use ecs_daemons_sim::cluster_model::{DaemonDefinitionModel, ModelConfig};
use ecs_daemons_sim::simulation::Harness;

mod placements;
use placements::{deploy_request, live_revisions, on_revision, Placement, AGENT, CLUSTER};

fn two_at_a_time() -> RolloutConfig {
    RolloutConfig {
        max_parallel: Amount::Count(2),
        min_healthy_seconds: 30,
        ..RolloutConfig::default()
    }
}

fn control(verb: ControlVerb) -> RolloutControlRequest {
    RolloutControlRequest {
        cluster: CLUSTER.into(),
        daemon: AGENT.into(),
        control: verb,
        by: Some("alice@example.com".into()),
        reason: Some("p99 latency up on the canary".into()),
    }
}

/// Six instances of the placement's provider on the agent's first revision; all revisions.
async fn settled(placement: Placement) -> (Harness, Vec<String>) {
    placements::settled(placement, 3, two_at_a_time(), |_| {}).await
}

async fn rollout_of(harness: &Harness, id: &str) -> Rollout {
    let stored: Versioned<Rollout> = harness
        .store
        .get(&ItemKey::rollout(CLUSTER, AGENT, id))
        .await
        .unwrap()
        .unwrap();
    stored.record
}

/// Every second for `seconds`: the old revision's copies never fewer than `old_floor` and
/// the new one's never more than `new_ceiling` (a paused rollout holds its place).
async fn run_holding(
    harness: &mut Harness,
    seconds: i64,
    old: &str,
    old_floor: usize,
    new: &str,
    new_ceiling: usize,
) {
    for second in 1..=seconds {
        harness.model.advance(Duration::seconds(1));
        harness.deliver_events().await;
        harness.deliver_wakes().await;
        if harness.model.now().timestamp() % 60 == 0 {
            harness.scheduled_check().await;
        }
        assert!(
            on_revision(harness, old) >= old_floor,
            "an old copy stopped while paused, at second {second}: {:?}",
            live_revisions(harness)
        );
        assert!(
            on_revision(harness, new) <= new_ceiling,
            "a new batch started while paused, at second {second}: {:?}",
            live_revisions(harness)
        );
    }
}

async fn pause_holds_until_resume(placement: Placement) {
    let (mut harness, revisions) = settled(placement).await;
    let answer = harness
        .deploy(deploy_request(placement, &revisions[1], two_at_a_time()))
        .await
        .unwrap();
    let rollout_id = answer.rollout.as_ref().unwrap().id.clone();
    // The first batch (two instances) is asked for; pause before any of it settles.
    harness
        .run_for(Duration::seconds(5), Duration::seconds(1))
        .await;
    let paused = harness
        .control_rollout(control(ControlVerb::Pause))
        .await
        .unwrap();
    assert_eq!(paused.recorded, "paused");
    assert!(paused.reconcile.is_none());
    let again = harness
        .control_rollout(control(ControlVerb::Pause))
        .await
        .unwrap();
    assert_eq!(
        again.recorded, "already paused",
        "a retried pause writes nothing"
    );

    // Ten minutes paused: the two surged copies come up beside the old ones, and stay there.
    run_holding(&mut harness, 600, &revisions[0], 6, &revisions[1], 2).await;
    assert_eq!(
        on_revision(&harness, &revisions[1]),
        2,
        "the batch asked for before the pause still starts ({placement:?})"
    );
    let status = harness.daemon_status(AGENT).await;
    let rollout = status.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::InProgress);
    let mark = rollout.control.paused.expect("status shows the pause");
    assert_eq!(mark.by.as_deref(), Some("alice@example.com"));
    assert_eq!(mark.reason.as_deref(), Some("p99 latency up on the canary"));
    assert!(!mark.invocation.is_empty());

    let resumed = harness
        .control_rollout(control(ControlVerb::Resume))
        .await
        .unwrap();
    assert_eq!(resumed.recorded, "resumed");
    assert!(resumed.reconcile.is_some(), "the next step runs at once");
    harness.run_scheduled(Duration::minutes(15), 60).await;
    assert_eq!(
        on_revision(&harness, &revisions[1]),
        6,
        "resumed to the end ({placement:?}): {:?}",
        live_revisions(&harness)
    );
    let record = rollout_of(&harness, &rollout_id).await;
    assert_eq!(record.state, RolloutState::Succeeded);
    assert!(record.control.paused.is_none());
    assert!(record.control.resumed.is_some(), "the resume is kept");
}

#[tokio::test]
async fn a_paused_rollout_of_tasks_holds_its_place_until_resumed() {
    pause_holds_until_resume(Placement::Tasks).await;
}

#[tokio::test]
async fn a_paused_rollout_on_daemon_services_holds_its_place_until_resumed() {
    pause_holds_until_resume(Placement::Services).await;
}

async fn manual_canary_waits_for_promote(placement: Placement) {
    let (mut harness, revisions) = settled(placement).await;
    let manual = RolloutConfig {
        canary: Some(Canary {
            instances: 1,
            promote: Promote::Manual,
        }),
        ..two_at_a_time()
    };
    harness
        .deploy(deploy_request(placement, &revisions[1], manual))
        .await
        .unwrap();
    let early = harness
        .control_rollout(control(ControlVerb::Promote))
        .await
        .unwrap_err();
    assert!(
        matches!(early, DeployError::CanaryNotWaiting { .. })
            && early.to_string().contains("not done yet"),
        "{early}"
    );
    run_holding(&mut harness, 600, &revisions[0], 5, &revisions[1], 1).await;
    assert_eq!(
        on_revision(&harness, &revisions[1]),
        1,
        "the canary is done"
    );
    let status = harness.daemon_status(AGENT).await;
    let rollout = status.rollout.unwrap();
    assert!(
        rollout.awaiting_promote,
        "status says it waits: {rollout:?}"
    );
    assert_eq!(rollout.counts.done, 1);

    let promoted = harness
        .control_rollout(control(ControlVerb::Promote))
        .await
        .unwrap();
    assert_eq!(promoted.recorded, "promoted");
    harness.run_scheduled(Duration::minutes(15), 60).await;
    assert_eq!(on_revision(&harness, &revisions[1]), 6, "{placement:?}");
    let status = harness.daemon_status(AGENT).await;
    let rollout = status.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Succeeded);
    assert_eq!(
        rollout.control.promoted.and_then(|m| m.by).as_deref(),
        Some("alice@example.com")
    );
}

#[tokio::test]
async fn a_manual_canary_of_tasks_waits_for_promote() {
    manual_canary_waits_for_promote(Placement::Tasks).await;
}

#[tokio::test]
async fn a_manual_canary_on_daemon_services_waits_for_promote() {
    manual_canary_waits_for_promote(Placement::Services).await;
}

/// A start claimed but never asked of ECS (the invocation died between the claim and
/// StartTask) leaves a Surging step with no copy behind it. Unpaused, the instance is simply
/// claimed again; paused, it must go back among the instances to do once the claim's grace
/// passed, not stay "surging" past its deadline (campaign seeds 3808 and 9102).
#[tokio::test]
async fn a_claim_lost_before_its_start_is_released_while_paused() {
    let mut paused_after_crash = 0;
    for crash_after in 0..60 {
        let (mut harness, revisions) = settled(Placement::Tasks).await;
        harness
            .deploy(deploy_request(
                Placement::Tasks,
                &revisions[1],
                two_at_a_time(),
            ))
            .await
            .unwrap();
        // The first batch comes up unseen; the reconcile that settles it and claims the next
        // batch dies after `crash_after` calls.
        harness.model.advance(Duration::seconds(60));
        harness.budget.crash_after(crash_after);
        if !harness.coverage_check().await.crashed {
            break;
        }
        harness
            .control_rollout(control(ControlVerb::Pause))
            .await
            .unwrap();
        paused_after_crash += 1;
        harness.run_scheduled(Duration::minutes(10), 60).await;

        let slots: Vec<Versioned<Slot>> = harness.store.query(CLUSTER, AGENT).await.unwrap();
        let live_new: Vec<String> = harness
            .model
            .tasks(CLUSTER)
            .into_iter()
            .filter(|t| t.definition == revisions[1] && !t.last_status.is_terminal())
            .map(|t| t.instance_id)
            .collect();
        let surging: Vec<&Slot> = slots
            .iter()
            .map(|s| &s.record)
            .filter(|s| {
                s.rollout
                    .as_ref()
                    .is_some_and(|step| step.step == RolloutStep::Surging)
            })
            .collect();
        for slot in &surging {
            assert!(
                live_new.contains(&slot.instance_id),
                "crash point {crash_after}: {} still surging with no new copy after ten paused minutes: {:?}",
                slot.instance_id,
                slot.rollout
            );
        }
        let status = harness.daemon_status(AGENT).await;
        let rollout = status.rollout.expect("the rollout is still in progress");
        assert_eq!(rollout.state, RolloutState::InProgress);
    }
    assert!(
        paused_after_crash > 10,
        "the crash points span the reconcile"
    );
}

#[tokio::test]
async fn a_deploy_supersedes_a_paused_rollout() {
    let (mut harness, revisions) = settled(Placement::Tasks).await;
    let first = harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[1],
            two_at_a_time(),
        ))
        .await
        .unwrap()
        .rollout
        .unwrap();
    harness
        .run_for(Duration::seconds(5), Duration::seconds(1))
        .await;
    harness
        .control_rollout(control(ControlVerb::Pause))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[2],
            two_at_a_time(),
        ))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(15), 60).await;
    assert_eq!(on_revision(&harness, &revisions[2]), 6);
    let superseded = rollout_of(&harness, &first.id).await;
    assert_eq!(superseded.state, RolloutState::Superseded);
    assert!(
        superseded.control.paused.is_some(),
        "its history keeps the pause"
    );
}

#[tokio::test]
async fn controls_that_cannot_apply_are_refused_and_change_nothing() {
    let (mut harness, revisions) = settled(Placement::Tasks).await;
    let refused = |error: DeployError, kind: &str, words: &str| {
        assert!(
            format!("{error:?}").starts_with(kind) && error.to_string().contains(words),
            "{error:?}: {error}"
        );
    };
    let unknown = RolloutControlRequest {
        daemon: "nope".into(),
        ..control(ControlVerb::Pause)
    };
    refused(
        harness.control_rollout(unknown).await.unwrap_err(),
        "UnknownDaemon",
        "deploy it first",
    );
    refused(
        harness
            .control_rollout(control(ControlVerb::Pause))
            .await
            .unwrap_err(),
        "NoRolloutInProgress",
        "nothing to pause",
    );
    let rollout = harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[1],
            two_at_a_time(),
        ))
        .await
        .unwrap()
        .rollout
        .unwrap();
    let before = rollout_of(&harness, &rollout.id).await;
    refused(
        harness
            .control_rollout(control(ControlVerb::Resume))
            .await
            .unwrap_err(),
        "NotPaused",
        "nothing to resume",
    );
    refused(
        harness
            .control_rollout(control(ControlVerb::Promote))
            .await
            .unwrap_err(),
        "CanaryNotWaiting",
        "no manual canary",
    );
    let long_name = RolloutControlRequest {
        by: Some("x".repeat(300)),
        ..control(ControlVerb::Pause)
    };
    refused(
        harness.control_rollout(long_name).await.unwrap_err(),
        "InvalidRequest",
        "`by`",
    );
    assert_eq!(
        rollout_of(&harness, &rollout.id).await,
        before,
        "nothing written"
    );
    let unknown_verb = parse_payload::<RolloutControlRequest>(serde_json::json!({
        "cluster": CLUSTER, "daemon": AGENT, "control": "stop"
    }))
    .unwrap_err();
    refused(unknown_verb, "InvalidRequest", "`control`");
    let bad_canary = parse_payload::<DeployRequest>(serde_json::json!({
        "cluster": CLUSTER, "daemon": AGENT, "taskDefinition": revisions[1],
        "capacityProviders": ["general"], "rollout": {"canary": {"instances": 1, "promote": "later"}}
    }))
    .unwrap_err();
    refused(bad_canary, "InvalidRequest", "promote");
}

#[tokio::test]
async fn a_daemon_on_managed_instances_only_cannot_be_paused() {
    let mut harness = Harness::new(CLUSTER, &["mi-general"], ModelConfig::default());
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness
        .model
        .launch_managed_instances(CLUSTER, "mi-general", 2);
    let definition = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
    harness
        .deploy(DeployRequest {
            task_definition: None,
            daemon_task_definition: Some(definition),
            ..DeployRequest::new(CLUSTER, AGENT, "unused:1", &["mi-general"], 0)
        })
        .await
        .unwrap();
    let error = harness
        .control_rollout(control(ControlVerb::Pause))
        .await
        .unwrap_err();
    assert!(
        matches!(error, DeployError::ControlOnManagedInstances { .. })
            && error.to_string().contains("roll back"),
        "{error}"
    );
}
