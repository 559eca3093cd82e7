//! The Managed Instances scenario: one daemon on ECS's native managed daemons (and, in some
//! seeds, on an EC2 provider as well), declared, updated, rolled back and watched under the
//! campaign's faults, while ECS's drain-and-replace deployments run in the model. ECS places
//! every copy there, so the promises held are ecs-daemons' own: never a second daemon, every
//! rollout record ending the way ECS's deployment ended, the declaration following ECS's own
//! rollback, drift reported (never overwritten), and `status` equal to the model's truth after
//! convergence.

use super::*;
use crate::cluster_model::{
    DaemonDefinitionModel, DeploymentOnDelete, ManagedTruth, NativeKnobs, NonCriticalFailure,
    ScaleOutRevision,
};
use ecs_daemons::deploy::StatusRequest;
use ecs_daemons::ecs::{
    DaemonDeclaration, DaemonDeploymentSettings, DaemonDeploymentStatus, EcsDaemons,
};
use ecs_daemons::managed::ManagedDaemon;
use ecs_daemons::model::CapacityProviderKind;

const DAEMON: &str = "agent";
const EC2_PROVIDER: &str = "general";

/// What the seed does to the daemon in its fault phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Twist {
    /// A new good revision.
    Update,
    /// A revision whose copies never start: ECS's breaker trips and ECS rolls back.
    BadRevision,
    /// A new revision, then a rollback invoke while (or after) it rolls out.
    ManualRollback,
    /// A new revision, superseded by another deploy while it rolls out.
    Supersede,
    /// Someone updates the daemon outside ecs-daemons (the console).
    OutsideUpdate,
    /// Someone deletes the daemon outside ecs-daemons.
    OutsideDelete,
    /// The operator undeploys it (DeleteDaemon), then deploys a new revision once ECS let
    /// the name go.
    Undeploy,
}

impl Twist {
    const ALL: [Twist; 7] = [
        Twist::Update,
        Twist::BadRevision,
        Twist::ManualRollback,
        Twist::Supersede,
        Twist::OutsideUpdate,
        Twist::OutsideDelete,
        Twist::Undeploy,
    ];
}

/// The daemon task definitions (Managed Instances) and task definitions (EC2) of a seed.
struct Revisions {
    good: Vec<String>,
    bad: String,
    ec2_good: Vec<String>,
    ec2_bad: String,
}

struct Setup {
    harness: Harness,
    revisions: Revisions,
    providers: Vec<&'static str>,
    spans_ec2: bool,
    critical: bool,
    rollout: RolloutConfig,
    faults: Faults,
    /// An upper bound on one ECS deployment over the seed's instances.
    deployment_time: Duration,
}

impl Setup {
    fn request(&self, version: Version) -> DeployRequest {
        let (managed, ec2) = match version {
            Version::Good(n) => (&self.revisions.good[n], &self.revisions.ec2_good[n]),
            Version::Bad => (&self.revisions.bad, &self.revisions.ec2_bad),
        };
        let mut providers = self.providers.clone();
        if self.spans_ec2 {
            providers.push(EC2_PROVIDER);
        }
        DeployRequest {
            task_definition: self.spans_ec2.then(|| ec2.clone()),
            daemon_task_definition: Some(managed.clone()),
            critical: Some(self.critical),
            restart: Some(campaign_restart_policy()),
            rollout: Some(self.rollout.clone()),
            ..DeployRequest::new(CLUSTER, DAEMON, ec2, &providers, 0)
        }
    }
}

#[derive(Clone, Copy)]
enum Version {
    Good(usize),
    Bad,
}

