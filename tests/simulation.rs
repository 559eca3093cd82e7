//! Deterministic simulation: many seeds of a cluster with instances joining,
//! draining and leaving, daemons crashing, application tasks placed on ready
//! instances, and faults (dropped, duplicated, delayed events; throttled calls;
//! invocations crashing between calls; missed coverage checks). Invariants are
//! checked after every step; after the faults stop, everything must converge
//! within two coverage-check runs.
//!
//! Replay one seed: `SIM_SEED=<n> cargo test -p integration-tests --test simulation -- --nocapture`.
//! More seeds: `SIM_SEEDS=<count>`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::cluster_model::{Faults, ModelConfig, Rng, TaskDefinitionModel};
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::{ContainerInstance, HealthStatus, InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::simulation::Harness;
use ecs_daemons::store::RestartPolicy;

const CLUSTER: &str = "sim";
const COVERAGE_INTERVAL: i64 = 60;
const FAULT_PHASE: i64 = 600;
/// CPU units and MiB of each simulated daemon.
const DAEMON_SIZE: i64 = 256;

struct DaemonDecl {
    name: &'static str,
    providers: Vec<&'static str>,
    health_checked: bool,
}

#[derive(Default, Debug)]
struct SeedStats {
    steps: u64,
    events_dropped: u64,
    events_duplicated: u64,
    throttled: u64,
    crashes: u64,
    coverage_checks_missed: u64,
}

fn is_ready(instance: &ContainerInstance) -> bool {
    instance
        .attributes
        .get(READY_ATTRIBUTE)
        .is_some_and(|v| v.as_deref() == Some("true"))
}

/// (instance, daemon) pairs where a ready instance lacks an up copy of a daemon that targets it.
fn ready_but_uncovered(harness: &Harness, daemons: &[DaemonDecl]) -> BTreeSet<(String, String)> {
    let tasks = harness.model.tasks(CLUSTER);
    let mut gaps = BTreeSet::new();
    for instance in harness.model.instances(CLUSTER) {
        if instance.status != InstanceStatus::Active || !is_ready(&instance) {
            continue;
        }
        let provider = instance.capacity_provider.clone().unwrap_or_default();
        for daemon in daemons
            .iter()
            .filter(|d| d.providers.contains(&provider.as_str()))
        {
            let up = tasks.iter().any(|t| {
                t.instance_id == instance.id()
                    && t.group == format!("daemon:{}", daemon.name)
                    && t.last_status == TaskStatus::Running
                    && t.desired_status == TaskStatus::Running
                    && (!daemon.health_checked || t.health == HealthStatus::Healthy)
            });
            if !up {
                gaps.insert((instance.id().to_string(), daemon.name.to_string()));
            }
        }
    }
    gaps
}

fn duplicates(harness: &Harness) -> Vec<String> {
    let mut live: BTreeMap<(String, String), usize> = BTreeMap::new();
    for task in harness.model.tasks(CLUSTER) {
        if task.group.starts_with("daemon:")
            && !task.last_status.is_terminal()
            && task.desired_status == TaskStatus::Running
        {
            *live.entry((task.instance_id, task.group)).or_default() += 1;
        }
    }
    live.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((i, g), n)| format!("{n} copies of {g} on {i}"))
        .collect()
}

