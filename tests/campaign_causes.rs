//! One deterministic scenario per cause the 10,000-seed campaign found (issue 15), each failing
//! on the code before its fix, and the neighbours of each: other paths that could break the
//! same invariant the same way.
//!
//! - A rollout's end and the spec switch that goes with it land together or not at all.
//! - Drain-last stops a daemon only on a fresh read of every task on the instance.
//! - A termination whose lifecycle event was lost is adopted by the coverage check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::engine::Engine;
use ecs_daemons::model::TaskStatus;
use ecs_daemons::rollout::Rollout;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutKind, RolloutState};
use ecs_daemons::store::{
    EventSeen, Expected, ItemKey, PreparedPut, Record, RecordKind, Store, StoreError, Versioned,
};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;
use ecs_daemons_sim::MemoryStore;

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";

/// A store on which another invocation's progress write lands on the daemon's running
/// rollouts just before the first spec write (once): the race seed 5441 of the campaign hit.
struct ProgressRacesSpecSwitch {
    inner: Arc<MemoryStore>,
    raced: AtomicBool,
}

impl ProgressRacesSpecSwitch {
    async fn race(&self, writes_spec: bool) -> Result<(), StoreError> {
        if !writes_spec || self.raced.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let rollouts: Vec<Versioned<Rollout>> = self.inner.query(CLUSTER, DAEMON).await?;
        for rollout in rollouts
            .iter()
            .filter(|r| r.record.state == RolloutState::InProgress)
        {
            self.inner.put(&rollout.record, rollout.expected()).await?;
        }
        Ok(())
    }
}

impl Store for ProgressRacesSpecSwitch {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        self.inner.get(key).await
    }
    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        self.race(R::KIND == RecordKind::Spec).await?;
        self.inner.put(record, expected).await
    }
    async fn put_all(&self, puts: &[PreparedPut]) -> Result<Vec<u64>, StoreError> {
        self.race(puts.iter().any(|p| p.kind == RecordKind::Spec))
            .await?;
        self.inner.put_all(puts).await
    }
    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        self.inner.delete(key, expected_version).await
    }
    async fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.inner.query(cluster, daemon).await
    }
    async fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.inner.list_in_cluster(cluster).await
    }
    async fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<EventSeen, StoreError> {
        self.inner.remember_event(event_id, now, ttl).await
    }
    async fn forget_event(&self, event_id: &str) -> Result<(), StoreError> {
        self.inner.forget_event(event_id).await
    }
    async fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<ecs_daemons::store::WakeBooking, StoreError> {
        self.inner.book_wake(cluster, at, now).await
    }
}

/// A cluster of `instances` general instances, nothing deployed yet.
fn world_of(instances: usize) -> Harness {
    let harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 2048, 4096);
    }
    harness
}

/// The agent on every general instance, rolled out as `rollout` says.
fn agent_request(task_definition: &str, rollout: RolloutConfig) -> DeployRequest {
    DeployRequest {
        rollout: Some(rollout),
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &["general"], 0)
    }
}

/// `count` revisions of the agent, registered in order.
fn agent_revisions(harness: &Harness, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256))
        })
        .collect()
}

/// The agent rolled out `max_parallel` instances at a time, each healthy for `min_healthy` s.
fn rolling(task_definition: &str, max_parallel: u32, min_healthy: u32) -> DeployRequest {
    agent_request(
        task_definition,
        RolloutConfig {
            max_parallel: Amount::Count(max_parallel),
            min_healthy_seconds: min_healthy,
            ..RolloutConfig::default()
        },
    )
}

/// One second of ECS with the functions running: events, and the schedule every minute.
async fn one_second(harness: &mut Harness) {
    harness.model.advance(Duration::seconds(1));
    harness.deliver_events().await;
    harness.deliver_wakes().await;
    if harness.model.now().timestamp() % 60 == 0 {
        harness.scheduled_check().await;
    }
}

async fn rollouts(harness: &Harness) -> Vec<Rollout> {
    let records: Vec<Versioned<Rollout>> = harness.store.query(CLUSTER, DAEMON).await.unwrap();
    records.into_iter().map(|r| r.record).collect()
}

