//! The services scenario: one daemon on an EC2 provider with ECS managed scaling (managed
//! termination protection in most seeds), so it runs as two DAEMON services steered by its
//! slot attribute. Applications come and go and make the group scale out and in; a rolling
//! update runs, then maybe a bad revision, another update or a rollback; the DAEMON
//! scheduler reacts late by a seeded delay, stops daemon tasks on draining instances in one
//! of the three orders seen (documented, #3829, #1700), and may stall while another instance
//! drains (#856); all under the campaign's faults. Held: never more than two copies on an
//! instance and never more than maxParallel instances with two; never a ready instance
//! without a running copy; never a standalone copy on the provider; never more than ECS's 10
//! custom attributes on an instance; after the applications leave, the group scales in to
//! its minimum with daemons running; at rest, one copy of the declared revision everywhere.

use super::*;
use crate::cluster_model::{
    DaemonDrainOrder, ManagedScaling, ScaleInStep, ServiceKnobs, TerminationPick,
};
use ecs_daemons::ecs::EcsServices;
use ecs_daemons::placement::services::Letter;

const DAEMON: &str = "agent";
const PROVIDER: &str = "general";

fn knobs(rng: &mut Rng) -> ServiceKnobs {
    ServiceKnobs {
        reaction: Duration::seconds(2 + rng.below(19) as i64),
        reaction_spread: Duration::seconds(rng.below(61) as i64),
        drain_order: match rng.below(3) {
            0 => DaemonDrainOrder::AfterOthersStopped,
            1 => DaemonDrainOrder::AfterOthersLeaveRunning,
            _ => DaemonDrainOrder::WithOthers,
        },
        waits_for_draining: rng.chance(0.5),
        ..ServiceKnobs::default()
    }
}

/// Per instance, the live copies of the daemon (standalone ones named apart).
struct Census {
    per_instance: BTreeMap<String, usize>,
    standalone: Vec<String>,
}

fn census(harness: &Harness) -> Census {
    let mut census = Census {
        per_instance: BTreeMap::new(),
        standalone: Vec::new(),
    };
    for task in harness.model.tasks(CLUSTER) {
        if task.last_status.is_terminal() || task.desired_status != TaskStatus::Running {
            continue;
        }
        if task.group == format!("daemon:{DAEMON}") {
            census
                .standalone
                .push(format!("{} on {}", task.id, task.instance_id));
        }
        if copy_of(&task.group) == Some(DAEMON) {
            *census.per_instance.entry(task.instance_id).or_default() += 1;
        }
    }
    census
}

fn attributes_within_quota(harness: &Harness, now: DateTime<Utc>) -> Result<(), String> {
    for instance in harness.model.instances(CLUSTER) {
        let custom = instance
            .attributes
            .keys()
            .filter(|name| !name.starts_with("ecs."))
            .count();
        if custom > ecs_daemons::ecs::CUSTOM_ATTRIBUTES_PER_INSTANCE {
            return Err(format!(
                "at {now}: {} carries {custom} custom attributes",
                instance.id()
            ));
        }
    }
    Ok(())
}

