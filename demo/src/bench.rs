//! Benchmarks on the ECS cluster model, in simulated time (figures, never timed tests).
//! Prints one JSON line per figure, then a table.
//!
//! `cargo run --release -p ecs-daemons-demo --bin bench`

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::{
    ContainerInstance, HealthStatus, InstanceStatus, Resources, Task, TaskStatus,
};
use ecs_daemons::pacing::{Pacing, Rate, ECS_LIMITS};
use ecs_daemons::plan::{daemon_group, plan, DaemonView, Observation, Scope};
use ecs_daemons::rollout::Rollout;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons::slot::{Slot, SlotState};
use ecs_daemons::spec::RestartPolicy;
use ecs_daemons::store::{Store, Versioned};
use ecs_daemons_sim::cluster_model::Faults;
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;
use ecs_daemons_sim::simulation::Invocation;

mod cost;

const CLUSTER: &str = "bench";
const SCHEDULE_SECONDS: i64 = 60;

struct Figure {
    name: &'static str,
    value: f64,
    parameters: String,
}

/// Where the rolled-out copies run: standalone tasks, or DAEMON services (the provider has
/// managed scaling, its group pinned at `instances` so nothing scales meanwhile).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placed {
    Tasks,
    Services,
}

/// One benchmarked rollout: `instances` on one provider, `max_parallel` of them at a time.
#[derive(Clone, Copy)]
struct RolloutCase {
    /// Model seeds the rollout runs with (its wall time is their mean): the scheduler's
    /// reaction is drawn per instance, so one seed is one sample of it.
    seeds: &'static [u64],
    instances: usize,
    max_parallel: Amount,
    start_seconds: i64,
    min_healthy: u32,
    drop: f64,
    placed: Placed,
}

/// A rollout run to its end: the harness after it, what the counters said when it began,
/// and its wall time in simulated seconds.
struct RolloutRun {
    harness: Harness,
    started: chrono::DateTime<Utc>,
    wall: f64,
    /// The dry run's `expectedWallSeconds`, asked just before the update.
    plan: f64,
    calls_before: usize,
    paced_before: f64,
    paced_by_function_before: [f64; 4],
    dropped_before: u64,
}

/// Deploys the agent on a settled cluster, then an update, and runs until the update's
/// rollout succeeded. `free_reads`: a model without ECS's rate limits and functions that
/// never wait for their pacers, so the wall time is the control loop's alone (the floor
/// the read budget is measured against).
async fn run_rollout(case: RolloutCase, seed: u64, free_reads: bool) -> RolloutRun {
    let RolloutCase {
        seeds: _,
        instances,
        max_parallel,
        start_seconds,
        min_healthy,
        drop,
        placed,
    } = case;
    let config = ModelConfig {
        seed,
        start_latency: Duration::seconds(start_seconds),
        health_grace: Duration::seconds(10),
        stop_latency: Duration::seconds(3),
        // ECS's token buckets on: every throttled call is counted (the model has no SDK retry,
        // so a throttled call is a failed one); the functions must pace themselves under them.
        rate_limits: !free_reads,
        ..ModelConfig::default()
    };
    let unbounded = Rate {
        per_second: f64::MAX,
        burst: f64::MAX,
    };
    let mut harness = if free_reads {
        Harness::with_pacing(CLUSTER, &["general"], config, |_| Pacing {
            read: unbounded,
            modify: unbounded,
        })
    } else {
        Harness::new(CLUSTER, &["general"], config)
    };
    let v1 = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let v2 = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    if placed == Placed::Services {
        harness.model.enable_managed_scaling(
            CLUSTER,
            "general",
            ecs_daemons_sim::cluster_model::ManagedScaling::new(instances, instances, 4096, 8192),
        );
    }
    let rollout = RolloutConfig {
        max_parallel,
        min_healthy_seconds: min_healthy,
        failure_threshold: Amount::Percent(10),
        ..RolloutConfig::default()
    };
    let request = |td: &str| DeployRequest {
        rollout: Some(rollout.clone()),
        ..DeployRequest::new(CLUSTER, "agent", td, &["general"], 0)
    };
    harness.deploy(request(&v1)).await.expect("first deploy");
    harness
        .run_scheduled(Duration::seconds(300), SCHEDULE_SECONDS)
        .await;

    // The operator reads the dry run's plan for a minute, then deploys.
    let plan = harness
        .deploy_dry_run(DeployRequest {
            dry_run: true,
            ..request(&v2)
        })
        .await
        .expect("the update's dry run")
        .expected_wall_seconds as f64;
    harness
        .run_scheduled(Duration::seconds(60), SCHEDULE_SECONDS)
        .await;
    let calls_before = harness.model.call_count();
    let paced_before = harness.paced_seconds();
    let paced_by_function_before = harness.paced_seconds_by_function();
    let dropped_before = harness.model.event_stats().dropped;
    let started = harness.model.now();
    harness.model.set_faults(Faults {
        drop_events: drop,
        ..Faults::default()
    });
    harness.deploy(request(&v2)).await.expect("update deploy");
    let mut finished = None;
    while finished.is_none() && harness.model.now() - started < Duration::hours(3) {
        harness
            .run_scheduled(Duration::seconds(1), SCHEDULE_SECONDS)
            .await;
        let records: Vec<Versioned<Rollout>> =
            harness.store.query(CLUSTER, "agent").await.expect("query");
        let done = records.iter().find(|r| {
            r.record.to_task_definition == v2 && r.record.state == RolloutState::Succeeded
        });
        finished = done.and_then(|r| r.record.finished_at);
    }
    let finished = finished.expect("the rollout finished within three simulated hours");
    RolloutRun {
        wall: (finished - started).num_milliseconds() as f64 / 1000.0,
        plan,
        harness,
        started,
        calls_before,
        paced_before,
        paced_by_function_before,
        dropped_before,
    }
}

