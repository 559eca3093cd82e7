//! One instance's step in a rollout: the new copy beside the old, Surging → Settling →
//! Done after minHealthySeconds (or Failed), and the tally of every instance's step.

use super::*;

impl<'a, 'g> Planner<'a, 'g> {
    /// A daemon with a rollout in flight on an eligible instance. `None` when no copy is
    /// live at all: the missing path then starts the new revision.
    pub(super) fn cover_rolling(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        instance: &ContainerInstance,
        previous: Option<&Versioned<Slot>>,
        live: Vec<&'a Task>,
    ) -> Option<Coverage> {
        let now = self.observation.now;
        let instance_id = instance.id();
        let config = &rollout.record.config;
        let target = daemon.task_definition.as_str();
        let step = previous
            .and_then(|p| p.record.rollout.clone())
            .filter(|r| r.rollout_id == rollout.record.id);
        let fresh = |kind: RolloutStep| SlotRollout {
            rollout_id: rollout.record.id.clone(),
            step: kind,
            since: now,
            new_task_arn: None,
            failures: 0,
            last_failure: None,
            gap: false,
        };
        let (new, old): (Vec<&Task>, Vec<&Task>) =
            live.into_iter().partition(|t| revision_of(t) == target);
        // Never more than two copies: one of each revision at most.
        let best_new = self.keep_one(daemon, instance_id, new);
        let best_old = self.keep_one(daemon, instance_id, old);
        let mut next = step.clone();
        let mut candidate = None;
        let coverage = match (best_old, best_new) {
            (None, None) => {
                self.tally(daemon, step.as_ref(), instance_id);
                return None;
            }
            (None, Some(new)) => {
                // A copy on the target that this rollout did not surge (a restart, an instance
                // that joined) is watched like a surge: done once it has been up long enough.
                let mut current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                current.new_task_arn = None;
                match current.step {
                    // The new copy is alone (stopFirst, or the old copy died meanwhile): the
                    // instance is done only once it has been up for minHealthySeconds, so a
                    // revision that never runs trips the breaker instead of passing.
                    RolloutStep::Surging
                    | RolloutStep::Settling
                    | RolloutStep::GapStopping
                    | RolloutStep::Failed => {
                        if is_up(new, daemon) {
                            let since = match current.step {
                                RolloutStep::Settling => current.since,
                                _ if !daemon.has_health_check => new
                                    .started_at
                                    .filter(|started| *started <= now)
                                    .unwrap_or(now),
                                _ => now,
                            };
                            let settle = Duration::seconds(i64::from(config.min_healthy_seconds));
                            if now - since >= settle {
                                current.step = RolloutStep::Done;
                                current.since = now;
                            } else if current.step != RolloutStep::Failed {
                                current.step = RolloutStep::Settling;
                                current.since = since;
                                self.wake_at(since + settle);
                            } else {
                                self.wake_at(since + settle);
                            }
                        } else if current.step != RolloutStep::Failed {
                            current.step = RolloutStep::Surging;
                        }
                    }
                    RolloutStep::Done => {}
                }
                next = Some(current);
                self.track_keeper(daemon, instance_id, previous, new, next.clone());
                if is_up(new, daemon) {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
            (Some(old), None) => {
                match step.as_ref().map(|s| s.step) {
                    None => candidate = Some(false),
                    Some(RolloutStep::Failed) => {
                        let due = step.as_ref().is_some_and(|s| {
                            s.since + Duration::seconds(FAILED_RETRY_SECONDS) <= now
                        });
                        if due {
                            candidate = Some(true);
                        } else if let Some(s) = &step {
                            self.wake_at(s.since + Duration::seconds(FAILED_RETRY_SECONDS));
                        }
                    }
                    Some(RolloutStep::Surging | RolloutStep::Settling) => {
                        let current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                        match current.new_task_arn.as_deref() {
                            Some(arn) => {
                                let reason = self.task_by_arn(arn).map_or_else(
                                    || "the new copy is no longer known to ECS".to_string(),
                                    stop_reason,
                                );
                                next = Some(fail(
                                    current,
                                    now,
                                    format!("the new copy stopped before it was healthy: {reason}"),
                                ));
                            }
                            None if current.since + Duration::seconds(CLAIM_GRACE_SECONDS)
                                <= now =>
                            {
                                // A claim whose start never showed a task: try this instance again.
                                next = None;
                                candidate = Some(false);
                            }
                            None => {
                                self.wake_at(current.since + Duration::seconds(CLAIM_GRACE_SECONDS))
                            }
                        }
                    }
                    Some(RolloutStep::GapStopping) => {
                        if old.desired_status != TaskStatus::Stopped {
                            self.push(Action::Stop {
                                task_arn: old.arn.clone(),
                                instance_id: instance_id.into(),
                                daemon: daemon.name.clone(),
                                reason: format!(
                                    "ecs-daemons: no room for {target} next to this copy; stopping it first (surgeFallback stopFirst)"
                                ),
                            });
                        }
                    }
                    Some(RolloutStep::Done) => {
                        let current = step.clone().unwrap_or_else(|| fresh(RolloutStep::Done));
                        next = Some(fail(
                            current,
                            now,
                            "the new copy stopped after the instance was done".into(),
                        ));
                    }
                }
                self.track_keeper(daemon, instance_id, previous, old, next.clone());
                if is_up(old, daemon) {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
            (Some(old), Some(new)) => {
                let either_up = is_up(old, daemon) || is_up(new, daemon);
                let kind = step.as_ref().map(|s| s.step);
                if kind == Some(RolloutStep::Failed) {
                    self.push(Action::Stop {
                        task_arn: new.arn.clone(),
                        instance_id: instance_id.into(),
                        daemon: daemon.name.clone(),
                        reason: format!(
                            "ecs-daemons: the rollout to {target} failed on this instance"
                        ),
                    });
                    self.track_keeper(daemon, instance_id, previous, old, next.clone());
                } else if kind == Some(RolloutStep::Done) {
                    // Done already (an earlier stop of the old copy did not go through): stop it now.
                    self.push(Action::Stop {
                        task_arn: old.arn.clone(),
                        instance_id: instance_id.into(),
                        daemon: daemon.name.clone(),
                        reason: format!("ecs-daemons: replaced by {target}"),
                    });
                    self.track_keeper(daemon, instance_id, previous, new, next.clone());
                } else if is_up(new, daemon) {
                    let since = match &step {
                        Some(s) if matches!(s.step, RolloutStep::Settling | RolloutStep::Done) => {
                            s.since
                        }
                        // Up since ECS says it started (RUNNING), however late the news came;
                        // a health-checked copy counts from when it was seen HEALTHY.
                        Some(_) if !daemon.has_health_check => new
                            .started_at
                            .filter(|started| *started <= now)
                            .unwrap_or(now),
                        Some(_) => now,
                        // A copy found, not started here (adopted): its own start time counts.
                        None => new.started_at.unwrap_or(now),
                    };
                    let mut settling = step.clone().unwrap_or_else(|| fresh(RolloutStep::Settling));
                    settling.new_task_arn = Some(new.arn.clone());
                    if now - since >= Duration::seconds(i64::from(config.min_healthy_seconds)) {
                        self.push(Action::Stop {
                            task_arn: old.arn.clone(),
                            instance_id: instance_id.into(),
                            daemon: daemon.name.clone(),
                            reason: format!(
                                "ecs-daemons: replaced by {target}, healthy for {}s",
                                (now - since).num_seconds()
                            ),
                        });
                        settling.step = RolloutStep::Done;
                        settling.since = now;
                        settling.new_task_arn = None;
                        next = Some(settling);
                        self.track_keeper(daemon, instance_id, previous, new, next.clone());
                    } else {
                        settling.step = RolloutStep::Settling;
                        settling.since = since;
                        self.wake_at(
                            since + Duration::seconds(i64::from(config.min_healthy_seconds)),
                        );
                        next = Some(settling);
                        self.track_keeper(daemon, instance_id, previous, old, next.clone());
                    }
                } else {
                    let mut surging = step.clone().unwrap_or_else(|| fresh(RolloutStep::Surging));
                    surging.step = RolloutStep::Surging;
                    surging.new_task_arn = Some(new.arn.clone());
                    next = Some(surging);
                    self.track_keeper(daemon, instance_id, previous, old, next.clone());
                }
                if either_up {
                    Coverage::Up
                } else {
                    Coverage::OnItsWay
                }
            }
        };
        self.tally(daemon, next.as_ref(), instance_id);
        if let Some(retry) = candidate {
            let tally = self.tallies.entry(daemon.name.clone()).or_default();
            tally.candidates.push((instance.arn.clone(), retry));
        }
        Some(coverage)
    }

    pub(super) fn tally(
        &mut self,
        daemon: &DaemonView,
        step: Option<&SlotRollout>,
        instance_id: &str,
    ) {
        let tally = self.tallies.entry(daemon.name.clone()).or_default();
        let counts = &mut tally.counts;
        counts.total += 1;
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
