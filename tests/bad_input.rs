//! Malformed and hostile input to every function: each answered with an error that names the
//! problem (or, inside an SQS batch, logged and dropped without a retry loop), never a panic,
//! and never a change: the table, the tasks, the instances' attributes and the ECS calls that
//! mutate are compared before and after each input. Property tests feed random JSON to every
//! event and payload parser.

use chrono::Duration;
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::model::CapacityProviderKind;
use ecs_daemons::runtime::{self, FunctionError};
use ecs_daemons_sim::cluster_model::{DaemonDefinitionModel, ModelConfig, TaskDefinitionModel};
use ecs_daemons_sim::simulation::Harness;
use proptest::prelude::*;
use serde_json::{json, Value};

const CLUSTER: &str = "prod";
const DAEMON: &str = "cloudwatch-agent-daemon";

fn sample(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A cluster with the daemon deployed and running on two instances.
async fn covered_cluster() -> Harness {
    let mut harness = Harness::new(
        CLUSTER,
        &["asg-general", "FARGATE", "mi-general", "odd"],
        ModelConfig::default(),
    );
    harness
        .model
        .set_capacity_provider_kind("mi-general", CapacityProviderKind::managed_instances());
    harness.model.set_capacity_provider_kind(
        "odd",
        CapacityProviderKind::Other {
            name: "QUANTUM".into(),
        },
    );
    harness.model.set_capacity_provider_kind(
        "mi-small",
        CapacityProviderKind::ManagedInstances {
            sizes: ecs_daemons::model::InstanceSizes {
                largest_cpu: Some(512),
                ..Default::default()
            },
        },
    );
    harness.model.create_cluster(
        CLUSTER,
        &[
            "asg-general",
            "FARGATE",
            "mi-general",
            "odd",
            "mi-small",
            "asg-scaled",
            "asg-full",
        ],
    );
    // Managed scaling on: the daemon runs as DAEMON services there. asg-full's instance
    // already carries 9 custom attributes (ECS allows 10).
    for provider in ["asg-scaled", "asg-full"] {
        harness.model.enable_managed_scaling(
            CLUSTER,
            provider,
            ecs_daemons_sim::cluster_model::ManagedScaling::new(1, 4, 4096, 8192),
        );
    }
    let full = harness.model.add_instance(CLUSTER, "asg-full", 4096, 8192);
    let team: Vec<ecs_daemons::ecs::InstanceAttribute> = (0..9)
        .map(|n| ecs_daemons::ecs::InstanceAttribute {
            container_instance: full.clone(),
            name: format!("team.label{n}"),
            value: Some("x".into()),
        })
        .collect();
    ecs_daemons::ecs::Ecs::put_attributes(&*harness.model, CLUSTER, &team)
        .await
        .unwrap();
    harness.model.register_task_definition(TaskDefinitionModel {
        network_mode: Some("awsvpc".into()),
        ..TaskDefinitionModel::new("agent-awsvpc", 256, 256)
    });
    // Daemon task definitions: agent-daemon:1 fine, agent-noexec:1 without execution role.
    harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel::new("agent-daemon", 1024, 512));
    harness
        .model
        .register_daemon_task_definition(DaemonDefinitionModel {
            execution_role_arn: None,
            ..DaemonDefinitionModel::new("agent-noexec", 1024, 512)
        });
    let definition = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 1024, 512));
    for _ in 0..2 {
        harness
            .model
            .add_instance(CLUSTER, "asg-general", 4096, 8192);
    }
    harness
        .deploy(DeployRequest::new(
            CLUSTER,
            DAEMON,
            &definition,
            &["asg-general"],
            0,
        ))
        .await
        .unwrap();
    // A daemon forced onto DAEMON services where managed scaling is off.
    harness
        .deploy(DeployRequest {
            placement: ecs_daemons::deploy::PlacementChoice::Services,
            ..DeployRequest::new(CLUSTER, "agent-forced", &definition, &["asg-general"], 0)
        })
        .await
        .unwrap();
    harness
        .run_for(Duration::seconds(30), Duration::seconds(1))
        .await;
    harness
}

/// Everything an input could change.
#[derive(Debug, PartialEq)]
struct World {
    table: Vec<(String, u64, String)>,
    tasks: Vec<String>,
    attributes: Vec<String>,
    mutating_calls: usize,
}