/// The ideal rollout: a controller that sees and acts at once, its only limits ECS's own
/// latencies and maxParallel. Each instance holds one of the `parallel` places for the
/// scheduler's reaction (services: drawn per instance as the model draws it, uniform in
/// `least`..`least + spread` ms), the new copy's start and minHealthySeconds (`fixed_ms`);
/// the next instance takes the first place that frees; the rollout ends as the last
/// instance's old copy is told to stop. Its expected length over `TRIALS` draws: batches ×
/// the mean cycle would ignore that the slowest instance of the last places ends the rollout
/// (the controller with free reads measured above that formula).
fn ideal_rollout_seconds(
    instances: usize,
    parallel: usize,
    fixed_ms: i64,
    reaction: Option<(i64, i64)>,
) -> f64 {
    const TRIALS: u64 = 400;
    let mut total = 0i64;
    for trial in 0..TRIALS {
        let mut rng = ecs_daemons_sim::cluster_model::Rng::new(trial);
        let mut places: BinaryHeap<Reverse<i64>> =
            (0..parallel.max(1)).map(|_| Reverse(0)).collect();
        let mut end = 0;
        for _ in 0..instances {
            let Reverse(free_at) = places.pop().expect("at least one place");
            let drawn = reaction.map_or(0, |(least, spread)| {
                least + rng.below(spread.max(0) as u64 + 1) as i64
            });
            let done = free_at + drawn + fixed_ms;
            end = end.max(done);
            places.push(Reverse(done));
        }
        total += end;
    }
    total as f64 / TRIALS as f64 / 1000.0
}

