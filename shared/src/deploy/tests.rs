use super::*;
use serde_json::json;

fn request() -> Value {
    json!({"cluster": "prod", "daemon": "cloudwatch-agent", "taskDefinition": "cloudwatch-agent:3", "capacityProviders": ["asg-general"]})
}

fn parse(value: Value) -> Result<String, DeployError> {
    let pins = parse_payload::<DeployRequest>(value)?.validate()?;
    Ok(pins.task.or(pins.daemon).unwrap_or_default())
}

#[test]
fn a_good_request_is_pinned() {
    assert_eq!(parse(request()).unwrap(), "cloudwatch-agent:3");
    let mut arn = request();
    arn["taskDefinition"] = json!("arn:aws:ecs:us-east-1:1:task-definition/cloudwatch-agent:3");
    assert_eq!(parse(arn).unwrap(), "cloudwatch-agent:3");
}

#[test]
fn a_request_may_name_a_daemon_task_definition_for_managed_instances() {
    let both = json!({"cluster": "prod", "daemon": "cloudwatch-agent", "taskDefinition": "cloudwatch-agent:3",
        "daemonTaskDefinition": "arn:aws:ecs:us-east-1:1:daemon-task-definition/cloudwatch-agent-daemon:2",
        "capacityProviders": ["asg-general", "mi-general"], "critical": false});
    let request = parse_payload::<DeployRequest>(both).unwrap();
    let pins = request.validate().unwrap();
    assert_eq!(
        (pins.task.as_deref(), pins.daemon.as_deref()),
        (
            Some("cloudwatch-agent:3"),
            Some("cloudwatch-agent-daemon:2")
        )
    );
    let bare_family = json!({"cluster": "prod", "daemon": "a", "daemonTaskDefinition": "cloudwatch-agent-daemon",
        "capacityProviders": ["mi-general"]});
    let error = parse(bare_family).unwrap_err().to_string();
    assert!(
        error.contains("`daemonTaskDefinition` must be pinned"),
        "{error}"
    );
    let neither = json!({"cluster": "prod", "daemon": "a", "capacityProviders": ["mi-general"]});
    let error = parse(neither).unwrap_err().to_string();
    assert!(
        error.contains("daemonTaskDefinition") && error.contains("taskDefinition"),
        "{error}"
    );
}

#[test]
fn bad_requests_name_the_problem() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "must be a JSON object"),
        (json!({"cluster": "prod"}), "missing field `daemon`"),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "colour": "red"}),
            "unknown field `colour`",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": "p"}),
            "`capacityProviders`",
        ),
        (
            json!({"cluster": "prod", "daemon": "bad#name", "taskDefinition": "x:1", "capacityProviders": ["p"]}),
            "`daemon` must be",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "cloudwatch-agent", "capacityProviders": ["p"]}),
            "pinned to a revision",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "cloudwatch-agent:latest", "capacityProviders": ["p"]}),
            "pinned to a revision",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:0", "capacityProviders": ["p"]}),
            "pinned to a revision",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": []}),
            "at least one",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p", "p"]}),
            "twice",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "startOrder": 5000}),
            "`startOrder`",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "warnShare": 3}),
            "`warnShare`",
        ),
        (
            json!({"cluster": "", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"]}),
            "`cluster` must be",
        ),
        (
            json!({"cluster": "prod", "daemon": "a", "taskDefinition": "x:1", "capacityProviders": ["p"], "restart": {"maxConsecutiveFailures": 0}}),
            "maxConsecutiveFailures",
        ),
    ];
    for (payload, expected) in cases {
        let error = parse(payload.clone()).unwrap_err().to_string();
        assert!(error.contains(expected), "{payload}: {error}");
    }
}

#[test]
fn a_family_outside_the_stacks_list_is_refused_with_the_fix() {
    let allowed = vec!["cloudwatch-agent".to_string(), "fluent-bit".to_string()];
    assert!(check_family(&allowed, "cloudwatch-agent:7").is_ok());
    assert!(check_family(
        &allowed,
        "arn:aws:ecs:us-east-1:111122223333:task-definition/fluent-bit:3"
    )
    .is_ok());
    assert!(
        check_family(&[], "anything:1").is_ok(),
        "no list: IAM alone decides"
    );
    let error = check_family(&allowed, "datadog-agent:2")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("datadog-agent") && error.contains("DaemonFamilies"),
        "{error}"
    );
}

