//! The seed's scenario on ECS Managed Instances: the CloudWatch Agent as a daemon task
//! definition, deployed to a Managed Instances capacity provider through ECS's native managed
//! daemons, updated by a new revision (ECS drains and replaces instances, step by step, told
//! by its daemon events), rolled back with one invoke, and each of the seed's mistakes refused
//! with what to fix.

use ecs_daemons::deploy::{DeployRequest, RollbackRequest, StatusRequest};
use ecs_daemons::model::{CapacityProviderKind, InstanceSizes};
use ecs_daemons::rollout::{Amount, RolloutConfig};
use ecs_daemons_sim::cluster_model::DaemonDefinitionModel;

use super::{Demo, CLUSTER};

pub const MANAGED_PROVIDER: &str = "mi-general";
const DAEMON: &str = "cloudwatch-agent";
const FAMILY: &str = "cloudwatch-agent-daemon";

fn managed_request(daemon: &str, definition: &str, providers: &[&str]) -> DeployRequest {
    DeployRequest {
        task_definition: None,
        daemon_task_definition: Some(definition.into()),
        rollout: Some(RolloutConfig {
            max_parallel: Amount::Percent(50),
            min_healthy_seconds: 60,
            ..RolloutConfig::default()
        }),
        ..DeployRequest::new(CLUSTER, daemon, "", providers, 0)
    }
}

/// The provider's instances: 2 to 8 vCPU, 4 to 32 GiB (its instance requirements).
pub fn managed_provider_kind() -> CapacityProviderKind {
    CapacityProviderKind::ManagedInstances {
        sizes: InstanceSizes {
            smallest_cpu: Some(2048),
            largest_cpu: Some(8192),
            smallest_memory_mib: Some(4096),
            largest_memory_mib: Some(32768),
        },
    }
}

pub async fn managed_instances(demo: &mut Demo) {
    demo.headline(&format!(
        "ECS Managed Instances: capacity provider {MANAGED_PROVIDER} (2 to 8 vCPU), 4 instances ECS launched for applications"
    ));
    demo.harness
        .model
        .launch_managed_instances(CLUSTER, MANAGED_PROVIDER, 4);
    let model = &demo.harness.model;
    let agent = || DaemonDefinitionModel::new(FAMILY, 1024, 512);
    let v1 = model.register_daemon_task_definition(agent());
    let v2 = model.register_daemon_task_definition(agent());
    let no_role = model.register_daemon_task_definition(DaemonDefinitionModel {
        execution_role_arn: None,
        ..DaemonDefinitionModel::new("agent-without-role", 1024, 512)
    });
    let huge = model.register_daemon_task_definition(DaemonDefinitionModel::new(
        "profiler-daemon",
        16384,
        2048,
    ));
    demo.note(&format!(
        "daemon task definitions registered: {v1} and {v2} (public.ecr.aws/cloudwatch-agent/cloudwatch-agent, 1 vCPU, 0.5 GB, execution role)"
    ));

    refuse_mistakes(demo, &no_role, &huge, &v1).await;
    deploy_and_update(demo, &v1, &v2).await;
    roll_back(demo, &v1).await;
}

/// Each of the seed's mistakes, refused before anything is created.
async fn refuse_mistakes(demo: &mut Demo, no_role: &str, huge: &str, v1: &str) {
    demo.headline(
        "the seed's mistakes on Managed Instances, each refused before anything is created",
    );
    demo.deploy(managed_request(
        "agent-without-role",
        no_role,
        &[MANAGED_PROVIDER],
    ))
    .await;
    demo.note(
        "(native CreateDaemon would silently ignore a provider that is not Managed Instances:)",
    );
    demo.deploy(managed_request(DAEMON, v1, &["asg-general"]))
        .await;
    demo.deploy(managed_request(
        "too-big-profiler",
        huge,
        &[MANAGED_PROVIDER],
    ))
    .await;
    demo.note(
        "(\"daemons auto-update\": a bare family would follow the latest revision; it is refused:)",
    );
    demo.deploy(managed_request(DAEMON, FAMILY, &[MANAGED_PROVIDER]))
        .await;
}

