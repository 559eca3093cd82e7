//! The per-instance rollout step, as a table.

use super::super::rolling::{next_step, CopySeen, StepInput, Which};
use super::*;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds)
}

fn step(kind: RolloutStep, since: i64, new_task: Option<&str>) -> SlotRollout {
    SlotRollout {
        rollout_id: "r1".into(),
        step: kind,
        since: at(since),
        new_task_arn: new_task.map(str::to_string),
        failures: 0,
        last_failure: None,
        gap: false,
    }
}

fn copy(arn: &'static str, up: bool, started: i64) -> Option<CopySeen<'static>> {
    Some(CopySeen {
        arn,
        up,
        started_at: Some(at(started)),
        stopping: false,
    })
}

fn input(
    step: Option<SlotRollout>,
    old: Option<CopySeen<'static>>,
    new: Option<CopySeen<'static>>,
    now: i64,
) -> StepInput<'static> {
    StepInput {
        rollout_id: "r1",
        target: "agent:2",
        step,
        old,
        new,
        has_health_check: false,
        min_healthy: Duration::seconds(30),
        progress_deadline: Duration::seconds(600),
        now: at(now),
        new_copy_gone: None,
        claim_grace: Duration::seconds(CLAIM_GRACE_SECONDS),
        requested_from_service: false,
        requested_copy_stopped: None,
        paused: false,
    }
}

fn paused(mut given: StepInput<'static>) -> StepInput<'static> {
    given.paused = true;
    given
}

use RolloutStep::*;

/// Each row: the step and copies seen at a time → the step after, the copy stopped, the
/// copy kept in the slot, the wake-up, and whether the instance joins the next batch.
#[test]
fn each_instance_step_follows_the_table() {
    struct Row {
        name: &'static str,
        given: StepInput<'static>,
        next: Option<RolloutStep>,
        stop: Option<Which>,
        keeper: Option<Which>,
        wake_at: Option<i64>,
        candidate: Option<bool>,
    }
    let rows = [
        Row {
            name: "not begun: a candidate for the next batch",
            given: input(None, copy("old", true, 0), None, 100),
            next: None,
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: Some(false),
        },
        Row {
            name: "surged copy still starting: surging, the old copy kept",
            given: input(
                Some(step(Surging, 90, Some("new"))),
                copy("old", true, 0),
                copy("new", false, 95),
                100,
            ),
            next: Some(Surging),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: Some(690),
            candidate: None,
        },
        Row {
            name: "surged copy not up by the progress deadline: failed, the new copy stopped",
            given: input(
                Some(step(Surging, 90, Some("new"))),
                copy("old", true, 0),
                copy("new", false, 95),
                690,
            ),
            next: Some(Failed),
            stop: Some(Which::New),
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "the only copy, of the new revision, not up by the deadline: failed, kept",
            given: input(
                Some(step(Surging, 90, None)),
                None,
                copy("new", false, 95),
                700,
            ),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::New),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "surged copy up for less than minHealthySeconds: settling, wake when it is",
            given: input(
                Some(step(Surging, 90, Some("new"))),
                copy("old", true, 0),
                copy("new", true, 95),
                100,
            ),
            next: Some(Settling),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: Some(125),
            candidate: None,
        },
        Row {
            name: "settled for minHealthySeconds: done, the old copy stopped",
            given: input(
                Some(step(Settling, 95, Some("new"))),
                copy("old", true, 0),
                copy("new", true, 95),
                125,
            ),
            next: Some(Done),
            stop: Some(Which::Old),
            keeper: Some(Which::New),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "settled but the rollout is paused: both copies kept, still settling",
            given: paused(input(
                Some(step(Settling, 95, Some("new"))),
                copy("old", true, 0),
                copy("new", true, 95),
                125,
            )),
            next: Some(Settling),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "paused: a surged copy not up by the deadline still fails and is stopped",
            given: paused(input(
                Some(step(Surging, 90, Some("new"))),
                copy("old", true, 0),
                copy("new", false, 95),
                690,
            )),
            next: Some(Failed),
            stop: Some(Which::New),
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "done but the old copy's stop did not go through: stop it again",
            given: input(
                Some(step(Done, 125, None)),
                copy("old", true, 0),
                copy("new", true, 95),
                130,
            ),
            next: Some(Done),
            stop: Some(Which::Old),
            keeper: Some(Which::New),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "surged copy gone before healthy: failed",
            given: input(
                Some(step(Surging, 90, Some("new"))),
                copy("old", true, 0),
                None,
                100,
            ),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "a claim that never showed a task: back in the queue after the grace",
            given: input(
                Some(step(Surging, 0, None)),
                copy("old", true, 0),
                None,
                CLAIM_GRACE_SECONDS,
            ),
            next: None,
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: Some(false),
        },
        Row {
            name: "a claim within its grace: wait",
            given: input(Some(step(Surging, 0, None)), copy("old", true, 0), None, 10),
            next: Some(Surging),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: Some(CLAIM_GRACE_SECONDS),
            candidate: None,
        },
        Row {
            name: "failed, new copy still there: stop the new copy",
            given: input(
                Some(step(Failed, 100, Some("new"))),
                copy("old", true, 0),
                copy("new", false, 95),
                101,
            ),
            next: Some(Failed),
            stop: Some(Which::New),
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "failed, waiting out the retry delay",
            given: input(
                Some(step(Failed, 100, None)),
                copy("old", true, 0),
                None,
                110,
            ),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: Some(100 + FAILED_RETRY_SECONDS),
            candidate: None,
        },
        Row {
            name: "failed, retry delay over: a retry candidate",
            given: input(
                Some(step(Failed, 100, None)),
                copy("old", true, 0),
                None,
                100 + FAILED_RETRY_SECONDS,
            ),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: Some(true),
        },
        Row {
            name: "no room for two (stopFirst): stop the old copy first",
            given: input(
                Some(step(GapStopping, 100, None)),
                copy("old", true, 0),
                None,
                101,
            ),
            next: Some(GapStopping),
            stop: Some(Which::Old),
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "no room for two but paused: the old copy is not stopped",
            given: paused(input(
                Some(step(GapStopping, 100, None)),
                copy("old", true, 0),
                None,
                101,
            )),
            next: Some(GapStopping),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "the new copy alone and up long enough: done",
            given: input(
                Some(step(GapStopping, 100, None)),
                None,
                copy("new", true, 101),
                131,
            ),
            next: Some(Done),
            stop: None,
            keeper: Some(Which::New),
            wake_at: None,
            candidate: None,
        },
        Row {
            name: "the new copy alone after a failure stays failed while it settles",
            given: input(
                Some(step(Failed, 100, None)),
                None,
                copy("new", true, 110),
                120,
            ),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::New),
            wake_at: Some(140),
            candidate: None,
        },
        Row {
            name: "done, then the new copy stopped: failed",
            given: input(Some(step(Done, 100, None)), copy("old", true, 0), None, 120),
            next: Some(Failed),
            stop: None,
            keeper: Some(Which::Old),
            wake_at: None,
            candidate: None,
        },
    ];
    for row in rows {
        let outcome = next_step(&row.given);
        assert_eq!(
            outcome.next.as_ref().map(|s| s.step),
            row.next,
            "{}",
            row.name
        );
        assert_eq!(outcome.stop.as_ref().map(|s| s.0), row.stop, "{}", row.name);
        assert_eq!(outcome.keeper, row.keeper, "{}", row.name);
        assert_eq!(outcome.wake_at, row.wake_at.map(at), "{}", row.name);
        assert_eq!(outcome.candidate, row.candidate, "{}", row.name);
    }
}

