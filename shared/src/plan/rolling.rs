//! One instance's step in a rollout: the new copy beside the old, Surging → Settling →
//! Done after minHealthySeconds (or Failed), and the tally of every instance's step.

use super::*;

/// What one instance's rolling step sees of one copy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CopySeen<'t> {
    pub arn: &'t str,
    /// RUNNING, and HEALTHY where the daemon has a health check.
    pub up: bool,
    /// When ECS says it started (RUNNING).
    pub started_at: Option<DateTime<Utc>>,
    /// Already told to stop (desired STOPPED).
    pub stopping: bool,
}

/// Everything one instance's rolling step is decided from.
#[derive(Clone, Debug)]
pub(crate) struct StepInput<'t> {
    pub rollout_id: &'t str,
    /// The revision being rolled out (`family:revision`).
    pub target: &'t str,
    /// This rollout's step on the instance's slot, if it has one.
    pub step: Option<SlotRollout>,
    /// The best live copy of another revision, and of the target revision.
    pub old: Option<CopySeen<'t>>,
    pub new: Option<CopySeen<'t>>,
    pub has_health_check: bool,
    pub min_healthy: Duration,
    /// How long a new copy may take to be up before the step fails (`progressDeadlineSeconds`).
    pub progress_deadline: Duration,
    pub now: DateTime<Utc>,
    /// Why the surged copy the step names is gone (ECS's stop reason), for when it is.
    pub new_copy_gone: Option<String>,
    /// How long a start may take to show its task ([`claim_grace`]).
    pub claim_grace: Duration,
    /// The new copy is requested from a DAEMON service: no task after the grace is a failure.
    pub requested_from_service: bool,
    /// Why a copy the service started for this step's request stopped before the step knew
    /// it (a revision that fails to start: its task is PENDING, then STOPPED, in one look).
    pub requested_copy_stopped: Option<String>,
    /// The rollout is paused: an instance holds where it is, no old copy is stopped (a new
    /// copy that fails is still counted and stopped: the breaker keeps watching).
    pub paused: bool,
}

/// One of the instance's two copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Old,
    New,
}

/// What one instance's rolling step decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StepOutcome {
    /// The slot's step from now on (`None`: back among the instances still to do).
    pub next: Option<SlotRollout>,
    /// A copy to stop, and why.
    pub stop: Option<(Which, String)>,
    /// The copy the slot records as its task.
    pub keeper: Option<Which>,
    /// When this instance's step can move on by itself.
    pub wake_at: Option<DateTime<Utc>>,
    /// Ready for a surge in the next batch (`true`: a retry after a failure).
    pub candidate: Option<bool>,
    /// Whether a copy serves the instance (`None`: no copy is live at all).
    pub coverage: Option<Coverage>,
    /// Whether the slot held a step of this rollout (a `None` `next` then ends it).
    pub had_step: bool,
}

fn coverage_of(up: bool) -> Coverage {
    if up {
        Coverage::Up
    } else {
        Coverage::OnItsWay
    }
}

/// One instance's rolling step: the new copy beside the old, Surging → Settling → Done
/// once it has been up for minHealthySeconds (the old copy is then stopped), Failed when it
/// stops first. Pure: the planner applies the outcome.
pub(crate) fn next_step(input: &StepInput<'_>) -> StepOutcome {
    let mut outcome = StepOutcome {
        next: input.step.clone(),
        had_step: input.step.is_some(),
        ..StepOutcome::default()
    };
    match (input.old, input.new) {
        (None, None) => {}
        (None, Some(new)) => new_copy_alone(input, new, &mut outcome),
        (Some(old), None) => old_copy_alone(input, old, &mut outcome),
        (Some(old), Some(new)) => both_copies(input, old, new, &mut outcome),
    }
    outcome
}

fn fresh_step(input: &StepInput<'_>, kind: RolloutStep) -> SlotRollout {
    SlotRollout {
        rollout_id: input.rollout_id.into(),
        step: kind,
        since: input.now,
        new_task_arn: None,
        failures: 0,
        last_failure: None,
        gap: false,
    }
}