/// Cause (rollout scenario, seeds 2643, 4283, 5441, 8792): a rollout's end was two writes, the
/// spec switch and then the rollout record; a progress write between them made the second one
/// lose, and the next reconcile found a rollout in progress that the spec no longer named and
/// recorded it SUPERSEDED: the breaker's FAILED, its reason and the instances it left on the
/// old revision vanished from the history.
#[tokio::test]
async fn a_breaker_trip_racing_a_progress_write_is_recorded_failed_not_superseded() {
    let mut harness = world_of(4);
    let good = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let denied = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 256, 256)
    });
    let request = |task_definition: &str| {
        agent_request(
            task_definition,
            RolloutConfig {
                max_parallel: Amount::Count(1),
                min_healthy_seconds: 10,
                failure_threshold: Amount::Count(1),
                auto_rollback: true,
                ..RolloutConfig::default()
            },
        )
    };
    harness.deploy(request(&good)).await.unwrap();
    harness
        .run_for(Duration::seconds(60), Duration::seconds(1))
        .await;
    harness.deploy(request(&denied)).await.unwrap();

    // The full reconciles run on a store where a progress write races the first spec switch.
    let racing = Engine::new(
        Arc::clone(&harness.model),
        ProgressRacesSpecSwitch {
            inner: Arc::clone(&harness.store),
            raced: AtomicBool::new(false),
        },
        harness.engine.config().clone(),
    );
    for second in 0..600 {
        harness.model.advance(Duration::seconds(1));
        harness.deliver_events().await;
        if second % 20 == 0 {
            racing
                .reconcile_cluster(CLUSTER, harness.model.now(), &format!("check-{second}"))
                .await
                .unwrap();
        }
    }

    let history = rollouts(&harness).await;
    let update = history
        .iter()
        .find(|r| r.to_task_definition == denied)
        .expect("the update's record");
    assert_eq!(
        update.state,
        RolloutState::Failed,
        "the breaker's outcome is kept: {update:?}"
    );
    assert!(
        update
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("circuit breaker")),
        "{:?}",
        update.reason
    );
    assert!(
        history.iter().all(|r| r.state != RolloutState::Superseded),
        "no rollout was superseded, none was replaced: {history:?}"
    );
    let rollback = history
        .iter()
        .find(|r| r.kind == RolloutKind::AutoRollback)
        .expect("the automatic rollback started");
    assert_eq!(rollback.state, RolloutState::Succeeded, "{rollback:?}");
    let on_denied = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.definition == denied && !t.last_status.is_terminal())
        .count();
    assert_eq!(on_denied, 0, "every instance is back on the good revision");
}

/// A minute of ECS with the functions running: events every second, the schedule every
/// minute; after every second, no daemon was stopped while an application still ran on its
/// DRAINING instance and no lifecycle action was completed while a task still ran.
async fn run_checked(harness: &mut Harness, seconds: i64) {
    for _ in 0..seconds {
        one_second(harness).await;
        let now = harness.model.now();
        assert_eq!(
            harness.model.early_drain_stops(),
            Vec::<String>::new(),
            "drain-last broken at {now}"
        );
        assert_eq!(
            harness.model.hook_stats().completed_with_tasks,
            Vec::<String>::new(),
            "a lifecycle action completed while a task still ran, at {now}"
        );
    }
}

/// One instance with `agent` (start order 0) and, if asked, `logs` (10), ready, and one
/// application task on it. Tasks take `stop_seconds` to stop (an application's stop timeout:
/// ECS sends SIGTERM and waits up to stopTimeout before SIGKILL).
async fn drained_world(stop_seconds: i64, with_logs: bool) -> (Harness, String, String) {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            stop_latency: Duration::seconds(stop_seconds),
            ..ModelConfig::default()
        },
    );
    harness.model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(900),
    );
    harness.set_terminate_hook(ecs_daemons::autoscaling::TerminateHook {
        name: "ecs-daemons-drain".into(),
        groups: vec!["asg-general".into()],
    });
    let instance = harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let mut daemons = vec![("agent", 0)];
    if with_logs {
        daemons.push(("logs", 10));
    }
    for (name, order) in daemons {
        let definition = harness
            .model
            .register_task_definition(TaskDefinitionModel::new(name, 256, 256));
        harness
            .deploy(DeployRequest::new(
                CLUSTER,
                name,
                &definition,
                &["general"],
                order,
            ))
            .await
            .unwrap();
    }
    run_checked(&mut harness, 30).await;
    let app = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("app", 512, 512));
    let task = harness
        .model
        .run_service_task(CLUSTER, "web", &app)
        .expect("the ready instance takes the application");
    run_checked(&mut harness, 10).await;
    (harness, instance, task)
}

