//! Steady coverage: exactly one copy, start order, readiness, clean-ups.

use super::*;

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
    // Still within the unhealthy grace (105 s): on its way, not ready.
    running.started_at = Some(now() - Duration::seconds(30));
    let unknown = plan(&observe(
        vec![checked.clone()],
        vec![instance("i1", "general")],
        vec![running.clone()],
    ));
    assert!(!has(&unknown, |a| matches!(a, Action::SetReady { .. })));
    assert_eq!(unknown.coverage["agent"].starting, 1);
    assert!(!has(&unknown, |a| matches!(a, Action::Stop { .. })));
    // UNHEALTHY within the grace: missing, not starting, and kept for now.
    running.health = HealthStatus::Unhealthy;
    let unhealthy = plan(&observe(
        vec![checked.clone()],
        vec![instance("i1", "general")],
        vec![running.clone()],
    ));
    assert_eq!(
        (
            unhealthy.coverage["agent"].missing,
            unhealthy.coverage["agent"].starting
        ),
        (1, 0)
    );
    assert!(!has(&unhealthy, |a| matches!(a, Action::Stop { .. })));
    assert_eq!(unhealthy.wake_at, Some(now() + Duration::seconds(75)));
    // Past the grace, never turned healthy: stopped like a dead copy.
    running.health = HealthStatus::Unknown;
    running.started_at = Some(now() - Duration::seconds(590));
    let stale = plan(&observe(
        vec![checked.clone()],
        vec![instance("i1", "general")],
        vec![running.clone()],
    ));
    assert!(has(&stale, |a| matches!(a, Action::Stop { reason, .. }
        if reason.contains("not HEALTHY 590 s after it started (unhealthyGraceSeconds 105)"))));
    assert_eq!(stale.coverage["agent"].missing, 1);
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