async fn rollout_figures(case: RolloutCase) -> Vec<Figure> {
    let RolloutCase {
        seeds,
        instances,
        max_parallel,
        start_seconds,
        min_healthy,
        drop,
        placed,
    } = case;
    let knobs = ModelConfig::default().services;
    // Every seed runs twice: with ECS's read limits and the functions' pacing, and with reads
    // free (the floor the read budget is measured against).
    let mut walls = Vec::new();
    let mut plans = Vec::new();
    let mut floors = Vec::new();
    let mut first = None;
    for &seed in seeds {
        if drop == 0.0 {
            floors.push(run_rollout(case, seed, true).await.wall);
        }
        let run = run_rollout(case, seed, false).await;
        walls.push(run.wall);
        plans.push(run.plan);
        first.get_or_insert(run);
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let floor = (!floors.is_empty()).then(|| mean(&floors));
    let wall = mean(&walls);
    let plan = mean(&plans);
    let RolloutRun {
        harness,
        started,
        wall: _,
        plan: _,
        calls_before,
        paced_before,
        paced_by_function_before,
        dropped_before,
    } = first.expect("at least one seed");
    let parallel = max_parallel.of(instances);
    // On services each instance also waits for ECS's scheduler to start its new copy (the
    // old one ends by StopTask).
    let reaction = match placed {
        Placed::Tasks => None,
        Placed::Services => Some((
            knobs.reaction.num_milliseconds(),
            knobs.reaction_spread.num_milliseconds(),
        )),
    };
    let scheduler = reaction.map_or(0.0, |(least, spread)| (least + spread / 2) as f64 / 1000.0);
    let ideal = ideal_rollout_seconds(
        instances,
        parallel,
        (start_seconds + i64::from(min_healthy)) * 1000,
        reaction,
    );
    let batches_times_mean_cycle = instances.div_ceil(parallel) as f64
        * (start_seconds as f64 + f64::from(min_healthy) + scheduler);
    let calls = harness.model.calls()[calls_before..].to_vec();
    if std::env::var("BENCH_TRACE").is_ok() {
        let mut last = None;
        for call in calls
            .iter()
            .filter(|c| c.modify || std::env::var("BENCH_TRACE").as_deref() == Ok("all"))
        {
            let second = (call.at - started).num_milliseconds() as f64 / 1000.0;
            if last != Some((call.operation, second as i64)) {
                eprintln!("{second:8.3} {}", call.operation);
                last = Some((call.operation, second as i64));
            }
        }
    }
    // The most calls that started in any window of `seconds` (sliding, by millisecond),
    // divided by its length: a 1 s window shows bursts, a 10 s one the sustained rate. ECS's
    // buckets (burst 100, then 40/s modify, 20/s read) allow (100 + rate × w) / w per second.
    let peak_rate = |modify: bool, seconds: i64| {
        let times: Vec<i64> = calls
            .iter()
            .filter(|c| c.modify == modify)
            .map(|c| c.at.timestamp_millis())
            .collect();
        let mut most = 0;
        let mut first = 0;
        for (last, at) in times.iter().enumerate() {
            while times[first] <= at - seconds * 1000 {
                first += 1;
            }
            most = most.max(last + 1 - first);
        }
        most as f64 / seconds as f64
    };
    let throttled = calls.iter().filter(|c| c.throttled).count() as f64;
    let mut by_operation = BTreeMap::<&str, usize>::new();
    for call in &calls {
        *by_operation.entry(call.operation).or_default() += 1;
    }
    let by_operation = by_operation
        .iter()
        .map(|(operation, n)| format!("\"{operation}\": {:.2}", *n as f64 / instances as f64))
        .collect::<Vec<_>>()
        .join(", ");
    let dropped = harness.model.event_stats().dropped - dropped_before;
    // Which function's pacer held the calls back (the coverage-check's polls, or the events).
    let paced_by_function = ["task-events", "instance-events", "coverage-check", "deploy"]
        .iter()
        .zip(
            harness
                .paced_seconds_by_function()
                .iter()
                .zip(paced_by_function_before),
        )
        .map(|(function, (after, before))| format!("\"{function}\": {:.1}", after - before))
        .collect::<Vec<_>>()
        .join(", ");
    let placement = match placed {
        Placed::Tasks => "tasks",
        Placed::Services => "services",
    };
    let listed = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let seed_list = listed(&seeds.iter().map(|s| *s as f64).collect::<Vec<_>>());
    let parameters = format!(
        "\"placement\": \"{placement}\", \"instances\": {instances}, \"maxParallel\": \"{}\", \"startSeconds\": {start_seconds}, \"minHealthySeconds\": {min_healthy}, \"schedulerSeconds\": {scheduler}, \"droppedEvents\": {drop}, \"eventsDropped\": {dropped}, \"seeds\": [{seed_list}]",
        amount_text(max_parallel)
    );
    let mut figures = vec![
        Figure {
            name: "rollout_wall_seconds",
            value: wall,
            parameters: format!("{parameters}, \"perSeed\": [{}]", listed(&walls)),
        },
        Figure {
            name: "rollout_wall_over_plan",
            value: wall / plan,
            parameters: format!(
                "{parameters}, \"expectedWallSeconds\": {plan:.0}, \"perSeed\": [{}]",
                listed(&walls)
            ),
        },
        Figure {
            name: "rollout_ideal_seconds",
            value: ideal,
            parameters: format!(
                "{parameters}, \"batchesTimesMeanCycle\": {batches_times_mean_cycle:.0}"
            ),
        },
        Figure {
            name: "rollout_wall_over_ideal",
            value: wall / ideal,
            parameters: parameters.clone(),
        },
        Figure {
            name: "rollout_ecs_calls_per_instance",
            value: calls.len() as f64 / instances as f64,
            parameters: format!("{parameters}, \"perOperation\": {{{by_operation}}}"),
        },
        Figure {
            name: "api_rate_peak_per_s",
            value: peak_rate(true, 1),
            parameters: format!(
                "{parameters}, \"calls\": \"modify\", \"window\": \"1 s\", \"ecsAllows\": {}",
                allows(ECS_LIMITS.modify, 1)
            ),
        },
        Figure {
            name: "api_rate_peak_per_s",
            value: peak_rate(true, 10),
            parameters: format!(
                "{parameters}, \"calls\": \"modify\", \"window\": \"10 s\", \"ecsAllows\": {}",
                allows(ECS_LIMITS.modify, 10)
            ),
        },
        Figure {
            name: "api_rate_peak_per_s",
            value: peak_rate(false, 1),
            parameters: format!(
                "{parameters}, \"calls\": \"read\", \"window\": \"1 s\", \"ecsAllows\": {}",
                allows(ECS_LIMITS.read, 1)
            ),
        },
        Figure {
            name: "api_rate_peak_per_s",
            value: peak_rate(false, 10),
            parameters: format!(
                "{parameters}, \"calls\": \"read\", \"window\": \"10 s\", \"ecsAllows\": {}",
                allows(ECS_LIMITS.read, 10)
            ),
        },
        Figure {
            name: "rollout_paced_seconds",
            value: harness.paced_seconds() - paced_before,
            parameters: format!("{parameters}, \"byFunction\": {{{paced_by_function}}}"),
        },
        Figure {
            name: "rollout_throttled_calls",
            value: throttled,
            parameters: parameters.clone(),
        },
    ];
    if let Some(floor) = floor {
        // The same rollout with reads free (ECS's rate limits off, no pacing): what the
        // control loop and ECS's own latencies take; the rest is the read budget's cost.
        let floor_parameters = format!("{parameters}, \"reads\": \"free\"");
        figures.extend([
            Figure {
                name: "rollout_floor_seconds",
                value: floor,
                parameters: format!("{floor_parameters}, \"perSeed\": [{}]", listed(&floors)),
            },
            Figure {
                name: "rollout_floor_over_ideal",
                value: floor / ideal,
                parameters: floor_parameters,
            },
            Figure {
                name: "rollout_wall_over_floor",
                value: wall / floor,
                parameters,
            },
        ]);
    }
    figures
}

/// One full coverage-check at rest of `instances` × `daemons`: ECS calls over the batched
/// lower bound (pages of 100 for both lists, describes of 100 for instances and tasks).
async fn reconcile_figure(instances: usize, daemons: usize) -> Figure {
    // Events dropped: the coverage-checks alone bring the cluster to rest (faster to set up).
    let config = ModelConfig {
        rate_limits: false,
        faults: Faults {
            drop_events: 1.0,
            ..Faults::default()
        },
        ..ModelConfig::default()
    };
    let mut harness = Harness::new(CLUSTER, &["general"], config);
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 8192, 16384);
    }
    for index in 0..daemons {
        let definition = harness
            .model
            .register_task_definition(TaskDefinitionModel::new(&format!("agent{index}"), 256, 256));
        let request = DeployRequest::new(
            CLUSTER,
            &format!("agent{index}"),
            &definition,
            &["general"],
            0,
        );
        harness.deploy(request).await.expect("deploy");
    }
    for _ in 0..3 {
        harness.model.advance(Duration::seconds(30));
        harness.coverage_check().await;
    }
    let check = harness.coverage_check().await;
    let outcome = check.result.expect("reconcile at rest");
    assert!(
        outcome.started.is_empty() && outcome.stopped.is_empty(),
        "the cluster is at rest"
    );
    let tasks = instances * daemons;
    let bound = 2 * instances.div_ceil(100) + 2 * tasks.div_ceil(100);
    Figure {
        name: "reconcile_calls_over_lower_bound",
        value: check.ecs_calls as f64 / bound as f64,
        parameters: format!("\"instances\": {instances}, \"daemons\": {daemons}, \"calls\": {}, \"lowerBound\": {bound}", check.ecs_calls),
    }
}