/// Up since ECS says it started (RUNNING), however late the news came; a health-checked
/// copy counts from when it was seen HEALTHY.
fn up_since(input: &StepInput<'_>, copy: CopySeen<'_>) -> DateTime<Utc> {
    if input.has_health_check {
        return input.now;
    }
    copy.started_at
        .filter(|started| *started <= input.now)
        .unwrap_or(input.now)
}

/// Only the target revision runs: a surge whose old copy is gone, a stopFirst gap, a restart,
/// or an instance that joined. Done once it has been up for minHealthySeconds, so a
/// revision that never runs trips the breaker instead of passing.
fn new_copy_alone(input: &StepInput<'_>, new: CopySeen<'_>, outcome: &mut StepOutcome) {
    let now = input.now;
    let mut current = input
        .step
        .clone()
        .unwrap_or_else(|| fresh_step(input, RolloutStep::Surging));
    current.new_task_arn = None;
    if current.step != RolloutStep::Done {
        if new.up {
            let since = match current.step {
                RolloutStep::Settling => current.since,
                _ => up_since(input, new),
            };
            if now - since >= input.min_healthy {
                current.step = RolloutStep::Done;
                current.since = now;
            } else {
                if current.step != RolloutStep::Failed {
                    current.step = RolloutStep::Settling;
                    current.since = since;
                }
                outcome.wake_at = Some(since + input.min_healthy);
            }
        } else if current.step != RolloutStep::Failed {
            current.step = RolloutStep::Surging;
            let deadline = current.since + input.progress_deadline;
            if deadline <= now {
                // The only copy here: kept (stopping it would leave the instance bare); the
                // breaker counts the instance, and a rollback replaces the copy.
                current = fail(current, now, past_deadline(input, new));
            } else {
                outcome.wake_at = Some(deadline);
            }
        }
    }
    outcome.next = Some(current);
    outcome.keeper = Some(Which::New);
    outcome.coverage = Some(coverage_of(new.up));
}

/// Only another revision runs: not begun, waiting to retry, a surge whose new copy is gone,
/// or a stopFirst gap about to open.
fn old_copy_alone(input: &StepInput<'_>, old: CopySeen<'_>, outcome: &mut StepOutcome) {
    let now = input.now;
    let step = input.step.as_ref();
    match step.map(|s| s.step) {
        None => outcome.candidate = Some(false),
        Some(RolloutStep::Failed) => {
            let retry_at = step.map(|s| s.since + Duration::seconds(FAILED_RETRY_SECONDS));
            match retry_at {
                Some(at) if at <= now => outcome.candidate = Some(true),
                at => outcome.wake_at = at,
            }
        }
        Some(RolloutStep::Surging | RolloutStep::Settling) => {
            let current = input
                .step
                .clone()
                .unwrap_or_else(|| fresh_step(input, RolloutStep::Surging));
            let claim_expires = current.since + input.claim_grace;
            if current.new_task_arn.is_some() {
                let reason = input
                    .new_copy_gone
                    .clone()
                    .unwrap_or_else(|| "the new copy is no longer known to ECS".into());
                outcome.next = Some(fail(
                    current,
                    now,
                    format!("the new copy stopped before it was healthy: {reason}"),
                ));
            } else if let Some(reason) = &input.requested_copy_stopped {
                outcome.next = Some(fail(
                    current,
                    now,
                    format!("the new copy stopped before it was healthy: {reason}"),
                ));
            } else if claim_expires <= now && input.requested_from_service {
                // A DAEMON service that shows no copy within the grace failed to start one
                // (its failed tasks are not linked to the request): the breaker counts it.
                outcome.next = Some(fail(
                    current,
                    now,
                    format!(
                        "the DAEMON service showed no running copy of {} within {} s",
                        input.target,
                        input.claim_grace.num_seconds()
                    ),
                ));
            } else if claim_expires <= now {
                // A claim whose start never showed a task: try this instance again.
                outcome.next = None;
                outcome.candidate = Some(false);
            } else {
                outcome.wake_at = Some(claim_expires);
            }
        }
        Some(RolloutStep::GapStopping) => {
            if !old.stopping && !input.paused {
                outcome.stop = Some((
                    Which::Old,
                    format!(
                        "ecs-daemons: no room for {} next to this copy; stopping it first (surgeFallback stopFirst)",
                        input.target
                    ),
                ));
            }
        }
        Some(RolloutStep::Done) => {
            let current = input
                .step
                .clone()
                .unwrap_or_else(|| fresh_step(input, RolloutStep::Done));
            outcome.next = Some(fail(
                current,
                now,
                "the new copy stopped after the instance was done".into(),
            ));
        }
    }
    outcome.keeper = Some(Which::Old);
    outcome.coverage = Some(coverage_of(old.up));
}

