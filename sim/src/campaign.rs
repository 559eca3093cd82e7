//! The fault campaign: many seeds of mixed scenarios on the ECS cluster model — instances
//! joining and draining, daemons crashing and crash-looping, rollouts, bad revisions that trip
//! the breaker and roll back, manual rollbacks — under faults: dropped, duplicated and
//! reordered events, throttled calls and throttling bursts, DynamoDB updates that lose a race,
//! invocations crashing between any two calls, and coverage-check runs missed. The invariants
//! of the control loop and of rollouts are checked after every simulated second; after the
//! faults stop, everything must converge.
//!
//! `cargo run --release -p ecs-daemons-demo --bin campaign` runs 1,000 seeds of each scenario;
//! the test suite runs a 200-seed slice (`tests/simulation.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::cluster_model::{Faults, ModelConfig, Rng, TaskDefinitionModel};
use crate::simulation::Harness;
use ecs_daemons::deploy::{DeployRequest, RollbackRequest};
use ecs_daemons::holds::HoldSettings;
use ecs_daemons::model::{ContainerInstance, HealthStatus, InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::Rollout;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState, RolloutStep, SurgeFallback};
use ecs_daemons::slot::Slot;
use ecs_daemons::spec::RestartPolicy;
use ecs_daemons::store::{Store, Versioned};

mod alarms;
mod control;
mod managed;
mod services;

const CLUSTER: &str = "sim";
const COVERAGE_INTERVAL: i64 = 60;

/// The coverage check's schedule, as EventBridge's `rate(1 minute)` keeps it: it fires at
/// every minute mark whatever the functions do. The loop's clock can pass a mark in one step
/// (pacing waits inside an invocation move the model's clock on); the check then fires late,
/// at the first step past it, never skipped.
struct Schedule {
    next: DateTime<Utc>,
}

impl Schedule {
    fn starting(start: DateTime<Utc>) -> Self {
        Self { next: start }
    }

    /// Whether a scheduled check is due at `now`; marks it fired.
    fn due(&mut self, now: DateTime<Utc>) -> bool {
        if now < self.next {
            return false;
        }
        while self.next <= now {
            self.next += Duration::seconds(COVERAGE_INTERVAL);
        }
        true
    }
}
const FAULT_PHASE: i64 = 600;
/// Salt of the random stream that decides a seed's undeploy.
const UNDEPLOY_SALT: u64 = 0x756e_6465_706c_6f79;
/// Salt of the random stream that makes a churn seed's agent critical.
const CRITICAL_SALT: u64 = 0x6372_6974_6963_616c;
/// Salt of the random stream that decides a seed's progress deadline and bad revision.
const DEADLINE_SALT: u64 = 0x6465_6164_6c69_6e65;
/// CPU units and MiB of each simulated daemon.
const DAEMON_SIZE: i64 = 256;
/// The terminate hook's heartbeat timeout: a held termination survives missed checks.
const HOOK_HEARTBEAT_TIMEOUT: i64 = 900;

/// What one seed plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Instances join, drain and leave; daemons crash, some crash-loop for minutes;
    /// applications are placed on ready instances.
    Churn,
    /// A rolling update, then maybe a bad revision (breaker, automatic rollback), a superseding
    /// deploy or a manual rollback, while instances join and drain.
    Rollout,
    /// A daemon on ECS's native managed daemons (Managed Instances), sometimes on an EC2
    /// provider too: updates, a revision that trips ECS's breaker, a rollback invoke, a
    /// superseding deploy, changes made outside ecs-daemons, instances scaling out.
    Managed,
    /// A daemon as DAEMON services on a provider with managed scaling: applications come
    /// and go, the group scales out and in, rollouts run, the DAEMON scheduler is slow.
    Services,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Churn,
        Scenario::Rollout,
        Scenario::Managed,
        Scenario::Services,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Churn => "churn",
            Self::Rollout => "rollout",
            Self::Managed => "managed",
            Self::Services => "services",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Faults injected, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub events_dropped: u64,
    pub events_duplicated: u64,
    pub events_reordered: u64,
    pub throttled_calls: u64,
    pub throttling_bursts: u64,
    pub store_conflicts: u64,
    pub invocations_crashed: u64,
    pub coverage_checks_missed: u64,
    pub crash_loops: u64,
    /// Not a fault: scale-ins whose termination was held by the group's hook.
    pub terminations_held: u64,
    /// Not a fault: daemons undeployed mid-faults.
    pub undeploys: u64,
    /// Not a fault: rollouts paused by an operator (and resumed later).
    pub pauses: u64,
    /// Not a fault: manual canaries promoted.
    pub promotes: u64,
    /// Not a fault: instances drained because a critical daemon crash-looped there.
    pub critical_drains: u64,
    /// Not a fault: gated rollouts failed (and rolled back) by their alarm.
    pub alarm_trips: u64,
}

