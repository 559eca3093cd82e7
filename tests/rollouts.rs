//! Rolling updates on the cluster model: new copy first, old one after
//! minHealthySeconds, maxParallel and canary pacing, the circuit breaker with
//! automatic rollback, manual rollback, and the no-room fallbacks.

use chrono::Duration;
use ecs_daemons::deploy::{status, DeployRequest, RollbackRequest, StatusRequest};
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutKind, RolloutState, SurgeFallback};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";

fn deploy_request(task_definition: &str, config: Option<RolloutConfig>) -> DeployRequest {
    DeployRequest {
        rollout: config,
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &["general"], 0)
    }
}

fn config(max_parallel: u32) -> RolloutConfig {
    RolloutConfig {
        max_parallel: Amount::Count(max_parallel),
        min_healthy_seconds: 30,
        ..RolloutConfig::default()
    }
}

/// Per instance: the revisions of the live copies of the daemon.
fn copies(harness: &Harness) -> Vec<(String, Vec<String>, bool)> {
    let tasks = harness.model.tasks(CLUSTER);
    harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| {
            let mut live: Vec<String> = tasks
                .iter()
                .filter(|t| t.instance_id == i.id() && t.group == format!("daemon:{DAEMON}"))
                .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
                .map(|t| {
                    format!(
                        "{}{}",
                        t.definition,
                        if t.last_status == TaskStatus::Running {
                            ""
                        } else {
                            "(pending)"
                        }
                    )
                })
                .collect();
            live.sort();
            let ready = i
                .attributes
                .get(READY_ATTRIBUTE)
                .is_some_and(|v| v.as_deref() == Some("true"));
            (i.id().to_string(), live, ready)
        })
        .collect()
}

/// Runs `seconds` with a coverage check every minute, checking the rollout invariants every second.
async fn run_checked(
    harness: &mut Harness,
    seconds: i64,
    max_parallel: usize,
    gaps_allowed: bool,
) -> usize {
    let mut peak_in_flight = 0;
    for second in 1..=seconds {
        harness.model.advance(Duration::seconds(1));
        harness.deliver_events().await;
        let mut checks = harness.deliver_wakes().await;
        if (harness.model.now().timestamp() % 60) == 0 {
            checks.push(harness.scheduled_check().await);
        }
        for check in checks {
            assert!(check.result.is_ok(), "{:?}", check.result);
        }
        let state = copies(harness);
        let mut in_flight = 0;
        for (instance, live, ready) in &state {
            assert!(
                live.len() <= 2,
                "never more than two copies: {instance} has {live:?} at second {second}"
            );
            in_flight += usize::from(live.len() == 2);
            let running = live.iter().any(|l| !l.ends_with("(pending)"));
            assert!(
                !ready || running || gaps_allowed,
                "ready instance {instance} without a running copy: {live:?} at second {second}"
            );
        }
        assert!(
            in_flight <= max_parallel,
            "{in_flight} instances in flight, maxParallel {max_parallel}, at second {second}"
        );
        peak_in_flight = peak_in_flight.max(in_flight);
    }
    peak_in_flight
}

async fn setup(instances: usize, cpu: i64) -> (Harness, Vec<String>) {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let revisions: Vec<String> = (0..3)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(DAEMON, 1024, 512))
        })
        .collect();
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", cpu, 8192);
    }
    harness
        .deploy(deploy_request(&revisions[0], None))
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(20), Duration::seconds(1))
        .await;
    (harness, revisions)
}

async fn agent_status(harness: &Harness) -> ecs_daemons::deploy::DaemonStatus {
    let answer = status(
        &harness.engine,
        StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(DAEMON.into()),
        },
        harness.model.now(),
    )
    .await;
    answer.unwrap().daemons.remove(0)
}

