//! Launch options on the cluster model (deploy's `launch`): user tags, propagateTags, ECS
//! managed tags, ECS Exec and environment per capacity provider reach each standalone copy
//! as ECS puts them on a task; on DAEMON services and ECS's managed daemon they are the
//! service's or the daemon's and reach the copies from there; a change of options alone is
//! recorded and taken by the copies started after it; and every mistake is refused with the
//! fix, changing nothing.

use std::collections::BTreeMap;

use chrono::Duration;
use ecs_daemons::deploy::{DeployError, DeployRequest};
use ecs_daemons::ecs::EcsServices;
use ecs_daemons::launch::{LaunchOptions, PropagateTags};
use ecs_daemons::model::TaskStatus;
use ecs_daemons::model::{CapacityProviderKind, InstanceStatus};
use ecs_daemons_sim::cluster_model::{
    DaemonDefinitionModel, ManagedScaling, ModelConfig, TaskDefinitionModel, TaskView,
};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const AGENT: &str = "agent";

fn launch(json: serde_json::Value) -> LaunchOptions {
    serde_json::from_value(json).unwrap()
}

fn request(revision: &str, providers: &[&str], options: LaunchOptions) -> DeployRequest {
    DeployRequest {
        launch: options,
        ..DeployRequest::new(CLUSTER, AGENT, revision, providers, 0)
    }
}

/// Three instances in `general`, two in `batch`; the agent's task definition has a task role
/// and a tag of its own.
fn cluster() -> (Harness, String) {
    let harness = Harness::new(
        CLUSTER,
        &["general", "batch", "scaled"],
        ModelConfig::default(),
    );
    for _ in 0..3 {
        harness.model.add_instance(CLUSTER, "general", 4096, 8192);
    }
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, "batch", 4096, 8192);
    }
    let revision = harness.model.register_task_definition(TaskDefinitionModel {
        task_role_arn: Some("arn:aws:iam::111122223333:role/agent-task".into()),
        tags: BTreeMap::from([("cost-center".to_string(), "observability".to_string())]),
        ..TaskDefinitionModel::new(AGENT, 256, 256)
    });
    (harness, revision)
}

fn live_copies(harness: &Harness) -> Vec<(String, TaskView)> {
    let provider_of: BTreeMap<String, String> = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .map(|i| (i.id().to_string(), i.capacity_provider.unwrap_or_default()))
        .collect();
    harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| t.group == format!("daemon:{AGENT}"))
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .map(|t| (provider_of[&t.instance_id].clone(), t))
        .collect()
}

#[tokio::test]
async fn every_copy_gets_its_tags_exec_and_its_providers_environment() {
    let (mut harness, revision) = cluster();
    let options = launch(serde_json::json!({
        "tags": {"team": "platform"},
        "propagateTags": "TASK_DEFINITION",
        "enableECSManagedTags": true,
        "enableExecuteCommand": true,
        "environment": {"general": {"main": {"LOG_LEVEL": "debug", "REGION_HINT": "eu"}}}
    }));
    let answer = harness
        .deploy(request(&revision, &["general", "batch"], options.clone()))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "created");
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let copies = live_copies(&harness);
    assert_eq!(copies.len(), 5, "{copies:?}");
    for (provider, copy) in &copies {
        assert_eq!(copy.tags.get("team").map(String::as_str), Some("platform"));
        assert_eq!(
            copy.tags.get("cost-center").map(String::as_str),
            Some("observability"),
            "propagated from the task definition"
        );
        assert_eq!(
            copy.tags.get("aws:ecs:clusterName").map(String::as_str),
            Some(CLUSTER)
        );
        assert_eq!(
            copy.tags.get("ecs-daemons:daemon").map(String::as_str),
            Some(AGENT),
            "ecs-daemons' own tag stays"
        );
        assert!(copy.execute_command);
        match provider.as_str() {
            "general" => assert_eq!(
                copy.environment["main"],
                BTreeMap::from([
                    ("LOG_LEVEL".to_string(), "debug".to_string()),
                    ("REGION_HINT".to_string(), "eu".to_string()),
                ])
            ),
            _ => assert!(copy.environment.is_empty(), "no environment on {provider}"),
        }
    }
    let status = harness.daemon_status(AGENT).await;
    assert_eq!(
        status.launch, options,
        "status shows the options as deployed"
    );
}