fn per_event(invocations: &[Invocation], function: &str, phase: &str) -> Vec<Figure> {
    let of: Vec<&Invocation> = invocations
        .iter()
        .filter(|i| i.function == function && i.result.as_ref().is_ok_and(|o| o.skipped.is_none()))
        .collect();
    // An invocation is a batch of events (the SQS batch): its calls are shared by its events.
    let events = of.iter().map(|i| i.events.len()).sum::<usize>();
    let mean = |f: fn(&Invocation) -> usize| {
        of.iter().map(|i| f(i)).sum::<usize>() as f64 / events.max(1) as f64
    };
    let max = |f: fn(&Invocation) -> usize| {
        of.iter()
            .map(|i| f(i) as f64 / i.events.len().max(1) as f64)
            .fold(0.0, f64::max)
    };
    let name = if function == "instance-events" {
        "calls_per_instance_event"
    } else {
        "calls_per_task_event"
    };
    let parameters = |kind: &str, stat: &str| {
        format!(
            "\"phase\": \"{phase}\", \"api\": \"{kind}\", \"stat\": \"{stat}\", \"events\": {events}, \"invocations\": {}",
            of.len()
        )
    };
    vec![
        Figure {
            name,
            value: mean(|i| i.ecs_calls),
            parameters: parameters("ecs", "mean"),
        },
        Figure {
            name,
            value: max(|i| i.ecs_calls),
            parameters: parameters("ecs", "max of a batch per event"),
        },
        Figure {
            name,
            value: mean(|i| i.store_calls),
            parameters: parameters("dynamodb", "mean"),
        },
        Figure {
            name,
            value: max(|i| i.store_calls),
            parameters: parameters("dynamodb", "max of a batch per event"),
        },
    ]
}