pub(crate) fn spec_for_tests() -> DaemonSpec {
    DaemonSpec {
        launch: Default::default(),
        cluster: "prod".into(),
        daemon: "agent".into(),
        task_definition: "agent:1".into(),
        capacity_providers: vec!["asg".into()],
        start_order: 0,
        has_health_check: false,
        cpu: Some(256),
        memory_mib: Some(256),
        last_good_task_definition: None,
        previous_good_task_definition: None,
        active_rollout: None,
        restart: RestartPolicy::default(),
        rollout: RolloutConfig::default(),
        services: None,
        instance_filter: None,
        retired_at: None,
        cleaned_up_at: None,
        critical_drains: None,
        revision_health_checks: Default::default(),
        health_check_grace_seconds: None,
        updated_at: DateTime::<Utc>::MIN_UTC,
    }
}

pub(super) fn definition_for_tests() -> TaskDefinition {
    TaskDefinition {
        arn: "arn:aws:ecs:us-east-1:1:task-definition/agent:1".into(),
        family: "agent".into(),
        revision: 1,
        status: "ACTIVE".into(),
        execution_role_arn: Some("arn:aws:iam::1:role/exec".into()),
        task_role_arn: None,
        cpu: Some(256),
        memory_mib: Some(256),
        containers: Vec::new(),
        network_mode: None,
    }
}

pub(crate) fn instance_for_tests() -> crate::model::ContainerInstance {
    crate::model::ContainerInstance {
        arn: "arn:aws:ecs:us-east-1:1:container-instance/prod/i1".into(),
        ec2_instance_id: None,
        status: crate::model::InstanceStatus::Active,
        status_reason: None,
        agent_connected: true,
        capacity_provider: Some("asg".into()),
        registered: Default::default(),
        remaining: Default::default(),
        running_tasks: 0,
        pending_tasks: 0,
        attributes: Default::default(),
        version: 1,
        registered_at: None,
    }
}

#[test]
fn instance_checks_are_read_again_only_when_their_answer_could_change() {
    let declared = spec_for_tests();
    let same = definition_for_tests();
    let providers = vec!["asg".to_string()];
    assert!(
        validate::instance_checks_stand(&declared, &providers, &[], &same),
        "a new revision of the same size on the same providers"
    );
    let mut smaller = same.clone();
    smaller.cpu = Some(128);
    smaller.memory_mib = None;
    assert!(validate::instance_checks_stand(
        &declared,
        &providers,
        &[],
        &smaller
    ));
    for (cpu, memory) in [(Some(512), Some(256)), (Some(256), Some(512))] {
        let mut larger = same.clone();
        larger.cpu = cpu;
        larger.memory_mib = memory;
        assert!(
            !validate::instance_checks_stand(&declared, &providers, &[], &larger),
            "{cpu:?} {memory:?}: a larger revision is checked on every instance"
        );
    }
    let mut unreserved = declared.clone();
    unreserved.cpu = None;
    assert!(
        !validate::instance_checks_stand(&unreserved, &providers, &[], &same),
        "reserving CPU where the declared revision reserved none"
    );
    let more = vec!["asg".to_string(), "asg-large".to_string()];
    assert!(
        !validate::instance_checks_stand(&declared, &more, &[], &same),
        "another provider's instances were never checked"
    );
    assert!(
        !validate::instance_checks_stand(&declared, &providers, &providers, &same),
        "a move to DAEMON services checks the attribute budget"
    );
    let mut on_services = declared.clone();
    on_services.services = Some(crate::placement::services::ServicePlacement {
        capacity_providers: providers.clone(),
        a: "agent:1".into(),
        b: "agent:1".into(),
    });
    assert!(validate::instance_checks_stand(
        &on_services,
        &providers,
        &providers,
        &same
    ));
}