fn live_on(harness: &Harness, instance: &str, group: &str) -> usize {
    let id = ecs_daemons::arn::resource_id(instance);
    harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.instance_id == id && t.group == group && !t.last_status.is_terminal())
        .count()
}

/// Cause (churn scenario, seeds 2239, 6639, 9359), first half: drain-last compared the
/// instance's task counts with its daemon copies, but `runningTasksCount` counts only tasks
/// whose desired status is RUNNING (API reference, `ContainerInstance`): an application in its
/// stop timeout is in no count, so the daemons were stopped while it still ran (a log router
/// losing the application's last lines). The model counted by last status and hid it.
#[tokio::test]
async fn drain_last_waits_for_an_application_still_in_its_stop_timeout() {
    let (mut harness, instance, _) = drained_world(45, false).await;
    harness.model.drain_instance(CLUSTER, &instance);
    run_checked(&mut harness, 30).await;
    assert_eq!(
        live_on(&harness, &instance, "daemon:agent"),
        1,
        "still there"
    );
    run_checked(&mut harness, 120).await;
    assert_eq!(live_on(&harness, &instance, "service:web"), 0);
    assert_eq!(
        live_on(&harness, &instance, "daemon:agent"),
        0,
        "the daemon stopped last, once the application had stopped"
    );
}

/// Cause, second half: the copies drain-last subtracted came partly from older news (a slot
/// saying RUNNING for a copy whose STOPPED event was lost), so a dead copy was subtracted from
/// the counts and the application still running was missed (seed 9359).
#[tokio::test]
async fn drain_last_never_trusts_a_copy_known_only_from_older_news() {
    let (mut harness, instance, _) = drained_world(45, true).await;
    harness.model.drain_instance(CLUSTER, &instance);
    run_checked(&mut harness, 5).await;
    // The agent's copy dies and its STOPPED event is lost; then the log router's dies too.
    let task_of = |harness: &Harness, group: &str| {
        harness
            .model
            .tasks(CLUSTER)
            .into_iter()
            .find(|t| t.group == group && !t.last_status.is_terminal())
            .map(|t| t.id)
            .expect("a live copy")
    };
    let agent = task_of(&harness, "daemon:agent");
    harness.model.crash_task(CLUSTER, &agent);
    harness.model.take_due_events();
    let logs = task_of(&harness, "daemon:logs");
    harness.model.crash_task(CLUSTER, &logs);
    run_checked(&mut harness, 180).await;
    assert_eq!(live_on(&harness, &instance, "service:web"), 0);
}

/// Neighbour: a held termination completed on counts that leave out a daemon copy still in its
/// stop timeout: Auto Scaling terminates the instance while the log router flushes.
#[tokio::test]
async fn a_held_termination_completes_only_after_the_last_daemon_has_stopped() {
    let (mut harness, instance, _) = drained_world(20, false).await;
    harness.model.scale_in(CLUSTER, &instance);
    run_checked(&mut harness, 240).await;
    assert!(
        harness.model.waiting_terminations().is_empty(),
        "completed once the daemon had stopped"
    );
    assert_eq!(harness.model.hook_stats().completed, 1);
}