impl FaultCounts {
    pub fn kinds(&self) -> [(&'static str, u64); 9] {
        [
            ("events dropped", self.events_dropped),
            ("events duplicated", self.events_duplicated),
            ("events reordered", self.events_reordered),
            ("calls throttled", self.throttled_calls),
            ("throttling bursts", self.throttling_bursts),
            ("DynamoDB races lost", self.store_conflicts),
            ("invocations crashed", self.invocations_crashed),
            ("coverage checks missed", self.coverage_checks_missed),
            ("daemon crash loops", self.crash_loops),
        ]
    }

    /// What the scenarios did besides faults.
    /// Each with what it must have led to.
    pub fn activity(&self) -> [(&'static str, u64, &'static str); 6] {
        [
            (
                "terminations held",
                self.terminations_held,
                "each drained, daemons last, then let go",
            ),
            (
                "daemons undeployed",
                self.undeploys,
                "every copy stopped, none started again",
            ),
            (
                "rollouts paused",
                self.pauses,
                "no old copy stopped and no batch started until resumed",
            ),
            (
                "manual canaries promoted",
                self.promotes,
                "the rollout waited after its canary batch for the promote",
            ),
            (
                "critical drains",
                self.critical_drains,
                "only where the critical daemon crash-looped, never past maxCriticalDrains",
            ),
            (
                "rollouts failed by their alarm",
                self.alarm_trips,
                "none still in progress two coverage checks after its alarm fired",
            ),
        ]
    }

    fn add(&mut self, other: &FaultCounts) {
        self.events_dropped += other.events_dropped;
        self.events_duplicated += other.events_duplicated;
        self.events_reordered += other.events_reordered;
        self.throttled_calls += other.throttled_calls;
        self.throttling_bursts += other.throttling_bursts;
        self.store_conflicts += other.store_conflicts;
        self.invocations_crashed += other.invocations_crashed;
        self.coverage_checks_missed += other.coverage_checks_missed;
        self.crash_loops += other.crash_loops;
        self.terminations_held += other.terminations_held;
        self.undeploys += other.undeploys;
        self.pauses += other.pauses;
        self.promotes += other.promotes;
        self.critical_drains += other.critical_drains;
        self.alarm_trips += other.alarm_trips;
    }

    /// Adds what the harness counted itself (events, calls, crashes, races).
    fn collect(&mut self, harness: &Harness) {
        let events = harness.model.event_stats();
        self.events_dropped = events.dropped;
        self.events_duplicated = events.duplicated;
        self.events_reordered = events.reordered;
        self.throttled_calls = harness.model.calls().iter().filter(|c| c.throttled).count() as u64;
        self.invocations_crashed = harness.crashes;
        self.store_conflicts = harness.budget.races_lost();
        self.terminations_held = harness.model.hook_stats().started;
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// Simulated seconds.
    pub steps: u64,
    pub faults: FaultCounts,
    /// Seconds from the end of the faults until every invariant of rest held
    /// (and, for rollouts, every rollout had ended).
    pub convergence_seconds: i64,
}

/// A broken invariant, with what replays it.
#[derive(Clone, Debug)]
pub struct InvariantBreak {
    pub seed: u64,
    pub scenario: Scenario,
    pub what: String,
}

impl fmt::Display for InvariantBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed {}: {}\n  replay: cargo run --release -p ecs-daemons-demo --bin campaign -- --scenario {} --seed {}",
            self.scenario.name(),
            self.seed,
            self.what,
            self.scenario.name(),
            self.seed
        )
    }
}

/// Everything a campaign did, summed over its runs.
#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    pub runs: u64,
    pub runs_per_scenario: BTreeMap<Scenario, u64>,
    pub steps: u64,
    pub faults: FaultCounts,
    pub breaks: Vec<InvariantBreak>,
    /// The slowest convergence after the faults stopped, per scenario: seconds and seed.
    pub worst_convergence: BTreeMap<Scenario, (i64, u64)>,
}

impl CampaignReport {
    fn add(&mut self, seed: u64, scenario: Scenario, result: Result<SeedReport, String>) {
        self.runs += 1;
        *self.runs_per_scenario.entry(scenario).or_default() += 1;
        match result {
            Ok(report) => {
                self.steps += report.steps;
                self.faults.add(&report.faults);
                let worst = self
                    .worst_convergence
                    .entry(scenario)
                    .or_insert((report.convergence_seconds, seed));
                if report.convergence_seconds > worst.0 {
                    *worst = (report.convergence_seconds, seed);
                }
            }
            Err(what) => self.breaks.push(InvariantBreak {
                seed,
                scenario,
                what,
            }),
        }
    }

    fn merge(&mut self, other: CampaignReport) {
        self.runs += other.runs;
        for (scenario, runs) in other.runs_per_scenario {
            *self.runs_per_scenario.entry(scenario).or_default() += runs;
        }
        self.steps += other.steps;
        self.faults.add(&other.faults);
        self.breaks.extend(other.breaks);
        for (scenario, (seconds, seed)) in other.worst_convergence {
            let worst = self
                .worst_convergence
                .entry(scenario)
                .or_insert((seconds, seed));
            if seconds > worst.0 {
                *worst = (seconds, seed);
            }
        }
    }
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_scenario: Vec<String> = self
            .runs_per_scenario
            .iter()
            .map(|(scenario, runs)| format!("{runs} {}", scenario.name()))
            .collect();
        writeln!(f, "runs: {} ({})", self.runs, per_scenario.join(", "))?;
        writeln!(f, "steps (simulated seconds): {}", self.steps)?;
        writeln!(f, "faults injected:")?;
        for (kind, count) in self.faults.kinds() {
            writeln!(f, "  {kind:<24} {count}")?;
        }
        for (what, count, meaning) in self.faults.activity() {
            writeln!(f, "{what}: {count} ({meaning})")?;
        }
        writeln!(f, "invariant breaks: {}", self.breaks.len())?;
        for broken in &self.breaks {
            writeln!(f, "  {broken}")?;
        }
        write!(f, "worst convergence after the faults stopped:")?;
        for (scenario, (seconds, seed)) in &self.worst_convergence {
            write!(f, " {} {seconds} s (seed {seed});", scenario.name())?;
        }
        Ok(())
    }
}

