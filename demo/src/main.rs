//! The seed's scenario on the ECS cluster model and the in-memory store: the
//! same engine the Lambda functions run, driven by the events the model emits.
//! Prints a timeline of what happened and why, then the coverage table.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::arn::resource_id;
use ecs_daemons::deploy::{status, DeployRequest, RollbackRequest, StatusRequest};
use ecs_daemons::model::{HealthStatus, InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::{Amount, RolloutConfig};
use ecs_daemons_sim::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::{Harness, Invocation};

mod managed;
mod services;

const CLUSTER: &str = "prod";
const AGENT: &str = "cloudwatch-agent-daemon";
const LOGS: &str = "log-router-daemon";

struct Demo {
    last_progress: std::cell::RefCell<Option<String>>,
    harness: Harness,
    start: DateTime<Utc>,
    names: BTreeMap<String, String>,
    counters: BTreeMap<String, usize>,
}

impl Demo {
    fn clock(&self) -> String {
        self.clock_at(self.harness.model.now())
    }

    fn clock_at(&self, at: DateTime<Utc>) -> String {
        let elapsed = at - self.start;
        format!(
            "{:02}:{:02}",
            elapsed.num_minutes(),
            elapsed.num_seconds() % 60
        )
    }

    fn name(&self, instance: &str) -> String {
        self.names
            .get(resource_id(instance))
            .cloned()
            .unwrap_or_else(|| resource_id(instance).chars().take(8).collect())
    }

    fn add_instance(&mut self, provider: &str) -> String {
        let arn = self
            .harness
            .model
            .add_instance(CLUSTER, provider, 4096, 8192);
        let counter = self.counters.entry(provider.to_string()).or_default();
        *counter += 1;
        let name = format!("{provider}-{counter:02}");
        self.names.insert(resource_id(&arn).to_string(), name);
        arn
    }

    fn headline(&self, text: &str) {
        println!("\n── {text}");
    }

    fn note(&self, text: &str) {
        println!("  {}  {:<16} {text}", self.clock(), "");
    }

    fn show(&self, invocations: &[Invocation]) {
        for invocation in invocations {
            let outcome = match &invocation.result {
                Ok(outcome) => outcome,
                Err(error) => {
                    println!(
                        "  {}  {:<16} error: {error}",
                        self.clock_at(invocation.at),
                        invocation.function
                    );
                    continue;
                }
            };
            let line = |text: String| {
                println!(
                    "  {}  {:<16} {text}",
                    self.clock_at(invocation.at),
                    invocation.function
                )
            };
            for detail in invocation.events.iter().map(|e| &e["detail"]) {
                // ECS's daemon events (Managed Instances): what ECS said, as it said it.
                if let Some(name) = detail["eventName"].as_str() {
                    let reason = detail["reason"]
                        .as_str()
                        .map_or(String::new(), |r| format!(": {r}"));
                    let on = detail["containerInstanceArn"]
                        .as_str()
                        .map_or(String::new(), |i| format!(" on {}", self.name(i)));
                    line(format!("ECS: {name}{on}{reason}"));
                    continue;
                }
                let group = detail["group"].as_str().unwrap_or_default();
                if group.starts_with("service:")
                    && !group.starts_with("service:ecs-daemons-")
                    && detail["lastStatus"] == "STOPPED"
                {
                    let instance = detail["containerInstanceArn"].as_str().unwrap_or_default();
                    line(format!(
                        "application task of {} left {} ({})",
                        group.trim_start_matches("service:"),
                        self.name(instance),
                        detail["stoppedReason"].as_str().unwrap_or("stopped")
                    ));
                }
            }
            for cleared in &outcome.ready_cleared {
                line(format!(
                    "{} not ready ({})",
                    self.name(&cleared.instance_id),
                    cleared.reason
                ));
            }
            for started in &outcome.started {
                line(format!(
                    "start {} on {}",
                    started.daemon,
                    self.name(&started.instance_id)
                ));
            }
            for requested in &outcome.requested {
                line(format!(
                    "request {} on {} from service {} (its letter joins the slot attribute)",
                    requested.daemon,
                    self.name(&requested.instance_id),
                    requested.service
                ));
            }
            for withdrawn in &outcome.withdrawn {
                line(format!(
                    "withdraw the request of {} on {} from service {}",
                    withdrawn.daemon,
                    self.name(&withdrawn.instance_id),
                    withdrawn.service
                ));
            }
            for failed in &outcome.start_failures {
                line(format!(
                    "could not start {} on {}: {}",
                    failed.daemon,
                    self.name(&failed.instance_id),
                    failed.reason
                ));
            }
            for stopped in &outcome.stopped {
                line(format!(
                    "stop {} on {} ({})",
                    stopped.daemon,
                    self.name(&stopped.instance_id),
                    stopped.reason
                ));
            }
            for ready in &outcome.ready_set {
                line(format!(
                    "{} ready: all its daemons run, application tasks may land",
                    self.name(ready)
                ));
            }
            for report in &outcome.terminations {
                let instance = report
                    .instance_id
                    .as_deref()
                    .map_or(report.ec2_instance_id.clone(), |id| self.name(id));
                let what = match report.action {
                    "held" => "termination held".to_string(),
                    "heartbeat" => "termination still held (heartbeat)".to_string(),
                    _ => "lifecycle action completed: CONTINUE".to_string(),
                };
                line(format!("{instance}: {what}: {}", report.detail));
            }
            for error in &outcome.errors {
                line(format!("error: {error}"));
            }
            for ended in &outcome.rollouts_ended {
                let reason = ended.reason.as_deref().unwrap_or("");
                line(format!(
                    "rollout {} of {} {:?} {reason}",
                    ended.id, ended.daemon, ended.state
                ));
            }
            for started in &outcome.rollouts_started {
                line(format!("rollout {started} started (automatic rollback)"));
            }
            for (daemon, counts) in &outcome.rollouts {
                let done = counts.done as usize;
                let total = counts.total.max(1) as usize;
                let bar: String = (0..total)
                    .map(|i| if i < done { '█' } else { '░' })
                    .collect();
                let progress = format!(
                    "progress {daemon}: {bar} {}% ({}/{} done, {} surging, {} settling, {} failed, {} failure(s) of {} allowed)",
                    counts.percent_done(), counts.done, counts.total, counts.surging, counts.settling, counts.failed,
                    counts.failures, counts.threshold
                );
                if self.last_progress.borrow().as_deref() != Some(progress.as_str()) {
                    line(progress.clone());
                    *self.last_progress.borrow_mut() = Some(progress);
                }
            }
        }
    }

    async fn run(&mut self, seconds: i64) {
        let done = self
            .harness
            .run_scheduled(Duration::seconds(seconds), 60)
            .await;
        self.show(&done);
    }

    /// A deploy with `"dryRun": true`: what it would do, and proof that nothing changed.
    async fn dry_run(&mut self, request: DeployRequest) {
        let table = self.harness.store.snapshot();
        let writes = self
            .harness
            .model
            .calls()
            .iter()
            .filter(|c| c.modify)
            .count();
        match self.harness.deploy_dry_run(request).await {
            Ok(plan) => {
                let names = |ids: &[String]| {
                    ids.iter()
                        .map(|id| self.name(id))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                self.note(&format!(
                    "would record: {} ({} → {}); targeted: {}",
                    plan.would_record,
                    plan.from_task_definition.as_deref().unwrap_or("-"),
                    plan.task_definition,
                    plan.targeted
                        .iter()
                        .map(|(provider, n)| format!("{n} in {provider}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                if let Some(rollout) = &plan.rollout {
                    for (index, batch) in rollout.batches.iter().enumerate() {
                        self.note(&format!("batch {}: {}", index + 1, names(batch)));
                    }
                }
                let tight: Vec<&str> = plan
                    .instances
                    .iter()
                    .filter(|i| !i.room_for_second_copy)
                    .map(|i| i.plan.as_str())
                    .collect();
                self.note(&format!(
                    "room for a second copy on {} of {} instances{}",
                    plan.instances.len() - tight.len(),
                    plan.instances.len(),
                    tight
                        .first()
                        .map_or(String::new(), |p| format!("; elsewhere: {p}"))
                ));
                self.note(&format!(
                    "expected wall time {} s; ECS calls about {} ({} StartTask, {} StopTask, {} reads)",
                    plan.expected_wall_seconds,
                    plan.ecs_calls.total,
                    plan.ecs_calls.start_task,
                    plan.ecs_calls.stop_task,
                    plan.ecs_calls.reads
                ));
            }
            Err(error) => self.note(&format!("dry run refused: {error}")),
        }
        let unchanged = self.harness.store.snapshot() == table
            && self
                .harness
                .model
                .calls()
                .iter()
                .filter(|c| c.modify)
                .count()
                == writes;
        self.note(if unchanged {
            "nothing changed: no ECS call that mutates, no table write"
        } else {
            "THE DRY RUN CHANGED SOMETHING"
        });
    }

    /// The time-to-coverage line of `status`.
    async fn time_to_coverage(&self) {
        let answer = ecs_daemons::deploy::status(
            &self.harness.engine,
            ecs_daemons::deploy::StatusRequest {
                cluster: CLUSTER.into(),
                daemon: None,
            },
            self.harness.model.now(),
        )
        .await;
        if let Ok(answer) = answer {
            let t = &answer.time_to_coverage;
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} s"));
            self.note(&format!(
                "time to coverage of the {} instances that joined: p50 {}, p90 {}, p99 {} (registration to all daemons RUNNING); ready p99 {}",
                t.covered.count,
                show(t.covered.p50),
                show(t.covered.p90),
                show(t.covered.p99),
                show(t.ready.p99)
            ));
        }
    }

    /// The invoke's own first reconcile, or the coverage-check's that its rollout record
    /// started through the table's stream.
    fn show_first_reconcile(
        &mut self,
        function: &'static str,
        own: Option<ecs_daemons::engine::Outcome>,
        first_by: Option<&'static str>,
    ) {
        let (function, reconcile) = match (own, first_by) {
            (Some(own), _) => (function, own),
            (None, Some(by)) => match self.harness.last_stream_check() {
                Some(outcome) => (by, outcome.clone()),
                None => return,
            },
            (None, None) => return,
        };
        let at = self.harness.model.now();
        self.show(&[Invocation {
            function,
            at,
            events: Vec::new(),
            result: Ok(reconcile),
            ecs_calls: 0,
            store_calls: 0,
            crashed: false,
        }]);
    }

    async fn deploy(&mut self, request: DeployRequest) {
        let daemon = request.daemon.clone();
        match self.harness.deploy(request).await {
            Ok(answer) => {
                let definition = answer
                    .task_definition
                    .clone()
                    .or_else(|| {
                        answer
                            .managed
                            .as_ref()
                            .map(|m| m.daemon_task_definition.clone())
                    })
                    .unwrap_or_default();
                self.note(&format!(
                    "deploy {daemon} ({definition}): {}",
                    answer.recorded
                ));
                for warning in &answer.warnings {
                    self.note(&format!("warning: {warning}"));
                }
                self.show_first_reconcile("deploy", answer.reconcile, answer.first_reconcile_by);
            }
            Err(error) => self.note(&format!("deploy {daemon} refused: {error}")),
        }
    }

    fn apps(&self, count: usize, definition: &str) {
        let mut placed = BTreeMap::<String, usize>::new();
        for _ in 0..count {
            if let Some(task) = self
                .harness
                .model
                .run_service_task(CLUSTER, "checkout", definition)
            {
                let instance = self
                    .harness
                    .model
                    .tasks(CLUSTER)
                    .into_iter()
                    .find(|t| task.ends_with(&t.id))
                    .map(|t| t.instance_id);
                *placed
                    .entry(self.name(&instance.unwrap_or_default()))
                    .or_default() += 1;
            }
        }
        let spread: Vec<String> = placed
            .iter()
            .map(|(name, n)| format!("{name}×{n}"))
            .collect();
        self.note(&format!(
            "service checkout places {} task(s) with memberOf(attribute:{READY_ATTRIBUTE} == true): {}",
            placed.values().sum::<usize>(),
            spread.join(" ")
        ));
    }
}

fn request(
    daemon: &str,
    task_definition: &str,
    providers: &[&str],
    start_order: i32,
) -> DeployRequest {
    DeployRequest::new(CLUSTER, daemon, task_definition, providers, start_order)
}

fn main() {
    if std::env::args().any(|a| a == "--local-stack") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        std::process::exit(runtime.block_on(on_local_stack()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(on_the_model());
}

/// `--local-stack`: the short scenario through the real function binaries under
/// `cargo lambda watch`, the ECS model over HTTP and DynamoDB in moto (both started here).
async fn on_local_stack() -> i32 {
    use local_stack::stack::{LocalStack, StackConfig};
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("demo/ sits in the workspace")
        .to_path_buf();
    let logs = workspace.join("target");
    let _ = std::fs::create_dir_all(&logs);
    println!("local stack: starting moto, the ECS model and cargo lambda watch (the first run builds the functions)");
    let moto =
        match local_stack::moto::MotoServer::start(&workspace, &logs.join("demo-moto.log")).await {
            Ok(moto) => moto,
            Err(error) => {
                eprintln!("{error}");
                return 1;
            }
        };
    let config = StackConfig {
        clusters: vec![local_stack::scenario::CLUSTER.into()],
        table: "ecs-daemons-demo".into(),
        dynamodb_endpoint: moto.endpoint.clone(),
        model: local_stack::stack::quick_model(),
        log: logs.join("demo-local-stack.log"),
    };
    let stack = match LocalStack::start(&workspace, config).await {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("the local stack did not start: {error}");
            return 1;
        }
    };
    match local_stack::scenario::run(&stack, &mut |line| println!("{line}")).await {
        Ok(report) => {
            println!(
                "\n{} events delivered to the functions, {} failed",
                report.deliveries,
                report.failed_deliveries.len()
            );
            println!("final status (invoke status {{\"cluster\": \"prod\"}}):");
            println!(
                "{}",
                serde_json::to_string_pretty(&report.final_status).unwrap_or_default()
            );
            i32::from(!report.failed_deliveries.is_empty())
        }
        Err(error) => {
            eprintln!("{error}\n(the functions' logs: target/demo-local-stack.log)");
            1
        }
    }
}

fn model_register(demo: &Demo, definition: TaskDefinitionModel) -> String {
    demo.harness.model.register_task_definition(definition)
}

async fn on_the_model() {
    let harness = Harness::new(
        CLUSTER,
        &[
            "asg-general",
            "asg-batch",
            managed::MANAGED_PROVIDER,
            services::SCALED_PROVIDER,
        ],
        ModelConfig {
            seed: 7,
            ..ModelConfig::default()
        },
    );
    harness
        .model
        .set_capacity_provider_kind(managed::MANAGED_PROVIDER, managed::managed_provider_kind());
    // asg-general's Auto Scaling group has a terminate lifecycle hook for ecs-daemons.
    harness.model.add_terminate_hook(
        "asg-general",
        "asg-general",
        "ecs-daemons-drain",
        Duration::seconds(300),
    );
    let start = harness.model.now();
    let mut demo = Demo {
        last_progress: Default::default(),
        harness,
        start,
        names: BTreeMap::new(),
        counters: BTreeMap::new(),
    };
    println!("ecs-daemons demo: cluster {CLUSTER}, capacity providers asg-general and asg-batch (EC2 Auto Scaling), {} (ECS Managed Instances); ECS cluster model, in-memory table", managed::MANAGED_PROVIDER);
    println!("  time   function         what happened and why");

    demo.headline("10 instances join: 8 in asg-general, 2 in asg-batch (4 vCPU, 8 GiB each)");
    for _ in 0..8 {
        demo.add_instance("asg-general");
    }
    for _ in 0..2 {
        demo.add_instance("asg-batch");
    }
    demo.run(2).await;
    demo.note("no daemon declared yet: nothing to do");

    let model = &demo.harness.model;
    let agent =
        model.register_task_definition(TaskDefinitionModel::new("cloudwatch-agent", 1024, 512));
    let agent_v2 =
        model.register_task_definition(TaskDefinitionModel::new("cloudwatch-agent", 1024, 512));
    let agent_v3 = model.register_task_definition(TaskDefinitionModel {
        execution_role_arn: Some("arn:aws:iam::111122223333:role/agent-role-without-ecr".into()),
        execution_role_denied: true,
        ..TaskDefinitionModel::new("cloudwatch-agent", 1024, 512)
    });
    let logs = model.register_task_definition(TaskDefinitionModel {
        health_check: true,
        ..TaskDefinitionModel::new("fluent-bit", 256, 256)
    });
    let checkout = model.register_task_definition(TaskDefinitionModel::new("checkout", 256, 512));
    let no_role = model.register_task_definition(TaskDefinitionModel {
        execution_role_arn: None,
        ..TaskDefinitionModel::new("cloudwatch-agent", 1024, 512)
    });
    let huge = model.register_task_definition(TaskDefinitionModel::new("profiler", 8192, 2048));

    demo.headline(&format!(
        "deploy {AGENT} ({agent}: 1 vCPU, 512 MiB) to asg-general"
    ));
    demo.deploy(request(AGENT, &agent, &["asg-general"], 0))
        .await;
    demo.run(15).await;

    demo.headline("applications arrive: they land only on ready instances");
    demo.apps(8, &checkout);
    demo.run(8).await;

    demo.headline("scale out asg-general by 3: the daemon starts first, applications after");
    for _ in 0..3 {
        demo.add_instance("asg-general");
    }
    demo.run(2).await;
    demo.apps(3, &checkout);
    demo.run(10).await;
    demo.apps(6, &checkout);
    demo.run(8).await;
    demo.time_to_coverage().await;

    demo.headline(
        "Auto Scaling scales asg-general in by 2 (asg-general-01, -02): the terminate hook holds them; applications leave first, the daemon last, then CONTINUE",
    );
    let draining: Vec<String> = demo
        .names
        .iter()
        .filter(|(_, n)| *n == "asg-general-01" || *n == "asg-general-02")
        .map(|(id, _)| id.clone())
        .collect();
    for instance in &draining {
        if let Some(action) = demo.harness.model.scale_in(CLUSTER, instance) {
            demo.note(&format!(
                "{} ({}) waits in Terminating:Wait (hook {} of group {})",
                demo.name(instance),
                action.ec2_instance_id,
                action.hook,
                action.group
            ));
        }
    }
    demo.run(15).await;

    demo.headline(&format!("deploy a second daemon, {LOGS} ({logs}, health-checked), start order 10, to both providers"));
    demo.deploy(request(LOGS, &logs, &["asg-general", "asg-batch"], 10))
        .await;
    demo.run(25).await;
    demo.headline("one more asg-general instance joins: agent, then log router, then ready");
    demo.add_instance("asg-general");
    demo.run(30).await;

    demo.headline("the three common mistakes, each refused with what to fix");
    demo.deploy(request("agent-without-role", &no_role, &["asg-general"], 0))
        .await;
    demo.deploy(request("agent-wrong-provider", &agent, &["asg-gpu"], 0))
        .await;
    demo.deploy(request("too-big-profiler", &huge, &["asg-general"], 0))
        .await;

    demo.headline("a daemon dies: readiness goes at once, the copy is restarted in place");
    let victim = demo
        .harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .find(|t| t.group == format!("daemon:{AGENT}") && t.last_status == TaskStatus::Running);
    if let Some(victim) = victim {
        demo.note(&format!(
            "the agent on {} exits (EssentialContainerExited)",
            demo.name(&victim.instance_id)
        ));
        demo.harness.model.crash_task(CLUSTER, &victim.id);
    }
    demo.run(12).await;

    let rollout = RolloutConfig {
        max_parallel: Amount::Count(3),
        min_healthy_seconds: 30,
        failure_threshold: Amount::Count(2),
        ..RolloutConfig::default()
    };
    demo.headline(&format!(
        "dry run of the update to revision 2 ({agent_v2}): the plan, with nothing changed"
    ));
    demo.dry_run(DeployRequest {
        rollout: Some(rollout.clone()),
        dry_run: true,
        ..request(AGENT, &agent_v2, &["asg-general"], 0)
    })
    .await;
    demo.headline(&format!(
        "update {AGENT} to revision 2 ({agent_v2}) across its {} instances: maxParallel 3, minHealthySeconds 30, new copy first",
        demo.harness.model.instances(CLUSTER).iter().filter(|i| i.capacity_provider.as_deref() == Some("asg-general") && i.status == InstanceStatus::Active).count()
    ));
    demo.deploy(DeployRequest {
        rollout: Some(rollout.clone()),
        ..request(AGENT, &agent_v2, &["asg-general"], 0)
    })
    .await;
    demo.run(300).await;

    demo.headline(&format!(
        "revision 3 ({agent_v3}): its execution role may not pull the image; the breaker trips at 2 failures and rolls back"
    ));
    demo.deploy(DeployRequest {
        rollout: Some(rollout.clone()),
        ..request(AGENT, &agent_v3, &["asg-general"], 0)
    })
    .await;
    demo.run(300).await;

    demo.headline("manual rollback to revision 1: one invoke, a rollout like any other");
    match demo
        .harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: AGENT.into(),
            to_revision: Some(1),
            dry_run: false,
        })
        .await
    {
        Ok(answer) => {
            demo.note(&format!(
                "rollback {AGENT}: {} → {} (rollout {})",
                answer.from_task_definition.unwrap_or_default(),
                answer.task_definition.unwrap_or_default(),
                answer.rollout.map(|r| r.id).unwrap_or_default()
            ));
            demo.show_first_reconcile("rollback", answer.reconcile, answer.first_reconcile_by);
        }
        Err(error) => demo.note(&format!("rollback refused: {error}")),
    }
    demo.run(300).await;

    let agent_v4 = model_register(
        &demo,
        TaskDefinitionModel::new("cloudwatch-agent", 1024, 512),
    );
    demo.harness
        .model
        .put_metric_alarm("cloudwatch-agent-errors", 60, 3);
    demo.headline(&format!(
        "revision 4 ({agent_v4}) gated by the CloudWatch alarm cloudwatch-agent-errors (bake 120 s): the alarm fires midway; the rollout fails and rolls back"
    ));
    demo.deploy(DeployRequest {
        rollout: Some(RolloutConfig {
            alarms: vec!["cloudwatch-agent-errors".into()],
            bake_seconds: Some(120),
            ..rollout.clone()
        }),
        ..request(AGENT, &agent_v4, &["asg-general"], 0)
    })
    .await;
    demo.run(45).await;
    demo.note(
        "cloudwatch-agent-errors goes into ALARM (Threshold Crossed: 12 errors in 3 minutes)",
    );
    demo.harness.model.set_alarm_state(
        "cloudwatch-agent-errors",
        ecs_daemons::alarms::AlarmValue::Alarm,
        "Threshold Crossed: 12 errors in 3 minutes",
    );
    demo.run(240).await;
    demo.harness.model.set_alarm_state(
        "cloudwatch-agent-errors",
        ecs_daemons::alarms::AlarmValue::Ok,
        "recovered",
    );

    demo.headline("scheduled coverage-check: a full reconcile finds nothing to repair");
    let check = demo.harness.coverage_check().await;
    demo.show(std::slice::from_ref(&check));
    if let Ok(outcome) = &check.result {
        demo.note(&format!(
            "{} ECS calls for {} instances, {} started, {} stopped",
            check.ecs_calls,
            demo.harness.model.instances(CLUSTER).len(),
            outcome.started.len(),
            outcome.stopped.len()
        ));
    }

    managed::managed_instances(&mut demo).await;
    services::daemon_services(&mut demo).await;

    print_table(&demo);
    let answer = status(
        &demo.harness.engine,
        StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        },
        demo.harness.model.now(),
    )
    .await;
    match answer {
        Ok(answer) => {
            println!("\ncoverage (status):");
            println!(
                "  {:<26} {:<20} {:>8} {:>8} {:>8} {:>8} {:>11} {:>13}",
                "daemon",
                "revision",
                "targeted",
                "covered",
                "starting",
                "missing",
                "duplicates",
                "crash-looping"
            );
            for daemon in answer.daemons {
                let c = daemon.coverage;
                // A Managed Instances daemon: ECS's counts (status merges both kinds).
                let managed_running: i32 = daemon
                    .managed
                    .iter()
                    .flat_map(|m| &m.providers)
                    .map(|p| p.running)
                    .sum();
                let managed_without: i32 = daemon
                    .managed
                    .iter()
                    .flat_map(|m| &m.providers)
                    .map(|p| p.without_daemon)
                    .sum();
                let revision = daemon
                    .task_definition
                    .clone()
                    .or_else(|| {
                        daemon
                            .managed
                            .as_ref()
                            .map(|m| m.daemon_task_definition.clone())
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "  {:<26} {:<20} {:>8} {:>8} {:>8} {:>8} {:>11} {:>13}",
                    daemon.daemon,
                    revision,
                    c.targeted + (managed_running + managed_without) as usize,
                    c.covered + managed_running as usize,
                    c.starting,
                    c.missing + managed_without as usize,
                    c.duplicates,
                    c.crash_looping
                );
            }
        }
        Err(error) => println!("status failed: {error}"),
    }
    let hooks = demo.harness.model.hook_stats();
    println!(
        "\nterminations held by the lifecycle hook: {} held, {} let go after their daemons stopped, {} with tasks still running, {} timed out",
        hooks.started,
        hooks.completed - hooks.completed_with_tasks.len() as u64,
        hooks.completed_with_tasks.len(),
        hooks.timed_out
    );
    let drain_breaks = demo.harness.model.early_drain_stops();
    println!(
        "\ndrain-last kept: {}",
        if drain_breaks.is_empty() {
            "yes, no daemon stopped while an application task ran on its draining instance"
                .to_string()
        } else {
            format!("NO: {drain_breaks:?}")
        }
    );
}

fn print_table(demo: &Demo) {
    let tasks = demo.harness.model.tasks(CLUSTER);
    println!("\ninstances:");
    println!(
        "  {:<16} {:<9} {:<6} {:<28} {:<28} {:>4}",
        "instance", "status", "ready", AGENT, LOGS, "apps"
    );
    let mut rows: Vec<(String, String)> = demo
        .harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .map(|i| (demo.name(&i.arn), i.arn))
        .collect();
    rows.sort();
    for (name, arn) in rows {
        let Some(instance) = demo
            .harness
            .model
            .instances(CLUSTER)
            .into_iter()
            .find(|i| i.arn == arn)
        else {
            continue;
        };
        let id = instance.id().to_string();
        let daemon_state = |daemon: &str| {
            let copies: Vec<_> = tasks
                .iter()
                .filter(|t| {
                    t.instance_id == id
                        && t.group == format!("daemon:{daemon}")
                        && !t.last_status.is_terminal()
                })
                .collect();
            match copies.as_slice() {
                [] => "—".to_string(),
                [one] if one.health == HealthStatus::Healthy => {
                    format!("{} {} HEALTHY", one.definition, one.last_status)
                }
                [one] => format!("{} {}", one.definition, one.last_status),
                many => format!("{} copies!", many.len()),
            }
        };
        let apps = tasks
            .iter()
            .filter(|t| {
                t.instance_id == id
                    && t.group.starts_with("service:")
                    && !t.group.starts_with("service:ecs-daemons-")
                    && !t.last_status.is_terminal()
            })
            .count();
        let ready = instance
            .attributes
            .get(READY_ATTRIBUTE)
            .is_some_and(|v| v.as_deref() == Some("true"));
        let status = if instance.status == InstanceStatus::Draining {
            "DRAINING"
        } else {
            instance.status.as_str()
        };
        println!(
            "  {:<16} {:<9} {:<6} {:<28} {:<28} {:>4}",
            name,
            status,
            if ready { "yes" } else { "no" },
            daemon_state(AGENT),
            daemon_state(LOGS),
            apps
        );
    }
}
