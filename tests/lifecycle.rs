//! Scale-in that waits for the daemons: a terminate lifecycle hook held while the instance
//! drains (applications first, daemons last), heartbeated while that takes long, completed
//! with CONTINUE once the daemons stopped, let go at the limit, and never looped on.

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::holds::{HoldEndReason, HoldReport, HoldSettings};
use ecs_daemons::model::TaskStatus;
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::{Harness, Invocation};

const CLUSTER: &str = "prod";

/// A cluster whose group has a terminate hook (heartbeat timeout 300 s), the agent on every
/// instance, and on the victim a standalone batch task that ignores draining.
async fn setup(limit: Duration) -> (Harness, String, String) {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    harness.model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(300),
    );
    harness.set_hold_settings(HoldSettings::new(Duration::seconds(300), limit));
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 512, 512));
    let batch = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
    for _ in 0..3 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    harness
        .deploy(DeployRequest::new(
            CLUSTER,
            "agent",
            &agent,
            &["general"],
            0,
        ))
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(30), Duration::seconds(1))
        .await;
    let victim = harness.model.instances(CLUSTER)[0].arn.clone();
    let job = harness
        .model
        .start_foreign_task(
            CLUSTER,
            &victim,
            &batch,
            "family:batch",
            Some("nightly-job"),
        )
        .unwrap();
    harness
        .run_for(Duration::seconds(10), Duration::seconds(1))
        .await;
    (harness, victim, job)
}

fn reports(invocations: &[Invocation]) -> Vec<(&'static str, HoldReport)> {
    invocations
        .iter()
        .filter_map(|i| i.result.as_ref().ok().map(|o| (i.function, o)))
        .flat_map(|(function, o)| o.terminations.iter().map(move |r| (function, r.clone())))
        .collect()
}

fn daemons_on(harness: &Harness, instance: &str) -> usize {
    harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| instance.ends_with(&t.instance_id) && t.group.starts_with("daemon:"))
        .filter(|t| !t.last_status.is_terminal())
        .count()
}

#[tokio::test]
async fn a_terminating_instance_drains_and_continues_only_after_its_daemons_stopped() {
    let (mut harness, victim, job) = setup(Duration::hours(1)).await;
    let action = harness
        .model
        .scale_in(CLUSTER, &victim)
        .expect("the hook holds it");
    // The batch job runs 12 minutes: longer than the hook's 300 s heartbeat timeout.
    let mut seen = harness.run_scheduled(Duration::seconds(720), 60).await;
    assert_eq!(
        harness.model.waiting_terminations(),
        vec![action.ec2_instance_id.clone()]
    );
    assert_eq!(
        daemons_on(&harness, &victim),
        1,
        "the agent stays while the job runs"
    );
    let stats = harness.model.hook_stats();
    assert!(
        stats.heartbeats >= 3,
        "heartbeats kept the hook alive: {stats:?}"
    );
    assert_eq!(stats.timed_out, 0);
    harness.model.crash_task(CLUSTER, &job);
    seen.extend(harness.run_scheduled(Duration::seconds(120), 60).await);

    let stats = harness.model.hook_stats();
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert!(stats.completed_with_tasks.is_empty(), "{stats:?}");
    assert!(harness.model.early_drain_stops().is_empty());
    assert!(harness.model.waiting_terminations().is_empty());
    assert!(
        harness
            .model
            .instances(CLUSTER)
            .iter()
            .all(|i| i.arn != victim),
        "the instance terminated"
    );
    let reports = reports(&seen);
    assert!(reports
        .iter()
        .any(|(f, r)| *f == "lifecycle-hook" && r.action == "held"));
    let completion = reports
        .iter()
        .find(|(_, r)| r.action == "completed")
        .expect("a completion was reported");
    assert_eq!(completion.1.reason, Some(HoldEndReason::Drained));
    assert!(
        reports
            .iter()
            .filter(|(_, r)| r.action == "heartbeat")
            .count()
            >= 3,
        "{reports:?}"
    );
}