/// Cause (churn scenario, seeds 2063, 4952, 5676, 7904): the lifecycle-hook function failed
/// on all three of Lambda's asynchronous attempts (throttled, then crashed), the event was
/// gone, and nothing else looked: the instance waited undrained until the hook timed out
/// (and on AWS then terminated under its applications and daemons).
#[tokio::test]
async fn a_termination_whose_event_was_lost_is_adopted_by_the_coverage_check() {
    let (mut harness, instance, _) = drained_world(5, false).await;
    harness.model.scale_in(CLUSTER, &instance);
    // Lambda's three attempts all failed: the event never reaches ecs-daemons.
    let lost = harness.model.take_due_events();
    assert!(lost
        .iter()
        .any(|e| e["detail-type"] == ecs_daemons::autoscaling::TERMINATE_ACTION));
    run_checked(&mut harness, 300).await;
    assert!(
        harness.model.waiting_terminations().is_empty(),
        "adopted, drained and completed"
    );
    let stats = harness.model.hook_stats();
    assert_eq!((stats.completed, stats.timed_out), (1, 0), "{stats:?}");
    assert_eq!(live_on(&harness, &instance, "service:web"), 0);
}

/// Neighbour: a drain decided on a view where an application task had not appeared yet: placed
/// a moment before the drain, no event about it delivered, the instance drained in the same
/// second. Drain-last must find it on its fresh read and wait for it to stop.
#[tokio::test]
async fn drain_last_finds_an_application_no_event_has_told_of_yet() {
    let (mut harness, instance, _) = drained_world(30, false).await;
    let app = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("late", 256, 256));
    let late = harness
        .model
        .run_service_task(CLUSTER, "late", &app)
        .expect("placed on the ready instance");
    harness.model.drain_instance(CLUSTER, &instance);
    // The events about the late task are lost; only the drain's news and the schedule remain.
    harness.model.take_due_events();
    run_checked(&mut harness, 180).await;
    assert!(harness
        .model
        .tasks(CLUSTER)
        .iter()
        .any(|t| t.id == ecs_daemons::arn::resource_id(&late) && t.last_status.is_terminal()));
    assert_eq!(live_on(&harness, &instance, "daemon:agent"), 0);
}

/// Neighbour: a rollout superseded while slots still point at it (new copies surging and
/// settling): the new rollout takes those instances over without a third copy, a gap, or a
/// copy of the superseded revision left behind, and the history says who replaced whom.
#[tokio::test]
async fn a_rollout_superseded_mid_flight_hands_its_instances_over() {
    let mut harness = world_of(6);
    let revisions = agent_revisions(&harness, 3);
    let request = |task_definition: &str| rolling(task_definition, 2, 30);
    harness.deploy(request(&revisions[0])).await.unwrap();
    harness
        .run_for(Duration::seconds(60), Duration::seconds(1))
        .await;
    harness.deploy(request(&revisions[1])).await.unwrap();
    let mut superseded = false;
    for second in 0..900 {
        one_second(&mut harness).await;
        let tasks = harness.model.tasks(CLUSTER);
        let live = |instance: &str| {
            tasks
                .iter()
                .filter(|t| {
                    t.instance_id == instance
                        && !t.last_status.is_terminal()
                        && t.desired_status == TaskStatus::Running
                })
                .count()
        };
        let mut in_flight = 0;
        for instance in harness.model.instances(CLUSTER) {
            let copies = live(instance.id());
            assert!(
                copies <= 2,
                "{copies} copies on {} at second {second}",
                instance.id()
            );
            in_flight += usize::from(copies == 2);
        }
        assert!(
            in_flight <= 2,
            "{in_flight} instances in flight at second {second}"
        );
        // Supersede while the first rollout has new copies on their way.
        if !superseded && in_flight > 0 && second > 10 {
            harness.deploy(request(&revisions[2])).await.unwrap();
            superseded = true;
        }
    }
    assert!(superseded, "the first rollout had copies in flight");
    let live: Vec<String> = harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| !t.last_status.is_terminal())
        .map(|t| t.definition)
        .collect();
    assert_eq!(
        live,
        vec![revisions[2].clone(); 6],
        "one copy of the last revision each"
    );
    let history = rollouts(&harness).await;
    let first = history
        .iter()
        .find(|r| r.to_task_definition == revisions[1])
        .unwrap();
    assert_eq!(first.state, RolloutState::Superseded, "{first:?}");
    assert!(
        first
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(&revisions[2])),
        "{:?}",
        first.reason
    );
    let last = history
        .iter()
        .find(|r| r.to_task_definition == revisions[2])
        .unwrap();
    assert_eq!(last.state, RolloutState::Succeeded, "{last:?}");
}

