//! Shared setup of the rollout scenario tests that run on both EC2 placements (standalone
//! copies and DAEMON services): six instances of one provider settled on the agent's first
//! revision, and what runs where.
#![allow(dead_code)] // each test binary uses its own part of this module

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::rollout::RolloutConfig;
use ecs_daemons_sim::cluster_model::{ManagedScaling, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

pub const CLUSTER: &str = "prod";
pub const AGENT: &str = "agent";

#[derive(Clone, Copy, Debug)]
pub enum Placement {
    Tasks,
    Services,
}

impl Placement {
    pub fn provider(self) -> &'static str {
        match self {
            Self::Tasks => "general",
            Self::Services => "scaled",
        }
    }
}

pub fn deploy_request(
    placement: Placement,
    revision: &str,
    config: RolloutConfig,
) -> DeployRequest {
    DeployRequest {
        rollout: Some(config),
        ..DeployRequest::new(CLUSTER, AGENT, revision, &[placement.provider()], 0)
    }
}

/// Six instances of the placement's provider (with managed scaling, at least six, for
/// services) with `revisions` revisions of the agent registered, the first deployed with
/// `config` and settled; `prepare` runs before the deploy (alarms to create, say).
pub async fn settled(
    placement: Placement,
    revisions: usize,
    config: RolloutConfig,
    prepare: impl FnOnce(&Harness),
) -> (Harness, Vec<String>) {
    let mut harness = Harness::new(CLUSTER, &[placement.provider()], ModelConfig::default());
    if let Placement::Services = placement {
        harness.model.enable_managed_scaling(
            CLUSTER,
            placement.provider(),
            // At least six: no scale-in takes instances away mid-test.
            ManagedScaling::new(6, 10, 4096, 8192),
        );
    }
    for _ in 0..6 {
        harness
            .model
            .add_instance(CLUSTER, placement.provider(), 4096, 8192);
    }
    prepare(&harness);
    let revisions: Vec<String> = (0..revisions)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256))
        })
        .collect();
    harness
        .deploy(deploy_request(placement, &revisions[0], config))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(on_revision(&harness, &revisions[0]), 6, "settled first");
    (harness, revisions)
}

/// Live copies of the agent (standalone or from its DAEMON services) on ACTIVE instances,
/// by revision.
pub fn live_revisions(harness: &Harness) -> Vec<String> {
    let standalone = format!("daemon:{AGENT}");
    let services = format!("service:ecs-daemons-{AGENT}-");
    let active: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| i.id().to_string())
        .collect();
    harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.group == standalone || t.group.starts_with(&services))
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .filter(|t| active.contains(&t.instance_id))
        .map(|t| t.definition.clone())
        .collect()
}

pub fn on_revision(harness: &Harness, revision: &str) -> usize {
    live_revisions(harness)
        .iter()
        .filter(|r| *r == revision)
        .count()
}