/// Runs every scenario for every seed on `threads` threads (each with its own runtime:
/// a run is deterministic in its seed, whichever thread plays it).
pub fn run_campaign(seeds: &[u64], scenarios: &[Scenario], threads: usize) -> CampaignReport {
    let runs: Vec<(u64, Scenario)> = seeds
        .iter()
        .flat_map(|&seed| scenarios.iter().map(move |&scenario| (seed, scenario)))
        .collect();
    let threads = threads.clamp(1, runs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut report = CampaignReport::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = CampaignReport::default();
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            part.breaks.push(InvariantBreak {
                                seed: 0,
                                scenario: Scenario::Churn,
                                what: format!("no tokio runtime: {error}"),
                            });
                            return part;
                        }
                    };
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(&(seed, scenario)) = runs.get(index) else {
                            return part;
                        };
                        part.add(seed, scenario, runtime.block_on(run_seed(seed, scenario)));
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(part) => report.merge(part),
                Err(_) => report.breaks.push(InvariantBreak {
                    seed: 0,
                    scenario: Scenario::Churn,
                    what: "a campaign thread panicked".into(),
                }),
            }
        }
    });
    report.breaks.sort_by_key(|b| (b.scenario, b.seed));
    report
}

/// One seed of one scenario: its figures, or the first invariant it broke.
pub async fn run_seed(seed: u64, scenario: Scenario) -> Result<SeedReport, String> {
    match scenario {
        Scenario::Churn => run_churn(seed).await,
        Scenario::Rollout => run_rollout(seed).await,
        Scenario::Managed => managed::run_managed(seed).await,
        Scenario::Services => services::run_services(seed).await,
    }
}

struct DaemonDecl {
    name: &'static str,
    providers: Vec<&'static str>,
    health_checked: bool,
}

/// Replaying one seed (`SIM_SEED` or `--seed`) prints what the store and the model hold.
fn verbose() -> bool {
    std::env::var("SIM_SEED").is_ok() || std::env::var("CAMPAIGN_VERBOSE").is_ok()
}

/// The invariant that a ready instance never lacks a daemon: how long each (instance, daemon)
/// pair has been ready but uncovered, and when coverage checks completed cleanly.
#[derive(Default)]
struct GapWatch {
    since: BTreeMap<(String, String), DateTime<Utc>>,
    clean_checks: Vec<DateTime<Utc>>,
}

impl GapWatch {
    /// A gap longer than `tolerance` breaks the invariant once two coverage checks completed
    /// cleanly since it began (missed and crashed checks stack with lost events: the promise
    /// is two clean checks, whenever they come); `strict` (after the faults): at once.
    fn check(
        &mut self,
        harness: &Harness,
        daemons: &[DaemonDecl],
        now: DateTime<Utc>,
        tolerance: Duration,
        strict: bool,
    ) -> Result<(), String> {
        let gaps = ready_but_uncovered(harness, daemons);
        self.since.retain(|key, _| gaps.contains(key));
        for key in gaps {
            let since = *self.since.entry(key.clone()).or_insert(now);
            let clean_since = self.clean_checks.iter().filter(|at| **at > since).count();
            if now - since > tolerance && (strict || clean_since >= 2) {
                return Err(format!(
                    "at {now}: ready instance {} lacks daemon {} since {since}",
                    key.0, key.1
                ));
            }
        }
        Ok(())
    }
}

/// Throttling bursts and daemon crash loops, the faults the scenarios drive themselves.
struct Disturbances {
    /// When the crash loop starts and how long it lasts (none for this seed).
    crash_loop: Option<(DateTime<Utc>, Duration)>,
    /// The instance and daemon group the loop keeps killing, once chosen.
    looping: Option<(String, String)>,
}

impl Disturbances {
    fn new(rng: &mut Rng, start: DateTime<Utc>, chance: f64) -> Self {
        let crash_loop = rng.chance(chance).then(|| {
            (
                start + Duration::seconds(rng.below((FAULT_PHASE - 240) as u64) as i64),
                Duration::seconds(60 + rng.below(121) as i64),
            )
        });
        Self {
            crash_loop,
            looping: None,
        }
    }

    /// One second of the fault phase.
    fn step(
        &mut self,
        harness: &Harness,
        rng: &mut Rng,
        now: DateTime<Utc>,
        injected: &mut FaultCounts,
    ) {
        if rng.chance(0.003) {
            harness
                .model
                .throttle_until(now + Duration::seconds(3 + rng.below(10) as i64));
            injected.throttling_bursts += 1;
        }
        let Some((from, length)) = self.crash_loop else {
            return;
        };
        if now < from || now >= from + length {
            return;
        }
        let tasks = harness.model.tasks(CLUSTER);
        if self.looping.is_none() {
            let live: Vec<_> = tasks
                .iter()
                .filter(|t| copy_of(&t.group).is_some() && t.last_status == TaskStatus::Running)
                .collect();
            if live.is_empty() {
                return;
            }
            let victim = live[rng.below(live.len() as u64) as usize];
            self.looping = Some((victim.instance_id.clone(), victim.group.clone()));
            injected.crash_loops += 1;
        }
        if let Some((instance, group)) = &self.looping {
            // Every copy dies as soon as it runs: the slot backs off, the instance is not ready.
            for task in tasks.iter().filter(|t| {
                &t.instance_id == instance
                    && &t.group == group
                    && t.last_status == TaskStatus::Running
                    && t.desired_status == TaskStatus::Running
            }) {
                harness.model.crash_task(CLUSTER, &task.id);
            }
        }
    }
}

/// Instances join; now and then one drains (scale-in), and a drained one leaves once empty.
fn churn_instances(harness: &Harness, rng: &mut Rng, join: f64, drain: f64, providers: &[&str]) {
    let instances = harness.model.instances(CLUSTER);
    let active: Vec<&ContainerInstance> = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .collect();
    if rng.chance(join) {
        let provider = providers[rng.below(providers.len() as u64) as usize];
        let (cpu, memory) = if provider == "gpu" {
            (4096, 8192)
        } else {
            (2048, 4096)
        };
        harness.model.add_instance(CLUSTER, provider, cpu, memory);
    }
    if active.len() > 2 && rng.chance(drain) {
        let victim = active[rng.below(active.len() as u64) as usize];
        if rng.chance(0.5) {
            // Auto Scaling picks it: with the group's terminate hook, ecs-daemons drains it
            // and lets it go; without one (gpu), it terminates at once.
            harness.model.scale_in(CLUSTER, &victim.arn);
        } else {
            harness.model.drain_instance(CLUSTER, &victim.arn);
        }
    }
}

