//! The services placement end to end on the cluster model: a daemon on an EC2 provider with
//! managed scaling runs as two DAEMON services steered per instance by its slot attribute,
//! rolls a new revision out by starting the new copy beside the old, rolls back, and lets
//! the cluster scale in with daemons running.

use chrono::Duration;
use ecs_daemons::deploy::{DeployError, DeployRequest, PlacementChoice, RollbackRequest};
use ecs_daemons::ecs::EcsServices;
use ecs_daemons::model::{InstanceStatus, TaskStatus};
use ecs_daemons::placement::services::slot_attribute;
use ecs_daemons::plan::READY_ATTRIBUTE;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutState};
use ecs_daemons_sim::cluster_model::{ManagedScaling, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";
const PROVIDER: &str = "scaled";

fn request(task_definition: &str) -> DeployRequest {
    DeployRequest {
        rollout: Some(RolloutConfig {
            max_parallel: Amount::Count(2),
            min_healthy_seconds: 30,
            ..RolloutConfig::default()
        }),
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &[PROVIDER], 0)
    }
}

/// A cluster whose provider has managed scaling (1 to 10 instances of 4 vCPU), `instances`
/// of them registered, and three revisions of the agent.
fn setup(instances: usize) -> (Harness, Vec<String>) {
    let harness = Harness::new(CLUSTER, &[PROVIDER], ModelConfig::default());
    harness
        .model
        .enable_managed_scaling(CLUSTER, PROVIDER, ManagedScaling::new(1, 10, 4096, 8192));
    let revisions = (0..3)
        .map(|_| {
            harness
                .model
                .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256))
        })
        .collect();
    for _ in 0..instances {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    (harness, revisions)
}

/// Per ACTIVE instance: (revisions of the live copies, any RUNNING, ready).
fn copies(harness: &Harness) -> Vec<(String, Vec<String>, bool, bool)> {
    let tasks = harness.model.tasks(CLUSTER);
    harness
        .model
        .instances(CLUSTER)
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| {
            let live: Vec<_> = tasks
                .iter()
                .filter(|t| {
                    t.instance_id == i.id()
                        && t.group.starts_with("service:ecs-daemons-agent-")
                        && t.desired_status == TaskStatus::Running
                        && !t.last_status.is_terminal()
                })
                .collect();
            let mut revisions: Vec<String> = live.iter().map(|t| t.definition.clone()).collect();
            revisions.sort();
            let running = live.iter().any(|t| t.last_status == TaskStatus::Running);
            let ready = i
                .attributes
                .get(READY_ATTRIBUTE)
                .is_some_and(|v| v.as_deref() == Some("true"));
            (i.id().to_string(), revisions, running, ready)
        })
        .collect()
}

/// Runs second by second with the schedule every minute, checking at every second: never
/// more than two copies on an instance, never a ready instance without a running copy,
/// never more than `max_parallel` instances with two. Answers the most seen with two.
async fn run_checked(harness: &mut Harness, seconds: i64, max_parallel: usize) -> usize {
    let mut peak = 0;
    for second in 0..seconds {
        harness.run_scheduled(Duration::seconds(1), 60).await;
        let mut in_flight = 0;
        for (instance, live, running, ready) in copies(harness) {
            assert!(live.len() <= 2, "{instance}: {live:?} at second {second}");
            assert!(
                !ready || running,
                "ready {instance} without a running copy at second {second}"
            );
            in_flight += usize::from(live.len() == 2);
        }
        assert!(
            in_flight <= max_parallel,
            "{in_flight} in flight at second {second}"
        );
        peak = peak.max(in_flight);
    }
    peak
}