#[test]
fn no_live_copy_decides_nothing() {
    let outcome = next_step(&input(Some(step(Surging, 0, Some("new"))), None, None, 10));
    assert_eq!(outcome.coverage, None);
    assert_eq!(outcome.keeper, None);
    assert_eq!(outcome.stop, None);
    assert_eq!(outcome.next.map(|s| s.step), Some(Surging));
}

#[test]
fn a_failed_surge_says_why_in_ecs_words() {
    let mut given = input(
        Some(step(Surging, 90, Some("new"))),
        copy("old", true, 0),
        None,
        100,
    );
    given.new_copy_gone = Some("EssentialContainerExited: exit 1".into());
    let next = next_step(&given).next.unwrap();
    assert_eq!(next.failures, 1);
    assert_eq!(
        next.last_failure.as_deref(),
        Some("the new copy stopped before it was healthy: EssentialContainerExited: exit 1")
    );
}

#[test]
fn copies_held_after_a_plan_count_what_still_runs_or_may_come() {
    use super::super::rolling::copies_after_plan;
    // A surge on services: old and new service copies, the old one stopped now → one left.
    assert_eq!(copies_after_plan(2, 0, Some(true), true, 0), 1);
    // A standalone old copy stopped where the daemon stays standalone → one left.
    assert_eq!(copies_after_plan(0, 2, Some(false), false, 0), 1);
    // Moving to services: the stopped standalone copy counts until seen gone.
    assert_eq!(copies_after_plan(1, 1, Some(false), true, 0), 2);
    // A request no copy answers yet beside a kept copy: two.
    assert_eq!(copies_after_plan(0, 1, None, true, 1), 2);
    assert_eq!(copies_after_plan(0, 0, None, true, 0), 0);
}

#[test]
fn a_requested_copy_that_stopped_fails_the_step_at_once() {
    let mut given = input(
        Some(step(Surging, 90, None)),
        copy("old", true, 0),
        None,
        100,
    );
    given.requested_from_service = true;
    let waiting = next_step(&given);
    assert_eq!(waiting.next.as_ref().map(|s| s.step), Some(Surging));
    given.requested_copy_stopped = Some("TaskFailedToStart: CannotPullContainerError".into());
    let failed = next_step(&given);
    let next = failed.next.expect("a step");
    assert_eq!(next.step, Failed);
    assert!(next
        .last_failure
        .as_deref()
        .is_some_and(|r| r.contains("CannotPullContainerError")));
    assert_eq!(failed.keeper, Some(Which::Old));
}
