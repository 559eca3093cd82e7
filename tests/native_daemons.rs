//! The cluster model's ECS managed daemons, driven through the same `EcsDaemons` calls the
//! SDK adapter makes: each documented behaviour ecs-daemons will rely on, shown once.

use chrono::Duration;
use ecs_daemons::ecs::{
    DaemonDeclaration, DaemonDeploymentSettings, DaemonDeploymentStatus, EcsDaemons, EcsErrorKind,
};
use ecs_daemons::model::CapacityProviderKind;
use ecs_daemons::store::Store;
use ecs_daemons_sim::cluster_model::{
    cluster_arn, ClusterModel, DaemonDefinitionModel, DeploymentOnDelete, ModelConfig, NativeKnobs,
    NonCriticalFailure, ScaleOutRevision,
};

const CLUSTER: &str = "prod";

fn model_with_instances(count: usize) -> ClusterModel {
    let model = ClusterModel::new(ModelConfig::default());
    model.create_cluster(CLUSTER, &["mi-general", "asg-general"]);
    model.set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    model.launch_managed_instances(CLUSTER, "mi-general", count);
    model
}

/// The seed's CloudWatch Agent as a daemon task definition: 1 vCPU, 512 MiB.
fn agent_definition() -> DaemonDefinitionModel {
    DaemonDefinitionModel::new("cloudwatch-agent-daemon", 1024, 512)
}

fn declaration(definition: &str, providers: &[&str]) -> DaemonDeclaration {
    DaemonDeclaration {
        daemon_name: "cloudwatch-agent".into(),
        cluster_arn: cluster_arn(CLUSTER),
        daemon_task_definition_arn: definition.into(),
        capacity_provider_arns: providers.iter().map(|p| p.to_string()).collect(),
        deployment: DaemonDeploymentSettings {
            drain_percent: Some(25.0),
            bake_time_in_minutes: Some(1),
            alarm_names: Vec::new(),
        },
        critical: true,
        tags: Vec::new(),
        launch: Default::default(),
    }
}

async fn status_after(
    model: &ClusterModel,
    deployment: &str,
    wait: Duration,
) -> DaemonDeploymentStatus {
    model.advance(wait);
    model
        .describe_daemon_deployments(&[deployment.to_string()])
        .await
        .unwrap()[0]
        .status
        .clone()
}

