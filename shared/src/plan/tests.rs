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
        task_definition: format!("{name}:1"),
        capacity_providers: vec!["general".into()],
        start_order: order,
        has_health_check: false,
        restart: RestartPolicy::default(),
        active_rollout: None,
        last_good: None,
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
        drain_census: BTreeMap::new(),
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

#[test]
fn a_new_instance_gets_its_daemon_claimed_and_started() {
    let plan = plan(&observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![],
    ));
    assert_eq!(
        starts(&plan),
        vec![("i1".to_string(), "agent:1".to_string())]
    );
    match &plan.actions[0] {
        Action::Start {
            expected, claim, ..
        } => {
            assert_eq!(*expected, Expected::Absent);
            assert_eq!(claim.state, SlotState::Claimed);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !has(&plan, |a| matches!(a, Action::SetReady { .. })),
        "not ready before the daemon runs"
    );
    assert_eq!(plan.coverage["agent"].missing, 1);
}

#[test]
fn a_running_copy_is_adopted_and_the_instance_marked_ready() {
    let running = task("t1", "agent", "i1", TaskStatus::Running);
    let plan = plan(&observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![running],
    ));
    assert!(starts(&plan).is_empty());
    match &plan.actions[..] {
        [Action::RecordSlot {
            slot,
            expected: Expected::Absent,
        }, Action::SetReady { .. }] => {
            assert_eq!(slot.state, SlotState::Running);
            assert!(slot.task_arn.as_deref().unwrap().ends_with("/t1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.coverage["agent"].covered, 1);
}

#[test]
fn nothing_to_do_at_rest() {
    let running = task("t1", "agent", "i1", TaskStatus::Running);
    let mut observation = observe(
        vec![daemon("agent", 0)],
        vec![ready(instance("i1", "general"))],
        vec![running.clone()],
    );
    observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&running), 3)];
    assert_eq!(plan(&observation).actions, vec![]);
}

#[test]
fn daemons_start_in_start_order_and_readiness_waits_for_all() {
    let daemons = vec![daemon("agent", 0), daemon("logs", 10)];
    let first = plan(&observe(
        daemons.clone(),
        vec![instance("i1", "general")],
        vec![],
    ));
    assert_eq!(
        starts(&first),
        vec![("i1".to_string(), "agent:1".to_string())]
    );

    let pending = task("t1", "agent", "i1", TaskStatus::Pending);
    let waiting = plan(&observe(
        daemons.clone(),
        vec![instance("i1", "general")],
        vec![pending],
    ));
    assert!(starts(&waiting).is_empty(), "logs waits for agent to run");

    let agent = task("t1", "agent", "i1", TaskStatus::Running);
    let second = plan(&observe(
        daemons.clone(),
        vec![instance("i1", "general")],
        vec![agent.clone()],
    ));
    assert_eq!(
        starts(&second),
        vec![("i1".to_string(), "logs:1".to_string())]
    );
    assert!(!has(&second, |a| matches!(a, Action::SetReady { .. })));

    let logs = task("t2", "logs", "i1", TaskStatus::Running);
    let done = plan(&observe(
        daemons,
        vec![instance("i1", "general")],
        vec![agent, logs],
    ));
    assert!(has(&done, |a| matches!(a, Action::SetReady { .. })));
}

#[test]
fn a_health_checked_daemon_must_be_healthy_for_readiness() {
    let checked = DaemonView {
        has_health_check: true,
        ..daemon("agent", 0)
    };
    let mut running = task("t1", "agent", "i1", TaskStatus::Running);
    let unknown = plan(&observe(
        vec![checked.clone()],
        vec![instance("i1", "general")],
        vec![running.clone()],
    ));
    assert!(!has(&unknown, |a| matches!(a, Action::SetReady { .. })));
    assert_eq!(unknown.coverage["agent"].starting, 1);
    running.health = HealthStatus::Healthy;
    let healthy = plan(&observe(
        vec![checked],
        vec![instance("i1", "general")],
        vec![running],
    ));
    assert!(has(&healthy, |a| matches!(a, Action::SetReady { .. })));
}