/// Every scenario's `general` group holds terminations for ecs-daemons (gpu's has no hook).
fn hook_terminations(harness: &mut Harness) {
    harness.model.add_terminate_hook(
        "general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(HOOK_HEARTBEAT_TIMEOUT),
    );
    harness.set_hold_settings(HoldSettings::new(
        Duration::seconds(HOOK_HEARTBEAT_TIMEOUT),
        Duration::hours(1),
    ));
    harness.set_terminate_hook(ecs_daemons::autoscaling::TerminateHook {
        name: "ecs-daemons-drain".into(),
        groups: vec!["asg-general".into()],
    });
}

/// The hook invariant, every second: no lifecycle action completed while a task still ran on
/// its instance (the drain limit, an hour, is never reached here).
fn hook_kept(harness: &Harness, now: DateTime<Utc>) -> Result<(), String> {
    let stats = harness.model.hook_stats();
    if let Some(early) = stats.completed_with_tasks.first() {
        return Err(format!(
            "at {now}: a lifecycle action completed while tasks still ran: {early}"
        ));
    }
    Ok(())
}

/// At rest: every held termination completed, none left to time out.
fn hooks_settled(harness: &Harness) -> Result<(), String> {
    let stats = harness.model.hook_stats();
    let waiting = harness.model.waiting_terminations();
    if !waiting.is_empty() {
        return Err(format!("terminations still held: {waiting:?}"));
    }
    if stats.timed_out > 0 {
        return Err(format!(
            "{} lifecycle action(s) timed out: {stats:?}",
            stats.timed_out
        ));
    }
    Ok(())
}

/// Scale-in finishes: a drained instance whose tasks are all gone leaves.
fn deregister_drained(harness: &Harness) {
    // A held termination ends when ecs-daemons completes its lifecycle action.
    let held = harness.model.waiting_terminations();
    let tasks = harness.model.tasks(CLUSTER);
    for instance in harness.model.instances(CLUSTER) {
        let waiting = instance
            .ec2_instance_id
            .as_ref()
            .is_some_and(|ec2| held.contains(ec2));
        // Every task gone, stopping ones too (the counts leave those out).
        let empty = !tasks
            .iter()
            .any(|t| t.instance_id == instance.id() && !t.last_status.is_terminal());
        if instance.status == InstanceStatus::Draining && empty && !waiting {
            harness.model.deregister_instance(CLUSTER, &instance.arn);
        }
    }
}