fn setup(seed: u64, rng: &mut Rng) -> Setup {
    let (mut config, faults) = seeded_world(seed, rng, 1.0);
    // How long ECS takes to drain and to bring up a replacement is undocumented: varied.
    config.native = NativeKnobs {
        drain_time: Duration::seconds(30 + rng.below(91) as i64),
        replace_time: Duration::seconds(60 + rng.below(121) as i64),
        // Three more behaviours the guide leaves open, each reading taken by some seeds.
        deployment_on_delete: if rng.chance(0.5) {
            DeploymentOnDelete::Stopped
        } else {
            DeploymentOnDelete::LeftAsIs
        },
        non_critical_failure: if rng.chance(0.5) {
            NonCriticalFailure::ReplaceInstance
        } else {
            NonCriticalFailure::RetryInPlace
        },
        scale_out_revision: if rng.chance(0.5) {
            ScaleOutRevision::Goal
        } else {
            ScaleOutRevision::Before
        },
        ..NativeKnobs::default()
    };
    let knobs = config.native.clone();
    let mut harness = Harness::new(CLUSTER, &[EC2_PROVIDER, "mi-a", "mi-b"], config);
    hook_terminations(&mut harness);
    for provider in ["mi-a", "mi-b"] {
        harness
            .model
            .set_capacity_provider_kind(provider, CapacityProviderKind::managed_instances());
    }
    let providers = if rng.chance(0.5) {
        vec!["mi-a"]
    } else {
        vec!["mi-a", "mi-b"]
    };
    let mut instances = 0;
    for provider in &providers {
        let count = 2 + rng.below(6) as usize;
        instances += count;
        harness
            .model
            .launch_managed_instances(CLUSTER, provider, count);
    }
    let spans_ec2 = rng.chance(0.3);
    if spans_ec2 {
        for _ in 0..2 + rng.below(3) {
            harness
                .model
                .add_instance(CLUSTER, EC2_PROVIDER, 2048, 4096);
        }
    }
    let daemon_definition = || DaemonDefinitionModel::new("agent-daemon", 1024, 512);
    let good: Vec<String> = (0..3)
        .map(|_| {
            harness
                .model
                .register_daemon_task_definition(daemon_definition())
        })
        .collect();
    let bad = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            fails_to_start: true,
            ..daemon_definition()
        });
    let ec2_good: Vec<String> = (0..3)
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
    let ec2_bad = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, DAEMON_SIZE, DAEMON_SIZE)
    });
    let max_parallel = match rng.below(4) {
        0 => Amount::Percent(25),
        1 => Amount::Percent(50),
        2 => Amount::Percent(100),
        _ => Amount::Count(1 + rng.below(3) as u32),
    };
    let rollout = RolloutConfig {
        max_parallel,
        min_healthy_seconds: rng.below(181) as u32,
        ..RolloutConfig::default()
    };
    // Instances may join while it runs (scale-out): bound with a few more.
    let bound = instances + 6;
    let settings = ecs_daemons::managed::deployment_settings(&rollout, instances);
    let percent = settings.drain_percent.unwrap_or(25.0);
    let per_step = ((percent / 100.0) * bound as f64).ceil().max(1.0) as usize;
    let steps = bound.div_ceil(per_step) as i64;
    let bake = i64::from(settings.bake_time_in_minutes.unwrap_or(0)) * 60;
    let deployment_time =
        (knobs.drain_time + knobs.replace_time + Duration::seconds(bake)) * (steps as i32 + 1);
    Setup {
        harness,
        revisions: Revisions {
            good,
            bad,
            ec2_good,
            ec2_bad,
        },
        providers,
        spans_ec2,
        critical: rng.chance(0.8),
        rollout,
        faults,
        deployment_time,
    }
}