#[tokio::test]
async fn a_daemon_is_created_updated_rolled_back_by_its_breaker_and_deleted() {
    let model = model_with_instances(8);
    let good = model.register_daemon_task_definition(agent_definition());
    let bad = model.register_daemon_task_definition(DaemonDefinitionModel {
        fails_to_start: true,
        ..agent_definition()
    });
    assert_eq!(
        (good.as_str(), bad.as_str()),
        ("cloudwatch-agent-daemon:1", "cloudwatch-agent-daemon:2")
    );
    let described = model.describe_daemon_task_definition(&good).await.unwrap();
    assert_eq!(
        (described.revision, described.cpu, described.memory_mib),
        (1, Some(1024), Some(512))
    );

    // Created on existing instances: drained and replaced 25 % at a time until all run it.
    let created = model
        .create_daemon(&declaration(&good, &["mi-general"]), "token-1")
        .await
        .unwrap();
    let again = model
        .create_daemon(&declaration(&good, &["mi-general"]), "token-1")
        .await
        .unwrap();
    assert_eq!(
        again.daemon_arn, created.daemon_arn,
        "the client token makes a retry answer the same daemon"
    );
    let first = created.deployment_arn.clone().unwrap();
    assert_eq!(
        status_after(&model, &first, Duration::seconds(1)).await,
        DaemonDeploymentStatus::InProgress
    );
    assert_eq!(
        status_after(&model, &first, Duration::minutes(30)).await,
        DaemonDeploymentStatus::Successful
    );
    assert_eq!(model.managed_daemon_copies(CLUSTER)["cloudwatch-agent"], 8);
    assert_eq!(
        model.managed_instance_count(CLUSTER),
        8,
        "every drained instance was replaced"
    );
    let state = model.describe_daemon(&created.daemon_arn).await.unwrap();
    assert_eq!(state.current_revisions.len(), 1);
    assert_eq!(state.current_revisions[0].providers[0].running, 8);

    // A revision that never starts: the breaker (4 of 8) trips and ECS rolls back.
    let updated = model
        .update_daemon(&created.daemon_arn, &declaration(&bad, &["mi-general"]))
        .await
        .unwrap();
    let second = updated.deployment_arn.unwrap();
    assert_eq!(
        status_after(&model, &second, Duration::minutes(60)).await,
        DaemonDeploymentStatus::RollbackSuccessful
    );
    let deployment = &model
        .describe_daemon_deployments(std::slice::from_ref(&second))
        .await
        .unwrap()[0];
    let breaker = deployment.circuit_breaker.clone().unwrap();
    assert_eq!(
        (breaker.status.as_str(), breaker.threshold),
        ("TRIGGERED", 4)
    );
    let rolled_back_to = deployment
        .rollback
        .clone()
        .unwrap()
        .target_revision_arn
        .unwrap();
    let revisions = model
        .describe_daemon_revisions(&[rolled_back_to])
        .await
        .unwrap();
    assert!(revisions[0].daemon_task_definition_arn.ends_with(&good));
    assert_eq!(model.managed_daemon_copies(CLUSTER)["cloudwatch-agent"], 8);

    // Deleted: DELETE_IN_PROGRESS, then gone.
    let deleted = model.delete_daemon(&created.daemon_arn).await.unwrap();
    assert_eq!(deleted.status, "DELETE_IN_PROGRESS");
    let refused = model
        .update_daemon(&created.daemon_arn, &declaration(&good, &["mi-general"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "DaemonNotActiveException");
    model.advance(Duration::minutes(5));
    let gone = model
        .describe_daemon(&created.daemon_arn)
        .await
        .unwrap_err();
    assert_eq!(
        (gone.kind, gone.code.as_str()),
        (EcsErrorKind::NotFound, "DaemonNotFoundException")
    );
    assert!(model.managed_daemon_copies(CLUSTER).is_empty());
}

#[tokio::test]
async fn ecs_refuses_what_it_documents_it_refuses() {
    let model = model_with_instances(2);
    let good = model.register_daemon_task_definition(DaemonDefinitionModel::new("agent", 256, 256));
    let not_managed_instances = model
        .create_daemon(&declaration(&good, &["asg-general"]), "t-1")
        .await
        .unwrap_err();
    assert_eq!(not_managed_instances.code, "ClientException");
    assert!(not_managed_instances
        .message
        .contains("only supported for Amazon ECS Managed Instances"));
    let mut bad_name = declaration(&good, &["mi-general"]);
    bad_name.daemon_name = "agent#1".into();
    assert_eq!(
        model
            .create_daemon(&bad_name, "t-2")
            .await
            .unwrap_err()
            .code,
        "ClientException"
    );
    let unknown = model
        .describe_daemon("arn:aws:ecs:us-east-1:111122223333:daemon/prod/nothing")
        .await
        .unwrap_err();
    assert_eq!(unknown.kind, EcsErrorKind::NotFound);
    let missing_definition = model
        .describe_daemon_task_definition("agent:9")
        .await
        .unwrap_err();
    assert_eq!(missing_definition.kind, EcsErrorKind::NotFound);
}

#[tokio::test]
async fn a_new_instance_starts_the_daemon_and_a_non_critical_failure_leaves_it_without() {
    let model = model_with_instances(0);
    let failing = model.register_daemon_task_definition(DaemonDefinitionModel {
        fails_to_start: true,
        ..DaemonDefinitionModel::new("agent", 256, 256)
    });
    let mut optional = declaration(&failing, &["mi-general"]);
    optional.critical = false;
    let created = model.create_daemon(&optional, "t-1").await.unwrap();
    model.advance(Duration::seconds(1));
    model.launch_managed_instances(CLUSTER, "mi-general", 3);
    let state = model.describe_daemon(&created.daemon_arn).await.unwrap();
    let counts = &state.current_revisions[0].providers[0];
    assert_eq!((counts.running, counts.without_daemon), (0, 3));
}

/// The three readings the guide leaves open, each the other way than the default (the
/// campaign draws both per seed): a deployment left as it was by DeleteDaemon, a non-critical
/// daemon's failed copy started again in place, a scale-out during a deployment given the
/// revision before it.
#[tokio::test]
async fn the_undocumented_readings_the_campaign_varies_behave_as_their_knobs_say() {
    let model = ClusterModel::new(ModelConfig {
        native: NativeKnobs {
            deployment_on_delete: DeploymentOnDelete::LeftAsIs,
            non_critical_failure: NonCriticalFailure::RetryInPlace,
            scale_out_revision: ScaleOutRevision::Before,
            ..NativeKnobs::default()
        },
        ..ModelConfig::default()
    });
    model.create_cluster(CLUSTER, &["mi-general"]);
    model.set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    model.launch_managed_instances(CLUSTER, "mi-general", 4);
    let first = model.register_daemon_task_definition(agent_definition());
    let second = model.register_daemon_task_definition(agent_definition());
    let created = model
        .create_daemon(&declaration(&first, &["mi-general"]), "t-1")
        .await
        .unwrap();
    model.advance(Duration::minutes(30));

    // A scale-out during the update to `second` starts `first` there.
    let update = model
        .update_daemon(&created.daemon_arn, &declaration(&second, &["mi-general"]))
        .await
        .unwrap()
        .deployment_arn
        .unwrap();
    model.advance(Duration::seconds(1));
    let launched = model.launch_managed_instances(CLUSTER, "mi-general", 1);
    let truth = model.managed_truth(CLUSTER);
    let per_revision: Vec<(String, i32)> = truth[0]
        .state
        .current_revisions
        .iter()
        .map(|r| (r.revision_arn.clone(), r.providers[0].running))
        .collect();
    assert_eq!(launched.len(), 1);
    assert_eq!(
        per_revision.iter().map(|(_, running)| running).sum::<i32>(),
        5
    );
    let latest = truth[0].latest.clone().unwrap();
    let old_revision_running = per_revision
        .iter()
        .find(|(arn, _)| Some(arn) != latest.target_revision_arn.as_ref())
        .map(|(_, running)| *running);
    assert!(
        old_revision_running == Some(5),
        "the new instance runs the revision before: {per_revision:?}"
    );
    // … and the deployment replaces it too before it succeeds.
    assert_eq!(
        status_after(&model, &update, Duration::minutes(60)).await,
        DaemonDeploymentStatus::Successful
    );
    assert!(!model.managed_instance_ids(CLUSTER).contains(&launched[0]));

    // DeleteDaemon leaves a deployment in flight as it was.
    let third = model.register_daemon_task_definition(agent_definition());
    let moving = model
        .update_daemon(&created.daemon_arn, &declaration(&third, &["mi-general"]))
        .await
        .unwrap()
        .deployment_arn
        .unwrap();
    model.advance(Duration::seconds(1));
    model.delete_daemon(&created.daemon_arn).await.unwrap();
    assert_eq!(
        status_after(&model, &moving, Duration::seconds(5)).await,
        DaemonDeploymentStatus::InProgress
    );
    model.advance(Duration::minutes(5));
    assert_eq!(
        model
            .describe_daemon(&created.daemon_arn)
            .await
            .unwrap_err()
            .kind,
        EcsErrorKind::NotFound
    );

    // A non-critical copy that fails is started again where it is: once its instance got
    // the daemon, no instance is drained for it, and each start counts toward the breaker.
    let failing = model.register_daemon_task_definition(DaemonDefinitionModel {
        fails_to_start: true,
        ..DaemonDefinitionModel::new("optional-agent", 256, 256)
    });
    let mut optional = declaration(&failing, &["mi-general"]);
    optional.daemon_name = "optional-agent".into();
    optional.critical = false;
    optional.deployment.drain_percent = Some(20.0);
    let created = model.create_daemon(&optional, "t-2").await.unwrap();
    let deployment = created.deployment_arn.unwrap();
    // The first step drains and replaces one instance (none had the daemon) …
    model.advance(Duration::seconds(61));
    model.advance(Duration::seconds(91));
    let replaced = model.managed_instance_ids(CLUSTER);
    // … the next ones start its failed copy again in place until the breaker (3) trips.
    assert_eq!(
        status_after(&model, &deployment, Duration::minutes(30)).await,
        DaemonDeploymentStatus::Stopped
    );
    assert_eq!(model.managed_instance_ids(CLUSTER), replaced);
    let described = model
        .describe_daemon_deployments(std::slice::from_ref(&deployment))
        .await
        .unwrap();
    let breaker = described[0].circuit_breaker.clone().unwrap();
    assert!(breaker.failure_count >= 3, "{breaker:?}");
}

/// The unchanged SDK client against the local ECS server: every managed-daemon call
/// ecs-daemons makes, encoded and decoded in ECS's JSON protocol, answers what the model does.
#[tokio::test]
async fn the_sdk_client_reaches_the_model_through_the_local_ecs_server() {
    use std::sync::Arc;
    let model = Arc::new(model_with_instances(4));
    let good =
        model.register_daemon_task_definition(DaemonDefinitionModel::new("agent", 1024, 512));
    let (address, server) = local_stack::ecs_server::serve(Arc::clone(&model))
        .await
        .unwrap();
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .endpoint_url(format!("http://{address}"))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .build();
    let ecs = ecs_daemons::ecs::SdkEcs::new(aws_sdk_ecs::Client::from_conf(config));

    let definition = ecs.describe_daemon_task_definition(&good).await.unwrap();
    assert_eq!(
        (
            definition.family_revision(),
            definition.cpu,
            definition.memory_mib
        ),
        (good.clone(), Some(1024), Some(512))
    );
    let mut wanted = declaration(&definition.arn, &["mi-general"]);
    wanted.tags = vec![("team".into(), "platform".into())];
    let created = ecs.create_daemon(&wanted, "rollout-1").await.unwrap();
    let deployment = created.deployment_arn.clone().unwrap();
    model.advance(Duration::minutes(20));
    let described = ecs
        .describe_daemon_deployments(std::slice::from_ref(&deployment))
        .await
        .unwrap();
    assert_eq!(described[0].status, DaemonDeploymentStatus::Successful);
    assert_eq!(described[0].target_running, 4);
    let state = ecs.describe_daemon(&created.daemon_arn).await.unwrap();
    assert_eq!(state.current_revisions[0].providers[0].running, 4);
    let revisions = ecs
        .describe_daemon_revisions(&[described[0].target_revision_arn.clone().unwrap()])
        .await
        .unwrap();
    assert_eq!(revisions[0].daemon_task_definition_arn, definition.arn);

    let refused = ecs
        .create_daemon(&declaration(&definition.arn, &["asg-general"]), "rollout-2")
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.code.as_str()),
        (EcsErrorKind::Invalid, "ClientException")
    );
    let deleted = ecs.delete_daemon(&created.daemon_arn).await.unwrap();
    assert_eq!(deleted.status, "DELETE_IN_PROGRESS");
    model.advance(Duration::minutes(5));
    let gone = ecs.describe_daemon(&created.daemon_arn).await.unwrap_err();
    assert_eq!(gone.kind, EcsErrorKind::NotFound);
    server.abort();
}