/// Both revisions run: the surge in flight, settling, or a stop still owed.
fn both_copies(
    input: &StepInput<'_>,
    old: CopySeen<'_>,
    new: CopySeen<'_>,
    outcome: &mut StepOutcome,
) {
    let now = input.now;
    let target = input.target;
    outcome.coverage = Some(coverage_of(old.up || new.up));
    outcome.keeper = Some(Which::Old);
    match input.step.as_ref().map(|s| s.step) {
        Some(RolloutStep::Failed) => {
            outcome.stop = Some((
                Which::New,
                format!("ecs-daemons: the rollout to {target} failed on this instance"),
            ));
        }
        Some(RolloutStep::Done) => {
            // Done already (an earlier stop of the old copy did not go through): stop it now.
            outcome.stop = Some((Which::Old, format!("ecs-daemons: replaced by {target}")));
            outcome.keeper = Some(Which::New);
        }
        _ if new.up => {
            let since = match &input.step {
                Some(s) if matches!(s.step, RolloutStep::Settling | RolloutStep::Done) => s.since,
                Some(_) => up_since(input, new),
                // A copy found, not started here (adopted): its own start time counts.
                None => new.started_at.unwrap_or(now),
            };
            let mut settling = input
                .step
                .clone()
                .unwrap_or_else(|| fresh_step(input, RolloutStep::Settling));
            if now - since >= input.min_healthy && input.paused {
                // Held, both copies kept: `resume` lets the old one go.
                settling.step = RolloutStep::Settling;
                settling.since = since;
                settling.new_task_arn = Some(new.arn.into());
            } else if now - since >= input.min_healthy {
                outcome.stop = Some((
                    Which::Old,
                    format!(
                        "ecs-daemons: replaced by {target}, healthy for {}s",
                        (now - since).num_seconds()
                    ),
                ));
                settling.step = RolloutStep::Done;
                settling.since = now;
                settling.new_task_arn = None;
                outcome.keeper = Some(Which::New);
            } else {
                settling.step = RolloutStep::Settling;
                settling.since = since;
                settling.new_task_arn = Some(new.arn.into());
                outcome.wake_at = Some(since + input.min_healthy);
            }
            outcome.next = Some(settling);
        }
        _ => {
            let mut surging = input
                .step
                .clone()
                .unwrap_or_else(|| fresh_step(input, RolloutStep::Surging));
            surging.step = RolloutStep::Surging;
            surging.new_task_arn = Some(new.arn.into());
            let deadline = surging.since + input.progress_deadline;
            if deadline <= now {
                outcome.stop = Some((
                    Which::New,
                    format!("ecs-daemons: {}", past_deadline(input, new)),
                ));
                surging = fail(surging, now, past_deadline(input, new));
            } else {
                outcome.wake_at = Some(deadline);
            }
            outcome.next = Some(surging);
        }
    }
}

/// Why a step failed at its progress deadline.
fn past_deadline(input: &StepInput<'_>, new: CopySeen<'_>) -> String {
    let state = if new.started_at.is_none() {
        "not RUNNING"
    } else if input.has_health_check {
        "RUNNING but not HEALTHY"
    } else {
        "not RUNNING"
    };
    format!(
        "the new copy of {} was {state} within progressDeadlineSeconds ({} s)",
        input.target,
        input.progress_deadline.num_seconds()
    )
}

/// How many copies an instance still holds once a plan is carried out, for the maxParallel
/// count: its live service copies and kept standalone ones, less the one StopTask ends now
/// (desired STOPPED at once; a service copy's letter goes first, so its scheduler does not
/// start it again), plus requests a scheduler may still answer. Where the daemon moved to
/// services, a stopped standalone copy counts until it is seen gone: the rollout ends only
/// once none is left there. `stopped`: whether the copy stopped now comes from a service.
pub(crate) fn copies_after_plan(
    service_copies: usize,
    standalone_kept: usize,
    stopped: Option<bool>,
    on_services: bool,
    unanswered: usize,
) -> usize {
    let ended = match stopped {
        Some(true) => 1,
        Some(false) if !on_services => 1,
        _ => 0,
    };
    (service_copies + standalone_kept + unanswered).saturating_sub(ended)
}