#[tokio::test]
async fn a_change_of_options_alone_is_recorded_and_taken_by_copies_started_after_it() {
    let (mut harness, revision) = cluster();
    harness
        .deploy(request(&revision, &["general"], LaunchOptions::default()))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let before = live_copies(&harness);
    assert!(before
        .iter()
        .all(|(_, c)| !c.execute_command && !c.tags.contains_key("team")));

    let options = LaunchOptions {
        tags: BTreeMap::from([("team".to_string(), "platform".to_string())]),
        propagate_tags: Some(PropagateTags::None),
        enable_execute_command: true,
        ..LaunchOptions::default()
    };
    let answer = harness
        .deploy(request(&revision, &["general"], options.clone()))
        .await
        .unwrap();
    assert_eq!(
        answer.recorded, "updated",
        "no rollout: the revision is the same"
    );
    let again = harness
        .deploy(request(&revision, &["general"], options))
        .await
        .unwrap();
    assert_eq!(again.recorded, "unchanged");
    // Running copies keep what they were started with (as ECS's own tasks do); a copy that
    // dies is replaced with the new options.
    let (_, victim) = before[0].clone();
    harness.model.crash_task(CLUSTER, &victim.id);
    harness.run_scheduled(Duration::minutes(3), 60).await;
    let after = live_copies(&harness);
    assert_eq!(after.len(), 3);
    let replaced: Vec<&TaskView> = after
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.instance_id == victim.instance_id)
        .collect();
    assert_eq!(replaced.len(), 1);
    assert!(replaced[0].execute_command);
    assert_eq!(
        replaced[0].tags.get("team").map(String::as_str),
        Some("platform")
    );
    let untouched = after
        .iter()
        .filter(|(_, c)| c.instance_id != victim.instance_id)
        .all(|(_, c)| !c.execute_command);
    assert!(untouched, "running copies are not restarted for options");
}

#[tokio::test]
async fn mistakes_in_launch_options_are_refused_with_the_fix_and_change_nothing() {
    let (mut harness, revision) = cluster();
    let no_role = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(AGENT, 256, 256));
    harness
        .model
        .enable_managed_scaling(CLUSTER, "scaled", ManagedScaling::new(1, 4, 4096, 8192));
    let cases: Vec<(DeployRequest, &str)> = vec![
        (
            request(
                &no_role,
                &["general"],
                launch(serde_json::json!({"enableExecuteCommand": true})),
            ),
            "has no task role",
        ),
        (
            request(
                &revision,
                &["general"],
                launch(serde_json::json!({"environment": {"general": {"sidecar": {"A": "b"}}}})),
            ),
            "has no container sidecar (it has main)",
        ),
        (
            request(
                &revision,
                &["general"],
                launch(serde_json::json!({"environment": {"batch": {"main": {"A": "b"}}}})),
            ),
            "does not target capacity provider batch",
        ),
        (
            request(
                &revision,
                &["general"],
                launch(serde_json::json!({"tags": {"aws:team": "x"}})),
            ),
            "reserved",
        ),
        (
            request(
                &revision,
                &["general", "scaled"],
                launch(
                    serde_json::json!({"tags": {"team": "x"}, "propagateTags": "TASK_DEFINITION"}),
                ),
            ),
            "capacity provider scaled runs the daemon as DAEMON services",
        ),
        (
            request(
                &revision,
                &["general", "scaled"],
                launch(serde_json::json!({"environment": {"scaled": {"main": {"A": "b"}}}})),
            ),
            "scaled does not run standalone copies",
        ),
        (
            request(
                &revision,
                &["general"],
                launch(serde_json::json!({"tags": {"ecs-daemons:rollout": "x"}})),
            ),
            "own tag",
        ),
        (
            request(
                &revision,
                &["general"],
                launch(serde_json::json!({"environment": {"general": {"main": {"9LIVES": "x"}}}})),
            ),
            "not an environment variable name",
        ),
    ];
    for (given, fix) in cases {
        let error = harness.deploy(given).await.unwrap_err();
        assert!(
            matches!(error, DeployError::InvalidRequest(_)) && error.to_string().contains(fix),
            "{fix}: {error}"
        );
    }
    let too_many: BTreeMap<String, String> = (0..49)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let error = harness
        .deploy(request(
            &revision,
            &["general"],
            LaunchOptions {
                tags: too_many,
                ..LaunchOptions::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at most 48"), "{error}");
    // A payload with SERVICE propagation (an error on StartTask) names the field.
    let payload = serde_json::json!({
        "cluster": CLUSTER, "daemon": AGENT, "taskDefinition": revision,
        "capacityProviders": ["general"], "launch": {"propagateTags": "SERVICE"}
    });
    let error = ecs_daemons::deploy::parse_payload::<DeployRequest>(payload).unwrap_err();
    assert!(
        error.to_string().contains("launch.propagateTags"),
        "{error}"
    );
    assert!(harness.model.tasks(CLUSTER).is_empty(), "nothing started");
    let status = harness
        .status(ecs_daemons::deploy::StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        })
        .await
        .unwrap();
    assert!(status.daemons.is_empty(), "nothing recorded");
}

/// The live copies of the agent's DAEMON services, with the letter of their service.
fn service_copies(harness: &Harness) -> Vec<TaskView> {
    harness
        .model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| {
            t.group
                .starts_with(&format!("service:ecs-daemons-{AGENT}-"))
        })
        .filter(|t| !t.last_status.is_terminal() && t.desired_status == TaskStatus::Running)
        .collect()
}

