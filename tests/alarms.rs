//! Alarm-gated rollouts on the cluster model (`rollout.alarms`): an alarm in ALARM while the
//! rollout runs or bakes fails it and rolls back, on standalone tasks, on DAEMON services and
//! (ECS's own field) on Managed Instances; a quiet bake ends in success; alarms that cannot be
//! read neither fail nor finish a rollout; and every mistake in the field is refused with the
//! fix, changing nothing.

use chrono::Duration;
use ecs_daemons::alarms::AlarmValue;
use ecs_daemons::deploy::{DaemonStatus, DeployError, DeployRequest, RolloutView};
use ecs_daemons::ecs::DaemonDeploymentStatus;
use ecs_daemons::model::CapacityProviderKind;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutKind, RolloutState};
use ecs_daemons::store::Store;
use ecs_daemons_sim::cluster_model::{AlarmCheck, DaemonDefinitionModel, ModelConfig, NativeKnobs};
use ecs_daemons_sim::simulation::Harness;

mod placements;
use placements::{deploy_request, on_revision, Placement, AGENT, CLUSTER};

const ERRORS: &str = "agent-errors";
const LATENCY: &str = "checkout-p99";

fn gated(bake_seconds: Option<u32>) -> RolloutConfig {
    RolloutConfig {
        max_parallel: Amount::Count(1),
        min_healthy_seconds: 30,
        alarms: vec![ERRORS.into(), LATENCY.into()],
        bake_seconds,
        ..RolloutConfig::default()
    }
}

/// Six instances on the agent's first revision, the two alarms created (one judging over
/// 3 × 60 s, one over 2 × 300 s) and OK.
async fn settled(placement: Placement) -> (Harness, Vec<String>) {
    placements::settled(placement, 2, RolloutConfig::default(), |harness| {
        harness.model.put_metric_alarm(ERRORS, 60, 3);
        harness.model.put_metric_alarm(LATENCY, 300, 2);
    })
    .await
}

/// The rollout `id` as status shows it (in flight or latest, else in the history).
fn find(status: &DaemonStatus, id: &str) -> RolloutView {
    status
        .rollout
        .iter()
        .chain(&status.history)
        .find(|r| r.id == id)
        .cloned()
        .expect("the rollout is in the status")
}

/// Runs minute by minute until every instance runs `revision` alone (at most twelve
/// minutes), then a minute more: the last old copy stops after minHealthySeconds.
async fn run_until_all_on(harness: &mut Harness, revision: &str) {
    for _ in 0..12 {
        if on_revision(harness, revision) == 6 {
            harness.run_scheduled(Duration::minutes(1), 60).await;
            return;
        }
        harness.run_scheduled(Duration::minutes(1), 60).await;
    }
    panic!("not every instance reached {revision}");
}

async fn alarm_mid_rollout_rolls_back(placement: Placement) {
    let (mut harness, revisions) = settled(placement).await;
    let answer = harness
        .deploy(deploy_request(placement, &revisions[1], gated(None)))
        .await
        .unwrap();
    let rollout = answer.rollout.unwrap();
    assert_eq!(
        rollout.config.bake_seconds,
        Some(600),
        "the bake derived as ECS derives it: the longest window an alarm judges over"
    );
    // One instance at a time: two minutes in, part of the fleet is on the new revision.
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let spread = on_revision(&harness, &revisions[1]);
    assert!(
        (1..6).contains(&spread),
        "mid-rollout: {spread} on the new revision"
    );
    harness
        .model
        .set_alarm_state(ERRORS, AlarmValue::Alarm, "Threshold Crossed: 7 errors");
    harness.run_scheduled(Duration::seconds(61), 60).await;

    let status = harness.daemon_status(AGENT).await;
    let failed = find(&status, &rollout.id);
    assert_eq!(failed.state, RolloutState::Failed, "{placement:?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(ERRORS) && reason.contains("while the rollout ran"),
        "{reason}"
    );
    let alarms = failed.alarms.clone().expect("its alarms are shown");
    assert_eq!(alarms.status, "TRIGGERED");
    assert_eq!(alarms.triggered_alarm_names, vec![ERRORS.to_string()]);
    // The automatic rollback is not gated by the alarm that failed its predecessor.
    harness.run_scheduled(Duration::minutes(6), 60).await;
    assert_eq!(on_revision(&harness, &revisions[0]), 6, "{placement:?}");
    assert_eq!(on_revision(&harness, &revisions[1]), 0, "{placement:?}");
    let status = harness.daemon_status(AGENT).await;
    let rollback = status.rollout.clone().expect("the latest rollout");
    assert_eq!(rollback.kind, RolloutKind::AutoRollback);
    assert_eq!(rollback.state, RolloutState::Succeeded);
    assert!(rollback.alarms.is_none(), "a rollback is not gated");
}

#[tokio::test]
async fn an_alarm_mid_rollout_of_tasks_fails_it_and_rolls_back() {
    alarm_mid_rollout_rolls_back(Placement::Tasks).await;
}

