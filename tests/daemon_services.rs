//! The cluster model's DAEMON-strategy services, managed scaling and managed termination
//! protection, driven through the calls ecs-daemons makes: each documented behaviour the
//! services placement relies on, shown once, and each undocumented one under both readings
//! of its knob.

use chrono::Duration;
use ecs_daemons::ecs::{
    member_of_values, DaemonServiceDeclaration, Ecs, EcsErrorKind, EcsServices, InstanceAttribute,
    StartTaskRequest, TaskFilter,
};
use ecs_daemons::model::{CapacityProviderKind, InstanceStatus, TaskStatus};
use ecs_daemons_sim::cluster_model::{
    ClusterModel, DaemonDrainOrder, ManagedScaling, ModelConfig, ScaleInStep, ScalingKnobs,
    ServiceKnobs, TaskDefinitionModel, TerminationPick,
};

const CLUSTER: &str = "prod";
const PROVIDER: &str = "asg-general";
const SLOT: &str = "ecs-daemons.slot.agent";

fn model_with(knobs: ServiceKnobs) -> ClusterModel {
    model_stopping_in(knobs, Duration::seconds(3))
}

fn model_stopping_in(knobs: ServiceKnobs, stop_latency: Duration) -> ClusterModel {
    let model = ClusterModel::new(ModelConfig {
        services: knobs,
        rate_limits: false,
        stop_latency,
        ..ModelConfig::default()
    });
    model.create_cluster(CLUSTER, &[PROVIDER]);
    model
}

/// Reacts within 1 to 5 s, so a test's advances are short and exact.
fn quick() -> ServiceKnobs {
    ServiceKnobs {
        reaction: Duration::seconds(1),
        reaction_spread: Duration::seconds(4),
        ..ServiceKnobs::default()
    }
}

fn agent(model: &ClusterModel, cpu: i64) -> String {
    model.register_task_definition(TaskDefinitionModel::new("agent", cpu, 128))
}

fn service(name: &str, task_definition: &str, letters: &[&str]) -> DaemonServiceDeclaration {
    DaemonServiceDeclaration {
        service_name: name.into(),
        task_definition: task_definition.into(),
        member_of: vec![member_of_values(SLOT, letters)],
        tags: vec![("ecs-daemons:daemon".into(), "agent".into())],
        propagate_tags: "SERVICE".into(),
        enable_execute_command: false,
    }
}

async fn set_slot(model: &ClusterModel, instance: &str, value: &str) {
    model
        .put_attributes(
            CLUSTER,
            &[InstanceAttribute {
                container_instance: instance.into(),
                name: SLOT.into(),
                value: Some(value.into()),
            }],
        )
        .await
        .unwrap();
}

/// Live tasks (desired RUNNING) of `service` on `instance`, as (definition, RUNNING?).
fn copies(model: &ClusterModel, service: &str, instance: &str) -> Vec<(String, bool)> {
    let id = instance.rsplit('/').next().unwrap();
    model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| {
            t.group == format!("service:{service}")
                && t.instance_id == id
                && t.desired_status == TaskStatus::Running
        })
        .map(|t| (t.definition, t.last_status == TaskStatus::Running))
        .collect()
}