/// Cause (rollout scenario, seeds 706495 and 709139 of the second range, after the drain-last
/// fix): an instance drained mid-rollout while its new copy was still PENDING. That copy is in
/// both of ECS's counts, so drain-last took it for another task and waited with two copies on
/// the instance while the rollout surged elsewhere: more than maxParallel instances held two.
#[tokio::test]
async fn an_instance_drained_while_its_new_copy_starts_stops_both_at_once() {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            start_latency: Duration::seconds(30),
            ..ModelConfig::default()
        },
    );
    for _ in 0..3 {
        harness.model.add_instance(CLUSTER, "general", 2048, 4096);
    }
    let revisions = agent_revisions(&harness, 2);
    let config = RolloutConfig {
        max_parallel: Amount::Count(1),
        min_healthy_seconds: 10,
        ..RolloutConfig::default()
    };
    harness
        .deploy(agent_request(&revisions[0], config.clone()))
        .await
        .unwrap();
    for _ in 0..90 {
        one_second(&mut harness).await;
    }
    harness
        .deploy(agent_request(&revisions[1], config))
        .await
        .unwrap();
    // The first instance whose new copy is on its way gets drained.
    let mut drained = None;
    for _ in 0..120 {
        one_second(&mut harness).await;
        let starting = harness
            .model
            .tasks(CLUSTER)
            .into_iter()
            .find(|t| t.definition == revisions[1] && t.last_status == TaskStatus::Pending);
        if let Some(task) = starting {
            let arn = harness
                .model
                .instances(CLUSTER)
                .into_iter()
                .find(|i| i.id() == task.instance_id)
                .map(|i| i.arn)
                .unwrap();
            harness.model.drain_instance(CLUSTER, &arn);
            drained = Some(arn);
            break;
        }
    }
    let drained = drained.expect("a new copy was starting");
    // No instance event tells of the drain (ECS emits none for a change of status) and no
    // task stops there: the next scheduled coverage-check (each minute) is the reconcile
    // that sees it. Under the old count, drain-last waited for ever.
    for _ in 0..65 {
        one_second(&mut harness).await;
    }
    let meant_to_run = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| {
            t.instance_id == ecs_daemons::arn::resource_id(&drained)
                && t.desired_status == TaskStatus::Running
        })
        .count();
    assert_eq!(
        meant_to_run, 0,
        "nothing else runs there: both copies are told to stop by the next reconcile"
    );
}

/// Cause (rollout scenario, seed 3055 of the 10,000): an instance drained while Settling,
/// both copies running, with an application that keeps drain-last waiting. The rollout left
/// DRAINING instances out of its tally, so it surged elsewhere while that instance still held
/// two copies: more than maxParallel instances held two. A step in flight on an instance the
/// rollout no longer moves on (DRAINING, or its agent disconnected) now counts while both
/// copies run.
#[tokio::test]
async fn an_instance_drained_mid_step_keeps_its_place_in_max_parallel() {
    let mut harness = world_of(3);
    let revisions = agent_revisions(&harness, 2);
    let job = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
    let config = RolloutConfig {
        max_parallel: Amount::Count(1),
        min_healthy_seconds: 120,
        ..RolloutConfig::default()
    };
    harness
        .deploy(agent_request(&revisions[0], config.clone()))
        .await
        .unwrap();
    for _ in 0..60 {
        one_second(&mut harness).await;
    }
    harness
        .deploy(agent_request(&revisions[1], config))
        .await
        .unwrap();
    let two_copies = |harness: &Harness| -> Vec<String> {
        let mut per_instance: std::collections::BTreeMap<String, usize> = Default::default();
        for task in harness.model.tasks(CLUSTER) {
            if task.group == format!("daemon:{DAEMON}")
                && !task.last_status.is_terminal()
                && task.desired_status == TaskStatus::Running
            {
                *per_instance.entry(task.instance_id).or_default() += 1;
            }
        }
        per_instance
            .into_iter()
            .filter(|(_, n)| *n == 2)
            .map(|(i, _)| i)
            .collect()
    };
    // The instance whose new copy runs beside the old one gets an application, then drained.
    let mut settling = None;
    for _ in 0..60 {
        one_second(&mut harness).await;
        if let Some(instance) = two_copies(&harness).into_iter().next() {
            settling = Some(instance);
            break;
        }
    }
    let settling = settling.expect("a surge started");
    let arn = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .find(|i| i.id() == settling)
        .map(|i| i.arn)
        .unwrap();
    harness
        .model
        .start_foreign_task(CLUSTER, &arn, &job, "family:batch", Some("nightly"))
        .unwrap();
    harness.model.drain_instance(CLUSTER, &arn);
    for second in 0..240 {
        one_second(&mut harness).await;
        let holding = two_copies(&harness);
        assert!(
            holding.len() <= 1,
            "second {second}: {holding:?} hold two copies, maxParallel 1"
        );
    }
}

