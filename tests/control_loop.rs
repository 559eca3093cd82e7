//! The control loop end to end on the ECS cluster model: the engine handles
//! the events the model emits, as the deployed functions would.

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::TaskStatus;
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::{Harness, Invocation};

const CLUSTER: &str = "prod";
const CLAIM_GRACE: i64 = ecs_daemons::plan::CLAIM_GRACE_SECONDS;

fn request(
    daemon: &str,
    task_definition: &str,
    providers: &[&str],
    start_order: i32,
) -> DeployRequest {
    DeployRequest::new(CLUSTER, daemon, task_definition, providers, start_order)
}

fn ready_instances(harness: &Harness) -> Vec<String> {
    harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| {
            i.attributes
                .get(READY_ATTRIBUTE)
                .is_some_and(|v| v.as_deref() == Some("true"))
        })
        .map(|i| i.id().to_string())
        .collect()
}

fn live_daemons_on(harness: &Harness, instance: &str, daemon: &str) -> usize {
    harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.instance_id == instance && t.group == format!("daemon:{daemon}"))
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .count()
}

/// The most ECS calls one delivered event cost: a batch's calls shared among its events.
/// The most ECS calls one event cost, leaving out drain-last's fresh reads of an instance
/// (a destructive step is never decided on older news; they are counted apart).
fn max_calls(invocations: &[Invocation], function: &str) -> usize {
    invocations
        .iter()
        .filter(|i| i.function == function)
        .map(|i| {
            let reads = i.result.as_ref().map_or(0, |o| o.drain_reads.len());
            i.ecs_calls
                .saturating_sub(reads * ecs_daemons::engine::DRAIN_READ_CALLS)
                .div_ceil(i.events.len().max(1))
        })
        .max()
        .unwrap_or(0)
}

fn assert_no_errors(invocations: &[Invocation]) {
    for invocation in invocations {
        match &invocation.result {
            Ok(outcome) => assert!(
                outcome.errors.is_empty(),
                "{}: {:?}",
                invocation.function,
                outcome.errors
            ),
            Err(error) => panic!("{} failed: {error}", invocation.function),
        }
    }
}