fn converged(harness: &Harness, daemons: &[DaemonDecl]) -> Result<(), String> {
    let tasks = harness.model.tasks(CLUSTER);
    for instance in harness.model.instances(CLUSTER) {
        let provider = instance.capacity_provider.clone().unwrap_or_default();
        let live_here = |group: &str| {
            tasks
                .iter()
                .filter(|t| {
                    t.instance_id == instance.id()
                        && t.group == group
                        && !t.last_status.is_terminal()
                        && t.desired_status == TaskStatus::Running
                })
                .count()
        };
        match instance.status {
            InstanceStatus::Active if instance.agent_connected => {
                // Applications placed in the moment between a daemon's death and the readiness
                // removal can take its room: then ECS refuses the restart (RESOURCE:*), the
                // instance stays not ready, and the daemon returns when room frees up.
                let no_room = instance.remaining.cpu < DAEMON_SIZE
                    || instance.remaining.memory_mib < DAEMON_SIZE;
                let mut all_there = true;
                for daemon in daemons {
                    let wanted = usize::from(daemon.providers.contains(&provider.as_str()));
                    let found = live_here(&format!("daemon:{}", daemon.name));
                    if found == 0 && wanted == 1 && no_room && !is_ready(&instance) {
                        all_there = false;
                        continue;
                    }
                    if found != wanted {
                        return Err(format!(
                            "{} has {found} live copies of {}, wants {wanted}",
                            instance.id(),
                            daemon.name
                        ));
                    }
                }
                if all_there && !is_ready(&instance) {
                    return Err(format!("{} is covered but not ready", instance.id()));
                }
            }
            InstanceStatus::Draining => {
                let apps = tasks
                    .iter()
                    .filter(|t| {
                        t.instance_id == instance.id()
                            && t.group.starts_with("service:")
                            && !t.last_status.is_terminal()
                    })
                    .count();
                let daemons_left = tasks
                    .iter()
                    .filter(|t| {
                        t.instance_id == instance.id()
                            && t.group.starts_with("daemon:")
                            && !t.last_status.is_terminal()
                    })
                    .count();
                if apps == 0 && daemons_left > 0 {
                    return Err(format!("draining {} has no application left but still {daemons_left} daemon task(s)", instance.id()));
                }
                if is_ready(&instance) {
                    return Err(format!("draining {} is still ready", instance.id()));
                }
            }
            _ => {}
        }
    }
    let dups = duplicates(harness);
    if !dups.is_empty() {
        return Err(format!("duplicates at rest: {dups:?}"));
    }
    Ok(())
}

/// A model with seeded latencies, and the faults to switch on once the daemons are
/// declared (`severity` scales their rates and delays).
fn seeded_world(seed: u64, rng: &mut Rng, severity: f64) -> (ModelConfig, Faults) {
    let drop_events = rng.unit() * 0.05 * severity;
    let duplicate_events = rng.unit() * 0.10 * severity;
    let max_event_delay = Duration::seconds(rng.below((20.0 * severity) as u64) as i64);
    let max_duplicate_delay = Duration::seconds(rng.below((300.0 * severity) as u64) as i64);
    let throttle_calls = rng.unit() * 0.03 * severity;
    let faults = Faults {
        drop_events,
        duplicate_events,
        max_event_delay,
        max_duplicate_delay,
        throttle_calls,
    };
    let config = ModelConfig {
        seed,
        start_latency: Duration::seconds(2 + rng.below(9) as i64),
        health_grace: Duration::seconds(5 + rng.below(11) as i64),
        stop_latency: Duration::seconds(1 + rng.below(5) as i64),
        rate_limits: true,
        faults: Faults::default(),
        ..ModelConfig::default()
    };
    (config, faults)
}