pub(super) async fn run_services(seed: u64) -> Result<SeedReport, String> {
    let mut rng = Rng::new(seed ^ 0x5E4C_1CE5);
    let (mut config, faults) = seeded_world(seed, &mut rng, 0.5);
    config.services = knobs(&mut rng);
    config.scaling.scale_in_step = if rng.chance(0.5) {
        ScaleInStep::One
    } else {
        ScaleInStep::UpToHalf
    };
    config.scaling.termination_pick = if rng.chance(0.5) {
        TerminationPick::BusiestFirst
    } else {
        TerminationPick::Random
    };
    let reaction = config.services.reaction + config.services.reaction_spread;
    let mut harness = Harness::new(CLUSTER, &[PROVIDER], config);
    hook_terminations(&mut harness);
    let min_size = 1 + rng.below(2) as usize;
    let scaling = ManagedScaling {
        managed_termination_protection: rng.chance(0.7),
        instance_warmup: Duration::seconds(60 + rng.below(241) as i64),
        ..ManagedScaling::new(min_size, 8, 2048, 4096)
    };
    // Some seeds start as standalone copies (managed scaling off) and move to services by
    // the first rollout, once managed scaling is turned on.
    let moves = rng.chance(0.3);
    if !moves {
        harness
            .model
            .enable_managed_scaling(CLUSTER, PROVIDER, scaling.clone());
    }
    let revisions: Vec<String> = (0..3)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(
                    DAEMON,
                    DAEMON_SIZE,
                    DAEMON_SIZE,
                ))
        })
        .collect();
    let bad = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, DAEMON_SIZE, DAEMON_SIZE)
    });
    let web = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("web", 512, 512));
    for _ in 0..2 + rng.below(5) {
        harness.model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    }
    let max_parallel = 1 + rng.below(3) as usize;
    let rollout = RolloutConfig {
        max_parallel: Amount::Count(max_parallel as u32),
        min_healthy_seconds: 10 + rng.below(30) as u32,
        canary: rng
            .chance(0.3)
            .then_some(ecs_daemons::rollout::Canary::automatic(1)),
        surge_fallback: SurgeFallback::Fail,
        failure_threshold: Amount::Count(2 + rng.below(3) as u32),
        auto_rollback: true,
        progress_deadline_seconds: ecs_daemons::rollout::DEFAULT_PROGRESS_DEADLINE_SECONDS,
        ..RolloutConfig::default()
    };
    let request = |task_definition: &str| DeployRequest {
        restart: Some(campaign_restart_policy()),
        rollout: Some(rollout.clone()),
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &[PROVIDER], 0)
    };
    harness
        .deploy(request(&revisions[0]))
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    harness.run_scheduled(Duration::seconds(180), 60).await;
    if moves {
        harness
            .model
            .enable_managed_scaling(CLUSTER, PROVIDER, scaling);
    }
    harness
        .model
        .set_application(CLUSTER, "web", &web, PROVIDER, 2 + rng.below(10) as usize);
    harness.model.set_faults(faults);
    harness.wakes.make_late(Some((seed, super::WAKES_LATE_BY)));
    harness.crash_chance = rng.unit() * 0.05;
    harness.budget.lose_races(rng.unit() * 0.03, seed);

    let twist = rng.below(4);
    let twist_at = 30 + rng.below(300) as i64;
    let mut twist_done = false;
    let mut retried = false;
    let daemons = [DaemonDecl {
        name: DAEMON,
        providers: vec![PROVIDER],
        health_checked: false,
    }];
    let mut report = SeedReport::default();
    let start = harness.model.now();
    let mut disturbances = Disturbances::new(&mut rng, start, 0.3);
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    // After the faults the applications leave: ECS's 15 one-minute points, then a step a
    // minute, each instance drained and let go through the hook.
    let end = fault_end + Duration::minutes(40);
    deploy_until_done(&mut harness, request(&revisions[1]))
        .await
        .map_err(|e| format!("update: {e}"))?;
    let mut failed_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut gaps = GapWatch::default();
    // A copy shows up a scheduler's reaction after its request.
    let tolerance = Duration::seconds(2 * COVERAGE_INTERVAL) + Duration::seconds(30) + reaction;
    let mut faults_on = true;
    let mut converged_at: Option<DateTime<Utc>> = None;
    let mut schedule = Schedule::starting(start);
    while harness.model.now() < end {
        harness.model.advance(Duration::seconds(1));
        let now = harness.model.now();
        report.steps += 1;
        if faults_on && now >= fault_end {
            faults_on = false;
            stop_faults(&mut harness);
            harness
                .model
                .set_application(CLUSTER, "web", &web, PROVIDER, 0);
        }
        if faults_on {
            disturbances.step(&harness, &mut rng, now, &mut report.faults);
            if rng.chance(0.01) {
                let count = rng.below(13) as usize;
                harness
                    .model
                    .set_application(CLUSTER, "web", &web, PROVIDER, count);
            }
        }
        deregister_drained(&harness);
        if !faults_on && !retried {
            // A rollout the faults made fail (a good revision's copies crash-looped where the
            // faults made them) is what a user deploys again once the cause is gone: it rolls
            // on to the instances it left, standalone copies included.
            let records = rollouts(&harness).await?;
            if let Some(failed) = records
                .last()
                .filter(|r| r.record.state == RolloutState::Failed)
            {
                retried = true;
                let revision = failed.record.to_task_definition.clone();
                if verbose() {
                    println!("{now} the user deploys {revision} again");
                }
                deploy_until_done(&mut harness, request(&revision))
                    .await
                    .map_err(|text| format!("deploying {revision} again: {text}"))?;
            }
        }
        if !twist_done && (now - start).num_seconds() >= twist_at {
            twist_done = true;
            let result = match twist {
                0 => deploy_until_done(&mut harness, request(&bad)).await,
                1 => deploy_until_done(&mut harness, request(&revisions[2])).await,
                2 => rollback_until_done(&mut harness).await,
                _ => Ok(()),
            };
            // Refusals a user gets too change nothing: the rollback target already declared,
            // or a third revision while both services are busy.
            if let Err(text) = result {
                if !text.contains("already on") && !text.contains("both still have copies") {
                    return Err(format!("twist {twist}: {text}"));
                }
            }
        }
        let delivered = harness.deliver_events().await;
        trace(&delivered);
        // The wake queue's messages come whatever the schedule does.
        trace(&harness.deliver_wakes().await);
        if schedule.due(now) {
            if faults_on && rng.chance(0.1) {
                report.faults.coverage_checks_missed += 1;
            } else {
                let check = harness.scheduled_check().await;
                trace(std::slice::from_ref(&check));
                if !check.crashed && check.result.as_ref().is_ok_and(|o| o.errors.is_empty()) {
                    gaps.clean_checks.push(now);
                }
            }
        }
        let seen = census(&harness);
        let records = rollouts(&harness).await?;
        let rolling = records
            .iter()
            .any(|r| r.record.state == RolloutState::InProgress);
        // A standalone copy is only ever the old copy of the rollout moving it to services
        // (left where that rollout's breaker tripped and no rollback could follow).
        let last_failed = records
            .iter()
            .max_by_key(|r| r.record.started_at)
            .is_some_and(|r| r.record.state == RolloutState::Failed);
        if let Some(standalone) = seen.standalone.first().filter(|_| !rolling && !last_failed) {
            return Err(format!(
                "at {now}: a standalone copy on a services provider: {standalone}"
            ));
        }
        if let Some((instance, count)) = seen.per_instance.iter().find(|(_, n)| **n > 2) {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(format!(
                "at {now}: {count} copies of {DAEMON} on {instance}"
            ));
        }
        let in_flight = seen.per_instance.values().filter(|n| **n == 2).count();
        if in_flight > max_parallel {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(format!(
                "at {now}: {in_flight} instances in flight, maxParallel {max_parallel}"
            ));
        }
        attributes_within_quota(&harness, now)?;
        hook_kept(&harness, now)?;
        if let Err(gap) = gaps.check(&harness, &daemons, now, tolerance, !faults_on) {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(gap);
        }
        // A tripped breaker requests no copy after it (one requested before shows up a
        // scheduler's reaction later).
        for record in &records {
            if record.record.state == RolloutState::Failed {
                failed_at
                    .entry(record.record.to_task_definition.clone())
                    .or_insert(harness.model.now());
            }
        }
        if let Some(at) = failed_at.get(&bad) {
            let late: Vec<String> = harness
                .model
                .tasks(CLUSTER)
                .iter()
                .filter(|t| {
                    t.definition == bad && t.created_at > *at + reaction + Duration::seconds(1)
                })
                .map(|t| format!("{} on {} at {}", t.id, t.instance_id, t.created_at))
                .collect();
            if !late.is_empty() {
                if verbose() {
                    dump(&harness, &daemons).await;
                }
                return Err(format!(
                    "at {now}: copies of {bad} started after its breaker tripped at {at}: {late:?}"
                ));
            }
        }
        if !faults_on
            && converged_at.is_none()
            && !records
                .iter()
                .any(|r| r.record.state == RolloutState::InProgress)
            && converged(&harness, &daemons).is_ok()
        {
            converged_at = Some(now);
        }
    }
    if verbose() {
        dump(&harness, &daemons).await;
    }
    let records = rollouts(&harness).await?;
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
    hooks_settled(&harness)?;
    // The applications left: only daemon copies run, so the group is back at its minimum.
    let size = harness.model.group_size(CLUSTER, PROVIDER);
    if size != min_size {
        return Err(format!(
            "{size} instances left 40 minutes after the applications did; the group's minimum is {min_size}"
        ));
    }
    report.faults.collect(&harness);
    report.convergence_seconds = converged_at.map_or(0, |at| (at - fault_end).num_seconds());
    // Half the seeds end by undeploying the daemon (drawn apart: the rest of the seed's world
    // is what it was before undeploys came in).
    if Rng::new(seed ^ UNDEPLOY_SALT).chance(0.5) {
        undeploy_at_the_end(&mut harness, seed).await?;
        report.faults.undeploys += 1;
    }
    Ok(report)
}