async fn run_churn(seed: u64) -> Result<SeedReport, String> {
    let mut rng = Rng::new(seed);
    let (config, faults) = seeded_world(seed, &mut rng, 1.0);
    let mut harness = Harness::new(CLUSTER, &["general", "gpu"], config);
    hook_terminations(&mut harness);
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
    // Drawn apart, so the rest of the seed's world is what it was before undeploys came in.
    let mut undeploy_rng = Rng::new(seed ^ UNDEPLOY_SALT);
    // Some seeds' agent is critical, and crash-loops after 3 failures: its crash loop drains
    // the instance, within maxCriticalDrains (1 or 2).
    let mut critical_rng = Rng::new(seed ^ CRITICAL_SALT);
    let critical = critical_rng
        .chance(0.3)
        .then(|| 1 + critical_rng.below(2) as u32);
    if rng.chance(0.5) {
        daemons.push(DaemonDecl {
            name: "logs",
            providers: vec!["general", "gpu"],
            health_checked: true,
        });
    }
    for (order, daemon) in daemons.iter().enumerate() {
        let definition = if daemon.name == "agent" {
            &agent
        } else {
            &logs
        };
        let mut request = DeployRequest {
            restart: Some(campaign_restart_policy()),
            ..DeployRequest::new(
                CLUSTER,
                daemon.name,
                definition,
                &daemon.providers,
                order as i32 * 10,
            )
        };
        if let (Some(max), "agent") = (critical, daemon.name) {
            request.critical = Some(true);
            request.max_critical_drains = Some(Amount::Count(max));
            request.restart = Some(RestartPolicy {
                max_consecutive_failures: 3,
                ..campaign_restart_policy()
            });
        }
        harness
            .deploy(request)
            .await
            .map_err(|e| format!("deploy {}: {e}", daemon.name))?;
    }
    harness.model.set_faults(faults.clone());
    harness.wakes.make_late(Some((seed, WAKES_LATE_BY)));
    harness.crash_chance = rng.unit() * 0.10;
    harness.budget.lose_races(rng.unit() * 0.05, seed);

    let mut report = SeedReport::default();
    let start = harness.model.now();
    let mut disturbances = Disturbances::new(&mut rng, start, 0.5);
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    let converge_by = fault_end + Duration::seconds(2 * COVERAGE_INTERVAL);
    let end = converge_by + Duration::seconds(60);
    let tolerance =
        Duration::seconds(2 * COVERAGE_INTERVAL) + faults.max_event_delay + Duration::seconds(10);
    let mut gaps = GapWatch::default();
    let mut disconnected: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut faults_on = true;
    let mut converged_at: Option<DateTime<Utc>> = None;
    let mut schedule = Schedule::starting(start);
    // Some seeds undeploy the logs daemon mid-faults (every copy must go, drain-last aside).
    let undeploy_at = (daemons.len() > 1 && undeploy_rng.chance(0.4))
        .then(|| start + Duration::seconds(1 + undeploy_rng.below(FAULT_PHASE as u64) as i64));
    let mut undeployed: Vec<&'static str> = Vec::new();
    let mut critical_drained: BTreeSet<String> = BTreeSet::new();

    while harness.model.now() < end {
        harness.model.advance(Duration::seconds(1));
        let now = harness.model.now();
        report.steps += 1;
        if undeploy_at.is_some_and(|at| now >= at) && undeployed.is_empty() {
            undeploy_until_done(&mut harness, "logs").await?;
            daemons.retain(|d| d.name != "logs");
            undeployed.push("logs");
            report.faults.undeploys += 1;
        }
        if faults_on && now >= fault_end {
            faults_on = false;
            stop_faults(&mut harness);
            for (instance, _) in disconnected.drain(..) {
                harness.model.set_agent_connected(CLUSTER, &instance, true);
            }
        }
        // The world changes (less often once the faults stop, so convergence can be judged).
        if faults_on {
            disturbances.step(&harness, &mut rng, now, &mut report.faults);
            churn_instances(
                &harness,
                &mut rng,
                0.01,
                0.004,
                &["general", "general", "general", "general", "gpu"],
            );
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
            let active: Vec<ContainerInstance> = harness
                .model
                .instances(CLUSTER)
                .into_iter()
                .filter(|i| i.status == InstanceStatus::Active)
                .collect();
            if rng.chance(0.002) && !active.is_empty() {
                let victim = &active[rng.below(active.len() as u64) as usize];
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
        deregister_drained(&harness);

        let delivered = harness.deliver_events().await;
        trace(&delivered);
        let check_due = schedule.due(now);
        // The wake queue's messages come whatever the schedule does.
        trace(&harness.deliver_wakes().await);
        if check_due {
            if faults_on && rng.chance(0.1) {
                report.faults.coverage_checks_missed += 1;
            } else {
                let check = harness.scheduled_check().await;
                let clean =
                    !check.crashed && check.result.as_ref().is_ok_and(|o| o.errors.is_empty());
                trace(std::slice::from_ref(&check));
                if clean {
                    gaps.clean_checks.push(now);
                    let dups = duplicates(&harness);
                    if !dups.is_empty() {
                        return Err(format!(
                            "at {now}: a completed coverage check left duplicates: {dups:?}"
                        ));
                    }
                }
            }
        }

        hook_kept(&harness, now)?;
        if let Some(max) = critical {
            critical_drains_within(&harness, max, now, &mut critical_drained).await?;
        }
        // Invariant: no daemon stop while an application still runs on its draining instance.
        // (An undeployed daemon's copies are stopped at once, drain-last aside: not counted.)
        let early = not_undeployed(harness.model.early_drain_stops(), &undeployed);
        if !early.is_empty() {
            return Err(format!("at {now}: drain-last broken: {early:?}"));
        }
        // Invariant: targets never change here, so the only copy of a daemon on an ACTIVE
        // instance is never stopped (a stale event must not kill a healthy copy).
        let lone = not_undeployed(harness.model.lone_copy_stops(), &undeployed);
        if !lone.is_empty() {
            return Err(format!(
                "at {now}: stopped the only copy of a daemon: {lone:?}"
            ));
        }
        // Invariant: a ready instance never lacks a daemon (beyond what dropped events can hide).
        // After convergence is due, no gap at all.
        let strict = now >= converge_by;
        let allowed = if strict { Duration::zero() } else { tolerance };
        if let Err(gap) = gaps.check(&harness, &daemons, now, allowed, strict) {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(gap);
        }
        if !faults_on && converged_at.is_none() {
            match converged(&harness, &daemons)
                .and_then(|()| undeployed_gone(&harness, &undeployed))
            {
                Ok(()) => converged_at = Some(now),
                Err(e) if now >= converge_by => {
                    if verbose() {
                        dump(&harness, &daemons).await;
                    }
                    return Err(format!(
                        "not converged two coverage checks after the faults stopped: {e}"
                    ));
                }
                Err(_) => {}
            }
        }
    }
    if let Err(e) =
        converged(&harness, &daemons).and_then(|()| undeployed_gone(&harness, &undeployed))
    {
        if verbose() {
            dump(&harness, &daemons).await;
            for instance in harness.model.instances(CLUSTER) {
                println!("instance {instance:?}");
            }
        }
        return Err(format!("not converged at the end: {e}"));
    }
    hooks_settled(&harness)?;
    report.faults.collect(&harness);
    report.faults.critical_drains = critical_drained.len() as u64;
    report.convergence_seconds = converged_at.map_or(0, |at| (at - fault_end).num_seconds());
    Ok(report)
}

/// A critical agent's drains: never more than `max` of the instances it drained still
/// DRAINING at once, and each where it crash-looped (`drained` gathers them).
async fn critical_drains_within(
    harness: &Harness,
    max: u32,
    now: DateTime<Utc>,
    drained: &mut BTreeSet<String>,
) -> Result<(), String> {
    let slots: Vec<Versioned<Slot>> = harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())?;
    let draining: BTreeSet<String> = harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Draining)
        .map(|i| i.id().to_string())
        .collect();
    let mut now_draining = 0;
    for slot in slots
        .iter()
        .filter(|s| s.record.critical_drain_at.is_some())
    {
        if slot.record.state != ecs_daemons::slot::SlotState::CrashLooping {
            return Err(format!(
                "at {now}: {} was drained for the agent, whose slot is {:?}, not crash-looping",
                slot.record.instance_id, slot.record.state
            ));
        }
        drained.insert(slot.record.instance_id.clone());
        now_draining += usize::from(draining.contains(&slot.record.instance_id));
    }
    if now_draining > max as usize {
        return Err(format!(
            "at {now}: {now_draining} instances drained for the critical agent, maxCriticalDrains {max}"
        ));
    }
    Ok(())
}

/// Restarts back off quickly and are not given up on: crash loops end, and must heal.
fn campaign_restart_policy() -> RestartPolicy {
    RestartPolicy {
        max_consecutive_failures: 50,
        base_backoff_seconds: 5,
        max_backoff_seconds: 30,
        stable_after_seconds: 60,
        unhealthy_grace_seconds: None,
    }
}

