//! The end-to-end scenario on the local stack: deploy, a new instance, a drain, a rolling
//! update and a rollback, each step waited for through the real functions and checked
//! through `status` and the model. The end-to-end test and `demo --local-stack` run it.

use std::time::{Duration, Instant};

use ecs_daemons::arn::resource_id;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons_sim::cluster_model::TaskDefinitionModel;
use serde_json::{json, Value};

use crate::stack::{Delivery, LocalStack, StackError};

pub const CLUSTER: &str = "prod";
pub const PROVIDER: &str = "asg-general";
pub const DAEMON: &str = "cwagent";
/// The daemon on Managed Instances, and its provider.
pub const MANAGED_DAEMON: &str = "cwagent-managed";
pub const MANAGED_PROVIDER: &str = "mi-general";
/// The daemon on an EC2 provider with managed scaling (copies from DAEMON services), and
/// its provider.
pub const SERVICES_DAEMON: &str = "cwagent-scaled";
pub const SCALED_PROVIDER: &str = "asg-scaled";

/// Each step's patience (the functions' first invocations start their processes).
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the schedule's full reconcile runs here.
const SCHEDULE_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub deliveries: usize,
    pub failed_deliveries: Vec<String>,
    pub final_status: Value,
    pub steps: Vec<(String, Duration)>,
}

struct Run<'a> {
    stack: &'a LocalStack,
    report: Report,
    say: &'a mut dyn FnMut(&str),
    started: Instant,
}

impl Run<'_> {
    fn say(&mut self, line: String) {
        let line = format!("{:>5.1}s  {line}", self.started.elapsed().as_secs_f64());
        (self.say)(&line);
        self.report.lines.push(line);
    }

    fn count(&mut self, deliveries: Vec<Delivery>) {
        self.report.deliveries += deliveries.iter().map(|d| d.events).sum::<usize>();
        for delivery in deliveries {
            if let Err(error) = delivery.result {
                self.report.failed_deliveries.push(format!(
                    "{} ({}): {error}",
                    delivery.function, delivery.detail_type
                ));
            }
        }
    }

    async fn invoke(&mut self, function: &str, payload: Value) -> Result<Value, StackError> {
        self.say(format!("invoke {function} {payload}"));
        Ok(self.stack.invoke(function, payload).await?)
    }

    /// Waits for `check` (over the daemon's status and the model), then records the step.
    async fn step<F>(&mut self, what: &str, check: F) -> Result<(), StackError>
    where
        F: FnMut(&Value, &LocalStack) -> Result<bool, String>,
    {
        self.step_of(DAEMON, what, check).await
    }

    /// [`Run::step`] for any daemon.
    async fn step_of<F>(&mut self, daemon: &str, what: &str, mut check: F) -> Result<(), StackError>
    where
        F: FnMut(&Value, &LocalStack) -> Result<bool, String>,
    {
        let began = Instant::now();
        let stack = self.stack;
        let deliveries = stack
            .wait_until(
                what,
                STEP_TIMEOUT,
                SCHEDULE_EVERY,
                || async {
                    stack
                        .invoke("status", json!({"cluster": CLUSTER, "daemon": daemon}))
                        .await
                        .map_err(|e| format!("status failed: {e}"))
                },
                |status| {
                    let daemon = &status["daemons"][0];
                    check(daemon, stack).map_err(|seen| format!("{seen}; status: {daemon}"))
                },
            )
            .await?;
        self.count(deliveries);
        let took = began.elapsed();
        self.say(format!("{what}: done in {:.1} s", took.as_secs_f64()));
        self.report.steps.push((what.to_string(), took));
        Ok(())
    }
}

/// Running daemon copies on ACTIVE instances: (instance id, task definition).
fn daemon_copies(stack: &LocalStack) -> Vec<(String, String)> {
    let active: Vec<String> = stack
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| i.id().to_string())
        .collect();
    stack
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| {
            t.group == format!("daemon:{DAEMON}")
                && t.last_status == TaskStatus::Running
                && t.desired_status == TaskStatus::Running
                && active.contains(&t.instance_id)
        })
        .map(|t| (t.instance_id, t.definition))
        .collect()
}

/// Every ACTIVE instance has exactly one running copy, of `revision`, and is ready.
fn fleet_on(stack: &LocalStack, revision: &str, instances: usize) -> Result<bool, String> {
    let copies = daemon_copies(stack);
    let ready = stack
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter(|i| i.attributes.get(READY_ATTRIBUTE) == Some(&Some("true".into())))
        .count();
    let on_revision = copies.iter().filter(|(_, d)| d == revision).count();
    if copies.len() == instances && on_revision == instances && ready == instances {
        Ok(true)
    } else {
        Err(format!(
            "{} copies ({on_revision} on {revision}), {ready} of {instances} instances ready",
            copies.len()
        ))
    }
}