#[tokio::test]
async fn daemons_start_first_cover_every_instance_and_drain_last() {
    let mut harness = Harness::new(CLUSTER, &["general", "gpu"], ModelConfig::default());
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("cloudwatch-agent", 1024, 512));
    let general: Vec<String> = (0..10)
        .map(|_| harness.model.add_instance(CLUSTER, "general", 4096, 8192))
        .collect();
    let gpu = harness.model.add_instance(CLUSTER, "gpu", 8192, 32768);
    let mut log = harness
        .run_for(Duration::seconds(2), Duration::seconds(1))
        .await;

    let answer = harness
        .deploy(request("cloudwatch-agent", &agent, &["general"], 0))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "created");
    assert_eq!(
        answer.reconcile.as_ref().unwrap().started.len(),
        10,
        "{:?}",
        answer.reconcile
    );
    let gpu_id = ecs_daemons::arn::resource_id(&gpu).to_string();
    assert_eq!(
        ready_instances(&harness),
        vec![gpu_id],
        "only the instance no daemon targets is ready before the daemon runs"
    );

    log.extend(
        harness
            .run_for(Duration::seconds(30), Duration::seconds(1))
            .await,
    );
    let ready = ready_instances(&harness);
    assert_eq!(
        ready.len(),
        11,
        "10 covered + the gpu instance no daemon targets: {ready:?}"
    );
    for instance in &general {
        assert_eq!(
            live_daemons_on(
                &harness,
                ecs_daemons::arn::resource_id(instance),
                "cloudwatch-agent"
            ),
            1
        );
    }
    assert_eq!(
        live_daemons_on(
            &harness,
            ecs_daemons::arn::resource_id(&gpu),
            "cloudwatch-agent"
        ),
        0
    );

    // Scale out by 3: daemon first, then application tasks can land.
    let joined: Vec<String> = (0..3)
        .map(|_| harness.model.add_instance(CLUSTER, "general", 4096, 8192))
        .collect();
    log.extend(
        harness
            .run_for(Duration::seconds(1), Duration::seconds(1))
            .await,
    );
    for instance in &joined {
        let id = ecs_daemons::arn::resource_id(instance);
        assert!(
            !ready_instances(&harness).contains(&id.to_string()),
            "not ready while its daemon starts"
        );
    }
    log.extend(
        harness
            .run_for(Duration::seconds(20), Duration::seconds(1))
            .await,
    );
    assert_eq!(ready_instances(&harness).len(), 14);

    // Applications land on ready instances only.
    let app = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("checkout", 512, 1024));
    for _ in 0..20 {
        assert!(harness
            .model
            .run_service_task(CLUSTER, "checkout", &app)
            .is_some());
    }
    log.extend(
        harness
            .run_for(Duration::seconds(10), Duration::seconds(1))
            .await,
    );

    // Drain two: apps leave first, the daemon stops last, readiness goes. ECS emits no
    // instance event for the drain itself: the apps' own stops tell of it where apps run,
    // the next scheduled coverage-check where none does. (ECS places nothing on a DRAINING
    // instance, so readiness left there until then is harmless.)
    let draining = [general[0].clone(), general[1].clone()];
    for instance in &draining {
        harness.model.drain_instance(CLUSTER, instance);
    }
    log.extend(harness.run_scheduled(Duration::seconds(70), 60).await);
    for instance in &draining {
        assert!(!ready_instances(&harness)
            .contains(&ecs_daemons::arn::resource_id(instance).to_string()));
    }
    assert!(
        harness.model.early_drain_stops().is_empty(),
        "{:?}",
        harness.model.early_drain_stops()
    );
    for instance in &draining {
        let id = ecs_daemons::arn::resource_id(instance);
        assert_eq!(
            live_daemons_on(&harness, id, "cloudwatch-agent"),
            0,
            "daemon stopped once the apps left"
        );
        let apps = harness
            .model
            .tasks(CLUSTER)
            .into_iter()
            .filter(|t| {
                t.instance_id == id
                    && t.group.starts_with("service:")
                    && !t.last_status.is_terminal()
            })
            .count();
        assert_eq!(apps, 0);
    }

    // A daemon that dies is restarted in place; readiness comes back when it runs.
    let victim = ecs_daemons::arn::resource_id(&general[5]).to_string();
    let task = harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .find(|t| {
            t.instance_id == victim
                && !t.last_status.is_terminal()
                && t.group.starts_with("daemon:")
        })
        .unwrap();
    harness.model.crash_task(CLUSTER, &task.id);
    log.extend(
        harness
            .run_for(Duration::seconds(1), Duration::seconds(1))
            .await,
    );
    assert!(
        !ready_instances(&harness).contains(&victim),
        "a ready instance never lacks its daemon"
    );
    log.extend(
        harness
            .run_for(Duration::seconds(10), Duration::seconds(1))
            .await,
    );
    assert!(ready_instances(&harness).contains(&victim));
    assert_eq!(live_daemons_on(&harness, &victim, "cloudwatch-agent"), 1);

    let check = harness.coverage_check().await;
    let outcome = check.result.as_ref().unwrap();
    let coverage = &outcome.coverage["cloudwatch-agent"];
    assert_eq!(
        (
            coverage.targeted,
            coverage.covered,
            coverage.missing,
            coverage.duplicates
        ),
        (11, 11, 0, 0),
        "{coverage:?}"
    );
    assert!(
        outcome.started.is_empty() && outcome.stopped.is_empty(),
        "nothing to repair: {outcome:?}"
    );

    assert_no_errors(&log);
    let instance_calls = max_calls(&log, "instance-events");
    let task_calls = max_calls(&log, "task-events");
    println!(
        "ECS calls per event: instance-events max {instance_calls}, task-events max {task_calls}"
    );
    assert!(
        instance_calls <= 4,
        "an instance event costs at most 4 ECS calls, measured {instance_calls}"
    );
    assert!(
        task_calls <= 3,
        "a task event costs at most 3 ECS calls, measured {task_calls}"
    );
    assert!(
        log.iter()
            .any(|i| i.result.as_ref().is_ok_and(|o| !o.drain_reads.is_empty())),
        "drain-last read the draining instances fresh before stopping their daemons"
    );
}