/// While faults are on, each wake reaches the coverage-check up to this much late (Lambda
/// retrying a delivery its one concurrent execution turned away: a reconcile's length, at
/// worst a large cluster's).
pub const WAKES_LATE_BY: Duration = Duration::seconds(30);

fn stop_faults(harness: &mut Harness) {
    harness.model.set_faults(Faults::default());
    harness.wakes.make_late(None);
    harness.model.throttle_until(harness.model.now());
    harness.crash_chance = 0.0;
    harness.budget.lose_races(0.0, 0);
}

/// `CAMPAIGN_TRACE=1` with a replayed seed: every start and stop, as it happens.
fn trace(invocations: &[crate::simulation::Invocation]) {
    if std::env::var("CAMPAIGN_TRACE").is_err() {
        return;
    }
    for invocation in invocations {
        let Ok(outcome) = &invocation.result else {
            println!(
                "{} {} failed {:?}",
                invocation.at,
                invocation.function,
                invocation.result.as_ref().err()
            );
            continue;
        };
        for started in &outcome.started {
            println!(
                "{} {} start {} on {} {}",
                invocation.at,
                invocation.function,
                started.daemon,
                started.instance_id,
                started.task_arn
            );
        }
        for requested in &outcome.requested {
            println!(
                "{} {} request {} on {} from {}",
                invocation.at,
                invocation.function,
                requested.daemon,
                requested.instance_id,
                requested.service
            );
        }
        for withdrawn in &outcome.withdrawn {
            println!(
                "{} {} withdraw {} on {} from {}",
                invocation.at,
                invocation.function,
                withdrawn.daemon,
                withdrawn.instance_id,
                withdrawn.service
            );
        }
        for error in &outcome.errors {
            println!("{} {} error {error}", invocation.at, invocation.function);
        }
        if !outcome.rollouts.is_empty() {
            println!(
                "{} {} rollouts {:?}",
                invocation.at, invocation.function, outcome.rollouts
            );
        }
        for stopped in &outcome.stopped {
            println!(
                "{} {} stop {} on {} {} ({})",
                invocation.at,
                invocation.function,
                stopped.daemon,
                stopped.instance_id,
                stopped.task_arn,
                stopped.reason
            );
        }
        if invocation.crashed {
            println!("{} {} crashed", invocation.at, invocation.function);
        }
    }
}

/// What the store and the model hold, for a replayed seed.
async fn dump(harness: &Harness, daemons: &[DaemonDecl]) {
    for daemon in daemons {
        let slots: Vec<Versioned<Slot>> = harness
            .store
            .query(CLUSTER, daemon.name)
            .await
            .unwrap_or_default();
        for slot in slots {
            println!("slot v{} {:?}", slot.version, slot.record);
        }
        let rollouts: Vec<Versioned<Rollout>> = harness
            .store
            .query(CLUSTER, daemon.name)
            .await
            .unwrap_or_default();
        for rollout in rollouts {
            println!("rollout v{} {:?}", rollout.version, rollout.record);
        }
    }
    for task in
        harness.model.tasks(CLUSTER).iter().filter(|t| {
            std::env::var("CAMPAIGN_DUMP_STOPPED").is_ok() || !t.last_status.is_terminal()
        })
    {
        println!("task {task:?}");
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

/// A user undeploying: tries again while the answer is a retryable fault.
async fn undeploy_until_done(harness: &mut Harness, daemon: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        let request = ecs_daemons::deploy::UndeployRequest {
            cluster: CLUSTER.into(),
            daemon: daemon.into(),
            undeploy: true,
            dry_run: false,
        };
        match harness.undeploy(request).await {
            Ok(_) => return Ok(()),
            Err(error) if retryable(&error.to_string()) => last = error.to_string(),
            Err(error) => return Err(format!("undeploy {daemon}: {error}")),
        }
        harness.model.advance(Duration::seconds(1));
    }
    Err(format!(
        "undeploy {daemon} still failing after 20 tries: {last}"
    ))
}

/// The model's recorded stops, without those of undeployed daemons (each names its daemon
/// in parentheses).
fn not_undeployed(stops: Vec<String>, undeployed: &[&str]) -> Vec<String> {
    stops
        .into_iter()
        .filter(|stop| !undeployed.iter().any(|d| stop.contains(&format!("({d})"))))
        .collect()
}

/// Invariant at rest: no copy of an undeployed daemon runs anywhere, and no slot attribute of
/// it is left on an instance.
fn undeployed_gone(harness: &Harness, undeployed: &[&str]) -> Result<(), String> {
    for task in harness.model.tasks(CLUSTER) {
        let daemon = copy_of(&task.group);
        if daemon.is_some_and(|d| undeployed.contains(&d)) && !task.last_status.is_terminal() {
            return Err(format!(
                "{} of undeployed {} still runs on {}",
                task.id, task.group, task.instance_id
            ));
        }
    }
    for instance in harness.model.instances(CLUSTER) {
        for daemon in undeployed {
            let attribute = ecs_daemons::placement::services::slot_attribute(daemon);
            if instance.attributes.contains_key(&attribute) {
                return Err(format!("{} keeps {attribute}", instance.id()));
            }
        }
    }
    Ok(())
}

/// A user rolling back: tries again while the answer is a retryable fault.
async fn rollback_until_done(harness: &mut Harness) -> Result<(), String> {
    // Every scenario's daemon that rolls back is "agent".
    let mut outcome = Ok(());
    for _ in 0..20 {
        let rollback = RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: "agent".into(),
            to_revision: None,
            dry_run: false,
        };
        outcome = harness
            .rollback(rollback)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        if verbose() {
            println!("{} rollback: {outcome:?}", harness.model.now());
        }
        if !outcome.as_ref().is_err_and(|e| retryable(e)) {
            break;
        }
        harness.model.advance(Duration::seconds(1));
    }
    outcome
}