#[tokio::test]
async fn an_alarm_mid_rollout_on_daemon_services_fails_it_and_rolls_back() {
    alarm_mid_rollout_rolls_back(Placement::Services).await;
}

#[tokio::test]
async fn the_rollout_bakes_after_its_last_instance_and_an_alarm_then_still_rolls_back() {
    let (mut harness, revisions) = settled(Placement::Tasks).await;
    let quiet = harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[1],
            gated(Some(240)),
        ))
        .await
        .unwrap()
        .rollout
        .unwrap();
    run_until_all_on(&mut harness, &revisions[1]).await;
    let status = harness.daemon_status(AGENT).await;
    let baking = status.rollout.expect("the rollout");
    assert_eq!(baking.id, quiet.id);
    assert_eq!(baking.state, RolloutState::InProgress);
    assert_eq!(baking.percent_done, 100);
    let alarms = baking.alarms.expect("its alarms are shown");
    assert_eq!(alarms.status, "MONITORING");
    assert_eq!(alarms.bake_seconds, 240);
    let until = alarms.baking_until.expect("the bake's end is shown");
    assert!(until > harness.model.now(), "{until}");
    // A quiet bake ends in success, within a minute of its end.
    let left = (until - harness.model.now()).num_seconds() + 60;
    harness.run_scheduled(Duration::seconds(left), 60).await;
    let done = harness.daemon_status(AGENT).await;
    assert_ne!(
        done.rollout.as_ref().map(|r| r.state),
        Some(RolloutState::InProgress)
    );
    let succeeded = find(&done, &quiet.id);
    assert_eq!(succeeded.state, RolloutState::Succeeded);
    assert_eq!(
        succeeded.alarms.as_ref().unwrap().status,
        "MONITORING_COMPLETE"
    );

    // Back to the first revision with the same gate; the alarm fires during the bake.
    let noisy = harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[0],
            gated(Some(240)),
        ))
        .await
        .unwrap()
        .rollout
        .unwrap();
    run_until_all_on(&mut harness, &revisions[0]).await;
    let baking = harness.daemon_status(AGENT).await.rollout.unwrap();
    assert!(baking.alarms.unwrap().baking_until.is_some());
    harness
        .model
        .set_alarm_state(LATENCY, AlarmValue::Alarm, "p99 above 800 ms");
    harness.run_scheduled(Duration::seconds(61), 60).await;
    let status = harness.daemon_status(AGENT).await;
    let failed = find(&status, &noisy.id);
    assert_eq!(failed.state, RolloutState::Failed);
    assert!(
        failed
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(LATENCY) && r.contains("during the bake")),
        "{:?}",
        failed.reason
    );
    harness.run_scheduled(Duration::minutes(8), 60).await;
    assert_eq!(
        on_revision(&harness, &revisions[1]),
        6,
        "rolled back to the revision the bake failed away from"
    );
}

#[tokio::test]
async fn alarms_that_cannot_be_read_neither_fail_nor_finish_a_rollout() {
    let (mut harness, revisions) = settled(Placement::Tasks).await;
    let rollout = harness
        .deploy(deploy_request(
            Placement::Tasks,
            &revisions[1],
            gated(Some(60)),
        ))
        .await
        .unwrap()
        .rollout
        .unwrap();
    // CloudWatch throttles every read from now on for a while; meanwhile an alarm fires.
    harness.model.throttle_alarm_reads(1_000);
    harness
        .model
        .set_alarm_state(ERRORS, AlarmValue::Alarm, "unseen");
    run_until_all_on(&mut harness, &revisions[1]).await;
    harness.run_scheduled(Duration::minutes(5), 60).await;
    let status = harness.daemon_status(AGENT).await;
    let waiting = find(&status, &rollout.id);
    assert_eq!(waiting.id, rollout.id);
    assert_eq!(waiting.state, RolloutState::InProgress);
    assert_eq!(
        waiting.alarms.as_ref().map(|a| a.status),
        Some("MONITORING"),
        "an alarm nobody saw fails nothing"
    );
    // The alarm clears, then CloudWatch answers again.
    harness
        .model
        .set_alarm_state(ERRORS, AlarmValue::Ok, "recovered");
    harness.model.throttle_alarm_reads(0);
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let status = harness.daemon_status(AGENT).await;
    assert_eq!(find(&status, &rollout.id).state, RolloutState::Succeeded);
    assert!(
        harness.model.alarm_reads() > 5,
        "read every reconcile meanwhile"
    );
}