impl<'a, 'g> Planner<'a, 'g> {
    /// A daemon with a rollout in flight on an eligible instance: [`next_step`] decides, this
    /// carries it out. `None` when no copy is live at all: the missing path then starts the
    /// new revision.
    pub(super) fn cover_rolling(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        instance: &ContainerInstance,
        previous: Option<&Versioned<Slot>>,
        live: Vec<&'a Task>,
    ) -> Option<Coverage> {
        let instance_id = instance.id();
        let target = daemon.task_definition.as_str();
        let step = previous
            .and_then(|p| p.record.rollout.clone())
            .filter(|r| r.rollout_id == rollout.record.id);
        // The new copy is the target revision placed as the provider places it now; a
        // standalone copy on a provider moved to DAEMON services is old, whatever its revision.
        let provider = instance.capacity_provider.as_deref();
        let from_services = |t: &Task| {
            t.group
                .as_deref()
                .and_then(crate::placement::services::daemon_of_group)
                .is_some()
        };
        let service_copies = live.iter().filter(|t| from_services(t)).count();
        // This rollout's own request is its new copy; any other letter no copy answers yet
        // (a superseded rollout's request being withdrawn) may still become a copy.
        let own_request = step
            .as_ref()
            .filter(|s| s.step == RolloutStep::Surging)
            .and(daemon.services.as_ref())
            .and_then(|s| s.letter_for(target));
        let unanswered = super::services::unanswered_requests(daemon, instance, &live, own_request);
        let (new, old): (Vec<&Task>, Vec<&Task>) = live
            .into_iter()
            .partition(|t| revision_of(t) == target && placed_right(t, daemon, provider));
        // Never more than two copies: one of each at most.
        let best_new = self.keep_one(daemon, instance, new);
        let best_old = self.keep_one(daemon, instance, old);
        let seen = |task: &'a Task| CopySeen {
            arn: &task.arn,
            up: is_up(task, daemon),
            started_at: task.started_at,
            stopping: task.desired_status == TaskStatus::Stopped,
        };
        let new_copy_gone = step
            .as_ref()
            .and_then(|s| s.new_task_arn.as_deref())
            .and_then(|arn| self.task_by_arn(arn))
            .map(stop_reason);
        let requested_copy_stopped = step
            .as_ref()
            .filter(|s| s.step == RolloutStep::Surging && s.new_task_arn.is_none())
            .and_then(|s| self.stopped_service_copy(daemon, instance, target, s.since));
        let input = StepInput {
            rollout_id: &rollout.record.id,
            target,
            step,
            old: best_old.map(seen),
            new: best_new.map(seen),
            has_health_check: daemon.checks_health(target),
            min_healthy: Duration::seconds(i64::from(rollout.record.config.min_healthy_seconds)),
            progress_deadline: Duration::seconds(i64::from(
                rollout.record.config.progress_deadline_seconds,
            )),
            now: self.observation.now,
            new_copy_gone,
            claim_grace: claim_grace(daemon, instance.capacity_provider.as_deref()),
            requested_from_service: daemon
                .services
                .as_ref()
                .is_some_and(|s| s.covers(instance.capacity_provider.as_deref())),
            requested_copy_stopped,
            paused: rollout.record.control.paused.is_some(),
        };
        let decided = next_step(&input);
        let stopped_now =
            self.carry_out_step(daemon, instance, previous, &decided, best_old, best_new);
        let on_services = daemon.services.as_ref().is_some_and(|s| s.covers(provider));
        let standalone_kept = [best_old, best_new]
            .into_iter()
            .flatten()
            .filter(|t| !from_services(t))
            .count();
        let held = copies_after_plan(
            service_copies,
            standalone_kept,
            stopped_now.map(&from_services),
            on_services,
            unanswered,
        );
        self.tally(daemon, decided.next.as_ref(), instance_id, held >= 2);
        if unanswered > 0 && decided.candidate.is_some() {
            // No surge beside a copy that may still come: the withdrawal this plan writes
            // is seen by a reconcile soon after, which surges then.
            self.wake_at(self.observation.now + Duration::seconds(ROLLOUT_POLL_SECONDS));
        } else if let Some(retry) = decided.candidate {
            let tally = self.tallies.entry(daemon.name.clone()).or_default();
            tally.candidates.push((instance.arn.clone(), retry));
        }
        decided.coverage
    }

    /// A copy of `target` the daemon's service started on the instance since `since` and
    /// that already stopped: its stop reason (a request's failed start, seen in its event).
    pub(super) fn stopped_service_copy(
        &self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        target: &str,
        since: DateTime<Utc>,
    ) -> Option<String> {
        let letter = daemon.services.as_ref()?.letter_for(target)?;
        let group = format!(
            "service:{}",
            crate::placement::services::service_name(&daemon.name, letter)
        );
        self.observation
            .tasks
            .iter()
            .find(|t| {
                t.last_status.is_terminal()
                    && t.group.as_deref() == Some(group.as_str())
                    && t.container_instance_arn.as_deref() == Some(instance.arn.as_str())
                    && revision_of(t) == target
                    && t.created_at.is_some_and(|at| at >= since)
            })
            .map(stop_reason)
    }

    /// Pushes the step's stop, tracks its keeper, notes its wake-up; answers the copy it
    /// stops.
    fn carry_out_step(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        previous: Option<&Versioned<Slot>>,
        decided: &StepOutcome,
        best_old: Option<&'a Task>,
        best_new: Option<&'a Task>,
    ) -> Option<&'a Task> {
        let copy = |which: Which| match which {
            Which::Old => best_old,
            Which::New => best_new,
        };
        let stopped = decided
            .stop
            .as_ref()
            .and_then(|(which, reason)| Some((copy(*which)?, reason)));
        if let Some((task, reason)) = stopped {
            self.push(Action::Stop {
                task_arn: task.arn.clone(),
                instance_id: instance.id().into(),
                daemon: daemon.name.clone(),
                reason: reason.clone(),
            });
        }
        if let Some(keeper) = decided.keeper.and_then(copy) {
            // A step of this rollout that ends is cleared, not left standing: a stale Surging
            // step would outlive its deadline while the rollout is paused.
            let step = match (decided.next.clone(), decided.had_step) {
                (Some(next), _) => StepUpdate::Set(next),
                (None, true) => StepUpdate::Clear,
                (None, false) => StepUpdate::Keep,
            };
            self.track_keeper(daemon, instance.id(), previous, keeper, step);
        }
        if let Some(at) = decided.wake_at {
            self.wake_at(at);
        }
        stopped.map(|(task, _)| task)
    }

    pub(super) fn tally(
        &mut self,
        daemon: &DaemonView,
        step: Option<&SlotRollout>,
        instance_id: &str,
        two_copies: bool,
    ) {
        let tally = self.tallies.entry(daemon.name.clone()).or_default();
        let counts = &mut tally.counts;
        counts.total += 1;
        // Two copies on an instance not surging or settling in this rollout (done, failed,
        // or a copy of another rollout still stopping) still take a maxParallel place.
        if two_copies
            && !matches!(
                step.map(|s| s.step),
                Some(RolloutStep::Surging | RolloutStep::Settling | RolloutStep::GapStopping)
            )
        {
            counts.lingering += 1;
        }
        match step.map(|s| s.step) {
            None => counts.pending += 1,
            Some(RolloutStep::Surging | RolloutStep::GapStopping) => counts.surging += 1,
            Some(RolloutStep::Settling) => counts.settling += 1,
            Some(RolloutStep::Done) => counts.done += 1,
            Some(RolloutStep::Failed) => counts.failed += 1,
        }
        if let Some(step) = step {
            counts.failures += step.failures;
            counts.gaps += u32::from(step.gap);
            if let Some(reason) = &step.last_failure {
                tally.failures.push(RolloutFailure {
                    instance_id: instance_id.into(),
                    reason: reason.clone(),
                    at: step.since,
                });
            }
        }
    }
}