fn managed_deploy(daemon_task_definition: &str) -> ecs_daemons::deploy::DeployRequest {
    ecs_daemons::deploy::DeployRequest {
        task_definition: None,
        daemon_task_definition: Some(daemon_task_definition.into()),
        ..ecs_daemons::deploy::DeployRequest::new(
            CLUSTER,
            "cloudwatch-agent",
            "unused:1",
            &["mi-general"],
            0,
        )
    }
}

fn harness_with_managed_instances(count: usize) -> ecs_daemons_sim::simulation::Harness {
    let harness = ecs_daemons_sim::simulation::Harness::new(
        CLUSTER,
        &["mi-general", "asg-general"],
        ModelConfig::default(),
    );
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness
        .model
        .launch_managed_instances(CLUSTER, "mi-general", count);
    harness
}

/// The seed's scenario on Managed Instances, through deploy: create, a new revision, ECS's
/// deployments recorded as rollouts; a retried deploy creates nothing twice.
#[tokio::test]
async fn deploy_declares_a_managed_daemon_and_records_its_rollouts() {
    let mut harness = harness_with_managed_instances(4);
    let first = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let created = harness.deploy(managed_deploy(&first)).await.unwrap();
    assert_eq!(created.recorded, "created");
    assert!(
        created.reconcile.is_none(),
        "no EC2 provider: nothing to reconcile"
    );
    let managed = created.managed.clone().unwrap();
    assert_eq!(managed.recorded, "created");
    let daemon_arn = managed.daemon_arn.clone().unwrap();
    assert!(managed.deployment_arn.is_some());
    assert!(
        created
            .warnings
            .iter()
            .any(|w| w.contains("application tasks there move")),
        "{:?}",
        created.warnings
    );

    let again = harness.deploy(managed_deploy(&first)).await.unwrap();
    assert_eq!(again.recorded, "unchanged");
    assert_eq!(again.managed.unwrap().daemon_arn.unwrap(), daemon_arn);

    harness.model.advance(Duration::minutes(20));
    assert_eq!(
        harness.model.managed_daemon_copies(CLUSTER)["cloudwatch-agent"],
        4
    );

    let second = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let updated = harness.deploy(managed_deploy(&second)).await.unwrap();
    let managed = updated.managed.unwrap();
    assert_eq!(managed.recorded, "rollout");
    assert_eq!(
        managed.daemon_arn.unwrap(),
        daemon_arn,
        "the same daemon, updated"
    );
    let rollout = managed.rollout.unwrap();
    assert_eq!(
        rollout.from_task_definition.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(rollout.to_task_definition, second);
    assert!(rollout.deployment_arn.is_some());
    let creates = harness
        .model
        .calls()
        .iter()
        .filter(|c| c.operation == "CreateDaemon")
        .count();
    assert_eq!(creates, 1, "one CreateDaemon for the daemon's whole life");
}

/// Each mistake of the seed refused before anything is created, with the fix.
#[tokio::test]
async fn managed_instances_mistakes_are_refused_before_anything_is_created() {
    let mut harness = harness_with_managed_instances(2);
    let no_role = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            execution_role_arn: None,
            ..agent_definition()
        });
    let fine = harness
        .model
        .register_daemon_task_definition(agent_definition());
    harness.model.set_capacity_provider_kind(
        "mi-small",
        CapacityProviderKind::ManagedInstances {
            sizes: ecs_daemons::model::InstanceSizes {
                largest_cpu: Some(512),
                ..Default::default()
            },
        },
    );
    harness
        .model
        .create_cluster(CLUSTER, &["mi-general", "asg-general", "mi-small"]);
    let cases = [
        (
            managed_deploy(&no_role),
            "NoExecutionRole",
            "has no execution role",
        ),
        (
            managed_deploy("cloudwatch-agent-daemon"),
            "InvalidRequest",
            "must be pinned",
        ),
        (
            managed_deploy("cloudwatch-agent-daemon:9"),
            "DaemonTaskDefinitionNotFound",
            "RegisterDaemonTaskDefinition",
        ),
        (
            ecs_daemons::deploy::DeployRequest {
                capacity_providers: vec!["asg-general".into()],
                ..managed_deploy(&fine)
            },
            "AutoScalingNeedsTaskDefinition",
            "asg-general",
        ),
        (
            ecs_daemons::deploy::DeployRequest {
                capacity_providers: vec!["mi-small".into()],
                ..managed_deploy(&fine)
            },
            "DaemonTooLarge",
            "largest instance",
        ),
    ];
    for (request, error_type, fragment) in cases {
        let error = harness.deploy(request).await.unwrap_err();
        let function_error = ecs_daemons::runtime::FunctionError::from(error);
        let message = function_error.to_string();
        assert_eq!(function_error.error_type(), error_type, "{message}");
        assert!(message.contains(fragment), "{message}");
    }
    assert!(
        harness.model.calls().iter().all(|c| !c.modify),
        "a refused deploy changes nothing in ECS"
    );
    assert!(harness.model.managed_daemon_copies(CLUSTER).is_empty());
}