/// ECS and DynamoDB calls per handled event: at rest with churn (joins, drains, crashes), then during a rollout.
async fn event_figures() -> Vec<Figure> {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            seed: 9,
            ..ModelConfig::default()
        },
    );
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let logs = harness.model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        ..TaskDefinitionModel::new("logs", 256, 256)
    });
    let agent_v2 = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    for _ in 0..100 {
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
        .expect("deploy");
    harness
        .deploy(DeployRequest::new(CLUSTER, "logs", &logs, &["general"], 10))
        .await
        .expect("deploy");
    harness
        .run_scheduled(Duration::seconds(180), SCHEDULE_SECONDS)
        .await;

    let mut at_rest = Vec::new();
    for minute in 0..10 {
        let tasks = harness.model.tasks(CLUSTER);
        if let Some(victim) = tasks
            .iter()
            .filter(|t| t.group.starts_with("daemon:") && t.last_status == TaskStatus::Running)
            .nth(minute * 7)
        {
            harness.model.crash_task(CLUSTER, &victim.id);
        }
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
        if minute % 3 == 0 {
            if let Some(instance) = harness
                .model
                .instances(CLUSTER)
                .into_iter()
                .find(|i| i.status == InstanceStatus::Active)
            {
                harness.model.drain_instance(CLUSTER, &instance.arn);
            }
        }
        at_rest.extend(
            harness
                .run_scheduled(Duration::seconds(60), SCHEDULE_SECONDS)
                .await,
        );
    }
    let rollout = RolloutConfig {
        max_parallel: Amount::Percent(10),
        min_healthy_seconds: 30,
        ..RolloutConfig::default()
    };
    let request = DeployRequest {
        rollout: Some(rollout),
        ..DeployRequest::new(CLUSTER, "agent", &agent_v2, &["general"], 0)
    };
    harness.deploy(request).await.expect("update");
    let during = harness
        .run_scheduled(Duration::seconds(900), SCHEDULE_SECONDS)
        .await;
    let mut figures = Vec::new();
    for function in ["instance-events", "task-events"] {
        figures.extend(per_event(&at_rest, function, "at rest"));
        figures.extend(per_event(&during, function, "rollout"));
    }
    figures
}