/// A change made outside ecs-daemons, as the console makes it: retried while throttled.
async fn outside_change(harness: &Harness, twist: Twist, to: &str) -> Result<(), String> {
    for _ in 0..20 {
        let Some(truth) = harness
            .model
            .managed_truth(CLUSTER)
            .into_iter()
            .find(|t| t.name == DAEMON)
        else {
            return Err("no daemon to change outside ecs-daemons".into());
        };
        let result = match twist {
            Twist::OutsideDelete => harness.model.delete_daemon(&truth.arn).await.map(drop),
            _ => {
                let declaration = DaemonDeclaration {
                    daemon_name: DAEMON.into(),
                    cluster_arn: crate::cluster_model::cluster_arn(CLUSTER),
                    daemon_task_definition_arn: to.into(),
                    capacity_provider_arns: truth
                        .state
                        .current_revisions
                        .iter()
                        .flat_map(|r| r.providers.iter().map(|p| p.capacity_provider_arn.clone()))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    deployment: DaemonDeploymentSettings::default(),
                    critical: true,
                    tags: Vec::new(),
                    launch: Default::default(),
                };
                harness
                    .model
                    .update_daemon(&truth.arn, &declaration)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(error) if error.kind == ecs_daemons::ecs::EcsErrorKind::Throttled => {
                harness.model.advance(Duration::seconds(1));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Err("throttled 20 times".into())
}

pub(super) async fn run_managed(seed: u64) -> Result<SeedReport, String> {
    let mut rng = Rng::new(seed ^ 0x4D49_5EED);
    let mut setup = setup(seed, &mut rng);
    setup
        .harness
        .deploy(setup.request(Version::Good(0)))
        .await
        .map_err(|e| format!("deploy: {e}"))?;
    let settle = setup.deployment_time;
    setup.harness.run_scheduled(settle, COVERAGE_INTERVAL).await;
    setup.harness.model.set_faults(setup.faults.clone());
    setup
        .harness
        .wakes
        .make_late(Some((seed, super::WAKES_LATE_BY)));
    setup.harness.crash_chance = rng.unit() * 0.05;
    setup.harness.budget.lose_races(rng.unit() * 0.03, seed);

    let twist = match Twist::ALL[rng.below(Twist::ALL.len() as u64) as usize] {
        // Undeploy is offered on Managed Instances alone (DeleteDaemon).
        Twist::Undeploy if setup.spans_ec2 => Twist::Update,
        twist => twist,
    };
    let twist_at = 30 + rng.below(300) as i64;
    let second_at = twist_at + 60 + rng.below(240) as i64;
    let (mut twist_done, mut second_done) = (false, false);
    let mut report = SeedReport::default();
    let start = setup.harness.model.now();
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    // After the faults: the twist's deployment, ECS's rollback of it, and two checks.
    let end =
        start + Duration::seconds(second_at + 4 * COVERAGE_INTERVAL) + setup.deployment_time * 2;
    let end = end.max(fault_end + Duration::seconds(4 * COVERAGE_INTERVAL));
    let mut faults_on = true;
    let mut converged_at: Option<DateTime<Utc>> = None;
    let mut schedule = Schedule::starting(start);
    let daemons = ec2_daemons(&setup);
    while setup.harness.model.now() < end {
        setup.harness.model.advance(Duration::seconds(1));
        let now = setup.harness.model.now();
        report.steps += 1;
        if faults_on && now >= fault_end {
            faults_on = false;
            stop_faults(&mut setup.harness);
        }
        if faults_on && rng.chance(0.002) {
            // ECS scales a provider out (an application needed room).
            let provider = setup.providers[rng.below(setup.providers.len() as u64) as usize];
            setup
                .harness
                .model
                .launch_managed_instances(CLUSTER, provider, 1);
        }
        deregister_drained(&setup.harness);
        let elapsed = (now - start).num_seconds();
        if !twist_done && elapsed >= twist_at {
            twist_done = true;
            let result = match twist {
                Twist::BadRevision => {
                    let request = setup.request(Version::Bad);
                    deploy_until_done(&mut setup.harness, request).await
                }
                Twist::OutsideUpdate => {
                    outside_change(&setup.harness, twist, &setup.revisions.good[2]).await
                }
                Twist::OutsideDelete => outside_change(&setup.harness, twist, "").await,
                Twist::Undeploy => undeploy_until_done(&mut setup.harness).await,
                _ => {
                    let request = setup.request(Version::Good(1));
                    deploy_until_done(&mut setup.harness, request).await
                }
            };
            result.map_err(|e| format!("twist {twist:?}: {e}"))?;
        }
        if twist_done && !second_done && elapsed >= second_at {
            second_done = true;
            let result = match twist {
                Twist::ManualRollback => rollback_until_done(&mut setup.harness).await,
                Twist::Supersede => {
                    let request = setup.request(Version::Good(2));
                    deploy_until_done(&mut setup.harness, request).await
                }
                Twist::Undeploy => {
                    let request = setup.request(Version::Good(2));
                    deploy_once_deleted(&mut setup.harness, request).await
                }
                _ => Ok(()),
            };
            if verbose() {
                println!(
                    "{twist:?} second step at {now}: {result:?} spans {}",
                    setup.spans_ec2
                );
                let rollouts: Vec<Versioned<Rollout>> = setup
                    .harness
                    .store
                    .query(CLUSTER, DAEMON)
                    .await
                    .unwrap_or_default();
                for rollout in rollouts {
                    println!("rollout {:?}", rollout.record);
                }
            }
            if let Err(text) = result {
                // The rollout may have ended already: a rollback to where it stands is refused.
                if !text.contains("already") {
                    return Err(format!("{twist:?}, second step: {text}"));
                }
            }
        }
        let delivered = setup.harness.deliver_events().await;
        trace(&delivered);
        let check_due = schedule.due(now);
        // The wake queue's messages come whatever the schedule does.
        trace(&setup.harness.deliver_wakes().await);
        if check_due {
            if faults_on && rng.chance(0.1) {
                report.faults.coverage_checks_missed += 1;
            } else {
                let check = setup.harness.scheduled_check().await;
                trace(std::slice::from_ref(&check));
            }
        }
        // Never a second daemon: a retried or crashed deploy reuses its client token.
        let live = setup.harness.model.managed_truth(CLUSTER).len();
        if live > 1 {
            return Err(format!("at {now}: {live} managed daemons named {DAEMON}"));
        }
        hook_kept(&setup.harness, now)?;
        if !faults_on && converged_at.is_none() && settled(&setup.harness).await {
            converged_at = Some(now);
        }
    }
    // Two clean checks after everything settled, as the schedule would run them.
    for _ in 0..2 {
        setup
            .harness
            .model
            .advance(Duration::seconds(COVERAGE_INTERVAL));
        setup.harness.deliver_events().await;
        let check = setup.harness.scheduled_check().await;
        check
            .result
            .map_err(|e| format!("the last coverage check failed: {e}"))?;
    }
    holds_managed_promises(&mut setup, twist)
        .await
        .map_err(|e| format!("{twist:?}: {e}"))?;
    if setup.spans_ec2 {
        converged(&setup.harness, &daemons).map_err(|e| format!("EC2 part: {e}"))?;
    }
    report.faults.collect(&setup.harness);
    report.convergence_seconds = converged_at.map_or(0, |at| (at - fault_end).num_seconds());
    Ok(report)
}

/// ECS's deployment has ended and the record has caught up with it (no rollout in flight).
async fn settled(harness: &Harness) -> bool {
    let ecs_done = harness
        .model
        .managed_truth(CLUSTER)
        .iter()
        .filter_map(|t| t.latest.as_ref())
        .all(|d| ecs_daemons::managed::rollout_state(&d.status) != RolloutState::InProgress);
    let key = ecs_daemons::store::ItemKey::managed_daemon(CLUSTER, DAEMON);
    let recorded = harness.store.get::<ManagedDaemon>(&key).await;
    ecs_done && recorded.is_ok_and(|r| r.is_some_and(|r| r.record.active_rollout.is_none()))
}

/// The operator undeploying: tries again while the answer is a retryable fault.
async fn undeploy_until_done(harness: &mut Harness) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        let request = ecs_daemons::deploy::UndeployRequest {
            cluster: CLUSTER.into(),
            daemon: DAEMON.into(),
            undeploy: true,
            dry_run: false,
        };
        match harness.undeploy(request).await {
            Ok(_) => return Ok(()),
            Err(error) if retryable(&error.to_string()) => last = error.to_string(),
            Err(error) => return Err(error.to_string()),
        }
        harness.model.advance(Duration::seconds(1));
    }
    Err(format!("still failing after 20 tries: {last}"))
}

/// Deploying an undeployed daemon again: refused while ECS still deletes it, then created.
async fn deploy_once_deleted(harness: &mut Harness, request: DeployRequest) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..120 {
        match harness.deploy(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(error @ ecs_daemons::deploy::DeployError::DaemonBeingDeleted { .. }) => {
                last = error.to_string()
            }
            Err(error) if retryable(&error.to_string()) => last = error.to_string(),
            Err(error) => return Err(error.to_string()),
        }
        harness.model.advance(Duration::seconds(5));
    }
    Err(format!("still refused after 10 minutes: {last}"))
}

fn ec2_daemons(setup: &Setup) -> Vec<DaemonDecl> {
    if !setup.spans_ec2 {
        return Vec::new();
    }
    vec![DaemonDecl {
        name: DAEMON,
        providers: vec![EC2_PROVIDER],
        health_checked: false,
    }]
}

/// After convergence: the records, the coverage check and `status` hold what ECS holds.
async fn holds_managed_promises(setup: &mut Setup, twist: Twist) -> Result<(), String> {
    let harness = &mut setup.harness;
    let truth: Option<ManagedTruth> = harness
        .model
        .managed_truth(CLUSTER)
        .into_iter()
        .find(|t| t.name == DAEMON);
    let record: ManagedDaemon = harness
        .store
        .get(&ecs_daemons::store::ItemKey::managed_daemon(
            CLUSTER, DAEMON,
        ))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no record of the daemon's Managed Instances part")?
        .record;
    if verbose() {
        println!("record {record:?}");
        println!("truth {truth:?}");
    }
    let rollouts: Vec<Versioned<Rollout>> = harness
        .store
        .query(CLUSTER, DAEMON)
        .await
        .map_err(|e| e.to_string())?;
    let managed_rollouts: Vec<&Rollout> = rollouts
        .iter()
        .map(|r| &r.record)
        .filter(|r| r.managed_instances)
        .collect();
    if let Some(open) = managed_rollouts
        .iter()
        .find(|r| r.state == RolloutState::InProgress)
    {
        // Only a rollout whose deployment ECS still runs may be open; after a delete, none.
        let ecs_running = truth
            .as_ref()
            .and_then(|t| t.latest.as_ref())
            .is_some_and(|d| {
                Some(&d.deployment_arn) == open.deployment_arn.as_ref()
                    && ecs_daemons::managed::rollout_state(&d.status) == RolloutState::InProgress
            });
        if !ecs_running {
            return Err(format!(
                "rollout {} to {} still in progress, ECS's deployment ended: {:?}",
                open.id,
                open.to_task_definition,
                truth.as_ref().and_then(|t| t.latest.clone())
            ));
        }
    }
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(DAEMON.into()),
        })
        .await
        .map_err(|e| format!("status: {e}"))?;
    let shown = status
        .daemons
        .first()
        .and_then(|d| d.managed.clone())
        .ok_or("status shows no Managed Instances part")?;
    let checked = harness
        .coverage_check()
        .await
        .result
        .map_err(|e| format!("coverage check: {e}"))?;
    let drift_metric = checked.native_drift.get(DAEMON).cloned().flatten();
    if shown.drift != drift_metric {
        return Err(format!(
            "status's drift {:?} and the DaemonDrift metric's {:?} differ",
            shown.drift, drift_metric
        ));
    }
    let Some(truth) = truth else {
        // Deleted outside: reported, never recreated behind the operator's back.
        if twist != Twist::OutsideDelete {
            return Err("the daemon is gone from ECS, and nobody deleted it".into());
        }
        return match &shown.drift {
            Some(drift) if drift.contains("deleted outside ecs-daemons") => Ok(()),
            other => Err(format!(
                "a deleted daemon is not reported as drift: {other:?}"
            )),
        };
    };
    if truth
        .latest
        .as_ref()
        .is_some_and(|d| ecs_daemons::managed::rollout_state(&d.status) == RolloutState::InProgress)
    {
        return Err(format!(
            "ECS's deployment has not ended by the end of the run: {:?}",
            truth.latest
        ));
    }
    let in_force = truth.in_force.clone().unwrap_or_default();
    ends_where_expected(&setup.revisions, twist, &record, &shown, &in_force)?;
    let latest = truth.latest.clone().ok_or("ECS ran no deployment")?;
    ended_as_ecs(twist, &record, &managed_rollouts, &latest)?;
    shows_ecs(&shown, &truth, &latest)?;
    // Impaired starts recorded are ECS's own, of the revision that failed.
    for start in &record.impaired_starts {
        if start.daemon_task_definition.as_deref() != Some(setup.revisions.bad.as_str())
            || start.reason.as_deref() != Some(crate::cluster_model::IMPAIRED_REASON)
        {
            return Err(format!("an impaired start ECS did not report: {start:?}"));
        }
    }
    Ok(())
}

