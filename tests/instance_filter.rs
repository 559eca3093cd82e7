//! `instanceFilter` on the cluster model: a daemon targets only the instances of its
//! providers whose attributes match; readiness counts only the daemons that target an
//! instance; a new filter moves the copies; on DAEMON services the slot attribute is only
//! set where the filter matches.

use chrono::Duration;
use ecs_daemons::deploy::{DeployError, DeployRequest, StatusRequest};
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons_sim::cluster_model::{ManagedScaling, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";

fn filtered(daemon: &str, task_definition: &str, provider: &str, filter: &str) -> DeployRequest {
    DeployRequest {
        instance_filter: Some(filter.into()),
        ..DeployRequest::new(CLUSTER, daemon, task_definition, &[provider], 0)
    }
}

/// Instance ids with a live copy of `daemon` (standalone or from its services).
fn covered(harness: &Harness, daemon: &str) -> Vec<String> {
    let standalone = format!("daemon:{daemon}");
    let services = format!("service:ecs-daemons-{daemon}-");
    let mut ids: Vec<String> = harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| t.group == standalone || t.group.starts_with(&services))
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .map(|t| t.instance_id)
        .collect();
    ids.sort();
    ids
}

fn ready(harness: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .filter(|i| i.attributes.get(READY_ATTRIBUTE) == Some(&Some("true".into())))
        .map(|i| i.id().to_string())
        .collect();
    ids.sort();
    ids
}

fn id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

#[tokio::test]
async fn a_filtered_daemon_runs_only_where_its_filter_matches_and_moves_with_it() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let instances: Vec<String> = (0..4)
        .map(|_| harness.model.add_instance(CLUSTER, "general", 4096, 8192))
        .collect();
    for arn in &instances[..2] {
        harness
            .model
            .set_instance_attribute(CLUSTER, arn, "role", Some("ingest"));
    }
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let logs = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("logs", 128, 128));
    harness
        .deploy(DeployRequest::new(CLUSTER, "logs", &logs, &["general"], 0))
        .await
        .unwrap();

    let filter = "attribute:role in [ingest, batch]";
    let preview = harness
        .deploy_dry_run(DeployRequest {
            dry_run: true,
            ..filtered("agent", &agent, "general", filter)
        })
        .await
        .unwrap();
    assert_eq!(preview.targeted.get("general"), Some(&2), "{preview:?}");
    harness
        .deploy(filtered("agent", &agent, "general", filter))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    let matching: Vec<String> = instances[..2].iter().map(|a| id(a)).collect();
    let mut all: Vec<String> = instances.iter().map(|a| id(a)).collect();
    all.sort();
    assert_eq!(covered(&harness, "agent"), sorted(matching.clone()));
    assert_eq!(covered(&harness, "logs"), all);
    assert_eq!(
        ready(&harness),
        all,
        "readiness counts only the daemons targeting an instance"
    );
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some("agent".into()),
        })
        .await
        .unwrap();
    let shown = &status.daemons[0];
    assert_eq!(shown.instance_filter.as_deref(), Some(filter));
    assert_eq!((shown.coverage.targeted, shown.coverage.covered), (2, 2));

    // Another filter: by ECS's own attribute. The zone of the first instance only.
    let zone = harness.model.instances(CLUSTER)[0]
        .attributes
        .get("ecs.availability-zone")
        .cloned()
        .flatten()
        .unwrap();
    let first = harness.model.instances(CLUSTER)[0].id().to_string();
    let by_zone = format!(
        "attribute:ecs.availability-zone == {zone} and attribute:ecs.instance-type =~ m5\\..*"
    );
    let answer = harness
        .deploy(filtered("agent", &agent, "general", &by_zone))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "updated");
    let reconcile = answer.reconcile.expect("an update reconciles at once");
    assert!(reconcile.stopped.iter().all(|s| s
        .reason
        .contains("does not match daemon agent's instanceFilter")));
    harness.run_scheduled(Duration::minutes(3), 60).await;
    let in_zone: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.attributes.get("ecs.availability-zone") == Some(&Some(zone.clone())))
        .map(|i| i.id().to_string())
        .collect();
    assert!(in_zone.contains(&first));
    assert_eq!(covered(&harness, "agent"), sorted(in_zone));
    assert_eq!(ready(&harness), all);
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn on_daemon_services_only_matching_instances_get_the_slot_attribute() {
    let mut harness = Harness::new(CLUSTER, &["scaled"], ModelConfig::default());
    harness
        .model
        .enable_managed_scaling(CLUSTER, "scaled", ManagedScaling::new(1, 10, 4096, 8192));
    let instances: Vec<String> = (0..3)
        .map(|_| harness.model.add_instance(CLUSTER, "scaled", 4096, 8192))
        .collect();
    harness
        .model
        .set_instance_attribute(CLUSTER, &instances[1], "gpu", None);
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    harness
        .deploy(filtered("agent", &agent, "scaled", "attribute:gpu exists"))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(3), 60).await;
    assert_eq!(covered(&harness, "agent"), vec![id(&instances[1])]);
    let slot = ecs_daemons::placement::services::slot_attribute("agent");
    let steered: Vec<String> = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.attributes.contains_key(&slot))
        .map(|i| i.id().to_string())
        .collect();
    assert_eq!(steered, vec![id(&instances[1])]);
    assert_eq!(ready(&harness).len(), 3);
}

#[tokio::test]
async fn a_malformed_filter_is_refused_with_its_position_and_changes_nothing() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("agent", 256, 256));
    let refused = harness
        .deploy(filtered(
            "agent",
            &agent,
            "general",
            "attribute:role == ingest and",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, DeployError::InvalidRequest(_)),
        "{refused}"
    );
    assert!(refused.to_string().contains("at character"), "{refused}");
    let moving = harness
        .deploy(filtered(
            "agent",
            &agent,
            "general",
            "runningTasksCount == 0",
        ))
        .await
        .unwrap_err();
    assert!(moving.to_string().contains("runningTasksCount"), "{moving}");
    harness.run_scheduled(Duration::minutes(2), 60).await;
    assert!(covered(&harness, "agent").is_empty());
}