/// `status` shows the Managed Instances part as ECS reports it, its rollouts in the same
/// history, and drift: a daemon updated or deleted outside ecs-daemons is reported, not
/// silently overwritten.
#[tokio::test]
async fn status_reports_ecs_counts_the_deployment_and_drift() {
    use ecs_daemons::deploy::StatusRequest;
    use ecs_daemons::rollout::RolloutState;
    let mut harness = harness_with_managed_instances(3);
    let first = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let created = harness.deploy(managed_deploy(&first)).await.unwrap();
    let daemon_arn = created.managed.unwrap().daemon_arn.unwrap();
    harness.model.advance(Duration::minutes(20));
    let request = || StatusRequest {
        cluster: CLUSTER.into(),
        daemon: Some("cloudwatch-agent".into()),
    };
    let answer = harness.status(request()).await.unwrap();
    let daemon = &answer.daemons[0];
    assert_eq!(daemon.task_definition, None, "no EC2 part");
    let managed = daemon.managed.clone().unwrap();
    assert_eq!(
        (
            managed.providers[0].capacity_provider.as_str(),
            managed.providers[0].running
        ),
        ("mi-general", 3)
    );
    let deployment = managed.deployment.unwrap();
    assert_eq!(deployment.status.as_str(), "SUCCESSFUL");
    let rollout = daemon.rollout.clone().unwrap();
    assert_eq!(
        rollout.state,
        RolloutState::Succeeded,
        "the rollout takes ECS's state"
    );
    assert!(managed.drift.is_none());
    let checked = harness.coverage_check().await.result.unwrap();
    assert_eq!(
        checked.native_drift.get("cloudwatch-agent"),
        Some(&None),
        "DaemonDrift 0"
    );

    // Someone updates the daemon in the console.
    let outside = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel::new(
            "cloudwatch-agent-daemon",
            2048,
            512,
        ));
    harness
        .model
        .update_daemon(&daemon_arn, &declaration(&outside, &["mi-general"]))
        .await
        .unwrap();
    let drift = harness.status(request()).await.unwrap().daemons[0]
        .managed
        .clone()
        .unwrap()
        .drift
        .unwrap();
    assert!(
        drift.contains(&outside) && drift.contains("outside ecs-daemons"),
        "{drift}"
    );
    let checked = harness.coverage_check().await.result.unwrap();
    assert_eq!(
        checked.native_drift["cloudwatch-agent"].as_deref(),
        Some(drift.as_str()),
        "the coverage check finds the same drift (DaemonDrift 1)"
    );

    // And then deletes it.
    harness.model.delete_daemon(&daemon_arn).await.unwrap();
    harness.model.advance(Duration::minutes(5));
    let drift = harness.status(request()).await.unwrap().daemons[0]
        .managed
        .clone()
        .unwrap()
        .drift
        .unwrap();
    assert!(drift.contains("deleted outside ecs-daemons"), "{drift}");
}

/// The dry run on Managed Instances: the exact request, how many instances per step and how
/// many steps, and nothing created.
#[tokio::test]
async fn the_dry_run_shows_the_request_and_ecs_steps_and_changes_nothing() {
    let mut harness = harness_with_managed_instances(8);
    let first = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let dry = harness
        .deploy_dry_run(ecs_daemons::deploy::DeployRequest {
            dry_run: true,
            ..managed_deploy(&first)
        })
        .await
        .unwrap();
    let preview = dry.managed.clone().unwrap();
    assert_eq!(
        (preview.call, preview.would_record),
        (Some("CreateDaemon"), "created")
    );
    assert!(preview.request.daemon_task_definition_arn.ends_with(&first));
    assert!(
        harness.model.calls().iter().all(|c| !c.modify),
        "nothing changed"
    );

    harness.deploy(managed_deploy(&first)).await.unwrap();
    harness.model.advance(Duration::minutes(20));
    let second = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let dry = harness
        .deploy_dry_run(ecs_daemons::deploy::DeployRequest {
            dry_run: true,
            ..managed_deploy(&second)
        })
        .await
        .unwrap();
    let preview = dry.managed.unwrap();
    assert_eq!(
        (preview.call, preview.would_record),
        (Some("UpdateDaemon"), "rollout")
    );
    assert_eq!(preview.instances["mi-general"], 8);
    assert_eq!(
        (preview.instances_per_step, preview.steps),
        (2, 4),
        "25 % of 8 at a time"
    );
}