#[tokio::test]
async fn a_daemon_on_a_managed_scaling_provider_runs_as_two_daemon_services() {
    let (mut harness, revisions) = setup(3);
    let answer = harness.deploy(request(&revisions[0])).await.unwrap();
    assert_eq!(answer.recorded, "created");
    let services = harness
        .model
        .describe_services(
            CLUSTER,
            &[
                "ecs-daemons-agent-a".to_string(),
                "ecs-daemons-agent-b".to_string(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(services.len(), 2);
    assert!(services
        .iter()
        .all(|s| s.scheduling_strategy == "DAEMON" && s.status == "ACTIVE"));
    let _ = run_checked(&mut harness, 180, 0).await;
    let state = copies(&harness);
    assert_eq!(state.len(), 3);
    for (instance, live, running, ready) in &state {
        assert_eq!(live, &vec![revisions[0].clone()], "{instance}");
        assert!(*running && *ready, "{instance}");
    }
    let attribute = slot_attribute(DAEMON);
    assert!(harness
        .model
        .instances(CLUSTER)
        .iter()
        .all(|i| i.attributes.get(&attribute) == Some(&Some("a".into()))));
    // None of it is a standalone copy.
    assert!(harness
        .model
        .tasks(CLUSTER)
        .iter()
        .all(|t| !t.group.starts_with("daemon:")));

    // A new instance gets its copy from the service, then readiness.
    harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let _ = run_checked(&mut harness, 120, 0).await;
    assert!(copies(&harness)
        .iter()
        .all(|(_, live, _, ready)| live.len() == 1 && *ready));
}

#[tokio::test]
async fn a_new_revision_rolls_out_new_copy_first_and_rolls_back_by_one_invoke() {
    let (mut harness, revisions) = setup(4);
    harness.deploy(request(&revisions[0])).await.unwrap();
    let _ = run_checked(&mut harness, 120, 0).await;
    let answer = harness.deploy(request(&revisions[1])).await.unwrap();
    assert_eq!(answer.recorded, "rollout");
    let peak = run_checked(&mut harness, 600, 2).await;
    assert_eq!(
        peak, 2,
        "the new copy starts beside the old, two instances at a time"
    );
    for (instance, live, _, ready) in copies(&harness) {
        assert_eq!(live, vec![revisions[1].clone()], "{instance}");
        assert!(ready);
    }
    let services = harness
        .model
        .describe_services(CLUSTER, &["ecs-daemons-agent-b".to_string()])
        .await
        .unwrap();
    assert!(services[0].task_definition.ends_with(&revisions[1]));
    let rollouts = harness.engine.rollouts(CLUSTER, DAEMON).await.unwrap();
    assert_eq!(
        rollouts.last().unwrap().record.state,
        RolloutState::Succeeded
    );

    // Back to the first revision, which service A still runs: no service update needed.
    let back = harness
        .rollback(RollbackRequest {
            cluster: CLUSTER.into(),
            daemon: DAEMON.into(),
            to_revision: None,
            dry_run: false,
        })
        .await
        .unwrap();
    assert_eq!(back.task_definition.as_deref(), Some(revisions[0].as_str()));
    assert_eq!(run_checked(&mut harness, 600, 2).await, 2);
    for (instance, live, _, _) in copies(&harness) {
        assert_eq!(live, vec![revisions[0].clone()], "{instance}");
    }
}

#[tokio::test]
async fn a_deploy_needing_a_third_revision_mid_rollout_is_refused_and_tasks_are_refused_under_managed_scaling(
) {
    let (mut harness, revisions) = setup(4);
    harness.deploy(request(&revisions[0])).await.unwrap();
    let _ = run_checked(&mut harness, 120, 0).await;
    harness.deploy(request(&revisions[1])).await.unwrap();
    harness.run_scheduled(Duration::seconds(5), 60).await;
    let busy = harness.deploy(request(&revisions[2])).await.unwrap_err();
    assert!(matches!(busy, DeployError::ServicesBusy { .. }), "{busy}");
    let forced = harness
        .deploy(DeployRequest {
            placement: PlacementChoice::Tasks,
            ..request(&revisions[0])
        })
        .await
        .unwrap_err();
    assert!(
        matches!(forced, DeployError::TasksUnderManagedScaling { .. }),
        "{forced}"
    );
}

/// The point of the placement: with only daemon copies left on them, instances count as
/// empty and managed scaling takes them away (the group's minimum stays).
#[tokio::test]
async fn instances_running_only_daemon_copies_are_scaled_in() {
    let (mut harness, revisions) = setup(3);
    harness.deploy(request(&revisions[0])).await.unwrap();
    let _ = run_checked(&mut harness, 120, 0).await;
    assert_eq!(harness.model.group_size(CLUSTER, PROVIDER), 3);
    // No application runs: after ECS's 15 one-minute points, the group shrinks.
    harness.run_scheduled(Duration::minutes(25), 60).await;
    assert_eq!(harness.model.group_size(CLUSTER, PROVIDER), 1);
    let state = copies(&harness);
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].1, vec![revisions[0].clone()]);
    assert!(state[0].3, "the instance left is still ready");
}

/// ECS stopping a daemon copy before the applications of its DRAINING instance left (the
/// #1700 defect, the model's `WithOthers` order) is reported by status, while the lifecycle
/// hook still holds the instance until the applications are gone.
#[tokio::test]
async fn a_daemon_copy_ecs_stops_before_the_applications_is_reported() {
    use ecs_daemons_sim::cluster_model::{DaemonDrainOrder, ServiceKnobs};
    let mut harness = Harness::new(
        CLUSTER,
        &[PROVIDER],
        ModelConfig {
            // Applications take a minute to stop: long enough to see the daemon go first.
            stop_latency: Duration::seconds(60),
            services: ServiceKnobs {
                drain_order: DaemonDrainOrder::WithOthers,
                ..ServiceKnobs::default()
            },
            ..ModelConfig::default()
        },
    );
    harness
        .model
        .enable_managed_scaling(CLUSTER, PROVIDER, ManagedScaling::new(1, 10, 4096, 8192));
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let web = harness
        .model
        .register_task_definition(TaskDefinitionModel::new("web", 512, 512));
    let instance = harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    harness.deploy(request(&agent)).await.unwrap();
    let _ = run_checked(&mut harness, 120, 0).await;
    harness
        .model
        .run_service_task(CLUSTER, "web", &web)
        .unwrap();
    harness.model.drain_instance(CLUSTER, &instance);
    harness.run_scheduled(Duration::seconds(120), 60).await;
    let status = harness
        .status(ecs_daemons::deploy::StatusRequest {
            cluster: CLUSTER.into(),
            daemon: Some(DAEMON.into()),
        })
        .await
        .unwrap();
    let services = status.daemons[0].services.as_ref().unwrap();
    assert_eq!(services.capacity_providers, vec![PROVIDER.to_string()]);
    assert_eq!(
        services
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.status.as_str(), s.declared))
            .collect::<Vec<_>>(),
        vec![
            ("ecs-daemons-agent-a", "ACTIVE", true),
            ("ecs-daemons-agent-b", "ACTIVE", false)
        ]
    );
    let troubles = &status.daemons[0].slots_in_trouble;
    assert!(
        troubles.iter().any(|t| t
            .stopped_early
            .as_deref()
            .is_some_and(|why| why.contains("other task"))),
        "{troubles:?}"
    );
    assert_eq!(harness.model.early_daemon_service_stops().len(), 1);
}

