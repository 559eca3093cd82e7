//! Dry runs: a deploy or rollback with `"dryRun": true` changes nothing (no ECS call that
//! mutates, no table write) and answers what the real run then does: the same first step, the
//! same batches in the same order, the fallback where a second copy has no room.

use std::collections::BTreeMap;

use chrono::Duration;
use ecs_daemons::deploy::{DeployRequest, RollbackRequest};
use ecs_daemons::rollout::Rollout;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState, SurgeFallback};
use ecs_daemons::store::{Store, Versioned};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";

/// What a dry run must leave as it found it.
fn snapshot(harness: &Harness) -> (Vec<(String, u64, String)>, usize, Vec<String>) {
    (
        harness.store.snapshot(),
        harness.model.calls().iter().filter(|c| c.modify).count(),
        harness
            .model
            .tasks(CLUSTER)
            .iter()
            .map(|t| format!("{} {:?}", t.id, t.desired_status))
            .collect(),
    )
}

async fn covered(instances: usize, small: usize) -> (Harness, Vec<String>) {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            start_latency: Duration::seconds(10),
            ..ModelConfig::default()
        },
    );
    let revisions: Vec<String> = (0..2)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(DAEMON, 1024, 512))
        })
        .collect();
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    for _ in 0..small {
        // Room for one copy only.
        harness.model.add_instance(CLUSTER, "general", 1536, 8192);
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

fn update(task_definition: &str, rollout: RolloutConfig, dry_run: bool) -> DeployRequest {
    DeployRequest {
        rollout: Some(rollout),
        dry_run,
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &["general"], 0)
    }
}

fn rollout_config() -> RolloutConfig {
    RolloutConfig {
        max_parallel: Amount::Count(2),
        min_healthy_seconds: 20,
        canary: Some(ecs_daemons::rollout::Canary::automatic(1)),
        ..RolloutConfig::default()
    }
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_the_real_run_follows_its_plan() {
    let (mut harness, revisions) = covered(7, 0).await;
    let before = snapshot(&harness);
    let dry = harness
        .deploy_dry_run(update(&revisions[1], rollout_config(), true))
        .await
        .unwrap();
    assert_eq!(snapshot(&harness), before, "the dry run changed something");
    assert!(dry.dry_run);
    assert_eq!(dry.would_record, "rollout");
    assert_eq!(
        dry.from_task_definition.as_deref(),
        Some(revisions[0].as_str())
    );
    assert_eq!(dry.targeted, BTreeMap::from([("general".to_string(), 7)]));
    assert!(dry.instances.iter().all(|i| i.room_for_second_copy));
    let plan = dry.rollout.as_ref().unwrap();
    let sizes: Vec<usize> = plan.batches.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![1, 2, 2, 2],
        "the canary first, then maxParallel"
    );
    assert_eq!(
        dry.first_step
            .iter()
            .filter(|s| s.action == "start")
            .count(),
        1,
        "{:?}",
        dry.first_step
    );
    println!(
        "dry run: {} s expected, {:?} ECS calls",
        dry.expected_wall_seconds, dry.ecs_calls
    );

    // The real run, on the same cluster state.
    let calls_before = harness.model.call_count();
    let started = harness.model.now();
    let real = harness
        .deploy(update(&revisions[1], rollout_config(), false))
        .await
        .unwrap();
    assert_eq!(
        real.first_reconcile_by,
        Some("coverage-check"),
        "a rollout's first wave is the coverage-check's"
    );
    assert!(real.reconcile.is_none());
    let first: Vec<String> = harness
        .last_stream_check()
        .expect("the new rollout record started a coverage-check")
        .started
        .iter()
        .map(|s| s.instance_id.clone())
        .collect();
    assert_eq!(first, plan.batches[0], "the same first step");
    let mut finished = None;
    for _ in 0..60 {
        harness.run_scheduled(Duration::seconds(10), 60).await;
        let rollouts: Vec<Versioned<Rollout>> = harness.store.query(CLUSTER, DAEMON).await.unwrap();
        if let Some(done) = rollouts
            .iter()
            .find(|r| r.record.state == RolloutState::Succeeded)
        {
            finished = done.record.finished_at;
            break;
        }
    }
    let finished = finished.expect("the rollout succeeded");
    // Batches as they really happened: instances grouped by when their new copy started.
    let mut by_time: BTreeMap<chrono::DateTime<chrono::Utc>, Vec<String>> = BTreeMap::new();
    for task in harness.model.tasks(CLUSTER) {
        if task.definition == revisions[1] {
            by_time
                .entry(task.created_at)
                .or_default()
                .push(task.instance_id.clone());
        }
    }
    let mut real_batches: Vec<Vec<String>> = by_time.into_values().collect();
    let mut dry_batches = plan.batches.clone();
    for batch in real_batches.iter_mut().chain(dry_batches.iter_mut()) {
        batch.sort();
    }
    assert_eq!(
        real_batches, dry_batches,
        "the real run took the dry run's batches"
    );
    let wall = (finished - started).num_milliseconds() as f64 / 1000.0;
    let calls = harness.model.call_count() - calls_before;
    println!("real run: {wall} s, {calls} ECS calls");
    // The wall time to 2 % (moments are met to the second: the wake queue); the calls are an
    // estimate within a factor of two.
    let expected = dry.expected_wall_seconds as f64;
    assert!(
        (wall - expected).abs() <= 0.02 * expected,
        "wall {wall} s vs {expected} s"
    );
    let estimate = dry.ecs_calls.total;
    assert!(
        calls <= 2 * estimate && estimate <= 2 * calls,
        "calls {calls} vs {estimate}"
    );
}