fn covered(daemon: &Value, instances: u64) -> bool {
    daemon["coverage"]["targeted"] == instances && daemon["coverage"]["covered"] == instances
}

/// `status` shows the latest rollout under `rollout` (running or ended) and the earlier ones
/// under `history`.
fn last_rollout_succeeded(daemon: &Value, kind: &str, to: &str) -> Result<bool, String> {
    let last = &daemon["rollout"];
    if last["kind"] == kind && last["toTaskDefinition"] == to && last["state"] == "SUCCEEDED" {
        Ok(true)
    } else {
        Err(format!(
            "rollout {} to {}: {} ({}% done)",
            last["kind"], last["toTaskDefinition"], last["state"], last["percentDone"]
        ))
    }
}

pub async fn run(stack: &LocalStack, say: &mut dyn FnMut(&str)) -> Result<Report, StackError> {
    let mut run = Run {
        stack,
        report: Report::default(),
        say,
        started: Instant::now(),
    };
    let model = &stack.model;
    model.create_cluster(
        CLUSTER,
        &[PROVIDER, "asg-batch", MANAGED_PROVIDER, SCALED_PROVIDER],
    );
    model.set_capacity_provider_kind(
        MANAGED_PROVIDER,
        ecs_daemons::model::CapacityProviderKind::managed_instances(),
    );
    model.launch_managed_instances(CLUSTER, MANAGED_PROVIDER, 2);
    let v1 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let v2 = model.register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let web = model.register_task_definition(TaskDefinitionModel::new("web", 512, 512));
    for _ in 0..2 {
        model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    }
    run.say(format!(
        "cluster {CLUSTER}: 2 instances in {PROVIDER}; ECS model at {}",
        stack.ecs_endpoint
    ));
    // 1. Deploy.
    let answer = run
        .invoke(
            "deploy",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "taskDefinition": v1,
                   "capacityProviders": [PROVIDER]}),
        )
        .await?;
    run.say(format!(
        "deploy answered: {} {} (warnings {})",
        answer["recorded"], answer["taskDefinition"], answer["warnings"]
    ));
    run.step("every instance covered and ready", |daemon, stack| {
        Ok(covered(daemon, 2) && fleet_on(stack, &v1, 2)?)
    })
    .await?;

    // 2. A new instance joins: instance-events starts its daemon, then marks it ready.
    let joined = model.add_instance(CLUSTER, PROVIDER, 2048, 4096);
    run.say(format!(
        "scale-out: instance {} registers",
        resource_id(&joined)
    ));
    run.step("the new instance covered and ready", |daemon, stack| {
        Ok(covered(daemon, 3) && fleet_on(stack, &v1, 3)?)
    })
    .await?;

    // 3. Drain: the application leaves first, the daemon last.
    let app_task = model
        .run_service_task(CLUSTER, "web", &web)
        .ok_or_else(|| StackError::Check("no ready instance took the application task".into()))?;
    let app_instance = model
        .tasks(CLUSTER)
        .into_iter()
        .find(|t| t.id == resource_id(&app_task))
        .map(|t| t.instance_id)
        .ok_or_else(|| StackError::Check(format!("the model lost task {app_task}")))?;
    run.say(format!(
        "application task {} placed on ready instance {app_instance}; draining that instance",
        resource_id(&app_task)
    ));
    model.drain_instance(CLUSTER, &app_instance);
    run.step(
        "drained: application stopped, then the daemon",
        |daemon, stack| {
            let left = stack
                .model
                .tasks(CLUSTER)
                .into_iter()
                .filter(|t| t.instance_id == app_instance && t.last_status != TaskStatus::Stopped)
                .count();
            if left > 0 {
                return Err(format!("{left} tasks still on the draining instance"));
            }
            Ok(covered(daemon, 2) && fleet_on(stack, &v1, 2)?)
        },
    )
    .await?;
    let early = model.early_drain_stops();
    if !early.is_empty() {
        return Err(StackError::Check(format!(
            "daemons stopped while applications still ran: {early:?}"
        )));
    }

    // 4. Rolling update to revision 2: new copy first, old one after minHealthySeconds.
    run.invoke(
        "deploy",
        json!({"cluster": CLUSTER, "daemon": DAEMON, "taskDefinition": v2,
               "capacityProviders": [PROVIDER],
               "rollout": {"maxParallel": 1, "minHealthySeconds": 2}}),
    )
    .await?;
    let to = v2.clone();
    run.step("rolled out to revision 2", |daemon, stack| {
        Ok(last_rollout_succeeded(daemon, "UPDATE", &to)? && fleet_on(stack, &to, 2)?)
    })
    .await?;

    // 5. Rollback to the last good revision with one invoke.
    run.invoke("rollback", json!({"cluster": CLUSTER, "daemon": DAEMON}))
        .await?;
    let back = v1.clone();
    run.step("rolled back to revision 1", |daemon, stack| {
        Ok(last_rollout_succeeded(daemon, "ROLLBACK", &back)? && fleet_on(stack, &back, 2)?)
    })
    .await?;
    let gaps = model.lone_copy_stops();
    if !gaps.is_empty() {
        return Err(StackError::Check(format!(
            "a rollout stopped an instance's only copy: {gaps:?}"
        )));
    }

    managed_instances(&mut run).await?;
    daemon_services(&mut run).await?;

    let status = stack.invoke("status", json!({"cluster": CLUSTER})).await?;
    run.report.final_status = status;
    Ok(run.report)
}