#[tokio::test]
async fn a_drain_past_the_limit_is_let_go_and_reported() {
    let (mut harness, victim, _job) = setup(Duration::minutes(10)).await;
    harness.model.scale_in(CLUSTER, &victim).unwrap();
    let seen = harness.run_scheduled(Duration::minutes(13), 60).await;
    let stats = harness.model.hook_stats();
    assert_eq!(stats.completed, 1, "completed at the limit: {stats:?}");
    assert_eq!(stats.timed_out, 0, "never left to time out");
    assert_eq!(
        stats.completed_with_tasks.len(),
        1,
        "the job (and the agent beside it) were still there: {stats:?}"
    );
    let reports = reports(&seen);
    let completion = reports
        .iter()
        .find(|(_, r)| r.action == "completed")
        .expect("reported");
    assert_eq!(completion.0, "coverage-check");
    assert_eq!(completion.1.reason, Some(HoldEndReason::LimitReached));
    assert!(completion.1.detail.contains("limit"), "{:?}", completion.1);
}

#[tokio::test]
async fn an_instance_outside_the_managed_clusters_continues_at_once() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    harness.model.create_cluster("unmanaged", &["general"]);
    harness.model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(300),
    );
    let stranger = harness
        .model
        .add_instance("unmanaged", "general", 4096, 8192);
    harness.model.advance(Duration::seconds(5));
    harness.model.take_due_events();
    harness.model.scale_in("unmanaged", &stranger).unwrap();
    let seen = harness
        .run_for(Duration::seconds(5), Duration::seconds(1))
        .await;
    let stats = harness.model.hook_stats();
    assert_eq!(stats.completed, 1, "{stats:?}");
    let reports = reports(&seen);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].1.action, "completed");
    assert!(reports[0]
        .1
        .detail
        .contains("not a container instance of a managed cluster"));
}

#[tokio::test]
async fn stale_tokens_and_completed_hooks_are_logged_not_looped() {
    let (mut harness, victim, job) = setup(Duration::hours(1)).await;
    let action = harness.model.scale_in(CLUSTER, &victim).unwrap();
    harness
        .run_for(Duration::seconds(5), Duration::seconds(1))
        .await;
    let event = |token: &str| {
        serde_json::json!({
            "version": "0", "id": format!("replay-{token}"), "detail-type": "EC2 Instance-terminate Lifecycle Action",
            "source": "aws.autoscaling", "account": "111122223333", "time": "2026-11-24T09:01:00Z", "region": "us-east-1",
            "resources": [], "detail": {
                "LifecycleActionToken": token, "AutoScalingGroupName": action.group, "LifecycleHookName": action.hook,
                "EC2InstanceId": action.ec2_instance_id, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"
            }
        })
    };
    // A stale token while the real action waits: ignored, the hold keeps the real token.
    let stale = harness
        .deliver_termination(event("00000000-0000-0000-0000-000000000000"))
        .await;
    let answer = stale.result.expect("answered, not failed");
    assert_eq!(
        answer.terminations[0].reason,
        Some(HoldEndReason::AlreadyEnded)
    );
    assert!(answer.terminations[0].detail.contains("stale"));
    assert_eq!(harness.model.waiting_terminations().len(), 1);
    // The same event again (EventBridge delivers at least once): held once, no error.
    let again = harness
        .deliver_termination(event(action.token.as_deref().unwrap_or_default()))
        .await;
    assert!(again.result.is_ok(), "{:?}", again.result);
    harness.model.crash_task(CLUSTER, &job);
    harness.run_scheduled(Duration::seconds(120), 60).await;
    assert_eq!(harness.model.hook_stats().completed, 1);
    // After completion: the instance is gone; a late copy of the event is answered, not retried.
    let late = harness
        .deliver_termination(event(action.token.as_deref().unwrap_or_default()))
        .await;
    let answer = late.result.expect("a late event is not an error");
    assert_eq!(
        answer.terminations[0].reason,
        Some(HoldEndReason::AlreadyEnded)
    );
    assert!(harness.model.hook_stats().completed_with_tasks.is_empty());
    assert_eq!(
        harness
            .model
            .tasks(CLUSTER)
            .iter()
            .filter(|t| t.last_status == TaskStatus::Running && victim.ends_with(&t.instance_id))
            .count(),
        0
    );
}

