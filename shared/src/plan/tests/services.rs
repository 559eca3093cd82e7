//! The services placement: a letter in the slot attribute that no copy answers yet may still
//! bring one, so nothing is requested beside it until its withdrawal is seen.

use super::*;
use crate::placement::services::{service_name, slot_attribute, Letter, ServicePlacement};
use crate::rollout::{Rollout, RolloutConfig, RolloutKind};

const PROVIDER: &str = "scaled";

/// The agent on services: A runs `agent:1`, B `agent:2`; `target` in force.
fn on_services(target: &str) -> DaemonView {
    DaemonView {
        task_definition: target.into(),
        capacity_providers: vec![PROVIDER.into()],
        services: Some(ServicePlacement {
            capacity_providers: vec![PROVIDER.into()],
            a: "agent:1".into(),
            b: "agent:2".into(),
        }),
        ..daemon("agent", 0)
    }
}

fn with_letters(mut instance: ContainerInstance, letters: &str) -> ContainerInstance {
    instance
        .attributes
        .insert(slot_attribute("agent"), Some(letters.into()));
    instance
}

fn withdrawn(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::WithdrawRequest { letter, .. } => Some(format!("{letter:?}")),
            _ => None,
        })
        .collect()
}

#[test]
fn no_copy_is_requested_while_another_letter_may_still_bring_one() {
    // The copy of A (agent:1) stopped; agent:2 is in force. A's scheduler may restart its
    // copy before the withdrawal of `a` lands: request B only once `a` is seen gone.
    let instance = ready(with_letters(instance("i-1", PROVIDER), "a"));
    let mut stopped = task("t-old", "agent", "i-1", TaskStatus::Stopped);
    stopped.group = Some(format!("service:{}", service_name("agent", Letter::A)));
    let mut observation = observe(vec![on_services("agent:2")], vec![instance], vec![stopped]);
    let mut old = slot(
        "agent",
        "i-1",
        SlotState::Running,
        observation.tasks.first(),
        3,
    );
    old.record.task_definition = Some("agent:1".into());
    observation.slots = vec![old];
    let waiting = plan(&observation);
    assert!(starts(&waiting).is_empty(), "{:?}", waiting.actions);
    assert_eq!(withdrawn(&waiting), vec!["A"]);
    assert_eq!(
        waiting.wake_at,
        Some(now() + Duration::seconds(ROLLOUT_POLL_SECONDS))
    );

    // The withdrawal seen, no copy came: B is asked now.
    observation.instances[0]
        .attributes
        .remove(&slot_attribute("agent"));
    let asked = plan(&observation);
    assert_eq!(starts(&asked), vec![("i-1".into(), "agent:2".into())]);
}

#[test]
fn a_rollout_waits_beside_a_superseded_request_and_counts_it_in_flight() {
    // A rollback to agent:1 (B here: A runs agent:2) while the rollout it superseded still
    // has `a` requested on an instance whose standalone copy runs: that request may become a
    // copy, so the instance takes a maxParallel place and gets no third copy.
    let daemon = DaemonView {
        active_rollout: Some("r2".into()),
        services: Some(ServicePlacement {
            capacity_providers: vec![PROVIDER.into()],
            a: "agent:2".into(),
            b: "agent:1".into(),
        }),
        ..on_services("agent:1")
    };
    let instance = ready(with_letters(instance("i-1", PROVIDER), "a"));
    let standalone = task("t-standalone", "agent", "i-1", TaskStatus::Running);
    let mut observation = observe(vec![daemon], vec![instance], vec![standalone]);
    observation.slots = vec![slot(
        "agent",
        "i-1",
        SlotState::Running,
        observation.tasks.first(),
        3,
    )];
    observation.rollouts = vec![Versioned {
        record: Rollout::started(
            CLUSTER,
            "agent",
            "r2".into(),
            RolloutKind::Rollback,
            Some("agent:2".into()),
            "agent:1".into(),
            RolloutConfig::default(),
            now() - Duration::seconds(5),
        ),
        version: 1,
    }];
    let waiting = plan(&observation);
    assert!(starts(&waiting).is_empty(), "{:?}", waiting.actions);
    assert_eq!(withdrawn(&waiting), vec!["A"]);
    assert_eq!(waiting.rollouts["agent"].lingering, 1);

    observation.instances[0]
        .attributes
        .remove(&slot_attribute("agent"));
    let surged = plan(&observation);
    assert_eq!(starts(&surged), vec![("i-1".into(), "agent:1".into())]);
    assert_eq!(surged.rollouts["agent"].lingering, 0);
}