async fn run_seed(seed: u64) -> Result<SeedStats, String> {
    let mut rng = Rng::new(seed);
    let (config, faults) = seeded_world(seed, &mut rng, 1.0);
    let mut harness = Harness::new(CLUSTER, &["general", "gpu"], config);
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", DAEMON_SIZE, DAEMON_SIZE));
    let logs = harness.model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        ..TaskDefinitionModel::new("logs", DAEMON_SIZE, DAEMON_SIZE)
    });
    let app = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("app", 512, 512));
    for _ in 0..3 + rng.below(6) {
        harness.model.add_instance(CLUSTER, "general", 2048, 4096);
    }
    for _ in 0..1 + rng.below(2) {
        harness.model.add_instance(CLUSTER, "gpu", 4096, 8192);
    }
    let mut daemons = vec![DaemonDecl {
        name: "agent",
        providers: vec!["general"],
        health_checked: false,
    }];
    if rng.chance(0.5) {
        daemons.push(DaemonDecl {
            name: "logs",
            providers: vec!["general", "gpu"],
            health_checked: true,
        });
    }
    let restart = RestartPolicy {
        max_consecutive_failures: 50,
        base_backoff_seconds: 5,
        max_backoff_seconds: 30,
        stable_after_seconds: 60,
    };
    for (order, daemon) in daemons.iter().enumerate() {
        let definition = if daemon.name == "agent" {
            &agent
        } else {
            &logs
        };
        let request = DeployRequest {
            cluster: CLUSTER.into(),
            daemon: daemon.name.into(),
            task_definition: definition.clone(),
            capacity_providers: daemon.providers.iter().map(|p| p.to_string()).collect(),
            start_order: order as i32 * 10,
            restart: Some(restart.clone()),
            warn_share: None,
            rollout: None,
        };
        harness
            .deploy(request)
            .await
            .map_err(|e| format!("deploy {}: {e}", daemon.name))?;
    }
    harness.model.set_faults(faults.clone());
    harness.crash_chance = rng.unit() * 0.10;

    let mut stats = SeedStats::default();
    let start = harness.model.now();
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    let converge_by = fault_end + Duration::seconds(2 * COVERAGE_INTERVAL);
    let end = converge_by + Duration::seconds(60);
    let tolerance =
        Duration::seconds(2 * COVERAGE_INTERVAL) + faults.max_event_delay + Duration::seconds(10);
    let mut gap_since: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    let mut disconnected: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut faults_on = true;
    let mut converged_checked = false;

    while harness.model.now() < end {
        harness.model.advance(Duration::seconds(1));
        let now = harness.model.now();
        stats.steps += 1;
        if faults_on && now >= fault_end {
            faults_on = false;
            harness.model.set_faults(Faults::default());
            harness.crash_chance = 0.0;
            for (instance, _) in disconnected.drain(..) {
                harness.model.set_agent_connected(CLUSTER, &instance, true);
            }
        }
        let elapsed = (now - start).num_seconds();
        // The world changes (less often once the faults stop, so convergence can be judged).
        if faults_on {
            let instances = harness.model.instances(CLUSTER);
            let active: Vec<&ContainerInstance> = instances
                .iter()
                .filter(|i| i.status == InstanceStatus::Active)
                .collect();
            if rng.chance(0.01) {
                let provider = if rng.chance(0.8) { "general" } else { "gpu" };
                harness.model.add_instance(CLUSTER, provider, 2048, 4096);
            }
            if active.len() > 2 && rng.chance(0.004) {
                let victim = active[rng.below(active.len() as u64) as usize];
                harness.model.drain_instance(CLUSTER, &victim.arn);
            }
            if rng.chance(0.01) {
                let live: Vec<_> = harness
                    .model
                    .tasks(CLUSTER)
                    .into_iter()
                    .filter(|t| {
                        t.group.starts_with("daemon:") && t.last_status == TaskStatus::Running
                    })
                    .collect();
                if !live.is_empty() {
                    let victim = &live[rng.below(live.len() as u64) as usize];
                    harness.model.crash_task(CLUSTER, &victim.id);
                }
            }
            if rng.chance(0.002) && !active.is_empty() {
                let victim = active[rng.below(active.len() as u64) as usize];
                harness
                    .model
                    .set_agent_connected(CLUSTER, &victim.arn, false);
                disconnected.push((victim.arn.clone(), now + Duration::seconds(30)));
            }
            disconnected.retain(|(instance, until)| {
                if *until <= now {
                    harness.model.set_agent_connected(CLUSTER, instance, true);
                    false
                } else {
                    true
                }
            });
        }
        if rng.chance(0.05) {
            harness.model.run_service_task(CLUSTER, "web", &app);
        }
        // Scale-in finishes: a drained instance whose tasks are all gone leaves.
        for instance in harness.model.instances(CLUSTER) {
            if instance.status == InstanceStatus::Draining
                && instance.running_tasks + instance.pending_tasks == 0
            {
                harness.model.deregister_instance(CLUSTER, &instance.arn);
            }
        }

        harness.deliver_events().await;
        if elapsed % COVERAGE_INTERVAL != 0 {
            harness.wake_if_due().await;
        }
        if elapsed % COVERAGE_INTERVAL == 0 {
            if faults_on && rng.chance(0.1) {
                stats.coverage_checks_missed += 1;
            } else {
                let check = harness.scheduled_check().await;
                let clean =
                    !check.crashed && check.result.as_ref().is_ok_and(|o| o.errors.is_empty());
                if clean {
                    let dups = duplicates(&harness);
                    if !dups.is_empty() {
                        return Err(format!(
                            "at {now}: a completed coverage check left duplicates: {dups:?}"
                        ));
                    }
                }
            }
        }

        // Invariant: no daemon stop while an application still runs on its draining instance.
        let early = harness.model.early_drain_stops();
        if !early.is_empty() {
            return Err(format!("at {now}: drain-last broken: {early:?}"));
        }
        // Invariant: targets never change here, so the only copy of a daemon on an ACTIVE
        // instance is never stopped (a stale event must not kill a healthy copy).
        let lone = harness.model.lone_copy_stops();
        if !lone.is_empty() {
            return Err(format!(
                "at {now}: stopped the only copy of a daemon: {lone:?}"
            ));
        }
        // Invariant: a ready instance never lacks a daemon (beyond what dropped events can hide).
        let gaps = ready_but_uncovered(&harness, &daemons);
        gap_since.retain(|key, _| gaps.contains(key));
        for key in gaps {
            let since = *gap_since.entry(key.clone()).or_insert(now);
            let allowed = if now >= converge_by {
                Duration::zero()
            } else {
                tolerance
            };
            if now - since > allowed {
                return Err(format!(
                    "at {now}: ready instance {} lacks daemon {} since {since}",
                    key.0, key.1
                ));
            }
        }
        if !converged_checked && now >= converge_by {
            converged_checked = true;
            if let Err(e) = converged(&harness, &daemons) {
                if std::env::var("SIM_SEED").is_ok() {
                    use ecs_daemons::store::Store;
                    for daemon in &daemons {
                        let slots: Vec<ecs_daemons::store::Versioned<ecs_daemons::store::Slot>> =
                            harness.store.query(CLUSTER, daemon.name).await.unwrap();
                        for slot in slots {
                            println!("slot v{} {:?}", slot.version, slot.record);
                        }
                    }
                    for task in harness.model.tasks(CLUSTER) {
                        println!("task {:?}", task);
                    }
                    println!("check: {:?}", harness.coverage_check().await.result);
                }
                return Err(format!(
                    "not converged two coverage checks after the faults stopped: {e}"
                ));
            }
        }
    }
    converged(&harness, &daemons).map_err(|e| format!("not converged at the end: {e}"))?;
    let events = harness.model.event_stats();
    stats.events_dropped = events.dropped;
    stats.events_duplicated = events.duplicated;
    stats.throttled = harness.model.calls().iter().filter(|c| c.throttled).count() as u64;
    stats.crashes = harness.crashes;
    Ok(stats)
}