#[tokio::test]
async fn another_hooks_event_is_ignored_never_completed() {
    // ECS managed draining adds its own terminate hook to the group; Auto Scaling sends an
    // event per hook. Only ecs-daemons' own (LIFECYCLE_HOOK_NAME) is acted on.
    let (mut harness, victim, _job) = setup(Duration::hours(1)).await;
    let ec2_instance_id = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .find(|i| i.arn == victim)
        .and_then(|i| i.ec2_instance_id)
        .unwrap();
    let event = serde_json::json!({
        "version": "0", "id": "other-hook-1", "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling", "account": "111122223333", "time": "2026-11-24T09:01:00Z", "region": "us-east-1",
        "resources": [], "detail": {
            "LifecycleActionToken": "6f1c2d3e-0000-4000-8000-000000000001", "AutoScalingGroupName": "asg-general",
            "LifecycleHookName": "ecs-managed-draining-termination-hook",
            "EC2InstanceId": ec2_instance_id, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"
        }
    });
    let answer = harness
        .deliver_termination(event)
        .await
        .result
        .expect("answered, not failed");
    assert_eq!(answer.terminations.len(), 1, "{:?}", answer.terminations);
    assert_eq!(answer.terminations[0].action, "ignored");
    assert!(answer.terminations[0]
        .detail
        .contains("ecs-managed-draining-termination-hook"));
    let stats = harness.model.hook_stats();
    assert_eq!((stats.heartbeats, stats.completed), (0, 0), "{stats:?}");
    let instance = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .find(|i| i.arn == victim)
        .unwrap();
    assert_eq!(
        instance.status,
        ecs_daemons::model::InstanceStatus::Active,
        "not drained for another hook's event"
    );
    assert_eq!(daemons_on(&harness, &victim), 1);
}

/// EC2 Auto Scaling keeps an instance in a wait state at most 48 hours or 100 times the
/// heartbeat timeout, whichever is smaller: heartbeats do not hold it longer (the model's rule
/// the hold settings are checked against, `holds::HoldSettings`).
#[tokio::test]
async fn heartbeats_hold_a_terminating_instance_no_longer_than_auto_scaling_allows() {
    use ecs_daemons::autoscaling::AutoScaling;
    use ecs_daemons_sim::cluster_model::ClusterModel;
    let model = ClusterModel::new(ModelConfig::default());
    model.create_cluster(CLUSTER, &["general"]);
    model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(60),
    );
    let instance = model.add_instance(CLUSTER, "general", 4096, 8192);
    let action = model
        .scale_in(CLUSTER, &instance)
        .expect("the hook holds it");
    let started = model.now();
    // A heartbeat every 30 s, for 100 × 60 s.
    while model.now() - started < Duration::seconds(6000 - 30) {
        model.advance(Duration::seconds(30));
        model
            .record_lifecycle_action_heartbeat(&action)
            .await
            .expect("the action still waits");
    }
    assert_eq!(model.waiting_terminations().len(), 1);
    model.advance(Duration::seconds(30));
    assert!(
        model.waiting_terminations().is_empty(),
        "at 100 × the heartbeat timeout the instance goes, heartbeats or not"
    );
    assert!(model
        .record_lifecycle_action_heartbeat(&action)
        .await
        .is_err());
    assert_eq!(model.hook_stats().timed_out, 1);
}
