//! Drain-last: daemons stop after the applications, in reverse start order.

use super::*;

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