/// The undeploy under crashes and lost races: every copy stopped, the slot attributes and
/// the DAEMON services gone, every instance ready (nothing else to wait for).
async fn undeploy_at_the_end(harness: &mut Harness, seed: u64) -> Result<(), String> {
    harness.crash_chance = 0.1;
    harness.budget.lose_races(0.05, seed);
    undeploy_until_done(harness, DAEMON).await?;
    harness.run_scheduled(Duration::minutes(3), 60).await;
    stop_faults(harness);
    harness
        .run_scheduled(Duration::seconds(2 * COVERAGE_INTERVAL), COVERAGE_INTERVAL)
        .await;
    undeployed_gone(harness, &[DAEMON]).map_err(|e| format!("after the undeploy: {e}"))?;
    let names = [Letter::A, Letter::B]
        .map(|letter| ecs_daemons::placement::services::service_name(DAEMON, letter));
    let services = harness
        .model
        .describe_services(CLUSTER, &names)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(left) = services.iter().find(|s| s.is_active()) {
        return Err(format!("after the undeploy: {} is still ACTIVE", left.name));
    }
    let waiting: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Active && !is_ready(i))
        .map(|i| i.id().to_string())
        .collect();
    if !waiting.is_empty() {
        return Err(format!("after the undeploy: {waiting:?} still not ready"));
    }
    Ok(())
}
