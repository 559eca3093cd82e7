use super::batches::InstanceWork;
use super::instances::tasks_to_read;
use super::*;
use crate::model::Resources;

const INSTANCE: &str = "arn:aws:ecs:us-east-1:1:container-instance/prod/i1";

fn instance() -> ContainerInstance {
    ContainerInstance {
        arn: INSTANCE.into(),
        ec2_instance_id: None,
        status: InstanceStatus::Active,
        status_reason: None,
        agent_connected: true,
        capacity_provider: Some("general".into()),
        registered: Resources {
            cpu: 2048,
            memory_mib: 4096,
        },
        remaining: Resources {
            cpu: 1024,
            memory_mib: 2048,
        },
        running_tasks: 2,
        pending_tasks: 0,
        attributes: BTreeMap::new(),
        version: 3,
        registered_at: None,
    }
}

fn slot(daemon: &str, task: Option<&str>, state: SlotState) -> Versioned<Slot> {
    Versioned {
        record: Slot {
            cluster: "prod".into(),
            daemon: daemon.into(),
            instance_id: "i1".into(),
            state,
            task_arn: task.map(str::to_string),
            task_definition: Some(format!("{daemon}:1")),
            claimed_by: None,
            task_version: 2,
            consecutive_failures: 0,
            last_stop_reason: None,
            retry_after: None,
            rollout: None,
            stopped_early: None,
            critical_drain_at: None,
            updated_at: Utc::now(),
        },
        version: 1,
    }
}

fn event_task(arn: &str, daemon: &str, status: TaskStatus, version: i64) -> Task {
    let mut task = task_from_slot(
        &slot(daemon, Some(arn), SlotState::Running).record,
        INSTANCE,
        STARTED_BY,
        None,
    )
    .expect("a running slot has a task");
    task.last_status = status;
    task.version = version;
    task
}

/// The agent as DAEMON services on `general`: `target` declared, A and B running `a`, `b`.
fn on_services(target: &str, a: &str, b: &str) -> DaemonView {
    DaemonView {
        name: "agent".into(),
        launch: Default::default(),
        task_definition: target.into(),
        capacity_providers: vec!["general".into()],
        start_order: 0,
        has_health_check: false,
        revision_health_checks: Default::default(),
        unhealthy_grace: Duration::seconds(105),
        restart: RestartPolicy::default(),
        active_rollout: None,
        last_good: None,
        services: Some(crate::placement::services::ServicePlacement {
            capacity_providers: vec!["general".into()],
            a: a.into(),
            b: b.into(),
        }),
        instance_filter: None,
        critical_drains: None,
    }
}

#[test]
fn a_stop_is_believed_and_the_other_daemons_come_from_their_slots() {
    let agent = slot("agent", Some("t-agent"), SlotState::Running);
    let logs = slot("logs", Some("t-logs"), SlotState::Running);
    let stopped = event_task("t-agent", "agent", TaskStatus::Stopped, 5);
    let reads = tasks_to_read(&instance(), &[&agent, &logs], &[stopped], STARTED_BY, &[]);
    assert_eq!(reads.trusted.len(), 1);
    assert!(reads.to_describe.is_empty(), "{reads:?}");
    assert_eq!(reads.from_slots.len(), 1);
    assert_eq!(reads.from_slots[0].arn, "t-logs");
    assert!(!reads.claim_check);
}

#[test]
fn news_of_an_unknown_or_older_task_is_described_not_believed() {
    let agent = slot("agent", Some("t-agent"), SlotState::Running);
    let stranger = event_task("t-other", "agent", TaskStatus::Running, 9);
    let older = event_task("t-agent", "agent", TaskStatus::Running, 1);
    let reads = tasks_to_read(&instance(), &[&agent], &[stranger, older], STARTED_BY, &[]);
    assert!(reads.trusted.is_empty(), "{reads:?}");
    assert_eq!(
        reads.to_describe,
        vec!["t-other", "t-agent"],
        "each task once"
    );
    let newer = event_task("t-agent", "agent", TaskStatus::Running, 3);
    let reads = tasks_to_read(&instance(), &[&agent], &[newer], STARTED_BY, &[]);
    assert_eq!(reads.trusted.len(), 1);
    assert!(reads.to_describe.is_empty(), "{reads:?}");
}