#[tokio::test]
async fn a_daemon_service_runs_one_task_where_its_attribute_admits_and_stops_it_where_not() {
    let model = model_with(quick());
    let first = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let second = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let definition = agent(&model, 256);
    let created = model
        .create_daemon_service(
            CLUSTER,
            &service("agent-a", &definition, &["a", "ab"]),
            "t-1",
        )
        .await
        .unwrap();
    assert_eq!(
        (
            created.status.as_str(),
            created.scheduling_strategy.as_str()
        ),
        ("ACTIVE", "DAEMON")
    );
    set_slot(&model, &first, "a").await;
    model.advance(Duration::seconds(20));
    assert_eq!(
        copies(&model, "agent-a", &first),
        vec![(definition.clone(), true)]
    );
    assert!(
        copies(&model, "agent-a", &second).is_empty(),
        "no attribute, no task"
    );
    let listed = model
        .list_tasks(CLUSTER, &TaskFilter::ServiceName("agent-a".into()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let described = model.describe_tasks(CLUSTER, &listed).await.unwrap();
    assert_eq!(described[0].group.as_deref(), Some("service:agent-a"));
    assert_eq!(described[0].tags["ecs-daemons:daemon"], "agent");
    assert!(described[0]
        .started_by
        .as_deref()
        .unwrap()
        .starts_with("ecs-svc/"));

    // A value the constraint does not admit: the scheduler stops the task.
    set_slot(&model, &first, "b").await;
    model.advance(Duration::seconds(20));
    assert!(copies(&model, "agent-a", &first).is_empty());
    let states = model
        .describe_services(CLUSTER, &["agent-a".to_string(), "nothing".to_string()])
        .await
        .unwrap();
    assert_eq!(states.len(), 1, "an unknown service is left out");
    assert_eq!(states[0].running_count, 0);
}

#[tokio::test]
async fn two_services_steered_by_one_attribute_start_the_new_copy_before_stopping_the_old() {
    let model = model_with(quick());
    let instance = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let old = agent(&model, 256);
    let new = agent(&model, 256);
    for (name, definition, letters) in [
        ("agent-a", &old, ["a", "ab"]),
        ("agent-b", &new, ["b", "ab"]),
    ] {
        model
            .create_daemon_service(CLUSTER, &service(name, definition, &letters), name)
            .await
            .unwrap();
    }
    set_slot(&model, &instance, "a").await;
    model.advance(Duration::seconds(20));
    set_slot(&model, &instance, "ab").await;
    model.advance(Duration::seconds(20));
    assert_eq!(
        copies(&model, "agent-a", &instance),
        vec![(old.clone(), true)]
    );
    assert_eq!(
        copies(&model, "agent-b", &instance),
        vec![(new.clone(), true)]
    );
    set_slot(&model, &instance, "b").await;
    model.advance(Duration::seconds(20));
    assert!(copies(&model, "agent-a", &instance).is_empty());
    assert_eq!(copies(&model, "agent-b", &instance), vec![(new, true)]);
}

#[tokio::test]
async fn updating_a_busy_daemon_service_stops_each_old_task_before_its_replacement() {
    let model = model_with(quick());
    let instances: Vec<String> = (0..3)
        .map(|_| model.add_instance(CLUSTER, PROVIDER, 4096, 8192))
        .collect();
    let old = agent(&model, 256);
    let new = agent(&model, 256);
    model
        .create_daemon_service(CLUSTER, &service("agent-a", &old, &["a"]), "t")
        .await
        .unwrap();
    for instance in &instances {
        set_slot(&model, instance, "a").await;
    }
    model.advance(Duration::seconds(20));
    let updated = model
        .update_daemon_service(CLUSTER, &service("agent-a", &new, &["a"]))
        .await
        .unwrap();
    assert_eq!(
        updated.deployments.len(),
        2,
        "PRIMARY and the old ACTIVE one"
    );
    // maximumPercent 100: never two tasks of the service on one instance.
    for _ in 0..40 {
        model.advance(Duration::seconds(1));
        for instance in &instances {
            assert!(copies(&model, "agent-a", instance).len() <= 1);
        }
    }
    for instance in &instances {
        assert_eq!(
            copies(&model, "agent-a", instance),
            vec![(new.clone(), true)]
        );
    }
    let state = &model
        .describe_services(CLUSTER, &["agent-a".to_string()])
        .await
        .unwrap()[0];
    assert_eq!(state.deployments.len(), 1);
    assert_eq!(
        state.deployments[0].rollout_state.as_deref(),
        Some("COMPLETED")
    );
}

/// DRAINING: application tasks stop at once, the DAEMON task after them, as each reading of
/// the drain order has it; the defects' early stops are counted for `status` to report.
#[tokio::test]
async fn a_draining_instance_stops_its_daemon_task_as_the_drain_order_says() {
    for order in [
        DaemonDrainOrder::AfterOthersStopped,
        DaemonDrainOrder::AfterOthersLeaveRunning,
        DaemonDrainOrder::WithOthers,
    ] {
        // Tasks take 30 s to stop: time for each reading to show.
        let model = model_stopping_in(
            ServiceKnobs {
                drain_order: order,
                ..quick()
            },
            Duration::seconds(30),
        );
        let instance = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
        let definition = agent(&model, 256);
        model
            .create_daemon_service(CLUSTER, &service("agent-a", &definition, &["a"]), "t")
            .await
            .unwrap();
        set_slot(&model, &instance, "a").await;
        model
            .put_attributes(
                CLUSTER,
                &[InstanceAttribute {
                    container_instance: instance.clone(),
                    name: ecs_daemons::plan::READY_ATTRIBUTE.into(),
                    value: Some("true".into()),
                }],
            )
            .await
            .unwrap();
        model.advance(Duration::seconds(20));
        let web = model.register_task_definition(TaskDefinitionModel::new("web", 512, 512));
        model.run_service_task(CLUSTER, "web", &web).unwrap();
        model.advance(Duration::seconds(10));
        model.drain_instance(CLUSTER, &instance);
        // The application task is told to stop at once and takes 30 s to stop.
        model.advance(Duration::seconds(20));
        let daemon_left = !copies(&model, "agent-a", &instance).is_empty();
        model.advance(Duration::seconds(60));
        assert!(
            copies(&model, "agent-a", &instance).is_empty(),
            "{order:?}: the daemon task stops in the end"
        );
        let early = model.early_daemon_service_stops();
        match order {
            DaemonDrainOrder::AfterOthersStopped => {
                assert!(daemon_left && early.is_empty(), "{order:?}: {early:?}");
            }
            DaemonDrainOrder::AfterOthersLeaveRunning | DaemonDrainOrder::WithOthers => {
                assert_eq!(early.len(), 1, "{order:?}: the early stop is counted");
            }
        }
    }
}

/// containers-roadmap #856, both readings: while one instance drains, a new one gets its
/// daemon task only if the scheduler does not wait for the drain.
#[tokio::test]
async fn a_new_instance_waits_for_a_drain_elsewhere_only_where_the_knob_says() {
    for waits in [true, false] {
        let model = model_with(ServiceKnobs {
            waits_for_draining: waits,
            drain_order: DaemonDrainOrder::AfterOthersStopped,
            ..quick()
        });
        let old = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
        let definition = agent(&model, 256);
        model
            .create_daemon_service(CLUSTER, &service("agent-a", &definition, &["a"]), "t")
            .await
            .unwrap();
        set_slot(&model, &old, "a").await;
        model.advance(Duration::seconds(20));
        // A standalone task keeps the draining instance busy (draining never stops it).
        let foreign = model.register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
        model.start_foreign_task(CLUSTER, &old, &foreign, "batch", None);
        model.advance(Duration::seconds(10));
        model.drain_instance(CLUSTER, &old);
        let new = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
        set_slot(&model, &new, "a").await;
        model.advance(Duration::seconds(60));
        assert_eq!(
            copies(&model, "agent-a", &new).is_empty(),
            waits,
            "waits_for_draining = {waits}"
        );
    }
}

#[tokio::test]
async fn a_task_that_keeps_failing_to_start_is_retried_less_and_less_often() {
    let model = model_with(quick());
    let instance = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let broken = model.register_task_definition(TaskDefinitionModel {
        execution_role_arn: None,
        ..TaskDefinitionModel::new("agent", 256, 128)
    });
    model
        .create_daemon_service(CLUSTER, &service("agent-a", &broken, &["a"]), "t")
        .await
        .unwrap();
    set_slot(&model, &instance, "a").await;
    model.advance(Duration::minutes(10));
    let mut starts: Vec<_> = model
        .tasks(CLUSTER)
        .into_iter()
        .map(|t| t.created_at)
        .collect();
    starts.sort();
    assert!(starts.len() >= 4, "{starts:?}");
    let gaps: Vec<i64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect();
    assert!(
        gaps.windows(2).all(|w| w[1] >= w[0]),
        "the gaps grow: {gaps:?}"
    );
    let state = &model
        .describe_services(CLUSTER, &["agent-a".to_string()])
        .await
        .unwrap()[0];
    assert!(state.deployments[0].failed_tasks >= 4);
}

#[tokio::test]
async fn service_calls_are_refused_as_ecs_refuses_them() {
    let model = model_with(quick());
    let definition = agent(&model, 256);
    let declared = service("agent-a", &definition, &["a"]);
    let created = model
        .create_daemon_service(CLUSTER, &declared, "t-1")
        .await
        .unwrap();
    let again = model
        .create_daemon_service(CLUSTER, &declared, "t-1")
        .await
        .unwrap();
    assert_eq!(
        again.arn, created.arn,
        "the client token makes a retry idempotent"
    );
    let taken = model
        .create_daemon_service(CLUSTER, &declared, "t-2")
        .await
        .unwrap_err();
    assert_eq!(taken.code, "InvalidParameterException");
    let unknown_definition = model
        .create_daemon_service(CLUSTER, &service("agent-b", "agent:99", &["b"]), "t-3")
        .await
        .unwrap_err();
    assert_eq!(unknown_definition.code, "ClientException");
    let bad_name = model
        .create_daemon_service(CLUSTER, &service("agent a", &definition, &["b"]), "t-4")
        .await
        .unwrap_err();
    assert_eq!(bad_name.kind, EcsErrorKind::Invalid);
    let no_service = model
        .update_daemon_service(CLUSTER, &service("nothing", &definition, &["a"]))
        .await
        .unwrap_err();
    assert_eq!(
        (no_service.kind, no_service.code.as_str()),
        (EcsErrorKind::NotFound, "ServiceNotFoundException")
    );

    // Deleted: DRAINING until its tasks stopped, then INACTIVE, and the name is free again.
    let instance = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    set_slot(&model, &instance, "a").await;
    model.advance(Duration::seconds(20));
    let deleted = model.delete_service(CLUSTER, "agent-a").await.unwrap();
    assert_eq!(deleted.status, "DRAINING");
    let refused = model
        .update_daemon_service(CLUSTER, &service("agent-a", &definition, &["a"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "ServiceNotActiveException");
    model.advance(Duration::seconds(20));
    let state = &model
        .describe_services(CLUSTER, &["agent-a".to_string()])
        .await
        .unwrap()[0];
    assert_eq!(state.status, "INACTIVE");
    assert!(copies(&model, "agent-a", &instance).is_empty());
    model
        .create_daemon_service(CLUSTER, &declared, "t-5")
        .await
        .unwrap();
}

fn managed(model: &ClusterModel, protection: bool) {
    model.enable_managed_scaling(
        CLUSTER,
        PROVIDER,
        ManagedScaling {
            managed_termination_protection: protection,
            ..ManagedScaling::new(1, 10, 4096, 8192)
        },
    );
}

/// The reason for the services placement: an instance whose only tasks are DAEMON-service
/// tasks counts as empty and is scaled in after 15 one-minute points; a standalone copy
/// keeps the metric at 100 and the instance for ever.
#[tokio::test]
async fn only_daemon_service_tasks_leave_an_instance_empty_for_managed_scaling() {
    for standalone in [false, true] {
        let model = model_with(quick());
        managed(&model, true);
        let instances: Vec<String> = (0..3)
            .map(|_| model.add_instance(CLUSTER, PROVIDER, 4096, 8192))
            .collect();
        let definition = agent(&model, 256);
        if standalone {
            model
                .start_task(
                    CLUSTER,
                    &StartTaskRequest {
                        task_definition: definition.clone(),
                        container_instances: instances.clone(),
                        started_by: "ecs-daemons".into(),
                        group: "daemon:agent".into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        } else {
            model
                .create_daemon_service(CLUSTER, &service("agent-a", &definition, &["a"]), "t")
                .await
                .unwrap();
            for instance in &instances {
                set_slot(&model, instance, "a").await;
            }
        }
        model.advance(Duration::minutes(14));
        let points = model.capacity_provider_reservation(CLUSTER, PROVIDER);
        let expected = if standalone { 100.0 } else { 0.0 };
        assert!(points.iter().all(|p| p.value == expected), "{points:?}");
        assert_eq!(
            model.group_size(CLUSTER, PROVIDER),
            3,
            "not before 15 points"
        );
        model.advance(Duration::minutes(10));
        let left = model.group_size(CLUSTER, PROVIDER);
        if standalone {
            assert_eq!(left, 3, "standalone copies hold every instance");
        } else {
            assert_eq!(left, 1, "scaled in to the group's minimum");
        }
    }
}

/// Waiting application tasks raise the metric above 100: the group launches what they need,
/// one step, then waits for the warm-up before the next.
#[tokio::test]
async fn waiting_application_tasks_scale_the_group_out_after_its_warm_up() {
    let model = model_with(quick());
    managed(&model, true);
    let first = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let ready = |instance: &str| InstanceAttribute {
        container_instance: instance.into(),
        name: ecs_daemons::plan::READY_ATTRIBUTE.into(),
        value: Some("true".into()),
    };
    model
        .put_attributes(CLUSTER, &[ready(&first)])
        .await
        .unwrap();
    // Four tasks of 2 vCPU: two fit an instance.
    let web = model.register_task_definition(TaskDefinitionModel::new("web", 2048, 1024));
    model.advance(Duration::minutes(6));
    model.set_application(CLUSTER, "web", &web, PROVIDER, 4);
    model.advance(Duration::minutes(1));
    let point = *model
        .capacity_provider_reservation(CLUSTER, PROVIDER)
        .last()
        .unwrap();
    assert_eq!((point.instances, point.needed, point.value), (1, 2, 200.0));
    model.advance(Duration::minutes(3));
    assert_eq!(
        model.group_size(CLUSTER, PROVIDER),
        2,
        "one launched, then warm-up"
    );
    let instances = model.instances(CLUSTER);
    let joined = instances.iter().find(|i| i.arn != first).unwrap();
    model
        .put_attributes(CLUSTER, &[ready(&joined.arn)])
        .await
        .unwrap();
    model.advance(Duration::minutes(2));
    let running = model
        .tasks(CLUSTER)
        .into_iter()
        .filter(|t| t.group == "service:web" && t.desired_status == TaskStatus::Running)
        .count();
    assert_eq!(running, 4);
}

/// Managed termination protection keeps a busy instance; without it, the group's own
/// policy may pick one that runs an application, which then drains first.
#[tokio::test]
async fn scale_in_spares_busy_instances_only_under_managed_termination_protection() {
    let model = model_with(quick());
    managed(&model, true);
    let instances: Vec<String> = (0..4)
        .map(|_| model.add_instance(CLUSTER, PROVIDER, 4096, 8192))
        .collect();
    let batch = model.register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
    model.start_foreign_task(CLUSTER, &instances[2], &batch, "batch", None);
    model.advance(Duration::minutes(30));
    let left: Vec<String> = model
        .instances(CLUSTER)
        .into_iter()
        .map(|i| i.arn)
        .collect();
    assert_eq!(
        left,
        vec![instances[2].clone()],
        "the busy instance stays, the rest go"
    );
    assert!(model
        .instances(CLUSTER)
        .iter()
        .all(|i| i.status == InstanceStatus::Active));
    assert!(matches!(
        model
            .describe_capacity_providers(CLUSTER, &[PROVIDER.to_string()])
            .await
            .unwrap()[0]
            .kind,
        CapacityProviderKind::AutoScalingGroup {
            managed_scaling: true,
            managed_termination_protection: true
        }
    ));
}

/// The unchanged SDK client against the local ECS server: every service call the services
/// placement makes, in ECS's JSON protocol, answers what the model does.
#[tokio::test]
async fn the_sdk_client_reaches_the_daemon_services_of_the_local_ecs_server() {
    use std::sync::Arc;
    let model = Arc::new(model_with(quick()));
    let instance = model.add_instance(CLUSTER, PROVIDER, 4096, 8192);
    let old = agent(&model, 256);
    let new = agent(&model, 256);
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

    let created = ecs
        .create_daemon_service(CLUSTER, &service("agent-a", &old, &["a", "ab"]), "t-1")
        .await
        .unwrap();
    assert_eq!(
        (
            created.scheduling_strategy.as_str(),
            created.launch_type.as_deref()
        ),
        ("DAEMON", Some("EC2"))
    );
    assert_eq!(
        created.member_of,
        vec![member_of_values(SLOT, &["a", "ab"])]
    );
    ecs.put_attributes(
        CLUSTER,
        &[InstanceAttribute {
            container_instance: instance.clone(),
            name: SLOT.into(),
            value: Some("a".into()),
        }],
    )
    .await
    .unwrap();
    model.advance(Duration::seconds(20));
    let listed = ecs
        .list_tasks(CLUSTER, &TaskFilter::ServiceName("agent-a".into()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let updated = ecs
        .update_daemon_service(CLUSTER, &service("agent-a", &new, &["a"]))
        .await
        .unwrap();
    assert!(updated.task_definition.ends_with(&new));
    model.advance(Duration::seconds(30));
    let described = ecs
        .describe_services(CLUSTER, &["agent-a".to_string(), "missing".to_string()])
        .await
        .unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].running_count, 1);
    assert_eq!(described[0].deployments.len(), 1);
    // Tags change through TagResource and UntagResource, read back with `include: TAGS`.
    let arn = described[0].arn.clone();
    ecs.tag_service(&arn, &[("team".into(), "obs".into())])
        .await
        .unwrap();
    ecs.untag_service(&arn, &["ecs-daemons:daemon".into()])
        .await
        .unwrap();
    let retagged = ecs
        .describe_services(CLUSTER, &["agent-a".to_string()])
        .await
        .unwrap();
    assert_eq!(
        retagged[0].tags,
        vec![("team".to_string(), "obs".to_string())]
    );
    let refused = ecs
        .create_daemon_service(CLUSTER, &service("agent-a", &old, &["a"]), "t-2")
        .await
        .unwrap_err();
    assert_eq!(refused.code, "InvalidParameterException");
    assert_eq!(ecs.active_services_count(CLUSTER).await.unwrap(), 1);
    let deleted = ecs.delete_service(CLUSTER, "agent-a").await.unwrap();
    assert_eq!(deleted.status, "DRAINING");
    assert_eq!(
        ecs.active_services_count(CLUSTER).await.unwrap(),
        0,
        "activeServicesCount counts ACTIVE services only"
    );
    server.abort();
}

/// The two scale-in readings the guide leaves open, each a knob: without managed
/// termination protection the busiest instance goes first by default (its applications
/// drain before anything else), and a step takes one instance a minute unless up to half.
#[tokio::test]
async fn scale_in_knobs_pick_the_busiest_first_and_step_by_one_by_default() {
    let first_step = |knobs: ScalingKnobs, minutes: i64| {
        let model = ClusterModel::new(ModelConfig {
            services: quick(),
            scaling: knobs,
            rate_limits: false,
            ..ModelConfig::default()
        });
        model.create_cluster(CLUSTER, &[PROVIDER]);
        managed(&model, false);
        let instances: Vec<String> = (0..5)
            .map(|_| model.add_instance(CLUSTER, PROVIDER, 4096, 8192))
            .collect();
        let batch = model.register_task_definition(TaskDefinitionModel::new("batch", 256, 256));
        model.start_foreign_task(CLUSTER, &instances[3], &batch, "batch", None);
        // Up to the first scale-in step (15 points below target), seconds at a time.
        let active = || -> Vec<String> {
            model
                .instances(CLUSTER)
                .into_iter()
                .filter(|i| i.status == InstanceStatus::Active)
                .map(|i| i.arn)
                .collect()
        };
        for _ in 0..minutes * 60 {
            model.advance(Duration::seconds(1));
            if active().len() < instances.len() {
                break;
            }
        }
        let left = active();
        (instances, left)
    };
    // The first step: one instance, and the busy one is the one that goes.
    let (instances, left) = first_step(ScalingKnobs::default(), 20);
    assert_eq!(left.len(), 4, "one instance per step");
    assert!(!left.contains(&instances[3]), "the busiest went first");
    let halving = ScalingKnobs {
        scale_in_step: ScaleInStep::UpToHalf,
        termination_pick: TerminationPick::Random,
        ..ScalingKnobs::default()
    };
    let (_, left) = first_step(halving, 20);
    assert_eq!(left.len(), 3, "two of five in the first step");
}