/// The seed's scenario on Managed Instances: a daemon task definition deployed as ECS's
/// managed daemon, updated by a new revision (ECS drains and replaces instances), rolled
/// back with one invoke; each step followed by the coverage check and read through `status`.
async fn managed_instances(run: &mut Run<'_>) -> Result<(), StackError> {
    let model = &run.stack.model;
    let daemon_definition =
        || ecs_daemons_sim::cluster_model::DaemonDefinitionModel::new(MANAGED_DAEMON, 1024, 512);
    let v1 = model.register_daemon_task_definition(daemon_definition());
    let v2 = model.register_daemon_task_definition(daemon_definition());
    run.say(format!(
        "Managed Instances: 2 instances in {MANAGED_PROVIDER}; daemon task definitions {v1}, {v2}"
    ));
    let deploy = |revision: &str| {
        json!({"cluster": CLUSTER, "daemon": MANAGED_DAEMON, "daemonTaskDefinition": revision,
               "capacityProviders": [MANAGED_PROVIDER],
               "rollout": {"maxParallel": "50%", "minHealthySeconds": 0}})
    };
    let answer = run.invoke("deploy", deploy(&v1)).await?;
    run.say(format!(
        "deploy answered: {} (daemon {})",
        answer["managed"]["recorded"], answer["managed"]["daemonArn"]
    ));
    run.step_of(
        MANAGED_DAEMON,
        "ECS runs the daemon on every instance",
        |daemon, _| managed_on(daemon, &v1, "INITIAL"),
    )
    .await?;
    run.invoke("deploy", deploy(&v2)).await?;
    run.step_of(
        MANAGED_DAEMON,
        "ECS rolled revision 2 out (drain and replace)",
        |daemon, _| managed_on(daemon, &v2, "UPDATE"),
    )
    .await?;
    run.invoke(
        "rollback",
        json!({"cluster": CLUSTER, "daemon": MANAGED_DAEMON}),
    )
    .await?;
    run.step_of(
        MANAGED_DAEMON,
        "rolled back to revision 1 by UpdateDaemon",
        |daemon, _| managed_on(daemon, &v1, "ROLLBACK"),
    )
    .await
}

/// The managed daemon runs `revision` on both instances, its latest rollout of `kind`
/// succeeded, and nothing drifted.
fn managed_on(daemon: &Value, revision: &str, kind: &str) -> Result<bool, String> {
    let managed = &daemon["managed"];
    let running: i64 = managed["providers"]
        .as_array()
        .map(|p| p.iter().filter_map(|c| c["running"].as_i64()).sum())
        .unwrap_or(0);
    let rollout = &daemon["rollout"];
    let done = managed["daemonTaskDefinition"] == revision
        && running == 2
        && rollout["kind"] == kind
        && rollout["state"] == "SUCCEEDED"
        && managed["drift"].is_null();
    if done {
        Ok(true)
    } else {
        Err(format!(
            "{running} running, rollout {} {}",
            rollout["kind"], rollout["state"]
        ))
    }
}

/// Live copies of `daemon` from its DAEMON services on ACTIVE instances: (instance id,
/// task definition, RUNNING).
fn service_copies(stack: &LocalStack, daemon: &str) -> Vec<(String, String, bool)> {
    let active: Vec<String> = stack
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| i.id().to_string())
        .collect();
    let group = format!("service:ecs-daemons-{daemon}-");
    stack
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| {
            t.group.starts_with(&group)
                && t.desired_status == TaskStatus::Running
                && !t.last_status.is_terminal()
                && active.contains(&t.instance_id)
        })
        .map(|t| {
            let running = t.last_status == TaskStatus::Running;
            (t.instance_id, t.definition, running)
        })
        .collect()
}