/// Cause (rollout scenario, seeds 3118, 3548, 4992, 6332, 8284, 8797): mid-rollout both the
/// old and the new copy died, their STOPPED events lost, and a reconcile started a third copy
/// (the slot still naming the dead new copy as the rollout's). The new copy's RUNNING event
/// then arrived late and was believed; the task-events reconcile kept the dead copy and
/// stopped the only live one, still PENDING, as its duplicate. Live tasks events tell of are
/// now read afresh in the same DescribeTasks as the others, and the newest word wins.
#[tokio::test]
async fn a_late_running_event_of_a_dead_copy_never_makes_the_live_one_its_duplicate() {
    let mut harness = world_of(1);
    let revisions = agent_revisions(&harness, 2);
    let request = |task_definition: &str| rolling(task_definition, 1, 30);
    harness.deploy(request(&revisions[0])).await.unwrap();
    for _ in 0..30 {
        one_second(&mut harness).await;
    }
    harness.deploy(request(&revisions[1])).await.unwrap();
    // The new copy's RUNNING event is held back (late); everything else is delivered.
    let group = format!("daemon:{DAEMON}");
    let new_copy_running = |e: &serde_json::Value| {
        e["detail"]["group"] == group.as_str()
            && e["detail"]["lastStatus"] == "RUNNING"
            && e["detail"]["taskDefinitionArn"]
                .as_str()
                .is_some_and(|arn| arn.ends_with(&revisions[1]))
    };
    let mut held = Vec::new();
    for _ in 0..10 {
        harness.model.advance(Duration::seconds(1));
        let (late, others): (Vec<_>, Vec<_>) = harness
            .model
            .take_due_events()
            .into_iter()
            .partition(|e| new_copy_running(e));
        held.extend(late);
        for event in others {
            let function = if event["detail-type"] == "ECS Task State Change" {
                "task-events"
            } else {
                "instance-events"
            };
            harness.deliver_batch(function, vec![event]).await;
        }
        harness.deliver_wakes().await;
    }
    let late_running = held
        .pop()
        .expect("the new copy started and its event was held");
    // Both copies die; their STOPPED events are lost; the schedule's look starts another.
    for task in harness.model.tasks(CLUSTER) {
        if task.group == group && !task.last_status.is_terminal() {
            harness.model.crash_task(CLUSTER, &task.id);
        }
    }
    harness.model.take_due_events();
    harness.scheduled_check().await;
    let instance = harness.model.instances(CLUSTER)[0].arn.clone();
    assert_eq!(
        live_on(&harness, &instance, &group),
        1,
        "a third copy starts"
    );
    let invocation = harness
        .deliver_batch("task-events", vec![late_running])
        .await;
    assert!(invocation.result.is_ok(), "{:?}", invocation.result);
    assert_eq!(harness.model.lone_copy_stops(), Vec::<String>::new());
    assert_eq!(live_on(&harness, &instance, &group), 1);
}