/// The planner alone on 10,000 instances × 10 daemons (100,000 tasks and slots): median of 11 runs.
fn plan_figures() -> Vec<Figure> {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
        .single()
        .expect("time");
    let daemons: Vec<DaemonView> = (0..10)
        .map(|d| DaemonView {
            launch: Default::default(),
            name: format!("d{d}"),
            task_definition: format!("d{d}:1"),
            capacity_providers: vec!["general".into()],
            start_order: d,
            has_health_check: d % 2 == 0,
            revision_health_checks: Default::default(),
            unhealthy_grace: Duration::seconds(105),
            restart: RestartPolicy::default(),
            active_rollout: None,
            last_good: Some(format!("d{d}:1")),
            services: None,
            instance_filter: None,
            critical_drains: None,
        })
        .collect();
    let mut instances = Vec::new();
    let mut tasks = Vec::new();
    let mut slots = Vec::new();
    for i in 0..10_000 {
        let id = format!("ci{i:05}");
        let arn = format!("arn:aws:ecs:us-east-1:1:container-instance/c/{id}");
        instances.push(ContainerInstance {
            arn: arn.clone(),
            ec2_instance_id: None,
            status: InstanceStatus::Active,
            status_reason: None,
            agent_connected: true,
            capacity_provider: Some("general".into()),
            registered: Resources {
                cpu: 8192,
                memory_mib: 16384,
            },
            remaining: Resources {
                cpu: 4096,
                memory_mib: 8192,
            },
            running_tasks: 12,
            pending_tasks: 0,
            attributes: BTreeMap::from([(
                ecs_daemons::plan::READY_ATTRIBUTE.to_string(),
                Some("true".to_string()),
            )]),
            version: 7,
            registered_at: Some(now),
        });
        for daemon in &daemons {
            let task_arn = format!("arn:aws:ecs:us-east-1:1:task/c/{}-{id}", daemon.name);
            tasks.push(Task {
                arn: task_arn.clone(),
                task_definition_arn: format!(
                    "arn:aws:ecs:us-east-1:1:task-definition/{}",
                    daemon.task_definition
                ),
                container_instance_arn: Some(arn.clone()),
                last_status: TaskStatus::Running,
                desired_status: TaskStatus::Running,
                health: HealthStatus::Healthy,
                group: Some(daemon_group(&daemon.name)),
                started_by: Some("ecs-daemons".into()),
                stop_code: None,
                stopped_reason: None,
                version: 3,
                created_at: Some(now - Duration::hours(1)),
                started_at: Some(now - Duration::hours(1)),
                stopped_at: None,
                tags: BTreeMap::new(),
            });
            slots.push(ecs_daemons::store::Versioned {
                record: Slot {
                    cluster: "c".into(),
                    daemon: daemon.name.clone(),
                    instance_id: id.clone(),
                    state: SlotState::Running,
                    task_arn: Some(task_arn),
                    task_definition: Some(daemon.task_definition.clone()),
                    claimed_by: None,
                    task_version: 3,
                    consecutive_failures: 0,
                    last_stop_reason: None,
                    retry_after: None,
                    rollout: None,
                    stopped_early: None,
                    critical_drain_at: None,
                    updated_at: now - Duration::hours(1),
                },
                version: 4,
            });
        }
    }
    let observation = Observation {
        cluster: "c".into(),
        now,
        scope: Scope::Full,
        daemons,
        instances,
        tasks,
        slots,
        rollouts: vec![],
        specs: vec![],
        retired: vec![],
        drain_census: Default::default(),
        alarms: Default::default(),
    };
    let mut times: Vec<f64> = (0..11)
        .map(|_| {
            let started = Instant::now();
            let planned = plan(&observation);
            assert!(planned.actions.is_empty(), "at rest");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    // The floor, in the same process: one pass that reads every input once (hashes every id,
    // touches every task and slot), the least any planner must do.
    let mut floors: Vec<f64> = (0..11)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(one_pass(&observation));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    floors.sort_by(f64::total_cmp);
    let plan_ms = times[times.len() / 2];
    let floor_ms = floors[floors.len() / 2];
    let parameters = "\"instances\": 10000, \"daemons\": 10, \"runs\": 11, \"stat\": \"median\"";
    vec![
        Figure {
            name: "plan_over_one_pass",
            value: plan_ms / floor_ms,
            parameters: format!(
                "{parameters}, \"planMs\": {plan_ms:.1}, \"onePassMs\": {floor_ms:.1}, \"goal\": 5"
            ),
        },
        Figure {
            name: "plan_ms_10k_x_10",
            value: plan_ms,
            parameters: parameters.into(),
        },
    ]
}

/// Reads every input of a plan once: every instance's, task's and slot's ids hashed into a
/// set, and each task's status and each slot's state looked at.
fn one_pass(observation: &Observation) -> usize {
    let mut seen = std::collections::HashSet::with_capacity(
        observation.instances.len() + observation.tasks.len() + observation.slots.len(),
    );
    let mut running = 0;
    for instance in &observation.instances {
        seen.insert(instance.arn.as_str());
    }
    for task in &observation.tasks {
        seen.insert(task.arn.as_str());
        running += usize::from(task.last_status == TaskStatus::Running);
    }
    for slot in &observation.slots {
        seen.insert(slot.record.instance_id.as_str());
        running += usize::from(slot.record.state == SlotState::Running);
    }
    seen.len() + running
}

/// The release function binaries as Lambda runs them (needs `bash scripts/setup.sh` first:
/// cargo-lambda builds them, moto serves DynamoDB).
async fn lambda_figures() -> Vec<Figure> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("demo/ sits in the workspace")
        .to_path_buf();
    let log = workspace.join("target/bench-lambda.log");
    let measured = match local_stack::lambda_bench::measure(&workspace, &log).await {
        Ok(measured) => measured,
        Err(error) => {
            eprintln!("lambda figures skipped: {error}");
            return Vec::new();
        }
    };
    let hello = measured.hello;
    let mut figures = vec![Figure {
        name: "lambda_start_ms",
        value: hello.start_ms,
        parameters: format!(
            "\"function\": \"{}\", \"stat\": \"median of 5\", \"floor\": true",
            hello.function
        ),
    }];
    if let Some(rss) = hello.peak_rss_mb {
        figures.push(Figure {
            name: "lambda_peak_rss_mb",
            value: rss,
            parameters: format!(
                "\"function\": \"{}\", \"handling\": \"{}\", \"floor\": true",
                hello.function,
                hello.handled.unwrap_or_default()
            ),
        });
    }
    for m in measured.functions {
        let function = format!("\"function\": \"{}\"", m.function);
        figures.push(Figure {
            name: "lambda_binary_mb",
            value: m.binary_bytes as f64 / 1_048_576.0,
            parameters: format!("{function}, \"profile\": \"release\", \"target\": \"x86_64\""),
        });
        figures.push(Figure {
            name: "lambda_zip_mb",
            value: m.zip_bytes as f64 / 1_048_576.0,
            parameters: function.clone(),
        });
        figures.push(Figure {
            name: "lambda_start_over_hello",
            value: m.start_ms / hello.start_ms,
            parameters: format!(
                "{function}, \"startMs\": {:.2}, \"helloMs\": {:.2}, \"stat\": \"median of 5\", \"goal\": 1.3",
                m.start_ms, hello.start_ms
            ),
        });
        if let (Some(rss), Some(handled), Some(hello_rss)) =
            (m.peak_rss_mb, m.handled, hello.peak_rss_mb)
        {
            figures.push(Figure {
                name: "lambda_rss_over_hello",
                value: rss / hello_rss,
                parameters: format!(
                    "{function}, \"handling\": \"{handled}\", \"peakRssMb\": {rss:.1}, \"helloMb\": {hello_rss:.1}, \"goal\": 1.3"
                ),
            });
        }
    }
    figures
}

/// 100 instances join at once (start latency 10 s, ECS's token buckets on): how long until
/// each has all its daemons RUNNING, from its registration, as the functions record it.
async fn coverage_figures(instances: usize, start_seconds: i64) -> Vec<Figure> {
    let mut harness = Harness::new(
        CLUSTER,
        &["general"],
        ModelConfig {
            seed: 42,
            start_latency: Duration::seconds(start_seconds),
            rate_limits: true,
            ..ModelConfig::default()
        },
    );
    let definitions: Vec<String> = ["agent", "logs"]
        .iter()
        .map(|family| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(family, 256, 256))
        })
        .collect();
    // Both daemons share a start order, so they start side by side (a later start order
    // would wait for the earlier daemon's RUNNING by design: one start latency per order).
    for definition in &definitions {
        let daemon = definition.split(':').next().unwrap_or_default();
        harness
            .deploy(DeployRequest::new(
                CLUSTER,
                daemon,
                definition,
                &["general"],
                0,
            ))
            .await
            .expect("deploy");
    }
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    let seen = harness
        .run_scheduled(Duration::seconds(120), SCHEDULE_SECONDS)
        .await;
    let joined: Vec<_> = seen
        .iter()
        .filter_map(|i| i.result.as_ref().ok())
        .flat_map(|o| o.coverage_times.iter().cloned())
        .collect();
    let summary = ecs_daemons::coverage_time::summarise(&joined, harness.model.now());
    let throttled = harness.model.calls().iter().filter(|c| c.throttled).count();
    let p99 = summary.covered.p99.unwrap_or(f64::NAN);
    let parameters = format!(
        "\"instances\": {instances}, \"daemons\": \"2, same start order\", \"start_latency_s\": {start_seconds}, \"recorded\": {}, \"throttled\": {throttled}",
        summary.covered.count
    );
    vec![
        Figure {
            name: "time_to_coverage_p99_s",
            value: p99,
            parameters: format!(
                "{parameters}, \"p50\": {:?}, \"goal\": {}",
                summary.covered.p50.unwrap_or(f64::NAN),
                1.2 * start_seconds as f64
            ),
        },
        Figure {
            name: "time_to_coverage_p99_over_start",
            value: p99 / start_seconds as f64,
            parameters: format!("{parameters}, \"goal\": 1.2"),
        },
        Figure {
            name: "time_to_ready_p99_s",
            value: summary.ready.p99.unwrap_or(f64::NAN),
            parameters,
        },
    ]
}