#[tokio::test]
async fn an_update_starts_new_copies_first_three_at_a_time() {
    let (mut harness, revisions) = setup(10, 4096).await;
    let answer = harness
        .deploy(deploy_request(&revisions[1], Some(config(3))))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "rollout");
    assert_eq!(
        harness.last_stream_check().unwrap().started.len(),
        3,
        "the first batch starts at once (the coverage-check the rollout's record starts)"
    );
    let peak = run_checked(&mut harness, 600, 3, false).await;
    assert_eq!(peak, 3, "three instances in flight at the busiest");

    let state = copies(&harness);
    assert!(
        state
            .iter()
            .all(|(_, live, ready)| live == &vec![revisions[1].clone()] && *ready),
        "{state:?}"
    );
    let agent = agent_status(&harness).await;
    let rollout = agent.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Succeeded);
    assert_eq!(
        (
            rollout.counts.done,
            rollout.counts.total,
            rollout.percent_done
        ),
        (10, 10, 100)
    );
    assert_eq!(
        rollout.from_task_definition.as_deref(),
        Some(revisions[0].as_str())
    );
    let spec: ecs_daemons::store::Versioned<ecs_daemons::spec::DaemonSpec> = {
        use ecs_daemons::store::Store;
        harness
            .store
            .get(&ecs_daemons::store::ItemKey::spec(CLUSTER, DAEMON))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        spec.record.last_good_task_definition.as_deref(),
        Some(revisions[1].as_str())
    );
    assert_eq!(spec.record.active_rollout, None);
}

#[tokio::test]
async fn a_canary_batch_finishes_before_the_rest() {
    let (mut harness, revisions) = setup(8, 4096).await;
    let canary = RolloutConfig {
        canary: Some(ecs_daemons::rollout::Canary::automatic(1)),
        ..config(4)
    };
    let answer = harness
        .deploy(deploy_request(&revisions[1], Some(canary)))
        .await
        .unwrap();
    assert!(answer.reconcile.is_none());
    assert_eq!(
        harness.last_stream_check().unwrap().started.len(),
        1,
        "only the canary starts"
    );
    // Until the canary is done (start 5 s + 30 s healthy), nothing else starts.
    run_checked(&mut harness, 30, 1, false).await;
    let on_new = copies(&harness)
        .iter()
        .filter(|(_, live, _)| live.contains(&revisions[1]))
        .count();
    assert_eq!(on_new, 1);
    run_checked(&mut harness, 400, 4, false).await;
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, _)| live == &vec![revisions[1].clone()]));
}

#[tokio::test]
async fn a_bad_revision_trips_the_breaker_and_rolls_back_by_itself() {
    let (mut harness, revisions) = setup(10, 4096).await;
    harness
        .deploy(deploy_request(&revisions[1], Some(config(3))))
        .await
        .unwrap();
    run_checked(&mut harness, 600, 3, false).await;
    let denied = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 1024, 512)
    });
    let bad = RolloutConfig {
        failure_threshold: Amount::Count(2),
        ..config(3)
    };
    harness
        .deploy(deploy_request(&denied, Some(bad)))
        .await
        .unwrap();
    run_checked(&mut harness, 600, 3, false).await;

    let agent = agent_status(&harness).await;
    let rollout = agent.rollout.unwrap();
    assert_eq!(rollout.kind, RolloutKind::AutoRollback);
    assert_eq!(rollout.state, RolloutState::Succeeded);
    assert_eq!(rollout.to_task_definition, revisions[1]);
    let failed = agent
        .history
        .iter()
        .find(|r| r.to_task_definition == denied)
        .unwrap();
    assert_eq!(failed.state, RolloutState::Failed);
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("circuit breaker"),
        "{:?}",
        failed.reason
    );
    assert!(
        failed
            .failures
            .iter()
            .any(|f| f.reason.contains("AccessDeniedException")),
        "{:?}",
        failed.failures
    );
    assert!(
        failed.counts.failures >= 2 && failed.counts.failures <= 3,
        "the breaker stopped it early: {:?}",
        failed.counts
    );
    let starts_of_bad = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.definition == denied)
        .count();
    assert!(
        starts_of_bad <= 3,
        "no new instance touched after the trip: {starts_of_bad} starts"
    );
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, ready)| live == &vec![revisions[1].clone()] && *ready));
}