#[test]
fn a_task_read_twice_is_one_copy_and_the_newest_word_wins() {
    let running = event_task("t-agent", "agent", TaskStatus::Running, 2);
    let stopped = event_task("t-agent", "agent", TaskStatus::Stopped, 3);
    let other = event_task("t-logs", "logs", TaskStatus::Running, 1);
    let tasks = newest_per_task(vec![running.clone(), other.clone(), stopped, running]);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let agent = tasks.iter().find(|t| t.arn == "t-agent").unwrap();
    assert_eq!(agent.last_status, TaskStatus::Stopped);
    assert_eq!(agent.version, 3);
}

#[test]
fn a_claim_without_a_task_is_looked_for() {
    let claimed = slot("agent", None, SlotState::Claimed);
    let reads = tasks_to_read(&instance(), &[&claimed], &[], STARTED_BY, &[]);
    assert!(reads.claim_check);
}

#[test]
fn a_stopped_copy_a_daemon_service_may_restart_is_looked_for() {
    let daemons = [on_services("agent:1", "agent:1", "agent:1")];
    let running = slot("agent", Some("t-agent"), SlotState::Running);
    let stopped = event_task("t-agent", "agent", TaskStatus::Stopped, 5);
    let reads = tasks_to_read(
        &instance(),
        &[&running],
        std::slice::from_ref(&stopped),
        STARTED_BY,
        &daemons,
    );
    assert!(reads.claim_check, "its service restarts it without news");
    let gone = slot("agent", Some("t-agent"), SlotState::Stopped);
    let reads = tasks_to_read(&instance(), &[&gone], &[], STARTED_BY, &daemons);
    assert!(reads.claim_check);
    // A standalone copy is started only by ecs-daemons: its stop needs no look.
    let reads = tasks_to_read(&instance(), &[&running], &[stopped], STARTED_BY, &[]);
    assert!(!reads.claim_check);
}

#[test]
fn within_a_batch_the_newest_word_about_a_task_wins() {
    let mut work = InstanceWork {
        instance_arn: INSTANCE.into(),
        only_if_draining: true,
        ..InstanceWork::default()
    };
    let running = event_task("t", "agent", TaskStatus::Running, 4);
    let stopped = event_task("t", "agent", TaskStatus::Stopped, 4);
    let older = event_task("t", "agent", TaskStatus::Running, 2);
    work.add(0, "e0".into(), Some(running), false);
    work.add(1, "e1".into(), Some(stopped), false);
    work.add(2, "e2".into(), Some(older), false);
    work.add(3, "e3".into(), None, true);
    assert_eq!(work.hints.len(), 1);
    assert_eq!(work.hints[0].last_status, TaskStatus::Stopped);
    assert!(
        !work.only_if_draining,
        "a daemon task event asks for a full look"
    );
    assert_eq!(work.positions, vec![0, 1, 2, 3]);
}

#[test]
fn a_request_of_a_revision_replaced_since_is_looked_for() {
    // A rollback replaced agent:2 by agent:1 while agent:2's copy was requested: its service
    // may have started it before the letter went; a request beside it would make two copies.
    let daemons = [on_services("agent:1", "agent:2", "agent:1")];
    let mut requested = slot("agent", None, SlotState::Starting);
    requested.record.task_definition = Some("agent:2".into());
    let reads = tasks_to_read(&instance(), &[&requested], &[], STARTED_BY, &daemons);
    assert!(reads.claim_check);
    // A request of the revision in force shows in its own event: no look.
    requested.record.task_definition = Some("agent:1".into());
    let reads = tasks_to_read(&instance(), &[&requested], &[], STARTED_BY, &daemons);
    assert!(!reads.claim_check);
}

#[test]
fn the_plans_moment_is_when_the_tasks_describes_begin() {
    let start = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    assert_eq!(
        super::observe::described_from(start, Some(10.0), Some(13.25)),
        start + chrono::Duration::milliseconds(3250),
        "the 3.25 s the lists and the instances' describes took"
    );
    for (began, begin) in [(None, Some(3.0)), (Some(3.0), None), (Some(5.0), Some(4.0))] {
        assert_eq!(
            super::observe::described_from(start, began, begin),
            start,
            "no clock, or one that went back: the moment the reconcile began"
        );
    }
}