/// A deploy killed between any two of its calls is finished by the next deploy: one daemon,
/// never two, and the update that follows lands.
#[tokio::test]
async fn a_deploy_killed_at_any_call_is_finished_by_the_next() {
    for crash_after in 0..20 {
        let mut harness = harness_with_managed_instances(2);
        let first = harness
            .model
            .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
        harness.budget.crash_after(crash_after);
        let crashes_before = harness.crashes;
        let crashed = harness.deploy(managed_deploy(&first)).await;
        let reached = harness.crashes > crashes_before;
        let retried = harness.deploy(managed_deploy(&first)).await;
        let retried = retried.unwrap_or_else(|e| panic!("crash point {crash_after}: {e}"));
        let arn = retried.managed.unwrap().daemon_arn.unwrap();
        if let Ok(first_answer) = crashed {
            assert_eq!(first_answer.managed.unwrap().daemon_arn.unwrap(), arn);
        }
        harness.model.advance(Duration::minutes(10));
        assert_eq!(
            harness
                .model
                .managed_daemon_copies(CLUSTER)
                .get("cloudwatch-agent"),
            Some(&2),
            "crash point {crash_after}"
        );
        // And an update killed at the same point.
        let second = harness
            .model
            .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
        harness.budget.crash_after(crash_after);
        let _ = harness.deploy(managed_deploy(&second)).await;
        harness
            .deploy(managed_deploy(&second))
            .await
            .unwrap_or_else(|e| panic!("update, crash point {crash_after}: {e}"));
        harness.model.advance(Duration::minutes(10));
        let state = harness.model.describe_daemon(&arn).await.unwrap();
        let revision = state.current_revisions[0].revision_arn.clone();
        let revisions = harness
            .model
            .describe_daemon_revisions(&[revision])
            .await
            .unwrap();
        assert!(
            revisions[0].daemon_task_definition_arn.ends_with(&second),
            "crash point {crash_after}: {revisions:?}"
        );
        // Every rollout ends once ECS's deployments did: the one the update replaced (ended in
        // the same write that started the next), and the update's own (its deployment taken
        // from the declaration if the crash cut the rollout's write off).
        harness.coverage_check().await.result.unwrap();
        let open: Vec<String> = harness
            .store
            .query::<ecs_daemons::rollout::Rollout>(CLUSTER, "cloudwatch-agent")
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.record.state == ecs_daemons::rollout::RolloutState::InProgress)
            .map(|r| r.record.id)
            .collect();
        assert!(
            open.is_empty(),
            "crash point {crash_after}: {open:?} still in progress"
        );
        if !reached {
            eprintln!("the deploy ran to its end within {crash_after} calls");
            return;
        }
    }
    panic!("the deploy never ran to its end within 20 calls");
}

/// The coverage check follows ECS's deployments: a successful one makes its revision the
/// good one; ECS's own rollback fails the rollout, says why, and the declaration follows ECS.
#[tokio::test]
async fn the_coverage_check_records_how_ecs_deployments_end() {
    use ecs_daemons::rollout::RolloutState;
    let mut harness = harness_with_managed_instances(4);
    let good = harness
        .model
        .register_daemon_task_definition(agent_definition());
    harness.deploy(managed_deploy(&good)).await.unwrap();
    harness.model.advance(Duration::minutes(1));
    let check = harness.coverage_check().await;
    let outcome = check.result.unwrap();
    assert!(
        outcome.rollouts.contains_key("cloudwatch-agent"),
        "in flight: {outcome:?}"
    );
    harness.model.advance(Duration::minutes(20));
    let outcome = harness.coverage_check().await.result.unwrap();
    assert_eq!(outcome.rollouts_ended.len(), 1, "{outcome:?}");
    assert_eq!(outcome.rollouts_ended[0].state, RolloutState::Succeeded);
    let coverage = &outcome.coverage["cloudwatch-agent"];
    assert_eq!(
        (coverage.targeted, coverage.covered, coverage.missing),
        (4, 4, 0)
    );

    let bad = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            fails_to_start: true,
            ..agent_definition()
        });
    harness.deploy(managed_deploy(&bad)).await.unwrap();
    harness.model.advance(Duration::minutes(60));
    let outcome = harness.coverage_check().await.result.unwrap();
    assert_eq!(outcome.rollouts_ended.len(), 1, "{outcome:?}");
    assert_eq!(outcome.rollouts_ended[0].state, RolloutState::Failed);
    let reason = outcome.rollouts_ended[0].reason.clone().unwrap();
    assert!(
        reason.contains("ROLLBACK_SUCCESSFUL") && reason.contains(&good),
        "{reason}"
    );
    let status = harness
        .status(ecs_daemons::deploy::StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        })
        .await
        .unwrap();
    let managed = status.daemons[0].managed.clone().unwrap();
    assert_eq!(
        managed.daemon_task_definition, good,
        "the declaration follows ECS's rollback"
    );
    assert!(managed.drift.is_none(), "{:?}", managed.drift);
    // Deploying the bad revision again is a new rollout, not "unchanged".
    let again = harness.deploy(managed_deploy(&bad)).await.unwrap();
    assert_eq!(again.managed.unwrap().recorded, "rollout");
}