/// A daemon deployed as standalone copies moves to DAEMON services once its provider gets
/// managed scaling: the same revision rolls out as a service copy beside each standalone one,
/// which stops once the new copy is healthy; never a ready instance without a running copy.
#[tokio::test]
async fn a_provider_that_gets_managed_scaling_moves_its_copies_to_services_by_a_rollout() {
    let mut harness = Harness::new(CLUSTER, &[PROVIDER], ModelConfig::default());
    let agent = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    for _ in 0..4 {
        harness.model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    }
    let first = harness.deploy(request(&agent)).await.unwrap();
    assert_eq!(first.recorded, "created");
    harness.run_scheduled(Duration::seconds(120), 60).await;
    let standalone = |harness: &Harness| {
        harness
            .model
            .tasks(CLUSTER)
            .into_iter()
            .filter(|t| {
                t.group == format!("daemon:{DAEMON}")
                    && t.desired_status == TaskStatus::Running
                    && !t.last_status.is_terminal()
            })
            .count()
    };
    assert_eq!(standalone(&harness), 4);

    harness
        .model
        .enable_managed_scaling(CLUSTER, PROVIDER, ManagedScaling::new(1, 10, 4096, 8192));
    let moved = harness.deploy(request(&agent)).await.unwrap();
    assert_eq!(moved.recorded, "rollout");
    for second in 0..600 {
        harness.run_scheduled(Duration::seconds(1), 60).await;
        let tasks = harness.model.tasks(CLUSTER);
        for instance in harness.model.instances(CLUSTER) {
            let ready = instance
                .attributes
                .get(READY_ATTRIBUTE)
                .is_some_and(|v| v.as_deref() == Some("true"));
            let running = tasks.iter().any(|t| {
                t.instance_id == instance.id()
                    && (t.group == format!("daemon:{DAEMON}")
                        || t.group.starts_with("service:ecs-daemons-agent-"))
                    && t.last_status == TaskStatus::Running
                    && t.desired_status == TaskStatus::Running
            });
            assert!(!ready || running, "{} at second {second}", instance.id());
        }
    }
    assert_eq!(standalone(&harness), 0, "every standalone copy stopped");
    for (instance, live, running, ready) in copies(&harness) {
        assert_eq!(live, vec![agent.clone()], "{instance}");
        assert!(running && ready, "{instance}");
    }
    let rollouts = harness.engine.rollouts(CLUSTER, DAEMON).await.unwrap();
    assert_eq!(
        rollouts.last().unwrap().record.state,
        RolloutState::Succeeded
    );
}

/// Two more services would take the cluster past ECS's services-per-cluster quota: deploy
/// refuses before creating or declaring anything, and says what to do; with room again it
/// goes through.
#[tokio::test]
async fn a_cluster_without_room_for_two_services_is_refused_before_anything_changes() {
    let (mut harness, revisions) = setup(2);
    harness.model.set_other_services(CLUSTER, 4_999);
    let refused = harness.deploy(request(&revisions[0])).await.unwrap_err();
    assert!(
        matches!(
            refused,
            DeployError::ServiceQuota {
                active: 4_999,
                needed: 2,
                quota: 5_000,
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("Services per cluster"),
        "{refused}"
    );
    let names = [
        "ecs-daemons-agent-a".to_string(),
        "ecs-daemons-agent-b".to_string(),
    ];
    assert!(harness
        .model
        .describe_services(CLUSTER, &names)
        .await
        .unwrap()
        .is_empty());
    assert!(harness
        .engine
        .declaration(CLUSTER, DAEMON)
        .await
        .unwrap()
        .is_none());

    // A quota configured lower than ECS's is kept too.
    harness.model.set_other_services(CLUSTER, 10);
    harness.set_services_per_cluster(11);
    assert!(matches!(
        harness.deploy(request(&revisions[0])).await.unwrap_err(),
        DeployError::ServiceQuota { quota: 11, .. }
    ));
    harness.set_services_per_cluster(12);
    let answer = harness.deploy(request(&revisions[0])).await.unwrap();
    assert_eq!(answer.recorded, "created");
    assert_eq!(
        harness
            .model
            .describe_services(CLUSTER, &names)
            .await
            .unwrap()
            .len(),
        2
    );
}
