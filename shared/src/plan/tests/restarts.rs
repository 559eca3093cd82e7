//! Restarts: backoff, crash loops, claims in flight.

use super::*;

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
fn backoff_doubles_up_to_its_cap() {
    let policy = RestartPolicy::default();
    let waits: Vec<i64> = (1..=8).map(|n| policy.backoff(n).num_seconds()).collect();
    assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(policy.backoff(200).num_seconds(), 300);
}