async fn service_tags(harness: &Harness) -> Vec<Vec<(String, String)>> {
    let names = ["a", "b"]
        .map(|l| format!("ecs-daemons-{AGENT}-{l}"))
        .to_vec();
    harness
        .model
        .describe_services(CLUSTER, &names)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.tags)
        .collect()
}

/// On DAEMON services the options are the services': tags on the services reach every copy
/// by SERVICE propagation, a change of tags retags both services at once (copies started
/// after it get them, no deployment), and propagateTags and ECS Exec go to the idle service
/// with the next revision, so they reach the copies with the rollout.
#[tokio::test]
async fn on_daemon_services_the_options_are_the_services() {
    let (mut harness, revision) = cluster();
    harness
        .model
        .enable_managed_scaling(CLUSTER, "scaled", ManagedScaling::new(1, 10, 4096, 8192));
    for _ in 0..2 {
        harness.model.add_instance(CLUSTER, "scaled", 4096, 8192);
    }
    let tagged = launch(serde_json::json!({
        "tags": {"team": "platform"}, "enableExecuteCommand": true
    }));
    let answer = harness
        .deploy(request(&revision, &["scaled"], tagged.clone()))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "created");
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let copies = service_copies(&harness);
    assert_eq!(copies.len(), 2, "{copies:?}");
    for copy in &copies {
        assert_eq!(copy.tags.get("team").map(String::as_str), Some("platform"));
        assert_eq!(
            copy.tags.get("ecs-daemons:daemon").map(String::as_str),
            Some(AGENT)
        );
        assert!(copy.tags.contains_key("aws:ecs:serviceName"));
        assert!(copy.execute_command);
    }

    let first_ids: Vec<String> = copies.iter().map(|c| c.id.clone()).collect();
    // Tags alone: both services retagged, no deployment; a copy started after it has them.
    let retagged = launch(serde_json::json!({
        "tags": {"team": "observability"}, "enableExecuteCommand": true
    }));
    let answer = harness
        .deploy(request(&revision, &["scaled"], retagged))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "updated");
    for tags in service_tags(&harness).await {
        assert!(
            tags.contains(&("team".to_string(), "observability".to_string())),
            "{tags:?}"
        );
    }
    harness.model.add_instance(CLUSTER, "scaled", 4096, 8192);
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let copies = service_copies(&harness);
    assert_eq!(copies.len(), 3, "{copies:?}");
    let teams: Vec<&str> = copies
        .iter()
        .filter_map(|c| c.tags.get("team").map(String::as_str))
        .collect();
    assert_eq!(
        teams.iter().filter(|t| **t == "observability").count(),
        1,
        "only the new copy: {teams:?}"
    );
    assert!(
        first_ids
            .iter()
            .all(|id| copies.iter().any(|c| &c.id == id)),
        "no running copy restarted"
    );

    // A new revision with the task definition's tags and without ECS Exec: the idle service
    // takes them with the revision, and the rollout moves every copy onto it.
    let next = harness.model.register_task_definition(TaskDefinitionModel {
        tags: BTreeMap::from([("cost-center".to_string(), "observability".to_string())]),
        ..TaskDefinitionModel::new(AGENT, 256, 256)
    });
    let answer = harness
        .deploy(request(
            &next,
            &["scaled"],
            launch(serde_json::json!({"propagateTags": "TASK_DEFINITION"})),
        ))
        .await
        .unwrap();
    assert_eq!(answer.recorded, "rollout");
    harness.run_scheduled(Duration::minutes(15), 60).await;
    let copies = service_copies(&harness);
    let active = harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.capacity_provider.as_deref() == Some("scaled"))
        .filter(|i| i.status == InstanceStatus::Active)
        .count();
    assert_eq!(copies.len(), active, "{copies:?}");
    for copy in &copies {
        assert!(copy.definition.ends_with(&next) || next.ends_with(&copy.definition));
        assert_eq!(
            copy.tags.get("cost-center").map(String::as_str),
            Some("observability")
        );
        assert!(!copy.tags.contains_key("team"));
        assert!(!copy.execute_command);
    }
    for tags in service_tags(&harness).await {
        assert!(!tags.iter().any(|(k, _)| k == "team"), "untagged: {tags:?}");
    }
}