/// An instance's rollout step still waiting for its new copy (Surging) later than the
/// rollout's progress deadline allows, by more than `slack`.
async fn no_step_past_deadline(
    harness: &Harness,
    now: DateTime<Utc>,
    slack: Duration,
) -> Result<(), String> {
    let records = rollouts(harness).await?;
    let slots: Vec<Versioned<ecs_daemons::slot::Slot>> = harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())?;
    for slot in slots {
        let Some(step) = slot.record.rollout.as_ref() else {
            continue;
        };
        let rollout = records
            .iter()
            .find(|r| r.record.id == step.rollout_id && r.record.state == RolloutState::InProgress);
        let (RolloutStep::Surging, Some(rollout)) = (step.step, rollout) else {
            continue;
        };
        let deadline = step.since
            + Duration::seconds(i64::from(rollout.record.config.progress_deadline_seconds));
        if now > deadline + slack {
            return Err(format!(
                "at {now}: {} still waits for its new copy of {}, past its deadline {deadline}",
                slot.record.instance_id, rollout.record.to_task_definition
            ));
        }
    }
    Ok(())
}

async fn rollouts(harness: &Harness) -> Result<Vec<Versioned<Rollout>>, String> {
    harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())
}

/// Rollouts under the same faults: an update, sometimes a bad revision (breaker and
/// automatic rollback), sometimes a superseding deploy or a manual rollback mid-way, while
/// instances join and drain and a daemon may crash-loop.
async fn run_rollout(seed: u64) -> Result<SeedReport, String> {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let (config, faults) = seeded_world(seed, &mut rng, 0.5);
    let mut harness = Harness::new(CLUSTER, &["general"], config);
    hook_terminations(&mut harness);
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
    // Drawn apart, so the rest of the seed's world is what it was before deadlines came in:
    // half the bad revisions fail to start, half run but never turn healthy (only the
    // progress deadline fails those on standalone copies).
    let mut deadline_rng = Rng::new(seed ^ DEADLINE_SALT);
    let never_healthy = deadline_rng.chance(0.5);
    let progress_deadline_seconds = 60 + deadline_rng.below(121) as u32;
    let bad = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: !never_healthy,
        health_check: never_healthy,
        never_healthy,
        ..TaskDefinitionModel::new("agent", DAEMON_SIZE, DAEMON_SIZE)
    });
    let instances = 4 + rng.below(9) as usize;
    for _ in 0..instances {
        // Some instances have room for one copy only: the surge fallback decides there.
        let cpu = if rng.chance(0.2) { 384 } else { 2048 };
        harness.model.add_instance(CLUSTER, "general", cpu, 4096);
    }
    let max_parallel = 1 + rng.below(4) as usize;
    let mut rollout = RolloutConfig {
        max_parallel: Amount::Count(max_parallel as u32),
        min_healthy_seconds: 10 + rng.below(30) as u32,
        canary: rng
            .chance(0.3)
            .then_some(ecs_daemons::rollout::Canary::automatic(1)),
        surge_fallback: if rng.chance(0.5) {
            SurgeFallback::StopFirst
        } else {
            SurgeFallback::Fail
        },
        failure_threshold: Amount::Count(2 + rng.below(3) as u32),
        auto_rollback: true,
        progress_deadline_seconds,
        alarms: Vec::new(),
        bake_seconds: None,
    };
    let mut operator = control::Operator::new(seed, &mut rollout.canary);
    let mut alarm = alarms::AlarmScript::new(seed, &harness, &mut rollout);
    let request = |task_definition: &str| DeployRequest {
        restart: Some(campaign_restart_policy()),
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
    harness.wakes.make_late(Some((seed, WAKES_LATE_BY)));
    harness.crash_chance = rng.unit() * 0.05;
    harness.budget.lose_races(rng.unit() * 0.03, seed);

    // The script: an update at once; then maybe a bad revision, a superseding deploy, or a rollback.
    let twist = rng.below(4);
    let twist_at = 30 + rng.below(200) as i64;
    let mut twist_done = false;
    let daemons = [DaemonDecl {
        name: "agent",
        providers: vec!["general"],
        health_checked: false,
    }];
    let mut report = SeedReport::default();
    let start = harness.model.now();
    let mut disturbances = Disturbances::new(&mut rng, start, 0.3);
    let fault_end = start + Duration::seconds(FAULT_PHASE);
    // Batches advance on coverage checks: give the slowest script (update, failed update,
    // automatic rollback) time for every batch after the faults stop.
    let batches = instances.div_ceil(max_parallel) as i64 + 2;
    let end = fault_end + Duration::seconds(900.max(3 * batches * 2 * COVERAGE_INTERVAL));
    deploy_until_done(&mut harness, request(&revisions[1]))
        .await
        .map_err(|e| format!("update: {e}"))?;
    let mut failed_at: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut gaps = GapWatch::default();
    let tolerance = Duration::seconds(2 * COVERAGE_INTERVAL) + Duration::seconds(30);
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
        }
        if faults_on {
            disturbances.step(&harness, &mut rng, now, &mut report.faults);
            churn_instances(&harness, &mut rng, 0.003, 0.001, &["general"]);
        }
        deregister_drained(&harness);
        if !twist_done && (now - start).num_seconds() >= twist_at {
            twist_done = true;
            let result = match twist {
                0 => deploy_until_done(&mut harness, request(&bad)).await,
                1 => deploy_until_done(&mut harness, request(&revisions[2])).await,
                2 => rollback_until_done(&mut harness).await,
                _ => Ok(()),
            };
            // A crashed invocation or a lost race is an answer a user gets too; it changes nothing.
            if let Err(text) = result {
                if !text.contains("already on") {
                    return Err(format!("twist {twist}: {text}"));
                }
            }
        }
        operator
            .step(&mut harness, start, &mut report.faults)
            .await?;
        alarm.step(&harness, start);
        let delivered = harness.deliver_events().await;
        trace(&delivered);
        let check_due = schedule.due(now);
        // The wake queue's messages come whatever the schedule does.
        trace(&harness.deliver_wakes().await);
        if check_due {
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
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(format!(
                "at {now}: {in_flight} instances in flight, maxParallel {max_parallel}"
            ));
        }
        hook_kept(&harness, now)?;
        if let Err(held) = operator.check_paused(&harness).await {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(held);
        }
        // Invariant: no instance waits for a new copy past the rollout's progress deadline
        // (beyond the reconcile cadence the faults allow).
        let slack = if faults_on { tolerance * 2 } else { tolerance };
        no_step_past_deadline(&harness, now, slack).await?;
        alarm.check(&harness, slack, &mut report.faults).await?;
        let lone = harness.model.lone_copy_stops();
        // stopFirst stops a lone copy on purpose; without it, never.
        if rollout.surge_fallback == SurgeFallback::Fail && !lone.is_empty() {
            if verbose() {
                dump(&harness, &daemons).await;
            }
            return Err(format!("at {now}: stopped the only copy: {lone:?}"));
        }
        // A ready instance never lacks a running copy (beyond what dropped events can hide),
        // except the counted gaps of stopFirst.
        if rollout.surge_fallback == SurgeFallback::Fail {
            if let Err(gap) = gaps.check(&harness, &daemons, now, tolerance, !faults_on) {
                if verbose() {
                    dump(&harness, &daemons).await;
                }
                return Err(gap);
            }
        }
        // A tripped breaker touches no instance after it.
        let records = rollouts(&harness).await?;
        for record in &records {
            if record.record.state == RolloutState::Failed {
                // Seen at the end of this second (paced calls may have moved the clock): starts
                // decided before the breaker tripped, in this second's invocations, are not late.
                failed_at
                    .entry(record.record.to_task_definition.clone())
                    .or_insert(harness.model.now());
            }
        }
        for (definition, at) in &failed_at {
            let late: Vec<String> = tasks
                .iter()
                .filter(|t| {
                    &t.definition == definition && t.created_at > *at + Duration::seconds(1)
                })
                .map(|t| format!("{} on {} at {}", t.id, t.instance_id, t.created_at))
                .collect();
            if !late.is_empty() && definition == &bad {
                return Err(format!("at {now}: copies of {definition} started after its breaker tripped at {at}: {late:?}"));
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
    // Every rollout ended, and every instance runs one copy of one revision.
    let records = rollouts(&harness).await?;
    if verbose() {
        dump(&harness, &daemons).await;
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
    hooks_settled(&harness)?;
    // Every instance runs the daemon's revision, except where the rollout recorded that it
    // could not get there without a gap (no room for a second copy, surgeFallback "fail").
    let spec = harness
        .store
        .list_in_cluster::<ecs_daemons::spec::DaemonSpec>(CLUSTER)
        .await
        .map_err(|e| e.to_string())?;
    let target = spec
        .first()
        .map(|s| s.record.task_definition.clone())
        .unwrap_or_default();
    let slots: Vec<Versioned<Slot>> = harness
        .store
        .query(CLUSTER, "agent")
        .await
        .map_err(|e| e.to_string())?;
    // A rollback whose own breaker tripped (a crash loop counts against every revision)
    // touches no further instance: they stay on whatever revision they had, one copy each
    // (checked above), and status reports it.
    let last_failed = records
        .iter()
        .max_by_key(|r| r.record.started_at)
        .is_some_and(|r| r.record.state == RolloutState::Failed);
    let allowed = BTreeSet::from([target.clone()]);
    let left_behind: BTreeSet<String> = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| {
            t.group == "daemon:agent"
                && !t.last_status.is_terminal()
                && !allowed.contains(&t.definition)
        })
        .filter(|t| {
            !slots.iter().any(|s| {
                s.record.instance_id == t.instance_id
                    && s.record
                        .rollout
                        .as_ref()
                        .is_some_and(|r| r.step == RolloutStep::Failed)
            })
        })
        .map(|t| format!("{} on {}", t.definition, t.instance_id))
        .collect();
    if !last_failed && !left_behind.is_empty() {
        return Err(format!(
            "instances not on {target} at the end, without a recorded rollout failure: {left_behind:?}"
        ));
    }
    report.faults.collect(&harness);
    report.convergence_seconds = converged_at.map_or(0, |at| (at - fault_end).num_seconds());
    Ok(report)
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

/// The daemon a task is a copy of: a standalone copy (`daemon:<name>`) or a task of one of
/// its DAEMON services (`service:ecs-daemons-<name>-<a|b>`).
fn copy_of(group: &str) -> Option<&str> {
    group
        .strip_prefix("daemon:")
        .or_else(|| ecs_daemons::placement::services::daemon_of_group(group).map(|(d, _)| d))
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
                    && copy_of(&t.group) == Some(daemon.name)
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
        let Some(daemon) = copy_of(&task.group) else {
            continue;
        };
        if !task.last_status.is_terminal() && task.desired_status == TaskStatus::Running {
            *live
                .entry((task.instance_id.clone(), daemon.to_string()))
                .or_default() += 1;
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
        let live_here = |daemon: &str| {
            tasks
                .iter()
                .filter(|t| {
                    t.instance_id == instance.id()
                        && copy_of(&t.group) == Some(daemon)
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
                    let found = live_here(daemon.name);
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
                            && copy_of(&t.group).is_none()
                            && !t.last_status.is_terminal()
                    })
                    .count();
                let daemons_left = tasks
                    .iter()
                    .filter(|t| {
                        t.instance_id == instance.id()
                            && copy_of(&t.group).is_some()
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