/// Rollback by one invoke, the same payload as on EC2: UpdateDaemon back to the last good
/// revision (ECS has no rollback call), recorded as a rollback rollout; its dry run first.
#[tokio::test]
async fn one_invoke_rolls_a_managed_daemon_back_to_its_last_good_revision() {
    use ecs_daemons::deploy::RollbackRequest;
    use ecs_daemons::rollout::{RolloutKind, RolloutState};
    let mut harness = harness_with_managed_instances(4);
    let register = |harness: &ecs_daemons_sim::simulation::Harness| {
        harness
            .model
            .register_daemon_task_definition(agent_definition())
    };
    let first = register(&harness);
    let second = register(&harness);
    let rollback = |dry_run| RollbackRequest {
        cluster: CLUSTER.into(),
        daemon: "cloudwatch-agent".into(),
        to_revision: None,
        dry_run,
    };
    harness.deploy(managed_deploy(&first)).await.unwrap();
    harness.model.advance(Duration::minutes(20));
    harness.coverage_check().await;
    let refused = harness
        .rollback(rollback(false))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("nothing to roll back to"), "{refused}");

    harness.deploy(managed_deploy(&second)).await.unwrap();
    harness.model.advance(Duration::minutes(20));
    let ended = harness
        .coverage_check()
        .await
        .result
        .unwrap()
        .rollouts_ended;
    assert_eq!(ended[0].state, RolloutState::Succeeded);

    let dry = harness.rollback_dry_run(rollback(true)).await.unwrap();
    let preview = dry.managed.unwrap();
    assert_eq!(
        (preview.call, preview.would_record),
        (Some("UpdateDaemon"), "rollback")
    );
    assert!(preview.request.daemon_task_definition_arn.ends_with(&first));

    let answer = harness.rollback(rollback(false)).await.unwrap();
    assert!(
        answer.reconcile.is_none() && answer.rollout.is_none(),
        "no EC2 part"
    );
    let managed = answer.managed.unwrap();
    let rollout = managed.rollout.unwrap();
    assert_eq!(rollout.kind, RolloutKind::Rollback);
    assert_eq!(
        (
            rollout.from_task_definition.as_deref(),
            rollout.to_task_definition.as_str()
        ),
        (Some(second.as_str()), first.as_str())
    );
    harness.model.advance(Duration::minutes(20));
    let ended = harness
        .coverage_check()
        .await
        .result
        .unwrap()
        .rollouts_ended;
    assert_eq!(ended[0].state, RolloutState::Succeeded);
    let state = harness
        .model
        .describe_daemon(&managed.daemon_arn.unwrap())
        .await
        .unwrap();
    let revisions = harness
        .model
        .describe_daemon_revisions(&[state.current_revisions[0].revision_arn.clone()])
        .await
        .unwrap();
    assert!(revisions[0].daemon_task_definition_arn.ends_with(&first));
}

/// A deploy or rollback right after ECS finished a deployment, before any coverage check
/// recorded it: the rollout is recorded as ECS left it (succeeded), not as superseded.
#[tokio::test]
async fn a_rollout_ecs_finished_is_recorded_finished_before_the_next_change() {
    use ecs_daemons::deploy::{RollbackRequest, StatusRequest};
    use ecs_daemons::rollout::{RolloutKind, RolloutState};
    let mut harness = harness_with_managed_instances(2);
    let register = |harness: &ecs_daemons_sim::simulation::Harness| {
        harness
            .model
            .register_daemon_task_definition(DaemonDefinitionModel::new(
                "cloudwatch-agent-daemon",
                256,
                256,
            ))
    };
    let first = register(&harness);
    let second = register(&harness);
    harness.deploy(managed_deploy(&first)).await.unwrap();
    harness.model.advance(Duration::minutes(20));
    harness.deploy(managed_deploy(&second)).await.unwrap();
    harness.model.advance(Duration::minutes(20));
    harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: "cloudwatch-agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        })
        .await
        .unwrap();
    let daemon = &status.daemons[0];
    let states: Vec<(RolloutKind, RolloutState)> =
        daemon.history.iter().map(|r| (r.kind, r.state)).collect();
    assert!(
        states.contains(&(RolloutKind::Update, RolloutState::Succeeded))
            && states.contains(&(RolloutKind::Initial, RolloutState::Succeeded)),
        "{states:?}"
    );
}

/// ECS's daemon events reach task-events through its queue (template.yaml's DaemonEventsRule):
/// each impaired start is recorded once with ECS's reason, and a deployment's end is recorded
/// without waiting for a coverage check.
#[tokio::test]
async fn daemon_events_record_impaired_starts_and_end_rollouts_between_checks() {
    use ecs_daemons::rollout::RolloutState;
    let config = ModelConfig {
        faults: ecs_daemons_sim::cluster_model::Faults {
            duplicate_events: 1.0,
            ..Default::default()
        },
        ..ModelConfig::default()
    };
    let mut harness =
        ecs_daemons_sim::simulation::Harness::new(CLUSTER, &["mi-general", "asg-general"], config);
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness
        .model
        .launch_managed_instances(CLUSTER, "mi-general", 4);
    let good = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let bad = harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            fails_to_start: true,
            ..agent_definition()
        });
    let mut ended = Vec::new();
    let mut delivered = Vec::new();
    for revision in [&good, &bad] {
        harness.deploy(managed_deploy(revision)).await.unwrap();
        for _ in 0..120 {
            harness.model.advance(Duration::seconds(30));
            for invocation in harness.deliver_events().await {
                delivered.extend(invocation.events.clone());
                ended.extend(invocation.result.unwrap().rollouts_ended);
            }
        }
    }
    assert!(
        harness
            .model
            .calls()
            .iter()
            .all(|c| c.operation != "ListContainerInstances"),
        "no coverage check ran"
    );
    let states: Vec<RolloutState> = ended.iter().map(|e| e.state).collect();
    assert_eq!(states, vec![RolloutState::Succeeded, RolloutState::Failed]);
    assert!(ended[1].reason.as_deref().unwrap().contains(&good));

    let impaired_events: std::collections::BTreeSet<&str> = delivered
        .iter()
        .filter(|e| e["detail"]["eventName"] == "DAEMON_TASK_START_IMPAIRED")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(!impaired_events.is_empty());
    let status = harness
        .status(ecs_daemons::deploy::StatusRequest {
            cluster: CLUSTER.into(),
            daemon: None,
        })
        .await
        .unwrap();
    let managed = status.daemons[0].managed.clone().unwrap();
    assert_eq!(
        managed.impaired_starts.len(),
        impaired_events.len(),
        "each impaired start once, though every event came twice"
    );
    let newest = &managed.impaired_starts[0];
    assert_eq!(newest.failure_type.as_deref(), Some("TASK_FAILED_TO_RUN"));
    assert_eq!(
        newest.reason.as_deref(),
        Some(ecs_daemons_sim::cluster_model::IMPAIRED_REASON)
    );
    assert_eq!(newest.daemon_task_definition.as_deref(), Some(bad.as_str()));
    assert_eq!(newest.capacity_provider.as_deref(), Some("mi-general"));
    assert!(newest.container_instance_id.is_some() && newest.task_arn.is_some());
}