#[tokio::test]
async fn manual_rollback_is_a_rollout_and_refuses_nonsense() {
    let (mut harness, revisions) = setup(6, 4096).await;
    harness
        .deploy(deploy_request(&revisions[1], Some(config(2))))
        .await
        .unwrap();
    run_checked(&mut harness, 400, 2, false).await;

    let request = |to: Option<u32>| RollbackRequest {
        cluster: CLUSTER.into(),
        daemon: DAEMON.into(),
        to_revision: to,
        dry_run: false,
    };
    let error = harness
        .rollback(request(Some(2)))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("already on"), "{error}");
    let error = harness
        .rollback(request(Some(42)))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("agent:42 was not found"), "{error}");
    let unknown = RollbackRequest {
        daemon: "nobody".into(),
        ..request(None)
    };
    assert!(harness
        .rollback(unknown)
        .await
        .unwrap_err()
        .to_string()
        .contains("unknown daemon nobody"));
    let no_role = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_arn: None,
        ..TaskDefinitionModel::new(DAEMON, 1024, 512)
    });
    let revision = no_role.rsplit(':').next().unwrap().parse().unwrap();
    assert!(harness
        .rollback(request(Some(revision)))
        .await
        .unwrap_err()
        .to_string()
        .contains("no execution role"));

    // The update succeeded, so revision 2 is the good one: a plain rollback goes to the good
    // revision before it.
    let answer = harness.rollback(request(None)).await.unwrap();
    assert_eq!(answer.rollout.as_ref().unwrap().kind, RolloutKind::Rollback);
    assert_eq!(
        answer.task_definition.as_deref(),
        Some(revisions[0].as_str())
    );
    run_checked(&mut harness, 400, 2, false).await;
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, _)| live == &vec![revisions[0].clone()]));
    let agent = agent_status(&harness).await;
    assert_eq!(agent.rollout.unwrap().state, RolloutState::Succeeded);
    assert_eq!(agent.history.len(), 1, "the update before it");
    // Once more (a retry after a lost answer, say) does not undo it: already there. Going
    // back to revision 2 takes naming it.
    let again = harness
        .rollback(request(None))
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("already on"), "{again}");
    let named = harness.rollback(request(Some(2))).await.unwrap();
    assert_eq!(
        named.task_definition.as_deref(),
        Some(revisions[1].as_str())
    );
}

#[tokio::test]
async fn without_room_for_two_copies_the_fallback_decides() {
    // 1.5 vCPU instances: one 1 vCPU copy fits, two do not.
    let (mut harness, revisions) = setup(4, 1536).await;
    let stop_first = RolloutConfig {
        surge_fallback: SurgeFallback::StopFirst,
        ..config(2)
    };
    harness
        .deploy(deploy_request(&revisions[1], Some(stop_first)))
        .await
        .unwrap();
    run_checked(&mut harness, 400, 2, true).await;
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, ready)| live == &vec![revisions[1].clone()] && *ready));
    let agent = agent_status(&harness).await;
    let rollout = agent.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Succeeded);
    assert_eq!(rollout.counts.gaps, 4, "every instance had a counted gap");

    let fail = RolloutConfig {
        surge_fallback: SurgeFallback::Fail,
        failure_threshold: Amount::Count(2),
        ..config(2)
    };
    harness
        .deploy(deploy_request(&revisions[2], Some(fail)))
        .await
        .unwrap();
    run_checked(&mut harness, 400, 2, false).await;
    let agent = agent_status(&harness).await;
    let failed = agent
        .history
        .iter()
        .chain(agent.rollout.iter())
        .find(|r| r.to_task_definition == revisions[2])
        .unwrap();
    assert_eq!(failed.state, RolloutState::Failed);
    assert!(
        failed
            .failures
            .iter()
            .all(|f| f.reason.contains("RESOURCE:CPU")),
        "{:?}",
        failed.failures
    );
    assert!(
        copies(&harness)
            .iter()
            .all(|(_, live, _)| live == &vec![revisions[1].clone()]),
        "no gap with fail"
    );
}

#[tokio::test]
async fn without_auto_rollback_a_tripped_rollout_just_stops() {
    let (mut harness, revisions) = setup(6, 4096).await;
    let denied = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 1024, 512)
    });
    let manual = RolloutConfig {
        failure_threshold: Amount::Count(1),
        auto_rollback: false,
        ..config(2)
    };
    harness
        .deploy(deploy_request(&denied, Some(manual)))
        .await
        .unwrap();
    run_checked(&mut harness, 300, 2, false).await;
    let agent = agent_status(&harness).await;
    let rollout = agent.rollout.unwrap();
    assert_eq!(rollout.state, RolloutState::Failed);
    assert!(agent.history.is_empty(), "no rollback rollout was started");
    assert_eq!(
        agent.task_definition.as_deref(),
        Some(revisions[0].as_str()),
        "joining instances get the last good revision"
    );
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, ready)| live == &vec![revisions[0].clone()] && *ready));
}