fn world(harness: &Harness) -> World {
    World {
        table: harness.store.snapshot(),
        tasks: harness
            .model
            .tasks(CLUSTER)
            .iter()
            .map(|t| format!("{} {:?} {:?}", t.id, t.last_status, t.desired_status))
            .collect(),
        attributes: harness
            .model
            .instances(CLUSTER)
            .iter()
            .map(|i| format!("{} {:?}", i.arn, i.attributes))
            .collect(),
        mutating_calls: harness.model.calls().iter().filter(|c| c.modify).count(),
    }
}

async fn invoke(harness: &Harness, function: &str, payload: Value) -> Result<Value, FunctionError> {
    let engine = harness.engine_of(function);
    let id = || "bad-input".to_string();
    match function {
        "instance-events" => runtime::instance_event(engine, payload, id()).await,
        "task-events" => runtime::task_event(engine, payload, id()).await,
        "coverage-check" => runtime::coverage_check(engine, payload, id())
            .await
            .map(|outcomes| serde_json::to_value(outcomes).unwrap()),
        "deploy" => runtime::deploy(engine, payload, id()).await,
        "rollback" => runtime::rollback(engine, payload, id()).await,
        "status" => runtime::status(engine, payload, id()).await,
        "lifecycle-hook" => runtime::lifecycle_hook(engine, payload, id()).await,
        other => panic!("no function {other}"),
    }
}

/// What an input must be answered with.
enum Answer {
    /// A Lambda error of this `errorType` whose message contains every fragment.
    Refused(&'static str, &'static [&'static str]),
    /// An SQS batch answer with nothing to deliver again (the bad message is logged, dropped).
    Dropped,
}

struct Case {
    name: &'static str,
    function: &'static str,
    payload: Value,
    answer: Answer,
}

fn case(name: &'static str, function: &'static str, payload: Value, answer: Answer) -> Case {
    Case {
        name,
        function,
        payload,
        answer,
    }
}

/// `value` with the field at `pointer` set (added if its parent object lacks it).
fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    value.pointer_mut(parent).unwrap()[field] = replacement;
    value
}

fn without(mut value: Value, parent: &str, field: &str) -> Value {
    value
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
    value
}

fn deploy_payload() -> Value {
    json!({"cluster": CLUSTER, "daemon": DAEMON, "taskDefinition": format!("{DAEMON}:1"), "capacityProviders": ["asg-general"]})
}

fn managed_payload(daemon_task_definition: &str) -> Value {
    json!({"cluster": CLUSTER, "daemon": "agent-managed", "daemonTaskDefinition": daemon_task_definition, "capacityProviders": ["mi-general"]})
}

fn sqs_batch(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| json!({"messageId": format!("m-{i}"), "receiptHandle": "r", "body": body, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:111122223333:q", "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {}, "md5OfBody": ""}))
        .collect();
    json!({ "Records": records })
}