/// The revision in force is the one the twist leads to; drift only where it was made.
fn ends_where_expected(
    revisions: &Revisions,
    twist: Twist,
    record: &ManagedDaemon,
    shown: &ecs_daemons::deploy::ManagedStatus,
    in_force: &str,
) -> Result<(), String> {
    match twist {
        Twist::OutsideUpdate => {
            let drift = shown.drift.clone().unwrap_or_default();
            if !drift.contains(&revisions.good[2]) {
                return Err(format!(
                    "an update outside ecs-daemons to {} is not reported: {:?}",
                    revisions.good[2], shown.drift
                ));
            }
            if record.daemon_task_definition == *in_force {
                return Err("the outside change was adopted silently".into());
            }
        }
        _ => {
            if let Some(drift) = &shown.drift {
                return Err(format!("drift reported, none made: {drift}"));
            }
            if record.daemon_task_definition != *in_force {
                return Err(format!(
                    "declared {}, ECS runs {in_force}",
                    record.daemon_task_definition
                ));
            }
            if record.retired_at.is_some() {
                return Err("deployed again, yet recorded undeployed".into());
            }
            let expected = match twist {
                Twist::Update => &revisions.good[1],
                Twist::BadRevision | Twist::ManualRollback => &revisions.good[0],
                _ => &revisions.good[2],
            };
            // A rollback invoke after ECS's own end keeps its target too; a superseding deploy
            // that came after the first ended is still the one in force.
            if in_force != expected.as_str() {
                return Err(format!("{twist:?} ends on {in_force}, expected {expected}"));
            }
        }
    }
    Ok(())
}