/// Calls per second ECS's bucket lets through over a window of `seconds`: the burst spread
/// over the window plus the refill rate.
/// After the last application task leaves a provider with managed scaling, how long until
/// the group is back at its minimum: with the daemon as DAEMON services (instances with only
/// daemon copies count as empty) and as standalone copies (deployed before managed scaling
/// was turned on; they keep every instance in use). ECS's own floor is its scale-in alarm:
/// 15 one-minute points, then a step a minute.
async fn scale_in_figures() -> Vec<Figure> {
    const INSTANCES: usize = 6;
    let mut figures = Vec::new();
    for services in [true, false] {
        let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
        harness.model.add_terminate_hook(
            "general",
            "asg-general",
            "ecs-daemons-drain",
            Duration::seconds(300),
        );
        harness.set_hold_settings(ecs_daemons::holds::HoldSettings::new(
            Duration::seconds(300),
            Duration::hours(1),
        ));
        harness.set_terminate_hook(ecs_daemons::autoscaling::TerminateHook {
            name: "ecs-daemons-drain".into(),
            groups: vec!["asg-general".into()],
        });
        let agent = harness
            .model
            .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
        let web = harness
            .model
            .register_task_definition(TaskDefinitionModel::new("web", 1536, 1024));
        for _ in 0..INSTANCES {
            harness.model.add_instance(CLUSTER, "general", 4096, 8192);
        }
        let scaling = ecs_daemons_sim::cluster_model::ManagedScaling::new(1, 10, 4096, 8192);
        if services {
            harness
                .model
                .enable_managed_scaling(CLUSTER, "general", scaling.clone());
        }
        let request = DeployRequest::new(CLUSTER, "agent", &agent, &["general"], 0);
        harness.deploy(request).await.expect("deploy");
        harness
            .run_scheduled(Duration::seconds(180), SCHEDULE_SECONDS)
            .await;
        if !services {
            // Standalone copies already run: managed scaling turned on afterwards.
            harness
                .model
                .enable_managed_scaling(CLUSTER, "general", scaling);
        }
        // Two application tasks per instance, then none.
        harness
            .model
            .set_application(CLUSTER, "web", &web, "general", 2 * INSTANCES);
        harness
            .run_scheduled(Duration::seconds(600), SCHEDULE_SECONDS)
            .await;
        harness
            .model
            .set_application(CLUSTER, "web", &web, "general", 0);
        let left = harness.model.now();
        let mut first = None;
        let mut minimum = None;
        while minimum.is_none() && harness.model.now() - left < Duration::hours(2) {
            harness
                .run_scheduled(Duration::seconds(1), SCHEDULE_SECONDS)
                .await;
            let size = harness.model.instances(CLUSTER).len();
            let at = (harness.model.now() - left).num_seconds() as f64;
            if first.is_none() && size < INSTANCES {
                first = Some(at);
            }
            if size == 1 {
                minimum = Some(at);
            }
        }
        let placement = if services { "services" } else { "tasks" };
        let parameters = |reached: bool| {
            format!(
                "\"placement\": \"{placement}\", \"instances\": {INSTANCES}, \"minimum\": 1, \"reached\": {reached}, \"ecsFloorSeconds\": 900"
            )
        };
        figures.push(Figure {
            name: if services {
                "scale_in_after_apps_leave_s"
            } else {
                "scale_in_after_apps_leave_s_tasks"
            },
            value: first.unwrap_or(7200.0),
            parameters: parameters(first.is_some()),
        });
        figures.push(Figure {
            name: if services {
                "scale_in_over_ecs_floor"
            } else {
                "scale_in_over_ecs_floor_tasks"
            },
            value: first.unwrap_or(7200.0) / 900.0,
            parameters: parameters(first.is_some()),
        });
        figures.push(Figure {
            name: if services {
                "scale_in_to_minimum_s"
            } else {
                "scale_in_to_minimum_s_tasks"
            },
            value: minimum.unwrap_or(7200.0),
            parameters: parameters(minimum.is_some()),
        });
    }
    figures
}