/// The slots the plan writes: records, and the claims of its requests.
fn recorded(plan: &Plan) -> Vec<&Slot> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::RecordSlot { slot, .. } | Action::Start { claim: slot, .. } => Some(slot),
            _ => None,
        })
        .collect()
}

#[test]
fn a_requested_copy_that_died_before_it_was_recorded_fails_at_once() {
    // B (agent:2) was asked 30 s ago; its service started the copy and it died in seconds (a
    // bad revision) before any reconcile recorded its ARN: a failure now, not a wait for the
    // request's grace (a rollout to it would never trip its breaker).
    let instance = ready(with_letters(instance("i-1", PROVIDER), "b"));
    let mut died = task("t-new", "agent", "i-1", TaskStatus::Stopped);
    died.group = Some(format!("service:{}", service_name("agent", Letter::B)));
    died.task_definition_arn = "arn:aws:ecs:us-east-1:1:task-definition/agent:2".into();
    died.created_at = Some(now() - Duration::seconds(20));
    died.stop_code = Some("EssentialContainerExited".into());
    died.stopped_reason = Some("Essential container in task exited".into());
    let mut observation = observe(vec![on_services("agent:2")], vec![instance], vec![died]);
    let mut requested = slot("agent", "i-1", SlotState::Starting, None, 3);
    requested.record.task_definition = Some("agent:2".into());
    requested.record.updated_at = now() - Duration::seconds(30);
    observation.slots = vec![requested];
    let failed = plan(&observation);
    let records = recorded(&failed);
    assert_eq!(records.len(), 1, "{:?}", failed.actions);
    assert_eq!(records[0].consecutive_failures, 1);
    assert!(records[0]
        .last_stop_reason
        .as_deref()
        .is_some_and(|r| r.contains("EssentialContainerExited")));
    // The first failure restarts at once (the backoff grows from the second).
    assert_eq!(starts(&failed), vec![("i-1".into(), "agent:2".into())]);

    // A copy that stopped before this request was made is not its answer: the request waits.
    observation.tasks[0].created_at = Some(now() - Duration::seconds(60));
    let waiting = plan(&observation);
    assert!(recorded(&waiting).is_empty(), "{:?}", waiting.actions);
    assert!(starts(&waiting).is_empty(), "{:?}", waiting.actions);
}

#[test]
fn a_standalone_copy_left_on_a_services_provider_is_reported() {
    // A failed rollout (or a failed rollback) left the instance's standalone copy: it blocks
    // managed scaling's scale-in, so status says so and what replaces it.
    let instance = ready(instance("i-1", PROVIDER));
    let standalone = task("t-standalone", "agent", "i-1", TaskStatus::Running);
    let mut observation = observe(
        vec![on_services("agent:1")],
        vec![instance],
        vec![standalone],
    );
    let mut kept = slot(
        "agent",
        "i-1",
        SlotState::Running,
        observation.tasks.first(),
        3,
    );
    kept.record.task_definition = Some("agent:1".into());
    observation.slots = vec![kept];
    let planned = plan(&observation);
    assert!(stops(&planned).is_empty(), "{:?}", planned.actions);
    let trouble = &planned.coverage["agent"].trouble;
    assert_eq!(trouble.len(), 1, "{trouble:?}");
    assert_eq!(trouble[0].state, "MISPLACED");
    assert!(trouble[0].reason.contains("managed scaling"), "{trouble:?}");

    // A copy its service runs is where it belongs: nothing to report.
    observation.tasks[0].group = Some(format!("service:{}", service_name("agent", Letter::A)));
    let planned = plan(&observation);
    assert!(planned.coverage["agent"].trouble.is_empty());
}