fn managed_cluster() -> (Harness, String, String) {
    let harness = Harness::new(CLUSTER, &["mi-general"], ModelConfig::default());
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness
        .model
        .launch_managed_instances(CLUSTER, "mi-general", 4);
    let with_role = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            task_role_arn: Some("arn:aws:iam::111122223333:role/agent-task".into()),
            ..DaemonDefinitionModel::new("agent-daemon", 256, 256)
        });
    let without_role = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
    (harness, with_role, without_role)
}

/// Each of the `count` managed daemon copies has the team tag and ECS's cluster tag, and ECS
/// Exec as `exec` says.
fn assert_managed_copies(harness: &Harness, count: usize, exec: bool) {
    let copies = harness.model.managed_copy_launches(CLUSTER);
    assert_eq!(copies.len(), count, "{copies:?}");
    for (instance, _, tags, execute_command) in &copies {
        assert_eq!(
            tags.get("team").map(String::as_str),
            Some("platform"),
            "{instance}"
        );
        assert_eq!(
            tags.get("aws:ecs:clusterName").map(String::as_str),
            Some(CLUSTER)
        );
        assert_eq!(*execute_command, exec, "{instance}");
    }
}

fn managed_request(revision: &str, options: LaunchOptions) -> DeployRequest {
    DeployRequest {
        task_definition: None,
        daemon_task_definition: Some(revision.into()),
        launch: options,
        ..DeployRequest::new(CLUSTER, AGENT, "unused:1", &["mi-general"], 0)
    }
}

/// On Managed Instances the options are ECS's managed daemon's own (CreateDaemon's tags,
/// `propagateTags` DAEMON, `enableECSManagedTags`, `enableExecuteCommand`): every copy gets
/// them; the tags stay as created (UpdateDaemon takes none), the rest changes by
/// UpdateDaemon, and a rollback keeps them.
#[tokio::test]
async fn on_managed_instances_the_options_are_ecs_managed_daemons() {
    let (mut harness, with_role, without_role) = managed_cluster();
    let options = launch(serde_json::json!({
        "tags": {"team": "platform"}, "enableECSManagedTags": true, "enableExecuteCommand": true
    }));
    let answer = harness
        .deploy(managed_request(&with_role, options.clone()))
        .await
        .unwrap();
    assert_eq!(answer.managed.as_ref().unwrap().recorded, "created");
    // ECS's deployment drains and replaces the instances to give them the daemon.
    harness.run_scheduled(Duration::minutes(60), 60).await;
    assert_managed_copies(&harness, 4, true);
    let status = harness.daemon_status(AGENT).await;
    assert_eq!(
        status.launch, options,
        "status shows the options as deployed"
    );

    // Mistakes, each refused with the fix and changing nothing.
    let cases = [
        (
            managed_request(
                &with_role,
                launch(
                    serde_json::json!({"tags": {"team": "obs"}, "enableECSManagedTags": true, "enableExecuteCommand": true}),
                ),
            ),
            "keeps the tags it was created with",
        ),
        (
            managed_request(
                &with_role,
                launch(serde_json::json!({"propagateTags": "TASK_DEFINITION"})),
            ),
            "only its own tags (DAEMON)",
        ),
        (
            managed_request(
                &without_role,
                launch(
                    serde_json::json!({"tags": {"team": "platform"}, "enableExecuteCommand": true}),
                ),
            ),
            "has no task role",
        ),
        (
            managed_request(
                &with_role,
                launch(serde_json::json!({"environment": {"mi-general": {"main": {"A": "b"}}}})),
            ),
            "takes no per-task overrides",
        ),
    ];
    for (given, fix) in cases {
        let error = harness.deploy(given).await.unwrap_err();
        assert!(
            matches!(error, DeployError::InvalidRequest(_)) && error.to_string().contains(fix),
            "{fix}: {error}"
        );
    }
    assert_eq!(harness.daemon_status(AGENT).await.launch, options);

    // ECS Exec off by UpdateDaemon: ECS deploys it, and the replaced instances' copies have
    // it off while the tags stay.
    let without_exec = launch(serde_json::json!({
        "tags": {"team": "platform"}, "enableECSManagedTags": true
    }));
    let answer = harness
        .deploy(managed_request(&with_role, without_exec.clone()))
        .await
        .unwrap();
    assert_eq!(answer.managed.as_ref().unwrap().recorded, "updated");
    harness.run_scheduled(Duration::minutes(60), 60).await;
    assert_managed_copies(&harness, 4, false);

    // A rollback keeps the options: the tags are still the daemon's.
    let next = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
    harness
        .deploy(managed_request(&next, without_exec.clone()))
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(60), 60).await;
    harness
        .rollback(ecs_daemons::deploy::RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: AGENT.into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    harness.run_scheduled(Duration::minutes(60), 60).await;
    assert_eq!(harness.daemon_status(AGENT).await.launch, without_exec);
    assert_managed_copies(&harness, 4, false);
}