/// Every instance of the scaled provider runs one copy of `revision` from a DAEMON service,
/// RUNNING, and is ready; never more than two copies on one instance meanwhile.
fn services_on(stack: &LocalStack, revision: &str, instances: usize) -> Result<bool, String> {
    let copies = service_copies(stack, SERVICES_DAEMON);
    let mut per_instance = std::collections::BTreeMap::<&str, usize>::new();
    for (instance, _, _) in &copies {
        *per_instance.entry(instance).or_default() += 1;
    }
    if let Some((instance, n)) = per_instance.iter().find(|(_, n)| **n > 2) {
        return Err(format!("{n} copies on {instance}"));
    }
    let ready = stack
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter(|i| i.capacity_provider.as_deref() == Some(SCALED_PROVIDER))
        .filter(|i| i.attributes.get(READY_ATTRIBUTE) == Some(&Some("true".into())))
        .count();
    let on_revision = copies
        .iter()
        .filter(|(_, d, running)| d == revision && *running)
        .count();
    if copies.len() == instances && on_revision == instances && ready == instances {
        Ok(true)
    } else {
        Err(format!(
            "{} service copies ({on_revision} running {revision}), {ready} of {instances} instances ready",
            copies.len()
        ))
    }
}

/// The daemon on an EC2 provider with managed scaling: deployed as two DAEMON services
/// steered per instance by its slot attribute, rolled to a new revision (the new copy from
/// the idle service beside the old one), rolled back; read through `status`.
async fn daemon_services(run: &mut Run<'_>) -> Result<(), StackError> {
    let model = &run.stack.model;
    for _ in 0..2 {
        model.add_instance(CLUSTER, SCALED_PROVIDER, 2048, 4096);
    }
    // The group pinned at its two instances: nothing scales meanwhile.
    model.enable_managed_scaling(
        CLUSTER,
        SCALED_PROVIDER,
        ecs_daemons_sim::cluster_model::ManagedScaling::new(2, 2, 2048, 4096),
    );
    let v1 = model.register_task_definition(TaskDefinitionModel::new(SERVICES_DAEMON, 256, 256));
    let v2 = model.register_task_definition(TaskDefinitionModel::new(SERVICES_DAEMON, 256, 256));
    run.say(format!(
        "EC2 provider {SCALED_PROVIDER} with managed scaling: 2 instances; {SERVICES_DAEMON} {v1}, {v2}"
    ));
    let deploy = |revision: &str| {
        json!({"cluster": CLUSTER, "daemon": SERVICES_DAEMON, "taskDefinition": revision,
               "capacityProviders": [SCALED_PROVIDER],
               "rollout": {"maxParallel": 1, "minHealthySeconds": 2}})
    };
    let answer = run.invoke("deploy", deploy(&v1)).await?;
    run.say(format!(
        "deploy answered: {} {} (warnings {})",
        answer["recorded"], answer["taskDefinition"], answer["warnings"]
    ));
    run.step_of(
        SERVICES_DAEMON,
        "two DAEMON services created, every instance covered by service A",
        |daemon, stack| {
            let services = daemon["services"]["services"]
                .as_array()
                .map(|s| s.iter().filter(|s| s["status"] == "ACTIVE").count())
                .unwrap_or(0);
            if services != 2 {
                return Err(format!("{services} ACTIVE services in status"));
            }
            Ok(covered(daemon, 2) && services_on(stack, &v1, 2)?)
        },
    )
    .await?;
    run.invoke("deploy", deploy(&v2)).await?;
    let to = v2.clone();
    run.step_of(
        SERVICES_DAEMON,
        "rolled out to revision 2 on service B, new copy first",
        |daemon, stack| {
            Ok(last_rollout_succeeded(daemon, "UPDATE", &to)? && services_on(stack, &to, 2)?)
        },
    )
    .await?;
    run.invoke(
        "rollback",
        json!({"cluster": CLUSTER, "daemon": SERVICES_DAEMON}),
    )
    .await?;
    let back = v1.clone();
    run.step_of(
        SERVICES_DAEMON,
        "rolled back to revision 1 on service A",
        |daemon, stack| {
            Ok(last_rollout_succeeded(daemon, "ROLLBACK", &back)? && services_on(stack, &back, 2)?)
        },
    )
    .await?;
    let gaps = model.lone_copy_stops();
    if !gaps.is_empty() {
        return Err(StackError::Check(format!(
            "a rollout on services stopped an instance's only copy: {gaps:?}"
        )));
    }
    Ok(())
}