#[tokio::test]
async fn stop_first_with_a_revision_that_never_runs_trips_the_breaker_and_rolls_back() {
    // No room for two copies, so stopFirst replaces in place; the new revision's execution
    // role may not pull the image. A gap copy that never runs must count as a failure (found
    // by the fault campaign: the instance used to count as done once its copy was PENDING).
    let (mut harness, revisions) = setup(6, 1536).await;
    let denied = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 1024, 512)
    });
    let stop_first = RolloutConfig {
        surge_fallback: SurgeFallback::StopFirst,
        failure_threshold: Amount::Count(2),
        ..config(2)
    };
    harness
        .deploy(deploy_request(&denied, Some(stop_first)))
        .await
        .unwrap();
    run_checked(&mut harness, 600, 2, true).await;
    let agent = agent_status(&harness).await;
    let failed = agent
        .history
        .iter()
        .find(|r| r.to_task_definition == denied)
        .expect("the rollout to the denied revision ended");
    assert_eq!(failed.state, RolloutState::Failed, "{failed:?}");
    assert!(
        failed.counts.done == 0 && failed.counts.failures >= 2,
        "no instance counted as done on a revision that never ran: {:?}",
        failed.counts
    );
    let rollback = agent.rollout.expect("the automatic rollback");
    assert_eq!(rollback.kind, RolloutKind::AutoRollback);
    assert_eq!(rollback.state, RolloutState::Succeeded, "{rollback:?}");
    assert_eq!(
        agent.task_definition.as_deref(),
        Some(revisions[0].as_str())
    );
    assert!(
        copies(&harness)
            .iter()
            .all(|(_, live, ready)| live == &vec![revisions[0].clone()] && *ready),
        "{:?}",
        copies(&harness)
    );
}

/// Crashes the first running copy of `revision` started after `after`, within two minutes.
async fn crash_first_new_copy(
    harness: &mut Harness,
    revision: &str,
    after: chrono::DateTime<chrono::Utc>,
) {
    for _ in 0..120 {
        harness.run_scheduled(Duration::seconds(1), 60).await;
        let first = harness.model.tasks(CLUSTER).into_iter().find(|t| {
            t.definition == revision
                && t.created_at > after
                && t.last_status == TaskStatus::Running
                && t.desired_status == TaskStatus::Running
        });
        if let Some(task) = first {
            harness.model.crash_task(CLUSTER, &task.id);
            return;
        }
    }
    panic!("no new copy of {revision} started");
}

/// An automatic rollback that failed too (its first new copy crashed) leaves instances on
/// the revision it moved away from, with the daemon declared on the good one: deploying that
/// revision again rolls it out to them, instead of answering "unchanged".
#[tokio::test]
async fn deploying_the_revision_of_a_failed_rollout_again_rolls_it_out_again() {
    let (mut harness, revisions) = setup(4, 4096).await;
    let strict = RolloutConfig {
        failure_threshold: Amount::Count(1),
        ..config(1)
    };
    let began = harness.model.now();
    harness
        .deploy(deploy_request(&revisions[1], Some(strict)))
        .await
        .unwrap();
    // The first instance finishes on revision 1, the next one's new copy crashes.
    let mut first_done = None;
    for _ in 0..300 {
        harness.run_scheduled(Duration::seconds(1), 60).await;
        if copies(&harness)
            .iter()
            .any(|(_, live, _)| live == &vec![revisions[1].clone()])
        {
            first_done = Some(harness.model.now());
            break;
        }
    }
    let first_done = first_done.expect("one instance rolled to revision 1");
    assert!(first_done > began);
    crash_first_new_copy(&mut harness, &revisions[1], first_done).await;
    let rolling_back = harness.model.now();
    crash_first_new_copy(&mut harness, &revisions[0], rolling_back).await;
    run_checked(&mut harness, 300, 1, false).await;
    let agent = agent_status(&harness).await;
    let last = agent.rollout.as_ref().unwrap();
    assert_eq!(
        (last.kind, last.state),
        (RolloutKind::AutoRollback, RolloutState::Failed),
        "{last:?}"
    );
    assert_eq!(
        agent.task_definition.as_deref(),
        Some(revisions[0].as_str())
    );
    let on_first = |harness: &Harness| {
        copies(harness)
            .iter()
            .filter(|(_, live, _)| live == &vec![revisions[0].clone()])
            .count()
    };
    assert!(
        on_first(&harness) < 4,
        "the failed rollback left a mixed fleet"
    );

    let again = harness
        .deploy(deploy_request(&revisions[0], Some(config(2))))
        .await
        .unwrap();
    assert_eq!(again.recorded, "rollout");
    assert!(
        again.warnings.iter().any(|w| w.contains("failed")),
        "{:?}",
        again.warnings
    );
    run_checked(&mut harness, 400, 2, false).await;
    assert_eq!(on_first(&harness), 4);
    let agent = agent_status(&harness).await;
    assert_eq!(
        agent.rollout.as_ref().unwrap().state,
        RolloutState::Succeeded
    );
}

