//! The planner's tests, by rule; the fixtures are here.

use super::*;
use chrono::TimeZone;

const CLUSTER: &str = "prod";

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000, 0).single().unwrap()
}

fn instance(id: &str, provider: &str) -> ContainerInstance {
    ContainerInstance {
        arn: format!("arn:aws:ecs:us-east-1:1:container-instance/{CLUSTER}/{id}"),
        ec2_instance_id: None,
        status: InstanceStatus::Active,
        status_reason: None,
        agent_connected: true,
        capacity_provider: Some(provider.into()),
        registered: Default::default(),
        remaining: Default::default(),
        running_tasks: 0,
        pending_tasks: 0,
        attributes: Default::default(),
        version: 1,
        registered_at: None,
    }
}

fn ready(mut instance: ContainerInstance) -> ContainerInstance {
    instance
        .attributes
        .insert(READY_ATTRIBUTE.into(), Some("true".into()));
    instance
}

fn daemon(name: &str, order: i32) -> DaemonView {
    DaemonView {
        name: name.into(),
        launch: Default::default(),
        task_definition: format!("{name}:1"),
        capacity_providers: vec!["general".into()],
        start_order: order,
        has_health_check: false,
        revision_health_checks: Default::default(),
        unhealthy_grace: Duration::seconds(105),
        restart: RestartPolicy::default(),
        active_rollout: None,
        last_good: None,
        services: None,
        instance_filter: None,
        critical_drains: None,
    }
}

fn task(id: &str, daemon: &str, instance: &str, status: TaskStatus) -> Task {
    Task {
        arn: format!("arn:aws:ecs:us-east-1:1:task/{CLUSTER}/{id}"),
        task_definition_arn: format!("arn:aws:ecs:us-east-1:1:task-definition/{daemon}:1"),
        container_instance_arn: Some(format!(
            "arn:aws:ecs:us-east-1:1:container-instance/{CLUSTER}/{instance}"
        )),
        desired_status: if status.is_terminal() {
            TaskStatus::Stopped
        } else {
            TaskStatus::Running
        },
        last_status: status,
        health: HealthStatus::Unknown,
        group: Some(daemon_group(daemon)),
        started_by: Some("ecs-daemons".into()),
        stop_code: None,
        stopped_reason: None,
        version: 2,
        created_at: Some(now() - Duration::seconds(600)),
        started_at: Some(now() - Duration::seconds(590)),
        stopped_at: None,
        tags: Default::default(),
    }
}

fn slot(
    daemon: &str,
    instance: &str,
    state: SlotState,
    task: Option<&Task>,
    version: u64,
) -> Versioned<Slot> {
    Versioned {
        record: Slot {
            cluster: CLUSTER.into(),
            daemon: daemon.into(),
            instance_id: instance.into(),
            state,
            task_arn: task.map(|t| t.arn.clone()),
            task_definition: Some(format!("{daemon}:1")),
            claimed_by: None,
            task_version: task.map_or(0, |t| t.version),
            consecutive_failures: 0,
            last_stop_reason: None,
            retry_after: None,
            rollout: None,
            stopped_early: None,
            critical_drain_at: None,
            updated_at: now() - Duration::seconds(300),
        },
        version,
    }
}

fn observe(
    daemons: Vec<DaemonView>,
    instances: Vec<ContainerInstance>,
    tasks: Vec<Task>,
) -> Observation {
    Observation {
        cluster: CLUSTER.into(),
        now: now(),
        scope: Scope::Full,
        daemons,
        instances,
        tasks,
        slots: vec![],
        rollouts: vec![],
        specs: vec![],
        retired: vec![],
        drain_census: BTreeMap::new(),
        alarms: Default::default(),
    }
}

fn starts(plan: &Plan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start {
                instance_arn,
                task_definition,
                ..
            } => Some((
                resource_id(instance_arn).to_string(),
                task_definition.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn stops(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { task_arn, .. } => Some(resource_id(task_arn).to_string()),
            _ => None,
        })
        .collect()
}

fn has(plan: &Plan, wanted: fn(&Action) -> bool) -> bool {
    plan.actions.iter().any(wanted)
}

mod draining;
mod restarts;
mod rolling;
mod services;
mod steady;