#[tokio::test]
async fn a_dry_run_shows_what_the_fallback_does_where_a_second_copy_has_no_room() {
    let (mut harness, revisions) = covered(3, 1).await;
    for (fallback, words) in [
        (SurgeFallback::Fail, "counted as a failure"),
        (SurgeFallback::StopFirst, "the old copy stops first"),
    ] {
        let config = RolloutConfig {
            surge_fallback: fallback,
            ..rollout_config()
        };
        let dry = harness
            .deploy_dry_run(update(&revisions[1], config, true))
            .await
            .unwrap();
        let tight: Vec<_> = dry
            .instances
            .iter()
            .filter(|i| !i.room_for_second_copy)
            .collect();
        assert_eq!(tight.len(), 1, "{:?}", dry.instances);
        assert!(tight[0].plan.contains(words), "{}", tight[0].plan);
        assert!(tight[0].remaining_cpu < 1024);
        assert!(tight[0].batch.is_some());
    }
}

#[tokio::test]
async fn dry_runs_of_a_new_daemon_and_of_a_rollback_change_nothing() {
    let (mut harness, revisions) = covered(4, 0).await;
    let logs = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("logs", 256, 256));
    let before = snapshot(&harness);
    let dry = harness
        .deploy_dry_run(DeployRequest {
            dry_run: true,
            ..DeployRequest::new(CLUSTER, "logs", &logs, &["general"], 10)
        })
        .await
        .unwrap();
    assert_eq!(dry.would_record, "created");
    assert!(dry.rollout.is_none());
    assert_eq!(
        dry.first_step
            .iter()
            .filter(|s| s.action == "start")
            .count(),
        4
    );
    assert!(dry.instances.iter().all(|i| i.plan.starts_with("start")));
    assert_eq!(snapshot(&harness), before);

    // After an update, a rollback's dry run plans the way back, changing nothing.
    harness
        .deploy(update(&revisions[1], rollout_config(), false))
        .await
        .unwrap();
    harness.run_scheduled(Duration::seconds(400), 60).await;
    let before = snapshot(&harness);
    let back = harness
        .rollback_dry_run(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: DAEMON.into(),
            to_revision: None,
            dry_run: true,
        })
        .await
        .unwrap();
    assert_eq!(back.would_record, "rollback");
    assert_eq!(back.task_definition, revisions[0]);
    assert_eq!(
        back.from_task_definition.as_deref(),
        Some(revisions[1].as_str())
    );
    assert_eq!(
        back.rollout
            .as_ref()
            .unwrap()
            .batches
            .iter()
            .map(Vec::len)
            .sum::<usize>(),
        4
    );
    assert_eq!(snapshot(&harness), before);
    // A dry run refuses what the real run refuses, with the same error.
    let unpinned = harness
        .deploy_dry_run(DeployRequest {
            dry_run: true,
            ..DeployRequest::new(CLUSTER, DAEMON, DAEMON, &["general"], 0)
        })
        .await
        .unwrap_err();
    assert!(unpinned.to_string().contains("pinned"), "{unpinned}");
}