#[tokio::test]
async fn deploy_refuses_the_common_mistakes_and_records_nothing() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let no_role = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_arn: None,
        ..TaskDefinitionModel::new("agent", 1024, 512)
    });
    let fine = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 1024, 512));
    let huge = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("profiler", 8192, 512));
    let greedy = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("greedy", 2048, 512));

    let cases = [
        (
            request("agent", &no_role, &["general"], 0),
            "has no execution role",
        ),
        (
            request("agent", &fine, &["gpu"], 0),
            "capacity provider gpu is not attached to cluster prod (attached: general)",
        ),
        (
            request("profiler", &huge, &["general"], 0),
            "needs 8192 CPU units but instance",
        ),
        (
            request("agent", "agent:99", &["general"], 0),
            "agent:99 was not found",
        ),
        (
            DeployRequest {
                cluster: "elsewhere".into(),
                ..request("agent", &fine, &["general"], 0)
            },
            "not managed by this deployment",
        ),
    ];
    for (request, expected) in cases {
        let error = harness.deploy(request).await.unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    let calls_before = harness.model.call_count();
    assert!(harness.store.is_empty(), "a refused deploy records nothing");
    assert!(
        harness.model.calls()[..calls_before]
            .iter()
            .all(|c| !c.modify),
        "and changes nothing in ECS"
    );

    let answer = harness
        .deploy(request("greedy", &greedy, &["general"], 0))
        .await
        .unwrap();
    assert!(
        answer.warnings.iter().any(|w| w.contains("50 %")),
        "{:?}",
        answer.warnings
    );
    let again = harness
        .deploy(request("greedy", &greedy, &["general"], 0))
        .await
        .unwrap();
    assert_eq!(again.recorded, "unchanged");
    let next = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("greedy", 2048, 512));
    let change = harness
        .deploy(request("greedy", &next, &["general"], 0))
        .await
        .unwrap();
    assert_eq!(change.recorded, "rollout", "a new revision rolls out");
}

#[tokio::test]
async fn a_crashing_daemon_backs_off_then_is_reported_not_hammered() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let instance = harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let crashing = harness.model.register_task_definition(TaskDefinitionModel {
        crashes_after: Some(Duration::seconds(3)),
        ..TaskDefinitionModel::new("agent", 512, 512)
    });
    harness
        .deploy(request("agent", &crashing, &["general"], 0))
        .await
        .unwrap();
    // Production runs coverage-check every minute: restarts whose backoff passed happen there.
    let mut log = Vec::new();
    for _ in 0..20 {
        log.extend(
            harness
                .run_for(Duration::minutes(1), Duration::seconds(1))
                .await,
        );
        log.push(harness.coverage_check().await);
    }
    let starts: Vec<_> = harness
        .model
        .calls()
        .into_iter()
        .filter(|c| c.operation == "StartTask")
        .map(|c| c.at)
        .collect();
    assert_eq!(
        starts.len(),
        5,
        "five attempts (the default limit), then no more"
    );
    let policy = ecs_daemons::spec::RestartPolicy::default();
    for (failure, pair) in starts.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        // start latency 5 s + crash after 3 s, then the backoff of that failure
        let least = Duration::seconds(8) + policy.backoff(failure as u32 + 1);
        assert!(
            waited >= least,
            "restart {} came after {waited}, backoff wants at least {least}",
            failure + 2
        );
    }
    assert!(
        !ready_instances(&harness).contains(&ecs_daemons::arn::resource_id(&instance).to_string())
    );
    let status = ecs_daemons::deploy::status(
        &harness.engine,
        ecs_daemons::deploy::StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some("agent".into()),
        },
        harness.model.now(),
    )
    .await
    .unwrap();
    let agent = &status.daemons[0];
    assert_eq!(agent.coverage.crash_looping, 1);
    assert!(
        agent.coverage.trouble[0]
            .reason
            .contains("EssentialContainerExited"),
        "{:?}",
        agent.coverage.trouble
    );
    assert_eq!(agent.slots_in_trouble[0].consecutive_failures, 5);
    assert_no_errors(&log);
}