/// Runs `run` over the seeds (`SIM_SEED` for one, `SIM_SEEDS` for a count, 200 by
/// default), sums their figures, and fails with a replay line per broken seed.
fn campaign<F, Fut>(test: &str, run: F) -> (usize, SeedStats)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<SeedStats, String>>,
{
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let count: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=count).collect()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut totals = SeedStats::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match runtime.block_on(run(seed)) {
            Ok(stats) => {
                totals.steps += stats.steps;
                totals.events_dropped += stats.events_dropped;
                totals.events_duplicated += stats.events_duplicated;
                totals.throttled += stats.throttled;
                totals.crashes += stats.crashes;
                totals.coverage_checks_missed += stats.coverage_checks_missed;
            }
            Err(error) => failures.push(format!(
                "seed {seed}: {error}\n  replay: SIM_SEED={seed} cargo test -p integration-tests --test simulation {test} -- --nocapture"
            )),
        }
    }
    println!("{test}: {} seeds, {totals:?}", seeds.len());
    assert!(
        failures.is_empty(),
        "{} of {} seeds broke an invariant:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    (seeds.len(), totals)
}

#[test]
fn seeded_fault_campaign_keeps_every_invariant() {
    let (seeds, totals) = campaign("seeded_fault_campaign", run_seed);
    if seeds > 1 {
        assert!(
            totals.events_dropped > 0
                && totals.events_duplicated > 0
                && totals.crashes > 0
                && totals.throttled > 0,
            "faults were injected: {totals:?}"
        );
    }
}