#[test]
fn extra_copies_are_stopped_keeping_the_healthiest_then_newest() {
    let mut old_healthy = task("old", "agent", "i1", TaskStatus::Running);
    old_healthy.health = HealthStatus::Healthy;
    let mut newer = task("new", "agent", "i1", TaskStatus::Running);
    newer.started_at = Some(now());
    let pending = task("pending", "agent", "i1", TaskStatus::Pending);
    let plan = plan(&observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![newer.clone(), pending, old_healthy],
    ));
    let mut stopped = stops(&plan);
    stopped.sort();
    assert_eq!(stopped, vec!["new", "pending"]);
    assert_eq!(plan.coverage["agent"].duplicates, 2);

    let mut other = task("other", "agent", "i1", TaskStatus::Running);
    other.started_at = Some(now() - Duration::seconds(1000));
    let newest_wins = super::plan(&observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![other, newer],
    ));
    assert_eq!(stops(&newest_wins), vec!["other"]);
}

#[test]
fn copies_on_instances_no_longer_targeted_are_stopped() {
    let running = task("t1", "agent", "i1", TaskStatus::Running);
    let mut observation = observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "gpu")],
        vec![running.clone()],
    );
    observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&running), 2)];
    let plan = plan(&observation);
    assert_eq!(stops(&plan), vec!["t1"]);
    assert!(starts(&plan).is_empty());
    assert!(has(
        &plan,
        |a| matches!(a, Action::RecordSlot { slot, .. } if slot.state == SlotState::Stopping)
    ));
    match plan
        .actions
        .iter()
        .find(|a| matches!(a, Action::Stop { .. }))
    {
        Some(Action::Stop { reason, .. }) => {
            assert!(reason.contains("gpu is not targeted"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn draining_keeps_daemons_while_apps_run_then_stops_them_in_reverse_order() {
    let daemons = vec![daemon("agent", 0), daemon("logs", 10)];
    let agent = task("t1", "agent", "i1", TaskStatus::Running);
    let logs = task("t2", "logs", "i1", TaskStatus::Running);
    let mut draining = ready(instance("i1", "general"));
    draining.status = InstanceStatus::Draining;
    draining.running_tasks = 3; // two daemons + one application task

    let with_app = plan(&observe(
        daemons.clone(),
        vec![draining.clone()],
        vec![agent.clone(), logs.clone()],
    ));
    assert!(
        matches!(with_app.actions[..], [Action::ClearReady { .. }]),
        "{:?}",
        with_app.actions
    );
    assert!(with_app.coverage["agent"].trouble[0]
        .reason
        .contains("1 other task"));

    // The counts say only daemons are left: that takes a fresh read before any stop.
    draining.running_tasks = 2;
    draining.attributes.clear();
    let counted_empty = plan(&observe(
        daemons.clone(),
        vec![draining.clone()],
        vec![agent.clone(), logs.clone()],
    ));
    assert!(stops(&counted_empty).is_empty(), "no stop on counts alone");
    assert_eq!(counted_empty.drain_checks, vec![draining.arn.clone()]);
    // The fresh read finds the application still in its stop timeout: wait.
    let fresh = |instance: &ContainerInstance, tasks: Vec<Task>, others: usize| {
        let mut observation = observe(daemons.clone(), vec![instance.clone()], tasks);
        observation.drain_census.insert("i1".into(), others);
        plan(&observation)
    };
    let app_stopping = fresh(&draining, vec![agent.clone(), logs.clone()], 1);
    assert!(stops(&app_stopping).is_empty());
    assert!(app_stopping.drain_checks.is_empty());
    let apps_gone = fresh(&draining, vec![agent.clone(), logs.clone()], 0);
    assert_eq!(
        stops(&apps_gone),
        vec!["t2"],
        "the later-starting daemon stops first"
    );

    let mut logs_stopping = logs;
    logs_stopping.desired_status = TaskStatus::Stopped;
    let still_stopping = fresh(&draining, vec![agent.clone(), logs_stopping.clone()], 0);
    assert!(
        stops(&still_stopping).is_empty(),
        "agent waits until logs has really stopped"
    );

    logs_stopping.last_status = TaskStatus::Stopped;
    draining.running_tasks = 1;
    let last = fresh(&draining, vec![agent, logs_stopping], 0);
    assert_eq!(stops(&last), vec!["t1"]);
    assert!(
        starts(&last).is_empty(),
        "nothing starts on a draining instance"
    );
}

#[test]
fn an_unexpected_stop_restarts_with_backoff_then_crash_loops() {
    let policy = RestartPolicy {
        max_consecutive_failures: 3,
        ..RestartPolicy::default()
    };
    let agent = DaemonView {
        restart: policy,
        ..daemon("agent", 0)
    };
    let mut dead = task("t1", "agent", "i1", TaskStatus::Stopped);
    dead.stop_code = Some("TaskFailedToStart".into());
    dead.stopped_reason = Some("ResourceInitializationError: AccessDeniedException".into());
    let mut observation = observe(
        vec![agent.clone()],
        vec![ready(instance("i1", "general"))],
        vec![dead.clone()],
    );
    observation.slots = vec![slot("agent", "i1", SlotState::Running, Some(&dead), 4)];

    // First failure: immediate restart, readiness removed meanwhile.
    let first = plan(&observation);
    assert!(matches!(first.actions[0], Action::ClearReady { .. }));
    match &first.actions[1] {
        Action::Start {
            claim, expected, ..
        } => {
            assert_eq!(*expected, Expected::Version(4));
            assert_eq!(claim.consecutive_failures, 1);
            assert_eq!(
                claim.last_stop_reason.as_deref(),
                Some("TaskFailedToStart: ResourceInitializationError: AccessDeniedException")
            );
        }
        other => panic!("{other:?}"),
    }

    // Second failure: wait 10 s.
    observation.slots[0].record.consecutive_failures = 1;
    let second = plan(&observation);
    assert!(starts(&second).is_empty());
    match second
        .actions
        .iter()
        .find(|a| matches!(a, Action::RecordSlot { .. }))
    {
        Some(Action::RecordSlot { slot, .. }) => {
            assert_eq!(slot.state, SlotState::Stopped);
            assert_eq!(slot.retry_after, Some(now() + Duration::seconds(10)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(second.coverage["agent"].trouble[0].state, "BACKING_OFF");

    // The backoff passed: restart.
    observation.slots[0].record.state = SlotState::Stopped;
    observation.slots[0].record.consecutive_failures = 2;
    observation.slots[0].record.retry_after = Some(now() - Duration::seconds(1));
    assert_eq!(starts(&plan(&observation)).len(), 1);

    // Third failure in a row: crash-looping, reported, not restarted.
    observation.slots[0].record.state = SlotState::Running;
    let third = plan(&observation);
    assert!(starts(&third).is_empty());
    assert!(has(
        &third,
        |a| matches!(a, Action::RecordSlot { slot, .. } if slot.state == SlotState::CrashLooping)
    ));
    assert_eq!(third.coverage["agent"].crash_looping, 1);
    assert!(third.coverage["agent"].trouble[0]
        .reason
        .contains("AccessDeniedException"));

    observation.slots[0].record.state = SlotState::CrashLooping;
    observation.slots[0].record.consecutive_failures = 3;
    assert!(starts(&plan(&observation)).is_empty(), "still not hammered");

    // A new revision gets a fresh start.
    observation.daemons[0].task_definition = "agent:2".into();
    let fixed = plan(&observation);
    assert_eq!(
        starts(&fixed),
        vec![("i1".to_string(), "agent:2".to_string())]
    );
}

#[test]
fn a_claim_in_flight_is_left_alone_until_its_grace_runs_out() {
    let mut observation = observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![],
    );
    let mut claimed = slot("agent", "i1", SlotState::Claimed, None, 1);
    claimed.record.updated_at = now() - Duration::seconds(5);
    observation.slots = vec![claimed];
    let fresh = plan(&observation);
    assert!(fresh.actions.is_empty(), "{:?}", fresh.actions);
    assert_eq!(fresh.coverage["agent"].starting, 1);

    observation.slots[0].record.updated_at = now() - Duration::seconds(CLAIM_GRACE_SECONDS + 1);
    let stale = plan(&observation);
    assert!(matches!(
        &stale.actions[..],
        [Action::Start {
            expected: Expected::Version(1),
            ..
        }]
    ));
}

#[test]
fn a_full_reconcile_cleans_up_gone_instances_and_undeclared_daemons() {
    let orphan = task("t9", "retired", "i1", TaskStatus::Running);
    let mut observation = observe(
        vec![daemon("agent", 0)],
        vec![instance("i1", "general")],
        vec![orphan],
    );
    observation.slots = vec![slot("agent", "i-gone", SlotState::Running, None, 7)];
    let full = plan(&observation);
    assert_eq!(stops(&full), vec!["t9"]);
    assert!(has(&full, |a| matches!(
        a,
        Action::DeleteSlot { version: 7, .. }
    )));

    observation.scope = Scope::Instances;
    let partial = plan(&observation);
    assert!(
        stops(&partial).is_empty(),
        "an event's partial view never stops what it cannot see"
    );
    assert!(!has(&partial, |a| matches!(a, Action::DeleteSlot { .. })));
}

#[test]
fn disconnected_agents_and_foreign_tasks_are_left_alone() {
    let mut offline = instance("i1", "general");
    offline.agent_connected = false;
    let mut foreign = task("app", "agent", "i2", TaskStatus::Running);
    foreign.group = Some("service:checkout".into());
    let plan = plan(&observe(
        vec![daemon("agent", 0)],
        vec![offline],
        vec![foreign],
    ));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
}

#[test]
fn actions_are_ordered_and_planning_is_deterministic() {
    let mut draining = ready(instance("i2", "general"));
    draining.status = InstanceStatus::Draining;
    let observation = observe(
        vec![daemon("agent", 0)],
        vec![
            instance("i1", "general"),
            draining,
            instance("i3", "general"),
        ],
        vec![task("t3", "agent", "i3", TaskStatus::Running)],
    );
    let first = plan(&observation);
    assert_eq!(first, plan(&observation));
    let ranks: Vec<u8> = first.actions.iter().map(Action::rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert!(matches!(
        first.actions.first(),
        Some(Action::ClearReady { .. })
    ));
    assert!(matches!(
        first.actions.last(),
        Some(Action::SetReady { .. })
    ));
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let policy = RestartPolicy::default();
    let waits: Vec<i64> = (1..=8).map(|n| policy.backoff(n).num_seconds()).collect();
    assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(policy.backoff(200).num_seconds(), 300);
}

/// A copy still PENDING is, read literally, in both of ECS's counts: taken out once, it would
/// pass for another task and hold the drain up with two copies on the instance (campaign seeds
/// 706495 and 709139, an instance drained mid-rollout while its new copy was starting).
#[test]
fn a_pending_copy_on_a_draining_instance_is_not_taken_for_another_task() {
    let daemons = vec![daemon("agent", 0)];
    let old = task("t1", "agent", "i1", TaskStatus::Running);
    let new = task("t2", "agent", "i1", TaskStatus::Pending);
    let mut draining = instance("i1", "general");
    draining.status = InstanceStatus::Draining;
    // Both meant to run (runningTasksCount 2), one PENDING (pendingTasksCount 1).
    draining.running_tasks = 2;
    draining.pending_tasks = 1;
    let planned = plan(&observe(daemons, vec![draining.clone()], vec![old, new]));
    assert_eq!(
        planned.drain_checks,
        vec![draining.arn],
        "only our copies are counted: read fresh, then stop"
    );
}