#[tokio::test]
async fn every_crash_point_of_a_reconcile_is_repaired_by_the_next() {
    for crash_after in 0..16 {
        let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
        let agent = harness
            .model
            .register_task_definition(TaskDefinitionModel::new("agent", 512, 512));
        for _ in 0..12 {
            harness.model.add_instance(CLUSTER, "general", 4096, 8192);
        }
        harness
            .deploy(request("agent", &agent, &["general"], 0))
            .await
            .unwrap();
        // Lose the deploy's starts: instances join with no daemon, then a reconcile crashes mid-way.
        for task in harness.model.tasks(CLUSTER) {
            harness.model.crash_task(CLUSTER, &task.id);
        }
        harness.model.take_due_events();
        harness.budget.crash_after(crash_after);
        let crashed = harness.coverage_check().await;
        assert!(crashed.crashed, "crash point {crash_after} was reached");
        harness.model.advance(Duration::seconds(CLAIM_GRACE + 1));
        harness.model.take_due_events();
        let repair = harness.coverage_check().await;
        assert!(repair.result.is_ok(), "{:?}", repair.result);
        harness
            .run_for(Duration::seconds(30), Duration::seconds(1))
            .await;
        harness.coverage_check().await;
        for instance in harness.model.instances(CLUSTER) {
            assert_eq!(
                live_daemons_on(&harness, instance.id(), "agent"),
                1,
                "crash point {crash_after}"
            );
        }
        assert_eq!(
            ready_instances(&harness).len(),
            12,
            "crash point {crash_after}"
        );
    }
}