/// Faults a user retries: throttling (the SDK would retry it), crashed invocations, lost races.
fn retryable(error: &str) -> bool {
    [
        "ThrottlingException",
        "InjectedCrash",
        "changed by someone else",
    ]
    .iter()
    .any(|e| error.contains(e))
}

/// A user deploying: tries again while the answer is a retryable fault.
async fn deploy_until_done(harness: &mut Harness, request: DeployRequest) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        match harness.deploy(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) if retryable(&error.to_string()) => last = error.to_string(),
            Err(error) => return Err(error.to_string()),
        }
        harness.model.advance(Duration::seconds(1));
    }
    Err(format!("still failing after 20 tries: {last}"))
}

/// Rollouts under the same faults: an update, sometimes a bad revision (breaker and
/// automatic rollback), sometimes a superseding deploy or a manual rollback mid-way.
async fn run_rollout_seed(seed: u64) -> Result<SeedStats, String> {
    use ecs_daemons::deploy::RollbackRequest;
    use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState, SurgeFallback};
    use ecs_daemons::store::{Rollout, Store, Versioned};

    let mut rng = Rng::new(seed ^ 0xA5A5);
    let (config, faults) = seeded_world(seed, &mut rng, 0.5);
    let mut harness = Harness::new(CLUSTER, &["general"], config);
    let mut revisions = Vec::new();
    for _ in 0..3 {
        revisions.push(
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(
                    "agent",
                    DAEMON_SIZE,
                    DAEMON_SIZE,
                )),
        );
    }
    let bad = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new("agent", DAEMON_SIZE, DAEMON_SIZE)
    });
    let instances = 4 + rng.below(9) as usize;
    for _ in 0..instances {
        // Some instances have room for one copy only: the surge fallback decides there.
        let cpu = if rng.chance(0.2) { 384 } else { 2048 };
        harness.model.add_instance(CLUSTER, "general", cpu, 4096);
    }
    let max_parallel = 1 + rng.below(4) as usize;
    let rollout = RolloutConfig {
        max_parallel: Amount::Count(max_parallel as u32),
        min_healthy_seconds: 10 + rng.below(30) as u32,
        canary: rng.chance(0.3).then_some(1),
        surge_fallback: if rng.chance(0.5) {
            SurgeFallback::StopFirst
        } else {
            SurgeFallback::Fail
        },
        failure_threshold: Amount::Count(2 + rng.below(3) as u32),
        auto_rollback: true,
    };
    let restart = RestartPolicy {
        max_consecutive_failures: 50,
        base_backoff_seconds: 5,
        max_backoff_seconds: 30,
        stable_after_seconds: 60,
    };
    let request = |task_definition: &str| DeployRequest {
        restart: Some(restart.clone()),
        rollout: Some(rollout.clone()),
        ..DeployRequest::new(CLUSTER, "agent", task_definition, &["general"], 0)
    };
    harness
        .deploy(request(&revisions[0]))
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    harness
        .run_for(Duration::seconds(60), Duration::seconds(1))
        .await;
    harness.model.set_faults(faults);
    harness.crash_chance = rng.unit() * 0.05;

    // The script: an update at once; then maybe a bad revision, a superseding deploy, or a rollback.
    let twist = rng.below(4);
    let twist_at = 30 + rng.below(200) as i64;
    let mut plan_done = false;
    let daemons = [DaemonDecl {
        name: "agent",
        providers: vec!["general"],
        health_checked: false,
    }];
    let mut stats = SeedStats::default();
    let start = harness.model.now();
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    // Batches advance on coverage checks: give the slowest script (update, failed update,
    // automatic rollback) time for every batch after the faults stop.
    let batches = instances.div_ceil(max_parallel) as i64 + 2;
    let end = fault_end + Duration::seconds(900.max(3 * batches * 2 * COVERAGE_INTERVAL));
    deploy_until_done(&mut harness, request(&revisions[1]))
        .await
        .map_err(|e| format!("update: {e}"))?;
    let mut failed_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut gap_since: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    let tolerance = Duration::seconds(2 * COVERAGE_INTERVAL) + Duration::seconds(30);
    let mut faults_on = true;
    while harness.model.now() < end {
        harness.model.advance(Duration::seconds(1));
        let now = harness.model.now();
        stats.steps += 1;
        if faults_on && now >= fault_end {
            faults_on = false;
            harness.model.set_faults(Faults::default());
            harness.crash_chance = 0.0;
        }
        if !plan_done && (now - start).num_seconds() >= twist_at {
            plan_done = true;
            let result = match twist {
                0 => deploy_until_done(&mut harness, request(&bad)).await,
                1 => deploy_until_done(&mut harness, request(&revisions[2])).await,
                2 => {
                    let mut outcome = Ok(());
                    for _ in 0..20 {
                        let rollback = RollbackRequest {
                            cluster: CLUSTER.into(),
                            daemon: "agent".into(),
                            to_revision: None,
                        };
                        outcome = harness
                            .rollback(rollback)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string());
                        if !outcome.as_ref().is_err_and(|e| retryable(e)) {
                            break;
                        }
                    }
                    outcome
                }
                _ => Ok(()),
            };
            // A crashed invocation or a lost race is an answer a user gets too; it changes nothing.
            if let Err(text) = result {
                if !text.contains("already on") {
                    return Err(format!("twist {twist}: {text}"));
                }
            }
        }
        harness.deliver_events().await;
        if (now - start).num_seconds() % COVERAGE_INTERVAL != 0 {
            harness.wake_if_due().await;
        }
        if (now - start).num_seconds() % COVERAGE_INTERVAL == 0 {
            if faults_on && rng.chance(0.1) {
                stats.coverage_checks_missed += 1;
            } else {
                harness.scheduled_check().await;
            }
        }
        // Invariants: at most two copies per instance, at most maxParallel instances with two.
        let tasks = harness.model.tasks(CLUSTER);
        let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
        for task in tasks.iter().filter(|t| {
            t.group == "daemon:agent"
                && !t.last_status.is_terminal()
                && t.desired_status == TaskStatus::Running
        }) {
            *per_instance.entry(task.instance_id.as_str()).or_default() += 1;
        }
        if let Some((instance, count)) = per_instance.iter().find(|(_, n)| **n > 2) {
            return Err(format!("at {now}: {count} copies of agent on {instance}"));
        }
        let in_flight = per_instance.values().filter(|n| **n == 2).count();
        if in_flight > max_parallel {
            if std::env::var("SIM_SEED").is_ok() {
                let slots: Vec<Versioned<ecs_daemons::store::Slot>> =
                    harness.store.query(CLUSTER, "agent").await.unwrap();
                for (instance, _) in per_instance.iter().filter(|(_, n)| **n == 2) {
                    println!("two copies on {instance}:");
                    for task in tasks
                        .iter()
                        .filter(|t| t.instance_id == *instance && t.group == "daemon:agent")
                    {
                        println!("  task {task:?}");
                    }
                    for slot in slots.iter().filter(|s| s.record.instance_id == *instance) {
                        println!("  slot v{} {:?}", slot.version, slot.record);
                    }
                }
                let records: Vec<Versioned<Rollout>> =
                    harness.store.query(CLUSTER, "agent").await.unwrap();
                for record in &records {
                    println!(
                        "rollout {} {:?} {:?} -> {} {:?}",
                        record.record.id,
                        record.record.kind,
                        record.record.state,
                        record.record.to_task_definition,
                        record.record.counts
                    );
                }
            }
            return Err(format!(
                "at {now}: {in_flight} instances in flight, maxParallel {max_parallel}"
            ));
        }
        let lone = harness.model.lone_copy_stops();
        // stopFirst stops a lone copy on purpose; without it, never.
        if rollout.surge_fallback == SurgeFallback::Fail && !lone.is_empty() {
            return Err(format!("at {now}: stopped the only copy: {lone:?}"));
        }
        // A ready instance never lacks a running copy (beyond what dropped events can hide),
        // except the counted gaps of stopFirst.
        if rollout.surge_fallback == SurgeFallback::Fail {
            let gaps = ready_but_uncovered(&harness, &daemons);
            gap_since.retain(|key, _| gaps.contains(key));
            for key in gaps {
                let since = *gap_since.entry(key.clone()).or_insert(now);
                if now - since > tolerance {
                    return Err(format!(
                        "at {now}: ready instance {} has no running copy since {since}",
                        key.0
                    ));
                }
            }
        }
        // A tripped breaker touches no instance after it.
        let records: Vec<Versioned<Rollout>> = harness
            .store
            .query(CLUSTER, "agent")
            .await
            .map_err(|e| e.to_string())?;
        for record in &records {
            if record.record.state == RolloutState::Failed {
                failed_at
                    .entry(record.record.to_task_definition.clone())
                    .or_insert(now);
            }
        }
        for (definition, at) in &failed_at {
            let late = tasks
                .iter()
                .filter(|t| {
                    &t.definition == definition && t.created_at > *at + Duration::seconds(1)
                })
                .count();
            if late > 0 && definition == &bad {
                return Err(format!("at {now}: {late} copies of {definition} started after its breaker tripped at {at}"));
            }
        }
    }
    // Every rollout ended, and every instance runs one copy of one revision.
    let records: Vec<Versioned<Rollout>> = harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())?;
    if std::env::var("SIM_SEED").is_ok() {
        for record in &records {
            println!("rollout {:?}", record.record);
        }
        let slots: Vec<Versioned<ecs_daemons::store::Slot>> =
            harness.store.query(CLUSTER, "agent").await.unwrap();
        for slot in slots {
            println!("slot v{} {:?}", slot.version, slot.record);
        }
        for task in harness
            .model
            .tasks(CLUSTER)
            .iter()
            .filter(|t| !t.last_status.is_terminal())
        {
            println!("task {task:?}");
        }
    }
    if let Some(open) = records
        .iter()
        .find(|r| r.record.state == RolloutState::InProgress)
    {
        return Err(format!(
            "rollout {} to {} still in progress: {:?}",
            open.record.id, open.record.to_task_definition, open.record.counts
        ));
    }
    converged(&harness, &daemons).map_err(|e| format!("not converged: {e}"))?;
    let tasks = harness.model.tasks(CLUSTER);
    let live: std::collections::BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.group == "daemon:agent" && !t.last_status.is_terminal())
        .map(|t| t.definition.as_str())
        .collect();
    if live.len() > 1 {
        return Err(format!(
            "instances on several revisions at the end: {live:?}"
        ));
    }
    let events = harness.model.event_stats();
    stats.events_dropped = events.dropped;
    stats.events_duplicated = events.duplicated;
    stats.throttled = harness.model.calls().iter().filter(|c| c.throttled).count() as u64;
    stats.crashes = harness.crashes;
    Ok(stats)
}

#[test]
fn seeded_rollouts_keep_every_invariant() {
    let (seeds, totals) = campaign("seeded_rollouts", run_rollout_seed);
    if seeds > 1 {
        assert!(
            totals.events_dropped > 0 && totals.crashes > 0,
            "faults were injected: {totals:?}"
        );
    }
}