#[tokio::test]
async fn mistakes_in_rollout_alarms_are_refused_with_the_fix_and_change_nothing() {
    let (mut harness, revisions) = settled(Placement::Tasks).await;
    let before: Vec<ecs_daemons::store::Versioned<ecs_daemons::rollout::Rollout>> =
        harness.store.query(CLUSTER, AGENT).await.unwrap();
    let with = |alarms: Vec<&str>, bake_seconds: Option<u32>| {
        deploy_request(
            Placement::Tasks,
            &revisions[1],
            RolloutConfig {
                alarms: alarms.into_iter().map(str::to_string).collect(),
                bake_seconds,
                ..RolloutConfig::default()
            },
        )
    };
    let unknown = harness
        .deploy(with(vec![ERRORS, "agent-erorrs"], None))
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, DeployError::UnknownAlarm { names } if names == "agent-erorrs"),
        "{unknown}"
    );
    assert!(
        unknown.to_string().contains("fix `rollout.alarms`"),
        "{unknown}"
    );
    let cases = [
        (with(vec![], Some(60)), "name the alarms"),
        (with(vec![ERRORS, ERRORS], None), "twice"),
        (with(vec![""], None), "rollout.alarms[0]"),
        (with(vec![ERRORS], Some(90_000)), "at most 86400"),
    ];
    for (request, fix) in cases {
        let error = harness.deploy(request).await.unwrap_err();
        assert!(
            matches!(error, DeployError::InvalidRequest(_)) && error.to_string().contains(fix),
            "{error}"
        );
    }
    let eleven: Vec<String> = (0..11).map(|i| format!("alarm-{i}")).collect();
    let error = harness
        .deploy(with(eleven.iter().map(String::as_str).collect(), None))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at most 10"), "{error}");
    // A payload with a wrong type names the field.
    let payload = serde_json::json!({
        "cluster": CLUSTER, "daemon": AGENT, "taskDefinition": revisions[1],
        "capacityProviders": ["general"], "rollout": {"alarms": "agent-errors"}
    });
    let error = ecs_daemons::deploy::parse_payload::<DeployRequest>(payload).unwrap_err();
    assert!(error.to_string().contains("rollout.alarms"), "{error}");
    let after: Vec<ecs_daemons::store::Versioned<ecs_daemons::rollout::Rollout>> =
        harness.store.query(CLUSTER, AGENT).await.unwrap();
    assert_eq!(before.len(), after.len(), "no rollout recorded");
    assert_eq!(on_revision(&harness, &revisions[0]), 6, "nothing moved");
}

/// On Managed Instances the alarms are ECS's own (`DaemonAlarmConfiguration`): ECS fails and
/// rolls back its deployment, and the rollout record names the alarm, whether ECS looks at
/// them only at each step (the model's default, as the guide says nothing) or as they fire.
#[tokio::test]
async fn on_managed_instances_ecs_watches_the_alarms_and_rolls_back() {
    for (check, at_once) in [
        (AlarmCheck::AtEachStep, false),
        (AlarmCheck::WhenAlarmFires, true),
    ] {
        ecs_watches_the_alarms(check, at_once).await;
    }
}

async fn ecs_watches_the_alarms(check: AlarmCheck, at_once: bool) {
    let config = ModelConfig {
        native: NativeKnobs {
            alarm_check: check,
            ..NativeKnobs::default()
        },
        ..ModelConfig::default()
    };
    let mut harness = Harness::new(CLUSTER, &["mi-general"], config);
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness
        .model
        .launch_managed_instances(CLUSTER, "mi-general", 8);
    harness.model.put_metric_alarm(ERRORS, 60, 3);
    let definition = || DaemonDefinitionModel::new("cloudwatch-agent-daemon", 1024, 512);
    let good = harness.model.register_daemon_task_definition(definition());
    let next = harness.model.register_daemon_task_definition(definition());
    let request = |revision: &str| DeployRequest {
        task_definition: None,
        daemon_task_definition: Some(revision.into()),
        rollout: Some(RolloutConfig {
            alarms: vec![ERRORS.into()],
            ..RolloutConfig::default()
        }),
        ..DeployRequest::new(CLUSTER, "cloudwatch-agent", "unused:1", &["mi-general"], 0)
    };
    harness.deploy(request(&good)).await.unwrap();
    harness.run_scheduled(Duration::minutes(30), 60).await;
    let updated = harness.deploy(request(&next)).await.unwrap();
    let rollout_id = updated.managed.unwrap().rollout.unwrap().id;
    harness.run_scheduled(Duration::minutes(2), 60).await;
    harness
        .model
        .set_alarm_state(ERRORS, AlarmValue::Alarm, "Threshold Crossed");
    let latest = harness.model.managed_truth(CLUSTER)[0]
        .latest
        .clone()
        .unwrap();
    assert_eq!(
        latest.status != DaemonDeploymentStatus::InProgress,
        at_once,
        "{check:?}: {:?}",
        latest.status
    );
    harness.run_scheduled(Duration::minutes(40), 60).await;
    let status = harness.daemon_status("cloudwatch-agent").await;
    let ended = find(&status, &rollout_id);
    assert_eq!(ended.state, RolloutState::Failed, "{:?}", ended.reason);
    assert_eq!(
        ended.alarms.as_ref().unwrap().triggered_alarm_names,
        vec![ERRORS.to_string()]
    );
    assert!(
        ended.reason.as_deref().is_some_and(|r| r.contains(&good)),
        "{:?}",
        ended.reason
    );
}