fn cases() -> Vec<Case> {
    use Answer::{Dropped, Refused};
    let instance = sample("instance-active.json");
    let task = sample("task-running.json");
    let daemon = sample("daemon-start-impaired.json");
    let foreign = "arn:aws:ecs:us-east-1:111122223333:cluster/someone-elses";
    let huge = "x".repeat(1_000_000);
    vec![
        // Event functions, one EventBridge event each (a direct invoke).
        case(
            "task event to instance-events",
            "instance-events",
            task.clone(),
            Refused("InvalidEvent", &["detail-type", "ECS Task State Change"]),
        ),
        case(
            "instance event to task-events",
            "task-events",
            instance.clone(),
            Refused(
                "InvalidEvent",
                &["detail-type", "ECS Container Instance State Change"],
            ),
        ),
        case(
            "wrong source",
            "task-events",
            with(task.clone(), "/source", json!("aws.ec2")),
            Refused("InvalidEvent", &["source", "aws.ec2"]),
        ),
        case(
            "no id",
            "instance-events",
            without(instance.clone(), "", "id"),
            Refused("InvalidEvent", &["`id`"]),
        ),
        case(
            "no detail",
            "task-events",
            without(task.clone(), "", "detail"),
            Refused("InvalidEvent", &["detail"]),
        ),
        case(
            "clusterArn not a string",
            "instance-events",
            with(instance.clone(), "/detail/clusterArn", json!(42)),
            Refused("InvalidEvent", &["clusterArn"]),
        ),
        case(
            "lastStatus of the wrong type",
            "task-events",
            with(task.clone(), "/detail/lastStatus", json!(["RUNNING"])),
            Refused("InvalidEvent", &["lastStatus"]),
        ),
        case(
            "version negative",
            "task-events",
            with(task.clone(), "/detail/version", json!(-3)),
            Refused("InvalidEvent", &["version"]),
        ),
        case(
            "instance event of a cluster not managed",
            "instance-events",
            with(instance.clone(), "/detail/clusterArn", json!(foreign)),
            Refused("ClusterNotManaged", &["someone-elses", "ClusterArns"]),
        ),
        case(
            "task event of a cluster not managed",
            "task-events",
            with(task.clone(), "/detail/clusterArn", json!(foreign)),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        case(
            "daemon event of a cluster not managed",
            "task-events",
            with(daemon.clone(), "/detail/clusterArn", json!(foreign)),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        case(
            "daemon event naming no cluster",
            "task-events",
            without(
                without(daemon.clone(), "/detail", "clusterArn"),
                "/detail",
                "daemonArn",
            ),
            Refused("InvalidEvent", &["clusterArn", "ECS Daemon Service Action"]),
        ),
        case(
            "daemon event with a malformed time",
            "task-events",
            with(daemon.clone(), "/detail/createdAt", json!("later")),
            Refused("InvalidEvent", &["createdAt"]),
        ),
        case(
            "daemon event to instance-events",
            "instance-events",
            daemon.clone(),
            Refused(
                "InvalidEvent",
                &["detail-type", "ECS Daemon Service Action"],
            ),
        ),
        case(
            "event that is an array",
            "task-events",
            json!([task.clone()]),
            Refused("InvalidEvent", &["not an EventBridge event"]),
        ),
        case(
            "event that is a string",
            "instance-events",
            json!("ECS Container Instance State Change"),
            Refused("InvalidEvent", &["not an EventBridge event"]),
        ),
        case(
            "event that is null",
            "task-events",
            Value::Null,
            Refused("InvalidEvent", &["not an EventBridge event"]),
        ),
        // Event functions, SQS batches: logged and dropped, never delivered again.
        case(
            "SQS body that is not JSON",
            "task-events",
            sqs_batch(&["{not json".into()]),
            Dropped,
        ),
        case(
            "SQS body of a foreign cluster",
            "instance-events",
            sqs_batch(&[with(instance.clone(), "/detail/clusterArn", json!(foreign)).to_string()]),
            Dropped,
        ),
        case(
            "SQS body of the wrong detail-type, 1 MB",
            "instance-events",
            sqs_batch(&[with(task.clone(), "/detail/group", json!(huge.clone())).to_string()]),
            Dropped,
        ),
        // coverage-check
        case(
            "coverage-check of a cluster not managed",
            "coverage-check",
            json!({"cluster": "someone-elses"}),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        case(
            "coverage-check cluster of the wrong type",
            "coverage-check",
            json!({"cluster": 7}),
            Refused("InvalidRequest", &["cluster"]),
        ),
        case(
            "coverage-check payload that is a list",
            "coverage-check",
            json!(["prod"]),
            Refused("InvalidRequest", &["scheduled event"]),
        ),
        // deploy
        case(
            "deploy payload that is not an object",
            "deploy",
            json!("deploy please"),
            Refused("InvalidRequest", &["JSON object"]),
        ),
        case(
            "deploy without taskDefinition",
            "deploy",
            without(deploy_payload(), "", "taskDefinition"),
            Refused("InvalidRequest", &["taskDefinition"]),
        ),
        case(
            "deploy with an unknown field",
            "deploy",
            with(deploy_payload(), "/daemon", json!(DAEMON))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("desiredCount".into(), json!(3));
                    Value::Object(o)
                })
                .unwrap(),
            Refused("InvalidRequest", &["desiredCount"]),
        ),
        case(
            "deploy of an unpinned revision",
            "deploy",
            with(deploy_payload(), "/taskDefinition", json!(DAEMON)),
            Refused("InvalidRequest", &["pinned", "family:revision"]),
        ),
        case(
            "deploy of :latest",
            "deploy",
            with(
                deploy_payload(),
                "/taskDefinition",
                json!(format!("{DAEMON}:latest")),
            ),
            Refused("InvalidRequest", &["pinned"]),
        ),
        case(
            "deploy of revision 0",
            "deploy",
            with(
                deploy_payload(),
                "/taskDefinition",
                json!(format!("{DAEMON}:0")),
            ),
            Refused("InvalidRequest", &["pinned"]),
        ),
        case(
            "deploy with a daemon name of odd characters",
            "deploy",
            with(deploy_payload(), "/daemon", json!("agent; rm -rf /")),
            Refused("InvalidRequest", &["`daemon`", "letters, digits"]),
        ),
        case(
            "deploy with a daemon name of 1 MB",
            "deploy",
            with(deploy_payload(), "/daemon", json!(huge.clone())),
            Refused("InvalidRequest", &["`daemon`", "bytes)"]),
        ),
        case(
            "deploy to a cluster not managed",
            "deploy",
            with(deploy_payload(), "/cluster", json!("someone-elses")),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        case(
            "deploy to Fargate",
            "deploy",
            with(
                deploy_payload(),
                "/capacityProviders",
                json!(["asg-general", "FARGATE"]),
            ),
            Refused(
                "FargateProvider",
                &["FARGATE", "no container instance", "sidecar"],
            ),
        ),
        case(
            "daemon task definition not pinned",
            "deploy",
            managed_payload("agent-daemon"),
            Refused("InvalidRequest", &["daemonTaskDefinition", "pinned"]),
        ),
        case(
            "daemon task definition not found",
            "deploy",
            managed_payload("agent-daemon:7"),
            Refused("DaemonTaskDefinitionNotFound", &["agent-daemon:7"]),
        ),
        case(
            "daemon task definition without execution role",
            "deploy",
            managed_payload("agent-noexec:1"),
            Refused("NoExecutionRole", &["agent-noexec:1", "executionRoleArn"]),
        ),
        case(
            "daemon larger than the provider's largest instance",
            "deploy",
            with(
                managed_payload("agent-daemon:1"),
                "/capacityProviders",
                json!(["mi-small"]),
            ),
            Refused("DaemonTooLarge", &["largest instance", "mi-small"]),
        ),
        case(
            "daemon task definition for an EC2 provider",
            "deploy",
            with(
                managed_payload("agent-daemon:1"),
                "/capacityProviders",
                json!(["asg-general"]),
            ),
            Refused(
                "AutoScalingNeedsTaskDefinition",
                &["asg-general", "taskDefinition"],
            ),
        ),
        case(
            "task definition beside a daemon one, no EC2 provider",
            "deploy",
            with(
                managed_payload("agent-daemon:1"),
                "/taskDefinition",
                json!(format!("{DAEMON}:1")),
            ),
            Refused("UnusedTaskDefinition", &["taskDefinition", "remove"]),
        ),
        case(
            "daemon name ECS would refuse",
            "deploy",
            with(
                managed_payload("agent-daemon:1"),
                "/daemon",
                json!("agent daemon"),
            ),
            Refused("InvalidRequest", &["`daemon`"]),
        ),
        case(
            "critical of the wrong type",
            "deploy",
            with(managed_payload("agent-daemon:1"), "/critical", json!("yes")),
            Refused("InvalidRequest", &["critical"]),
        ),
        case(
            "deploy of a task definition to a Managed Instances provider",
            "deploy",
            with(
                deploy_payload(),
                "/capacityProviders",
                json!(["mi-general"]),
            ),
            Refused(
                "ManagedInstancesNeedDaemonTaskDefinition",
                &[
                    "mi-general",
                    "daemonTaskDefinition",
                    "RegisterDaemonTaskDefinition",
                ],
            ),
        ),
        case(
            "deploy to a provider of an unknown kind",
            "deploy",
            with(deploy_payload(), "/capacityProviders", json!(["odd"])),
            Refused("UnknownProviderKind", &["odd", "QUANTUM"]),
        ),
        case(
            "deploy with no capacity provider",
            "deploy",
            with(deploy_payload(), "/capacityProviders", json!([])),
            Refused("InvalidRequest", &["capacityProviders"]),
        ),
        case(
            "deploy with 10,000 capacity providers",
            "deploy",
            with(
                deploy_payload(),
                "/capacityProviders",
                json!((0..10_000).map(|i| format!("cp{i}")).collect::<Vec<_>>()),
            ),
            Refused("InvalidRequest", &["at most 50"]),
        ),
        case(
            "deploy with startOrder of the wrong type",
            "deploy",
            with(deploy_payload(), "/startOrder", json!("first")),
            Refused("InvalidRequest", &["startOrder"]),
        ),
        case(
            "deploy with an absurd startOrder",
            "deploy",
            with(deploy_payload(), "/startOrder", json!(1_000_000)),
            Refused("InvalidRequest", &["startOrder", "-1000 and 1000"]),
        ),
        case(
            "deploy with a negative maxParallel",
            "deploy",
            with(deploy_payload(), "/rollout", json!({"maxParallel": -2})),
            Refused("InvalidRequest", &["maxParallel"]),
        ),
        case(
            "deploy with maxParallel 250%",
            "deploy",
            with(deploy_payload(), "/rollout", json!({"maxParallel": "250%"})),
            Refused("InvalidRequest", &["maxParallel"]),
        ),
        case(
            "deploy with a negative minHealthySeconds",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"minHealthySeconds": -30}),
            ),
            Refused("InvalidRequest", &["minHealthySeconds"]),
        ),
        case(
            "deploy with a progress deadline too short to start a copy",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"progressDeadlineSeconds": 5}),
            ),
            Refused(
                "InvalidRequest",
                &["progressDeadlineSeconds", "between 30 and 86400", "got 5"],
            ),
        ),
        case(
            "deploy with an unhealthy grace no health check could pass in",
            "deploy",
            with(
                deploy_payload(),
                "/restart",
                json!({"unhealthyGraceSeconds": 0}),
            ),
            Refused(
                "InvalidRequest",
                &["restart.unhealthyGraceSeconds", "between 10 and 86400"],
            ),
        ),
        case(
            "deploy with an unknown surgeFallback",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"surgeFallback": "yolo"}),
            ),
            Refused("InvalidRequest", &["surgeFallback"]),
        ),
        case(
            "deploy with warnShare above 1",
            "deploy",
            with(deploy_payload(), "/warnShare", json!(7.5)),
            Refused("InvalidRequest", &["warnShare"]),
        ),
        case(
            "deploy with zero restarts allowed",
            "deploy",
            with(
                deploy_payload(),
                "/restart",
                json!({"maxConsecutiveFailures": 0}),
            ),
            Refused("InvalidRequest", &["maxConsecutiveFailures"]),
        ),
        case(
            "deploy of a task definition that does not exist",
            "deploy",
            with(
                deploy_payload(),
                "/taskDefinition",
                json!("no-such-family:4"),
            ),
            Refused("TaskDefinitionNotFound", &["no-such-family:4"]),
        ),
        // instanceFilter
        case(
            "an instanceFilter cut short",
            "deploy",
            with(
                deploy_payload(),
                "/instanceFilter",
                json!("attribute:ecs.instance-type == m5.large and"),
            ),
            Refused("InvalidRequest", &["instanceFilter at character 43"]),
        ),
        case(
            "an instanceFilter on what changes with the tasks",
            "deploy",
            with(
                deploy_payload(),
                "/instanceFilter",
                json!("task:group == service:web"),
            ),
            Refused("InvalidRequest", &["instanceFilter", "task:group"]),
        ),
        case(
            "an instanceFilter that is not a string",
            "deploy",
            with(deploy_payload(), "/instanceFilter", json!(["a", "b"])),
            Refused("InvalidRequest", &["instanceFilter"]),
        ),
        case(
            "an instanceFilter for Managed Instances providers",
            "deploy",
            with(
                managed_payload("agent-daemon:1"),
                "/instanceFilter",
                json!("attribute:ecs.availability-zone == us-east-1a"),
            ),
            Refused("InvalidRequest", &["instanceFilter", "Managed Instances"]),
        ),
        // undeploy (a mode of deploy)
        case(
            "undeploy of an unknown daemon",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": "nope", "undeploy": true}),
            Refused("UnknownDaemon", &["nope"]),
        ),
        case(
            "undeploy false",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "undeploy": false}),
            Refused("InvalidRequest", &["`undeploy` must be true"]),
        ),
        case(
            "undeploy with deploy fields",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "undeploy": true, "taskDefinition": "x:1"}),
            Refused("InvalidRequest", &["taskDefinition"]),
        ),
        case(
            "undeploy of a cluster not managed",
            "deploy",
            json!({"cluster": "someone-elses", "daemon": DAEMON, "undeploy": true}),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        // rollback
        // The services placement.
        case(
            "placement tasks where managed scaling is on",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": "agent-scaled", "taskDefinition": format!("{DAEMON}:1"),
                "capacityProviders": ["asg-scaled"], "placement": "tasks"}),
            Refused(
                "TasksUnderManagedScaling",
                &[
                    "asg-scaled",
                    "managed scaling",
                    "placement auto or services",
                ],
            ),
        ),
        case(
            "a placement ecs-daemons does not know",
            "deploy",
            with(deploy_payload(), "/placement", json!("pods")),
            Refused("InvalidRequest", &["placement", "pods"]),
        ),
        case(
            "an awsvpc task definition for DAEMON services",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": "agent-scaled", "taskDefinition": "agent-awsvpc:1",
                "capacityProviders": ["asg-scaled"]}),
            Refused(
                "AwsvpcForServices",
                &["agent-awsvpc:1", "awsvpc", "bridge or host"],
            ),
        ),
        case(
            "an instance without room for the slot attribute",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": "agent-scaled", "taskDefinition": format!("{DAEMON}:1"),
                "capacityProviders": ["asg-full"]}),
            Refused(
                "AttributeBudget",
                &[
                    "10 custom attributes",
                    "ecs-daemons.slot.agent-scaled",
                    "10 per container instance",
                ],
            ),
        ),
        case(
            "moving a provider of a deployed daemon back from services to tasks",
            "deploy",
            json!({"cluster": CLUSTER, "daemon": "agent-forced", "taskDefinition": format!("{DAEMON}:1"),
                "capacityProviders": ["asg-general"], "placement": "tasks"}),
            Refused(
                "PlacementChange",
                &["agent-forced", "asg-general", "services", "back to tasks"],
            ),
        ),
        case(
            "rollback of an unknown daemon",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": "nope"}),
            Refused("UnknownDaemon", &["nope"]),
        ),
        case(
            "rollback toRevision of the wrong type",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "toRevision": "two"}),
            Refused("InvalidRequest", &["toRevision"]),
        ),
        case(
            "rollback toRevision negative",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "toRevision": -1}),
            Refused("InvalidRequest", &["toRevision"]),
        ),
        case(
            "rollback with nothing to go back to",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON}),
            Refused("AlreadyOnRevision", &[DAEMON, "nothing to roll back to"]),
        ),
        // critical daemons
        case(
            "maxCriticalDrains without critical",
            "deploy",
            with(deploy_payload(), "/maxCriticalDrains", json!(2)),
            Refused("InvalidRequest", &["maxCriticalDrains", "critical: true"]),
        ),
        case(
            "maxCriticalDrains of zero",
            "deploy",
            with(
                with(deploy_payload(), "/critical", json!(true)),
                "/maxCriticalDrains",
                json!("0%"),
            ),
            Refused("InvalidRequest", &["maxCriticalDrains", "1–100"]),
        ),
        case(
            "maxCriticalDrains on Managed Instances",
            "deploy",
            with(
                with(managed_payload("agent-daemon:1"), "/critical", json!(true)),
                "/maxCriticalDrains",
                json!(1),
            ),
            Refused("InvalidRequest", &["maxCriticalDrains", "Managed"]),
        ),
        // rollout control (a mode of rollback)
        case(
            "pause of an unknown daemon",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": "nope", "control": "pause"}),
            Refused("UnknownDaemon", &["nope"]),
        ),
        case(
            "pause with no rollout in progress",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "control": "pause"}),
            Refused("NoRolloutInProgress", &[DAEMON, "nothing to pause"]),
        ),
        case(
            "promote without a paused canary",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "control": "promote"}),
            Refused("NoRolloutInProgress", &[DAEMON, "nothing to promote"]),
        ),
        case(
            "an unknown control",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "control": "stop"}),
            Refused("InvalidRequest", &["`control`", "pause"]),
        ),
        case(
            "a control with rollback fields",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "control": "pause", "toRevision": 1}),
            Refused("InvalidRequest", &["toRevision"]),
        ),
        case(
            "a pause whose reason holds a newline",
            "rollback",
            json!({"cluster": CLUSTER, "daemon": DAEMON, "control": "pause", "reason": "a\nb"}),
            Refused("InvalidRequest", &["`reason`", "control characters"]),
        ),
        case(
            "deploy gated by an alarm that does not exist",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"alarms": ["agent-erorrs"]}),
            ),
            Refused("UnknownAlarm", &["agent-erorrs", "fix `rollout.alarms`"]),
        ),
        case(
            "deploy with a bake but no alarm to watch",
            "deploy",
            with(deploy_payload(), "/rollout", json!({"bakeSeconds": 300})),
            Refused("InvalidRequest", &["bakeSeconds", "name the alarms"]),
        ),
        case(
            "deploy with alarms given as one string",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"alarms": "agent-errors"}),
            ),
            Refused("InvalidRequest", &["rollout.alarms"]),
        ),
        case(
            "deploy with a tag in AWS's reserved namespace",
            "deploy",
            with(
                deploy_payload(),
                "/launch",
                json!({"tags": {"aws:cost": "x"}}),
            ),
            Refused("InvalidRequest", &["launch.tags", "reserved"]),
        ),
        case(
            "deploy with SERVICE tag propagation on standalone copies",
            "deploy",
            with(
                deploy_payload(),
                "/launch",
                json!({"propagateTags": "SERVICE"}),
            ),
            Refused("InvalidRequest", &["launch.propagateTags"]),
        ),
        case(
            "deploy with an environment for a provider it does not target",
            "deploy",
            with(
                deploy_payload(),
                "/launch",
                json!({"environment": {"asg-elsewhere": {"main": {"A": "b"}}}}),
            ),
            Refused("InvalidRequest", &["launch.environment", "does not target"]),
        ),
        case(
            "a manual canary whose promote is unknown",
            "deploy",
            with(
                deploy_payload(),
                "/rollout",
                json!({"canary": {"instances": 1, "promote": "later"}}),
            ),
            Refused("InvalidRequest", &["canary", "manual"]),
        ),
        case(
            "rollback in a cluster not managed",
            "rollback",
            json!({"cluster": "someone-elses", "daemon": DAEMON}),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
        // lifecycle-hook
        case(
            "an ECS event to lifecycle-hook",
            "lifecycle-hook",
            instance.clone(),
            Refused("InvalidEvent", &["source", "aws.autoscaling"]),
        ),
        case(
            "a launch lifecycle action",
            "lifecycle-hook",
            with(
                sample("lifecycle-terminate.json"),
                "/detail-type",
                json!("EC2 Instance-launch Lifecycle Action"),
            ),
            Refused(
                "InvalidEvent",
                &["detail-type", "EC2 Instance-terminate Lifecycle Action"],
            ),
        ),
        case(
            "a lifecycle action without its token",
            "lifecycle-hook",
            without(
                sample("lifecycle-terminate.json"),
                "/detail",
                "LifecycleActionToken",
            ),
            Refused("InvalidEvent", &["LifecycleActionToken"]),
        ),
        case(
            "a lifecycle action whose instance id is a query",
            "lifecycle-hook",
            with(
                sample("lifecycle-terminate.json"),
                "/detail/EC2InstanceId",
                json!("i-1 or ec2InstanceId != x"),
            ),
            Refused("InvalidEvent", &["not an EC2 instance id"]),
        ),
        case(
            "a lifecycle payload that is a list",
            "lifecycle-hook",
            json!([]),
            Refused("InvalidEvent", &["JSON object"]),
        ),
        // status
        case(
            "status of an unknown daemon",
            "status",
            json!({"cluster": CLUSTER, "daemon": "nope"}),
            Refused("UnknownDaemon", &["nope"]),
        ),
        case(
            "status with daemon of the wrong type",
            "status",
            json!({"cluster": CLUSTER, "daemon": 7}),
            Refused("InvalidRequest", &["daemon"]),
        ),
        case(
            "status without cluster",
            "status",
            json!({}),
            Refused("InvalidRequest", &["cluster"]),
        ),
        case(
            "status of a cluster not managed",
            "status",
            json!({"cluster": "someone-elses"}),
            Refused("ClusterNotManaged", &["someone-elses"]),
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_is_refused_clearly_and_changes_nothing() {
    let harness = covered_cluster().await;
    let cases = cases();
    assert!(cases.len() >= 25, "the table has {} inputs", cases.len());
    let mut functions: Vec<&str> = cases.iter().map(|c| c.function).collect();
    functions.dedup();
    functions.sort();
    functions.dedup();
    assert_eq!(
        functions,
        [
            "coverage-check",
            "deploy",
            "instance-events",
            "lifecycle-hook",
            "rollback",
            "status",
            "task-events"
        ],
        "every function is in the table"
    );
    let mut broken = Vec::new();
    for case in cases {
        let before = world(&harness);
        let answer = invoke(&harness, case.function, case.payload).await;
        let problem = match (&case.answer, &answer) {
            (Answer::Refused(error_type, fragments), Err(error)) => {
                let message = error.to_string();
                if error.error_type() != *error_type {
                    Some(format!(
                        "errorType {} (wanted {error_type}): {message}",
                        error.error_type()
                    ))
                } else if let Some(missing) = fragments.iter().find(|f| !message.contains(**f)) {
                    Some(format!("message does not name {missing:?}: {message}"))
                } else if message.len() > 1_000 {
                    Some(format!("message of {} bytes", message.len()))
                } else {
                    None
                }
            }
            (Answer::Dropped, Ok(answer)) if *answer == json!({"batchItemFailures": []}) => None,
            (_, other) => Some(format!("answered {other:?}")),
        };
        if let Some(problem) = problem {
            broken.push(format!("{}: {problem}", case.name));
        }
        if world(&harness) != before {
            broken.push(format!(
                "{}: changed the table, the tasks or the attributes",
                case.name
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Random JSON: scalars, arrays and objects, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A real event or payload with one field replaced by random JSON (closer to the parsers'
/// interesting paths than fully random input).
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let pointers = pointers(&base, "");
    (prop::sample::select(pointers), any_json()).prop_map(move |(pointer, replacement)| {
        let mut value = base.clone();
        if let Some(slot) = value.pointer_mut(&pointer) {
            *slot = replacement;
        }
        value
    })
}

fn pointers(value: &Value, prefix: &str) -> Vec<String> {
    let mut all = vec![prefix.to_string()];
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                all.extend(pointers(child, &format!("{prefix}/{key}")));
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                all.extend(pointers(child, &format!("{prefix}/{index}")));
            }
        }
        _ => {}
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // A failure prints its minimal input; no regression file is written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn event_parsers_never_panic(raw in prop_oneof![
        any_json(),
        mutated(sample("instance-active.json")),
        mutated(sample("task-running.json")),
        mutated(sample("task-stopped-essential-exit.json")),
        mutated(sample("lifecycle-terminate.json")),
    ]) {
        let _ = ecs_daemons::events::parse_instance_event(raw.clone());
        let _ = ecs_daemons::events::parse_task_event(raw.clone());
        let _ = ecs_daemons::events::parse_ecs_event(raw.clone());
        let _ = ecs_daemons::sqs::messages(&raw);
        let _ = ecs_daemons::autoscaling::parse_terminate_event(raw.clone());
    }

    #[test]
    fn payload_parsers_never_panic(raw in prop_oneof![
        any_json(),
        mutated(deploy_payload()),
        mutated(json!({"cluster": CLUSTER, "daemon": DAEMON, "taskDefinition": "a:1", "capacityProviders": ["x"], "rollout": {"maxParallel": "25%", "minHealthySeconds": 30, "canary": 1, "surgeFallback": "fail", "failureThreshold": 2, "autoRollback": true}, "restart": {"maxConsecutiveFailures": 5}})),
        mutated(json!({"cluster": CLUSTER, "daemon": DAEMON, "toRevision": 1})),
    ]) {
        use ecs_daemons::deploy::{parse_payload, RollbackRequest, StatusRequest};
        if let Ok(request) = parse_payload::<DeployRequest>(raw.clone()) {
            let _ = request.validate();
        }
        let _ = parse_payload::<RollbackRequest>(raw.clone());
        let _ = parse_payload::<StatusRequest>(raw.clone());
        let _ = runtime::InvocationContext::from_payload(&raw);
    }

    #[test]
    fn the_instance_filter_parser_never_panics(
        text in prop_oneof![
            ".{0,80}",
            "(attribute:[a-z.]{1,12} (==|!=|=~|!~|in|!in|exists|!exists) ?[\\[\\]()'\",a-z0-9.*-]{0,20} ?(and|or|&&|\\|\\||!|not)? ?){1,4}",
        ]
    ) {
        // Any text: a filter or an error that points inside it (or at its end).
        match ecs_daemons::instance_filter::InstanceFilter::parse(&text) {
            Ok(filter) => prop_assert_eq!(filter.text(), text.as_str()),
            Err(error) => prop_assert!(error.position <= text.chars().count(), "{}", error),
        }
    }

    #[test]
    fn random_input_to_every_function_changes_nothing(raw in any_json(), function in prop::sample::select(vec!["instance-events", "task-events", "coverage-check", "deploy", "rollback", "status", "lifecycle-hook"])) {
        // Random JSON is never a valid deploy or event: whatever a function answers, the
        // cluster and the table stay as they were. (`{}` is a valid coverage-check invoke,
        // "every managed cluster", which reconciles and prunes: not random input.)
        prop_assume!(!(function == "coverage-check" && raw.as_object().is_some_and(|o| o.is_empty())));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let harness = covered_cluster().await;
            let before = world(&harness);
            let _ = invoke(&harness, function, raw).await;
            prop_assert_eq!(world(&harness), before);
            Ok(())
        })?;
    }
}