/// The rollout that carries ECS's latest deployment ended as that deployment did.
fn ended_as_ecs(
    twist: Twist,
    record: &ManagedDaemon,
    managed_rollouts: &[&Rollout],
    latest: &ecs_daemons::ecs::DaemonDeployment,
) -> Result<(), String> {
    let carrying = managed_rollouts
        .iter()
        .find(|r| r.deployment_arn.as_deref() == Some(latest.deployment_arn.as_str()));
    if let Some(rollout) = carrying {
        let expected = ecs_daemons::managed::rollout_state(&latest.status);
        if rollout.state != expected {
            return Err(format!(
                "rollout {} is {:?}, ECS's deployment ended {}",
                rollout.id,
                rollout.state,
                latest.status.as_str()
            ));
        }
        if expected == RolloutState::Succeeded
            && record.last_good.as_deref() != Some(record.daemon_task_definition.as_str())
        {
            return Err(format!(
                "the revision ECS rolled out ({}) is not recorded good: {:?}",
                record.daemon_task_definition, record.last_good
            ));
        }
    } else if twist != Twist::OutsideUpdate {
        return Err(format!(
            "no rollout record carries ECS's latest deployment {}",
            latest.deployment_arn
        ));
    }
    if twist == Twist::BadRevision
        && !matches!(latest.status, DaemonDeploymentStatus::RollbackSuccessful)
    {
        return Err(format!(
            "the bad revision's deployment ended {}",
            latest.status.as_str()
        ));
    }
    Ok(())
}

/// Status shows ECS's counts and deployment as they are.
fn shows_ecs(
    shown: &ecs_daemons::deploy::ManagedStatus,
    truth: &ManagedTruth,
    latest: &ecs_daemons::ecs::DaemonDeployment,
) -> Result<(), String> {
    let mut counts: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for provider in truth
        .state
        .current_revisions
        .iter()
        .flat_map(|r| &r.providers)
    {
        let name = ecs_daemons::arn::resource_id(&provider.capacity_provider_arn).to_string();
        let entry = counts.entry(name).or_default();
        entry.0 += provider.running;
        entry.1 += provider.without_daemon;
    }
    let shown_counts: BTreeMap<String, (i32, i32)> = shown
        .providers
        .iter()
        .map(|p| (p.capacity_provider.clone(), (p.running, p.without_daemon)))
        .collect();
    if shown_counts != counts {
        return Err(format!(
            "status shows {shown_counts:?}, ECS counts {counts:?}"
        ));
    }
    let shown_status = shown.deployment.as_ref().map(|d| d.status.clone());
    if shown_status.as_ref() != Some(&latest.status) {
        return Err(format!(
            "status shows deployment {shown_status:?}, ECS's is {}",
            latest.status.as_str()
        ));
    }
    Ok(())
}