/// A daemon on both kinds rolls back by one invoke: two rollouts of the same instant, each
/// with an id of its own (they share the daemon's partition).
#[tokio::test]
async fn a_daemon_on_both_kinds_rolls_back_both_parts_in_one_invoke() {
    let mut harness = harness_with_managed_instances(2);
    harness
        .model
        .add_instance(CLUSTER, "asg-general", 2048, 4096);
    let tasks: Vec<String> = (0..2)
        .map(|_| {
            harness.model.register_task_definition(
                ecs_daemons_sim::cluster_model::TaskDefinitionModel::new(
                    "cloudwatch-agent",
                    256,
                    256,
                ),
            )
        })
        .collect();
    let daemons: Vec<String> = (0..2)
        .map(|_| {
            harness
                .model
                .register_daemon_task_definition(agent_definition())
        })
        .collect();
    let both = |n: usize| ecs_daemons::deploy::DeployRequest {
        task_definition: Some(tasks[n].clone()),
        daemon_task_definition: Some(daemons[n].clone()),
        ..ecs_daemons::deploy::DeployRequest::new(
            CLUSTER,
            "cloudwatch-agent",
            &tasks[n],
            &["mi-general", "asg-general"],
            0,
        )
    };
    harness.deploy(both(0)).await.unwrap();
    harness.run_scheduled(Duration::minutes(15), 60).await;
    harness.deploy(both(1)).await.unwrap();
    harness.run_scheduled(Duration::minutes(2), 60).await;
    let answer = harness
        .rollback(ecs_daemons::deploy::RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: "cloudwatch-agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    let ec2 = answer.rollout.unwrap();
    let managed = answer.managed.unwrap().rollout.unwrap();
    assert_ne!(ec2.id, managed.id);
    assert_eq!(
        (
            ec2.to_task_definition.as_str(),
            managed.to_task_definition.as_str()
        ),
        (tasks[0].as_str(), daemons[0].as_str())
    );
    // Invoked again (its answer lost, say): nothing bounces back.
    let again = harness.rollback(rollback_request()).await.unwrap_err();
    assert!(again.to_string().contains("already on"), "{again}");
}

/// A daemon deleted outside ecs-daemons while ECS rolls it out: the rollout ends failed with
/// the reason, and the daemon is reported as drift, never recreated behind the operator.
#[tokio::test]
async fn a_daemon_deleted_outside_ends_its_rollout_and_is_reported() {
    use ecs_daemons::rollout::RolloutState;
    let mut harness = harness_with_managed_instances(4);
    let first = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let created = harness.deploy(managed_deploy(&first)).await.unwrap();
    let daemon_arn = created.managed.unwrap().daemon_arn.unwrap();
    harness.model.advance(Duration::minutes(1));
    harness.model.delete_daemon(&daemon_arn).await.unwrap();
    harness.model.advance(Duration::minutes(5));
    let outcome = harness.coverage_check().await.result.unwrap();
    assert_eq!(outcome.rollouts_ended.len(), 1, "{outcome:?}");
    assert_eq!(outcome.rollouts_ended[0].state, RolloutState::Failed);
    assert!(outcome.rollouts_ended[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("deleted outside ecs-daemons"));
    assert!(outcome.native_drift["cloudwatch-agent"].is_some());
    let creates = harness
        .model
        .calls()
        .iter()
        .filter(|c| c.operation == "CreateDaemon")
        .count();
    assert_eq!(creates, 1, "not recreated behind the operator's back");
}

fn undeploy_request() -> ecs_daemons::deploy::UndeployRequest {
    ecs_daemons::deploy::UndeployRequest {
        cluster: CLUSTER.into(),
        daemon: "cloudwatch-agent".into(),
        undeploy: true,
        dry_run: false,
    }
}

/// Undeploy is ECS's DeleteDaemon: every copy goes, the declaration stays retired with its
/// history, nothing covers or drifts it any more, and a deploy starts it afresh once ECS let
/// the name go.
#[tokio::test]
async fn undeploy_deletes_the_managed_daemon_and_a_deploy_starts_it_afresh() {
    use ecs_daemons::deploy::{DeployError, RollbackRequest, StatusRequest};
    use ecs_daemons::rollout::{RolloutKind, RolloutState};
    let mut harness = harness_with_managed_instances(3);
    let first = harness
        .model
        .register_daemon_task_definition(agent_definition());
    let created = harness.deploy(managed_deploy(&first)).await.unwrap();
    let daemon_arn = created.managed.unwrap().daemon_arn.unwrap();
    harness.model.advance(Duration::minutes(1));

    let preview = harness
        .undeploy(ecs_daemons::deploy::UndeployRequest {
            dry_run: true,
            ..undeploy_request()
        })
        .await
        .unwrap();
    assert_eq!(
        (preview.recorded, preview.daemon_arn.as_deref()),
        ("would delete", Some(daemon_arn.as_str()))
    );
    assert!(
        !preview.ended_rollouts.is_empty(),
        "the rollout in flight would end"
    );
    assert!(harness.model.managed_truth(CLUSTER)[0].status == "ACTIVE");

    // Mid-rollout: the rollout ends with the reason.
    let gone = harness.undeploy(undeploy_request()).await.unwrap();
    assert_eq!(gone.recorded, "deleting");
    let ended = gone.ended_rollouts[0].clone();
    let rollout = harness
        .store
        .get::<ecs_daemons::rollout::Rollout>(&ecs_daemons::store::ItemKey::rollout(
            CLUSTER,
            "cloudwatch-agent",
            &ended,
        ))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(rollout.state, RolloutState::Superseded);
    assert_eq!(rollout.reason.as_deref(), Some("the daemon was undeployed"));
    let again = harness.undeploy(undeploy_request()).await.unwrap();
    assert_eq!(
        again.recorded, "already undeployed",
        "a retry changes nothing"
    );

    // While ECS deletes it, a deploy says to wait; the coverage check neither covers nor
    // calls it drift.
    let refused = harness.deploy(managed_deploy(&first)).await.unwrap_err();
    assert!(
        matches!(refused, DeployError::DaemonBeingDeleted { .. }),
        "{refused}"
    );
    let checked = harness.coverage_check().await.result.unwrap();
    assert!(!checked.coverage.contains_key("cloudwatch-agent"));
    assert!(checked.native_drift.is_empty());
    harness.model.advance(Duration::minutes(5));
    assert!(harness.model.managed_truth(CLUSTER).is_empty());
    assert_eq!(
        harness
            .model
            .managed_daemon_copies(CLUSTER)
            .get("cloudwatch-agent"),
        None
    );
    let status = harness
        .status(StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some("cloudwatch-agent".into()),
        })
        .await
        .unwrap();
    let shown = status.daemons[0].managed.clone().unwrap();
    assert!(shown.undeployed_at.is_some() && shown.drift.is_none());
    let kept = status.daemons[0].rollout.clone().expect("its history kept");
    assert_eq!(kept.state, RolloutState::Superseded);
    let rollback = harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: "cloudwatch-agent".into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(rollback, DeployError::UnknownDaemon { .. }),
        "{rollback}"
    );

    // Deployed again: a new daemon, an initial rollout.
    let recreated = harness.deploy(managed_deploy(&first)).await.unwrap();
    let managed = recreated.managed.unwrap();
    assert_eq!(managed.recorded, "created");
    assert_eq!(managed.rollout.unwrap().kind, RolloutKind::Initial);
    harness.model.advance(Duration::minutes(20));
    assert_eq!(
        harness.model.managed_daemon_copies(CLUSTER)["cloudwatch-agent"],
        3
    );
}