/// CreateDaemon, then the dry run and the update to revision 2, each followed to its end.
async fn deploy_and_update(demo: &mut Demo, v1: &str, v2: &str) {
    demo.headline(&format!(
        "deploy {DAEMON} ({v1}) to {MANAGED_PROVIDER}: CreateDaemon; ECS drains and replaces the instances, 50 % at a time"
    ));
    demo.deploy(managed_request(DAEMON, v1, &[MANAGED_PROVIDER]))
        .await;
    demo.run(15 * 60).await;
    show_managed(demo).await;

    demo.headline(&format!(
        "dry run of the update to {v2}: the exact request, the steps, the time"
    ));
    let preview = demo
        .harness
        .deploy_dry_run(DeployRequest {
            dry_run: true,
            ..managed_request(DAEMON, v2, &[MANAGED_PROVIDER])
        })
        .await;
    match preview.map(|p| p.managed) {
        Ok(Some(plan)) => {
            demo.note(&format!(
                "{} with drainPercent {:?}, bakeTimeInMinutes {:?}: {} instance(s) per step, {} step(s), expected {}",
                plan.call.unwrap_or("no call"),
                plan.request.deployment.drain_percent,
                plan.request.deployment.bake_time_in_minutes,
                plan.instances_per_step,
                plan.steps,
                plan.expected_wall_seconds
                    .map_or("unknown (no finished rollout yet)".to_string(), |s| format!("about {s} s from the last rollout"))
            ));
            for assumption in &plan.assumptions {
                demo.note(&format!("note: {assumption}"));
            }
        }
        Ok(None) => demo.note("the dry run shows no Managed Instances part"),
        Err(error) => demo.note(&format!("dry run refused: {error}")),
    }

    demo.headline(&format!(
        "update {DAEMON} to {v2}: UpdateDaemon; ECS's steps, followed from its daemon events"
    ));
    demo.deploy(managed_request(DAEMON, v2, &[MANAGED_PROVIDER]))
        .await;
    demo.run(15 * 60).await;
    show_managed(demo).await;
}

/// The rollback: one invoke, UpdateDaemon to the last good revision.
async fn roll_back(demo: &mut Demo, v1: &str) {
    demo.headline(&format!(
        "roll {DAEMON} back with one invoke (ECS has no rollback call: UpdateDaemon to {v1})"
    ));
    let rollback = demo
        .harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: DAEMON.into(),
            to_revision: None,
            dry_run: false,
        })
        .await;
    match rollback.map(|answer| answer.managed) {
        Ok(Some(managed)) => demo.note(&format!(
            "rollback {DAEMON}: to {} (rollout {}, deployment {})",
            managed.daemon_task_definition,
            managed.rollout.map(|r| r.id).unwrap_or_default(),
            managed.deployment_arn.unwrap_or_default()
        )),
        Ok(None) => demo.note("rollback: no Managed Instances part"),
        Err(error) => demo.note(&format!("rollback refused: {error}")),
    }
    demo.run(15 * 60).await;
    show_managed(demo).await;
}

/// The daemon's Managed Instances part as `status` shows it, beside the model's truth.
async fn show_managed(demo: &mut Demo) {
    let answer = demo
        .harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(DAEMON.into()),
        })
        .await;
    let Some(daemon) = answer.ok().and_then(|a| a.daemons.into_iter().next()) else {
        demo.note("status: the daemon is not declared");
        return;
    };
    let Some(managed) = daemon.managed else {
        demo.note("status: no Managed Instances part");
        return;
    };
    let counts: Vec<String> = managed
        .providers
        .iter()
        .map(|p| {
            format!(
                "{}: {} RUNNING, {} without it",
                p.capacity_provider, p.running, p.without_daemon
            )
        })
        .collect();
    let deployment = managed
        .deployment
        .as_ref()
        .map_or("none".to_string(), |d| d.status.as_str().to_string());
    demo.note(&format!(
        "status: {} on {}; ECS's deployment {deployment}; drift: {}",
        managed.daemon_task_definition,
        counts.join(", "),
        managed.drift.as_deref().unwrap_or("none")
    ));
    if let Some(rollout) = daemon.rollout {
        demo.note(&format!(
            "status: latest rollout {} ({:?} {} → {}) {:?}{}",
            rollout.id,
            rollout.kind,
            rollout.from_task_definition.as_deref().unwrap_or("-"),
            rollout.to_task_definition,
            rollout.state,
            rollout.reason.map_or(String::new(), |r| format!(": {r}"))
        ));
    }
    let truth = demo.harness.model.managed_daemon_copies(CLUSTER);
    demo.note(&format!(
        "the model: {} of {} Managed Instances instances run the daemon",
        truth.get(DAEMON).copied().unwrap_or(0),
        demo.harness.model.managed_instance_count(CLUSTER)
    ));
}
