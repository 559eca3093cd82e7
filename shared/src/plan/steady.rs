//! Steady coverage: exactly one copy of every daemon on every targeted ACTIVE instance, in
//! start order, restarted with backoff, readiness once all are up.

use super::*;

/// What became of the copy a slot knew of, when none is live.
enum LastCopy {
    /// It stopped (or ECS forgot it): ECS's reason.
    Stopped(String),
    /// A start is in flight and its claim still holds.
    Starting { claim_expires: DateTime<Utc> },
    /// Neither: nothing known to wait for.
    Unknown,
}

impl<'a, 'g> Planner<'a, 'g> {
    /// The keeper among a daemon's live copies on an instance; the others are stopped.
    pub(super) fn keep_one(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        live: Vec<&'a Task>,
    ) -> Option<&'a Task> {
        let instance_id = instance.id();
        let provider = instance.capacity_provider.as_deref();
        let mut live = live;
        live.sort_by_key(|task| std::cmp::Reverse(keeper_rank(task, daemon, provider)));
        let mut copies = live.into_iter();
        let keeper = copies.next()?;
        // The same task twice is one copy: never stop the keeper as its own duplicate.
        for extra in copies.filter(|extra| extra.arn != keeper.arn) {
            self.coverage(daemon).duplicates += 1;
            self.push(Action::Stop {
                task_arn: extra.arn.clone(),
                instance_id: instance_id.into(),
                daemon: daemon.name.clone(),
                reason: format!(
                    "ecs-daemons: duplicate copy of {} (kept {})",
                    daemon.name,
                    keeper.id()
                ),
            });
        }
        Some(keeper)
    }

    /// An eligible instance: make sure the daemon runs exactly once. Returns whether it is up.
    pub(super) fn cover(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        earlier_settled: bool,
    ) -> Coverage {
        let instance_id = instance.id();
        let previous = self.slot(daemon, instance_id);
        self.coverage(daemon).targeted += 1;

        let live = self.live_tasks(daemon, instance_id);
        if let Some(rollout) = self.rollout_of(daemon) {
            if let Some(coverage) =
                self.cover_rolling(daemon, rollout, instance, previous, live.clone())
            {
                return self.count(daemon, coverage);
            }
        } else if let Some(keeper) = self.keep_one(daemon, instance, live) {
            self.track_keeper(daemon, instance_id, previous, keeper, StepUpdate::Keep);
            self.report_misplaced(daemon, instance, keeper);
            if let Some(coverage) = self.unhealthy(daemon, instance_id, keeper) {
                return coverage;
            }
            let coverage = if is_up(keeper, daemon) {
                Coverage::Up
            } else {
                Coverage::OnItsWay
            };
            return self.count(daemon, coverage);
        }
        self.cover_missing(daemon, instance, previous, earlier_settled)
    }

    /// A standalone copy RUNNING but not HEALTHY (its revision has a health check): missing,
    /// not starting, once ECS calls it UNHEALTHY; replaced like a dead one (stopped; its slot
    /// counts the failure, backs off and crash-loops as for a crash) once `unhealthyGraceSeconds`
    /// passed since it started. ECS itself leaves a standalone task running whatever its
    /// health (API reference, *HealthCheck*); a DAEMON service's scheduler replaces its own.
    fn unhealthy(
        &mut self,
        daemon: &DaemonView,
        instance_id: &str,
        keeper: &Task,
    ) -> Option<Coverage> {
        let from_service = keeper
            .group
            .as_deref()
            .and_then(crate::placement::services::daemon_of_group)
            .is_some();
        if keeper.last_status != TaskStatus::Running
            || keeper.health == HealthStatus::Healthy
            || !daemon.checks_health(revision_of(keeper))
            || from_service
        {
            return None;
        }
        let now = self.observation.now;
        let replace_at = keeper.started_at? + daemon.unhealthy_grace;
        if replace_at > now {
            self.wake_at(replace_at);
            if keeper.health != HealthStatus::Unhealthy {
                // Still being evaluated: on its way.
                return None;
            }
            self.coverage(daemon).missing += 1;
            return Some(Coverage::Missing);
        }
        let health = match keeper.health {
            HealthStatus::Unhealthy => "UNHEALTHY",
            _ => "not HEALTHY",
        };
        let reason = format!(
            "ecs-daemons: {health} {} s after it started (unhealthyGraceSeconds {})",
            (now - keeper.started_at.unwrap_or(now)).num_seconds(),
            daemon.unhealthy_grace.num_seconds()
        );
        self.trouble(daemon, instance_id, "UNHEALTHY", reason.clone());
        self.push(Action::Stop {
            task_arn: keeper.arn.clone(),
            instance_id: instance_id.into(),
            daemon: daemon.name.clone(),
            reason,
        });
        self.coverage(daemon).missing += 1;
        Some(Coverage::Missing)
    }

    /// On DAEMON services, what became of a request no copy answers yet. A request of a
    /// revision replaced meanwhile is withdrawn (`withdraw_stale_requests`), not waited for:
    /// the one in force is requested now. A copy its service started and that stopped before
    /// any reconcile recorded it (a bad revision dies in seconds) is a failure now, not a wait
    /// for the request's grace, or a rollout to it would never trip its breaker.
    fn service_request_outcome(
        &self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        previous: &Versioned<Slot>,
    ) -> Option<LastCopy> {
        let record = &previous.record;
        let requested = daemon
            .services
            .as_ref()
            .is_some_and(|s| s.covers(instance.capacity_provider.as_deref()))
            && record.task_arn.is_none()
            && matches!(record.state, SlotState::Claimed | SlotState::Starting);
        if !requested {
            return None;
        }
        match record.task_definition.as_deref() {
            Some(revision) if revision == daemon.task_definition => self
                .stopped_service_copy(daemon, instance, revision, record.updated_at)
                .map(LastCopy::Stopped),
            _ => Some(LastCopy::Unknown),
        }
    }

    /// What became of the copy a slot knew of, now that no copy is live.
    fn last_copy(&self, previous: &Versioned<Slot>, grace: Duration) -> LastCopy {
        let known_task = previous.record.task_arn.as_deref();
        let task_gone = known_task.is_some_and(|arn| match self.task_by_arn(arn) {
            Some(task) => !is_live(task),
            // Not even a stopped task: ECS forgot it, or it never started.
            None => self.observation.scope == Scope::Full,
        });
        let claim_expires = previous.record.updated_at + grace;
        let state = &previous.record.state;
        if matches!(state, SlotState::Starting | SlotState::Running) && task_gone {
            let reason = known_task
                .and_then(|arn| self.task_by_arn(arn))
                .map_or_else(
                    || "the task is no longer known to ECS".to_string(),
                    stop_reason,
                );
            return LastCopy::Stopped(reason);
        }
        let in_flight = matches!(state, SlotState::Claimed | SlotState::Starting)
            && claim_expires > self.observation.now;
        if in_flight && !task_gone {
            return LastCopy::Starting { claim_expires };
        }
        LastCopy::Unknown
    }

    /// A copy stopped: one more consecutive failure, a backoff before the next start, crash
    /// looping after too many. A rollout's new copy that dies before it settled is a rollout
    /// failure too (with stopFirst it is the instance's only copy): the breaker counts it.
    fn count_failure(
        &self,
        daemon: &DaemonView,
        previous: &Versioned<Slot>,
        slot: &mut Slot,
        reason: String,
    ) {
        let now = self.observation.now;
        let active = self.rollout_of(daemon).map(|r| r.record.id.clone());
        let on_target =
            previous.record.task_definition.as_deref() == Some(daemon.task_definition.as_str());
        if let Some(step) = slot.rollout.as_mut().filter(|step| {
            on_target
                && Some(&step.rollout_id) == active.as_ref()
                && matches!(
                    step.step,
                    RolloutStep::Surging | RolloutStep::Settling | RolloutStep::Failed
                )
        }) {
            *step = fail(
                step.clone(),
                now,
                format!("the new copy stopped before it was healthy: {reason}"),
            );
        }
        slot.consecutive_failures += 1;
        slot.last_stop_reason = Some(reason);
        slot.retry_after = Some(now + daemon.restart.backoff(slot.consecutive_failures));
        slot.state = if slot.consecutive_failures >= daemon.restart.max_consecutive_failures {
            SlotState::CrashLooping
        } else {
            SlotState::Stopped
        };
    }

    /// No live copy: count a stopped one as a failure, wait for one starting, or start one
    /// unless the daemon crash-loops, an earlier daemon has not settled, or it backs off.
    fn cover_missing(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        previous: Option<&'g Versioned<Slot>>,
        earlier_settled: bool,
    ) -> Coverage {
        let instance_id = instance.id();
        let now = self.observation.now;
        let mut slot = self.new_slot(daemon, instance_id, previous);
        let mut failed_now = false;
        if let Some(p) = previous {
            let grace = claim_grace(daemon, instance.capacity_provider.as_deref());
            let last = self
                .service_request_outcome(daemon, instance, p)
                .unwrap_or_else(|| self.last_copy(p, grace));
            match last {
                LastCopy::Stopped(reason) => {
                    self.count_failure(daemon, p, &mut slot, reason);
                    failed_now = true;
                }
                LastCopy::Starting { claim_expires } => {
                    self.wake_at(claim_expires);
                    self.coverage(daemon).starting += 1;
                    return Coverage::OnItsWay;
                }
                LastCopy::Unknown => {}
            }
        }
        let on_target = slot.task_definition.as_deref() == Some(daemon.task_definition.as_str());
        let mut drained = false;
        let waiting = if slot.state == SlotState::CrashLooping && on_target {
            let reason = slot.last_stop_reason.clone().unwrap_or_default();
            let mut detail = format!(
                "stopped {} times in a row; last: {reason}",
                slot.consecutive_failures
            );
            match self.drain_for_critical(daemon, instance, &slot, previous) {
                super::critical::CriticalDrain::Drained => {
                    drained = true;
                    detail.push_str("; critical: instance set DRAINING");
                }
                super::critical::CriticalDrain::Held(why) => {
                    detail = format!("{detail}; {why}");
                }
                super::critical::CriticalDrain::NotApplicable => {}
            }
            self.trouble(daemon, instance_id, "CRASH_LOOPING", detail);
            self.coverage(daemon).crash_looping += 1;
            Some(Coverage::CrashLooping)
        } else {
            if slot.state == SlotState::CrashLooping {
                // A new revision was declared: give it a fresh start.
                slot.consecutive_failures = 0;
                slot.retry_after = None;
                slot.critical_drain_at = None;
            }
            if !earlier_settled {
                self.coverage(daemon).starting += 1;
                Some(Coverage::OnItsWay)
            } else if let Some(wait_until) = slot.retry_after.filter(|at| *at > now) {
                self.wake_at(wait_until);
                let reason = slot.last_stop_reason.clone().unwrap_or_default();
                let detail = format!(
                    "restart {} at {wait_until}; last stop: {reason}",
                    slot.consecutive_failures + 1
                );
                self.trouble(daemon, instance_id, "BACKING_OFF", detail);
                self.coverage(daemon).missing += 1;
                Some(Coverage::Missing)
            } else {
                None
            }
        };
        if let Some(coverage) = waiting {
            // A drain writes the slot itself, once the instance is DRAINING.
            if failed_now && !drained {
                self.record(slot, previous);
            }
            return coverage;
        }
        if self.service_restarts(daemon, instance, &slot) {
            // Its DAEMON service starts the copy again: no second request beside it.
            if failed_now {
                self.record(slot, previous);
            }
            self.coverage(daemon).starting += 1;
            return Coverage::OnItsWay;
        }
        if self.another_request_pending(daemon, instance) {
            if failed_now {
                self.record(slot, previous);
            }
            self.coverage(daemon).missing += 1;
            return Coverage::Missing;
        }
        self.start_copy(daemon, instance, slot, previous);
        Coverage::Missing
    }

    /// Another letter of the slot attribute may still bring its copy (a crashed copy its
    /// service restarts before this plan's withdrawal lands): the request waits until the
    /// withdrawal is seen, a poll later.
    fn another_request_pending(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
    ) -> bool {
        let own = daemon
            .services
            .as_ref()
            .and_then(|s| s.letter_for(&daemon.task_definition));
        let pending = super::services::unanswered_requests(daemon, instance, &[], own) > 0;
        if pending {
            self.wake_at(self.observation.now + Duration::seconds(ROLLOUT_POLL_SECONDS));
        }
        pending
    }

    /// Claims the slot for a new copy of the daemon's revision.
    fn start_copy(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        mut slot: Slot,
        previous: Option<&'g Versioned<Slot>>,
    ) {
        slot.state = SlotState::Claimed;
        slot.task_arn = None;
        slot.task_definition = Some(daemon.task_definition.clone());
        slot.task_version = 0;
        slot.stopped_early = None;
        if let Some(step) = slot
            .rollout
            .as_mut()
            .filter(|r| r.step == RolloutStep::GapStopping)
        {
            // stopFirst: the old copy is gone, the new one starts now (its instance counts as surging).
            step.step = RolloutStep::Surging;
            step.since = self.observation.now;
        }
        self.coverage(daemon).missing += 1;
        self.push(Action::Start {
            instance_arn: instance.arn.clone(),
            task_definition: daemon.task_definition.clone(),
            claim: slot,
            expected: previous.map_or(Expected::Absent, Versioned::expected),
            surge: None,
        });
    }

    pub(super) fn active(&mut self, instance: &'a ContainerInstance) {
        let instance_id = instance.id();
        self.current = self
            .by_instance
            .get(instance_id)
            .map(|items| (instance_id, items));
        let provider = instance.capacity_provider.as_deref();
        let mut all_up = true;
        let mut settled_below = true;
        let mut order_settled: Option<(i32, bool)> = None;
        for daemon in self.daemons.clone() {
            if !daemon.targets(instance) {
                let reason = match &daemon.instance_filter {
                    Some(filter)
                        if provider
                            .is_some_and(|p| daemon.capacity_providers.iter().any(|c| c == p)) =>
                    {
                        format!(
                            "ecs-daemons: the instance does not match daemon {}'s instanceFilter {filter}",
                            daemon.name
                        )
                    }
                    _ => format!(
                        "ecs-daemons: capacity provider {} is not targeted by daemon {}",
                        provider.unwrap_or("(none)"),
                        daemon.name
                    ),
                };
                self.stop_all(daemon, instance_id, &reason);
                continue;
            }
            // Daemons of one start order start together; the next order waits for them.
            if let Some((order, settled)) = order_settled {
                if order != daemon.start_order {
                    settled_below = settled_below && settled;
                    order_settled = None;
                }
            }
            let outcome = self.cover(daemon, instance, settled_below);
            let settled = matches!(outcome, Coverage::Up | Coverage::CrashLooping);
            all_up &= outcome == Coverage::Up;
            order_settled = Some(match order_settled {
                Some((order, so_far)) => (order, so_far && settled),
                None => (daemon.start_order, settled),
            });
        }
        match (all_up, is_ready(instance)) {
            (true, false) => self.push(Action::SetReady {
                instance_arn: instance.arn.clone(),
            }),
            (false, true) => self.push(Action::ClearReady {
                instance_arn: instance.arn.clone(),
                reason: "a daemon of the instance is not running".into(),
            }),
            _ => {}
        }
    }
}