#[tokio::test]
async fn an_update_too_large_for_an_instance_is_refused_though_a_same_size_one_reads_none() {
    let (mut harness, revisions) = setup(3, 4096).await;
    let larger = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 8192, 512));
    let refused = harness
        .deploy(deploy_request(&larger, Some(config(1))))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ecs_daemons::deploy::DeployError::TooLarge(_)),
        "a revision larger than the declared one is checked on every instance: {refused}"
    );
    // The same size: the instance checks would answer as they did; the deploy reads no
    // instance (the coverage-check its rollout record starts reads them after it).
    let calls_before = harness.model.call_count();
    let answer = harness
        .deploy(deploy_request(&revisions[1], Some(config(1))))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "rollout");
    let operations: Vec<&str> = harness.model.calls()[calls_before..]
        .iter()
        .map(|c| c.operation)
        .collect();
    let first_list = operations
        .iter()
        .position(|o| *o == "ListContainerInstances")
        .expect("the coverage-check lists the instances");
    assert_eq!(
        operations[first_list..]
            .iter()
            .filter(|o| **o == "ListContainerInstances")
            .count(),
        1,
        "one listing, the coverage-check's: {operations:?}"
    );
}

/// A revision that runs but never turns healthy: without a deadline its new copies would
/// wait for ever. Each step fails at `progressDeadlineSeconds` (the new copy stopped, the
/// old one kept), the breaker trips and rolls back to the revision without a health check,
/// whose copies count as up once RUNNING (their health stays UNKNOWN), so every instance
/// ends ready on it.
#[tokio::test]
async fn a_never_healthy_revision_fails_at_the_progress_deadline_and_rolls_back() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    for _ in 0..4 {
        harness.model.add_instance(CLUSTER, "general", 2048, 4096);
    }
    let good = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let never_healthy = harness.model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        never_healthy: true,
        ..TaskDefinitionModel::new(DAEMON, 256, 256)
    });
    let rollout = RolloutConfig {
        progress_deadline_seconds: 120,
        failure_threshold: Amount::Count(2),
        ..config(2)
    };
    harness
        .deploy(deploy_request(&good, Some(rollout.clone())))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let answer = harness
        .deploy(deploy_request(&never_healthy, Some(rollout)))
        .await
        .unwrap();
    let id = answer.rollout.unwrap().id;
    harness.run_scheduled(Duration::minutes(4), 60).await;
    use ecs_daemons::store::Store;
    let record = harness
        .store
        .get::<ecs_daemons::rollout::Rollout>(&ecs_daemons::store::ItemKey::rollout(
            CLUSTER, DAEMON, &id,
        ))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(record.state, RolloutState::Failed, "{record:?}");
    assert!(
        record.failures.iter().all(|f| f
            .reason
            .contains("RUNNING but not HEALTHY within progressDeadlineSeconds (120 s)")),
        "{:?}",
        record.failures
    );
    harness.run_scheduled(Duration::minutes(4), 60).await;
    let state = copies(&harness);
    assert_eq!(state.len(), 4);
    for (instance, live, ready) in &state {
        assert_eq!(live, &vec![good.clone()], "{instance}");
        assert!(
            *ready,
            "{instance} ready on the revision without a health check"
        );
    }
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(DAEMON.into()),
        })
        .await
        .unwrap();
    let shown = status.daemons[0].rollout.clone().unwrap();
    assert_eq!(shown.kind, RolloutKind::AutoRollback);
    assert_eq!(shown.state, RolloutState::Succeeded);
}