/// An undeploy killed at any call is finished by the next; what it cannot do is refused with
/// the fix.
#[tokio::test]
async fn undeploy_survives_crashes_and_refuses_what_it_cannot_do() {
    use ecs_daemons::deploy::DeployError;
    for crash_after in 0..8 {
        let mut harness = harness_with_managed_instances(2);
        let first = harness
            .model
            .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 256, 256));
        harness.deploy(managed_deploy(&first)).await.unwrap();
        harness.budget.crash_after(crash_after);
        let _ = harness.undeploy(undeploy_request()).await;
        harness.budget.disarm();
        harness
            .undeploy(undeploy_request())
            .await
            .unwrap_or_else(|e| panic!("crash point {crash_after}: {e}"));
        harness.model.advance(Duration::minutes(5));
        assert!(
            harness.model.managed_truth(CLUSTER).is_empty(),
            "crash point {crash_after}"
        );
    }
    let mut harness = harness_with_managed_instances(2);
    let unknown = harness.undeploy(undeploy_request()).await.unwrap_err();
    assert!(
        matches!(unknown, DeployError::UnknownDaemon { .. }),
        "{unknown}"
    );
    let not_true = harness
        .undeploy(ecs_daemons::deploy::UndeployRequest {
            undeploy: false,
            ..undeploy_request()
        })
        .await
        .unwrap_err();
    assert!(
        not_true.to_string().contains("`undeploy` must be true"),
        "{not_true}"
    );
}

fn rollback_request() -> ecs_daemons::deploy::RollbackRequest {
    ecs_daemons::deploy::RollbackRequest {
        cluster: CLUSTER.into(),
        daemon: "cloudwatch-agent".into(),
        to_revision: None,
        dry_run: false,
    }
}

/// A rollback of a daemon on both kinds killed at any call, then invoked again as a user
/// would: both parts end on their good revisions, neither bounces back (campaign managed
/// seeds 3007, 4373 and 8914 of 10,000: the retry rolled the EC2 part back to the revision the
/// first attempt had left).
#[tokio::test]
async fn a_rollback_on_both_kinds_killed_at_any_call_ends_where_one_would() {
    for crash_after in 0..80 {
        let mut harness = harness_with_managed_instances(2);
        harness
            .model
            .add_instance(CLUSTER, "asg-general", 2048, 4096);
        let tasks: Vec<String> = (0..2)
            .map(|_| {
                harness.model.register_task_definition(
                    ecs_daemons_sim::cluster_model::TaskDefinitionModel::new(
                        "cloudwatch-agent",
                        256,
                        256,
                    ),
                )
            })
            .collect();
        let daemons: Vec<String> = (0..2)
            .map(|_| {
                harness
                    .model
                    .register_daemon_task_definition(agent_definition())
            })
            .collect();
        let both = |n: usize| ecs_daemons::deploy::DeployRequest {
            task_definition: Some(tasks[n].clone()),
            daemon_task_definition: Some(daemons[n].clone()),
            ..ecs_daemons::deploy::DeployRequest::new(
                CLUSTER,
                "cloudwatch-agent",
                &tasks[n],
                &["mi-general", "asg-general"],
                0,
            )
        };
        harness.deploy(both(0)).await.unwrap();
        harness.run_scheduled(Duration::minutes(15), 60).await;
        harness.deploy(both(1)).await.unwrap();
        harness.run_scheduled(Duration::minutes(15), 60).await;
        harness.budget.crash_after(crash_after);
        let first = harness.rollback(rollback_request()).await;
        harness.budget.disarm();
        if first.is_err() {
            match harness.rollback(rollback_request()).await {
                Ok(_) => {}
                Err(error) if error.to_string().contains("already on") => {}
                Err(error) => panic!("crash point {crash_after}: {error}"),
            }
        }
        harness.run_scheduled(Duration::minutes(15), 60).await;
        let status = harness
            .status(ecs_daemons::deploy::StatusRequest {
                cluster: CLUSTER.into(),
                daemon: None,
            })
            .await
            .unwrap();
        let daemon = &status.daemons[0];
        assert_eq!(
            (
                daemon.task_definition.as_deref(),
                daemon
                    .managed
                    .as_ref()
                    .map(|m| m.daemon_task_definition.as_str())
            ),
            (Some(tasks[0].as_str()), Some(daemons[0].as_str())),
            "crash point {crash_after}"
        );
        if first.is_ok() {
            return;
        }
    }
    panic!("the rollback never ran to its end within 80 calls");
}