#[tokio::test]
async fn duplicate_and_stale_events_change_nothing() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let instance = harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let id = ecs_daemons::arn::resource_id(&instance).to_string();
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 512, 512));
    harness
        .deploy(request("agent", &agent, &["general"], 0))
        .await
        .unwrap();
    harness.model.take_due_events();
    harness.model.advance(Duration::seconds(6));
    let events = harness.model.take_due_events();
    let running = events
        .iter()
        .find(|e| {
            e["detail-type"] == "ECS Task State Change" && e["detail"]["lastStatus"] == "RUNNING"
        })
        .cloned()
        .expect("the daemon reported RUNNING");
    let now = harness.model.now();
    let first = harness
        .engine
        .on_task_event(running.clone(), now, "a")
        .await
        .unwrap();
    assert_eq!(first.ready_set, vec![id.clone()]);
    let duplicate = harness
        .engine
        .on_task_event(running.clone(), now, "b")
        .await
        .unwrap();
    assert!(
        duplicate
            .skipped
            .as_deref()
            .unwrap()
            .contains("already handled"),
        "{duplicate:?}"
    );

    // The daemon dies and is restarted; then the old RUNNING event arrives again under a new id.
    let task = harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .find(|t| t.group == "daemon:agent")
        .unwrap();
    harness.model.crash_task(CLUSTER, &task.id);
    for event in harness.model.take_due_events() {
        if event["detail-type"] == "ECS Task State Change" {
            harness.engine.on_task_event(event, now, "c").await.unwrap();
        }
    }
    assert!(
        ready_instances(&harness).is_empty(),
        "not ready while the replacement starts"
    );
    let mut stale = running;
    stale["id"] = serde_json::json!("replayed-old-event");
    let calls = harness.model.call_count();
    let outcome = harness.engine.on_task_event(stale, now, "d").await.unwrap();
    assert!(
        outcome.ready_set.is_empty() && outcome.started.is_empty(),
        "{outcome:?}"
    );
    assert!(
        ready_instances(&harness).is_empty(),
        "a stale RUNNING event never marks the instance ready"
    );
    assert!(
        harness.model.calls()[calls..].iter().all(|c| !c.modify),
        "and changes nothing"
    );
    assert_eq!(live_daemons_on(&harness, &id, "agent"), 1);

    // Malformed or foreign input is a clear error, never a panic or a change.
    let error = harness
        .engine
        .on_task_event(serde_json::json!({"detail-type": "x"}), now, "e")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not an EventBridge event"),
        "{error}"
    );
    // An event for a cluster this deployment does not manage is refused, whatever it says.
    for (sample, task_event) in [("task-running.json", true), ("instance-active.json", false)] {
        let path = format!("{}/../events/{sample}", env!("CARGO_MANIFEST_DIR"));
        let mut foreign: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        foreign["detail"]["clusterArn"] =
            serde_json::json!("arn:aws:ecs:us-east-1:111122223333:cluster/someone-elses");
        let calls = harness.model.call_count();
        let error = if task_event {
            harness
                .engine
                .on_task_event(foreign, now, "f")
                .await
                .unwrap_err()
        } else {
            harness
                .engine
                .on_instance_event(foreign, now, "f")
                .await
                .unwrap_err()
        };
        assert!(error.to_string().contains("not managed"), "{error}");
        assert_eq!(
            harness.model.call_count(),
            calls,
            "and no ECS call is made for it"
        );
    }
}

#[tokio::test]
async fn a_burst_of_events_is_handled_in_batches_with_batched_reads() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    harness
        .deploy(request("agent", &agent, &["general"], 0))
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(20), Duration::seconds(1))
        .await;
    // A scale-out of 100 instances at once: their ACTIVE events arrive together.
    for _ in 0..100 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let log = harness
        .run_for(Duration::seconds(30), Duration::seconds(1))
        .await;
    assert_no_errors(&log);
    assert_eq!(ready_instances(&harness).len(), 101);
    let biggest = log
        .iter()
        .filter(|i| i.function == "instance-events")
        .max_by_key(|i| i.result.as_ref().map_or(0, |o| o.started.len()))
        .expect("instance events were delivered");
    let started = biggest.result.as_ref().unwrap().started.len();
    assert!(
        biggest.events.len() >= 50 && started >= 50,
        "one batch took the burst: {} events, {started} started",
        biggest.events.len()
    );
    // One DescribeContainerInstances per 100 instances and one StartTask per 10 of them,
    // instead of a few reads per event.
    assert!(
        biggest.ecs_calls <= 2 + started.div_ceil(10) + 1,
        "{} ECS calls for {} events",
        biggest.ecs_calls,
        biggest.events.len()
    );
}