/// `maxParallel` as a request writes it.
fn amount_text(amount: Amount) -> String {
    match amount {
        Amount::Count(count) => count.to_string(),
        Amount::Percent(percent) => format!("{percent}%"),
    }
}

fn allows(rate: Rate, seconds: u32) -> f64 {
    rate.burst / f64::from(seconds) + rate.per_second
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `BENCH=plan` (or reconcile, events, wall, rollout, services, coverage, lambda, scalein, cost) runs one
    // group only.
    let only = std::env::var("BENCH").unwrap_or_default();
    let wanted = |group: &str| only.is_empty() || only == group;
    let mut figures = Vec::new();
    if wanted("reconcile") {
        figures.push(reconcile_figure(1000, 5).await);
        figures.push(reconcile_figure(5000, 5).await);
    }
    if wanted("events") {
        figures.extend(event_figures().await);
    }
    if wanted("rollout") || wanted("wall") {
        // The demo's update: 10 instances, 3 at a time, minHealthySeconds 30, the model's
        // default start latency (5 s).
        figures.extend(
            rollout_figures(RolloutCase {
                seeds: &[42, 43, 44, 45, 46],
                instances: 10,
                max_parallel: Amount::Count(3),
                start_seconds: 5,
                min_healthy: 30,
                drop: 0.0,
                placed: Placed::Tasks,
            })
            .await,
        );
    }
    if only == "wall" {
        // The 1,000-instance update alone (the rollout group measures it with the others).
        figures.extend(
            rollout_figures(RolloutCase {
                seeds: &[42],
                instances: 1000,
                max_parallel: Amount::Percent(10),
                start_seconds: 20,
                min_healthy: 30,
                drop: 0.0,
                placed: Placed::Tasks,
            })
            .await,
        );
    }
    if wanted("rollout") {
        for drop in [0.0, 0.01, 0.05] {
            figures.extend(
                rollout_figures(RolloutCase {
                    seeds: &[42],
                    instances: 1000,
                    max_parallel: Amount::Percent(10),
                    start_seconds: 20,
                    min_healthy: 30,
                    drop,
                    placed: Placed::Tasks,
                })
                .await,
            );
        }
    }
    if wanted("rollout") || wanted("services") {
        figures.extend(
            rollout_figures(RolloutCase {
                seeds: &[42, 43, 44, 45, 46],
                instances: 1000,
                max_parallel: Amount::Percent(10),
                start_seconds: 20,
                min_healthy: 30,
                drop: 0.0,
                placed: Placed::Services,
            })
            .await,
        );
    }
    if wanted("coverage") {
        figures.extend(coverage_figures(100, 10).await);
    }
    if wanted("plan") {
        figures.extend(plan_figures());
    }
    if wanted("lambda") {
        figures.extend(lambda_figures().await);
    }
    if wanted("scalein") {
        figures.extend(scale_in_figures().await);
    }
    if wanted("cost") {
        figures.extend(cost::cost_figures().await);
    }
    for figure in &figures {
        println!(
            "{{\"figure\": \"{}\", \"value\": {:.3}, {}}}",
            figure.name, figure.value, figure.parameters
        );
    }
    println!();
    println!("{:<34} {:>10}  parameters", "figure", "value");
    for figure in &figures {
        println!(
            "{:<34} {:>10.3}  {}",
            figure.name,
            figure.value,
            figure.parameters.replace('"', "")
        );
    }
}