#[tokio::test]
async fn one_batch_merges_duplicates_and_reorderings_and_isolates_bad_events() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let instance = harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 512, 512));
    harness
        .deploy(request("agent", &agent, &["general"], 0))
        .await
        .unwrap();
    harness.model.take_due_events();
    harness.model.advance(Duration::seconds(6));
    let running = harness
        .model
        .take_due_events()
        .into_iter()
        .find(|e| e["detail"]["lastStatus"] == "RUNNING")
        .expect("the daemon reported RUNNING");
    let task = running["detail"]["taskArn"].as_str().unwrap().to_string();
    harness.model.crash_task(CLUSTER, &task);
    harness.model.advance(Duration::seconds(5));
    let stopped = harness
        .model
        .take_due_events()
        .into_iter()
        .find(|e| e["detail"]["lastStatus"] == "STOPPED" && e["detail"]["taskArn"] == task.as_str())
        .expect("the crash reported STOPPED");
    let mut foreign = running.clone();
    foreign["detail"]["clusterArn"] = "arn:aws:ecs:us-east-1:1:cluster/someone-elses".into();
    // The STOPPED first, then the older RUNNING twice (a duplicate), a foreign cluster's
    // event and one that is not an event at all.
    let batch = vec![
        stopped,
        running.clone(),
        running,
        foreign,
        serde_json::json!("not an event"),
    ];
    let now = harness.model.now();
    let handled = harness
        .engine
        .on_events(batch, ecs_daemons::engine::EventKind::Task, now, "batch")
        .await;
    let failed: Vec<Vec<usize>> = handled
        .failures
        .iter()
        .map(|f| f.positions.clone())
        .collect();
    assert_eq!(failed, vec![vec![3], vec![4]], "{:?}", handled.failures);
    assert!(handled.failures.iter().all(|f| !f.error.is_retryable()));
    assert!(
        handled.failures[0]
            .error
            .to_string()
            .contains("not managed"),
        "{}",
        handled.failures[0].error
    );
    let duplicates = handled
        .outcomes
        .iter()
        .filter(|o| {
            o.skipped
                .as_deref()
                .is_some_and(|s| s.contains("already handled"))
        })
        .count();
    assert_eq!(duplicates, 1, "{:?}", handled.outcomes);
    // The newest word won: the daemon died, so it is restarted (not believed RUNNING).
    let restarted: Vec<_> = handled.outcomes.iter().flat_map(|o| &o.started).collect();
    assert_eq!(restarted.len(), 1, "{:?}", handled.outcomes);
    assert_eq!(
        restarted[0].instance_id,
        ecs_daemons::arn::resource_id(&instance)
    );
}

/// ECS's list of what emits "ECS Container Instance State Change" (developer guide) does not
/// include UpdateContainerInstancesState → DRAINING, and the model emits none for it: the
/// applications' own stops finish drain-last where they run, the schedule where none do.
#[tokio::test]
async fn drain_last_needs_no_instance_event_for_the_drain() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let app = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("checkout", 512, 512));
    harness
        .deploy(request("agent", &agent, &["general"], 0))
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(20), Duration::seconds(1))
        .await;
    let instances = harness.model.instances(CLUSTER);
    let (with_app, daemons_only) = (instances[0].arn.clone(), instances[1].arn.clone());
    harness
        .model
        .start_foreign_task(
            CLUSTER,
            &with_app,
            &app,
            "service:checkout",
            Some("ecs-svc/1"),
        )
        .unwrap();
    harness
        .run_for(Duration::seconds(10), Duration::seconds(1))
        .await;

    for instance in [&with_app, &daemons_only] {
        harness.model.drain_instance(CLUSTER, instance);
    }
    let seen = harness
        .run_for(Duration::seconds(30), Duration::seconds(1))
        .await;
    let id = |arn: &str| ecs_daemons::arn::resource_id(arn).to_string();
    // Where an application ran, its stop was the news: the daemon went after it.
    assert_eq!(live_daemons_on(&harness, &id(&with_app), "agent"), 0);
    assert!(harness.model.early_drain_stops().is_empty());
    // (run_for runs no schedule: the events of the application's stop did it, task
    // events or the instance events its freed resources cause.)
    assert!(
        seen.iter()
            .any(|i| i.result.as_ref().is_ok_and(|o| !o.stopped.is_empty())),
        "an event's reconcile stopped the daemon"
    );
    // Where nothing but the daemon ran, no event came at all; the schedule finishes it.
    assert_eq!(live_daemons_on(&harness, &id(&daemons_only), "agent"), 1);
    harness.run_scheduled(Duration::seconds(60), 60).await;
    assert_eq!(live_daemons_on(&harness, &id(&daemons_only), "agent"), 0);
    assert!(harness.model.early_drain_stops().is_empty());
}
