//! Drain-last: a DRAINING instance loses readiness at once; its daemons stop in reverse
//! start order once nothing else is left, and only on a fresh read of its tasks.

use super::*;

impl<'a, 'g> Planner<'a, 'g> {
    /// Stops every live copy of a daemon on an instance and marks the slot stopping.
    pub(super) fn stop_all(&mut self, daemon: &DaemonView, instance_id: &str, reason: &str) {
        let previous = self.slot(daemon, instance_id);
        let live = self.live_tasks(daemon, instance_id);
        for task in &live {
            self.push(Action::Stop {
                task_arn: task.arn.clone(),
                instance_id: instance_id.into(),
                daemon: daemon.name.clone(),
                reason: reason.into(),
            });
        }
        if let Some(p) = previous {
            if live.is_empty()
                && (p.record.stopped_early.is_some() || p.record.critical_drain_at.is_some())
            {
                // Kept for status until the instance is gone (see `report_early_stops`; a
                // critical daemon's drain says why the instance drains).
            } else if live.is_empty() {
                // Nothing left to stop: the slot has done its job.
                self.push(Action::DeleteSlot {
                    key: p.record.key_of(),
                    version: p.version,
                });
            } else if p.record.state != SlotState::Stopping {
                let mut slot = self.new_slot(daemon, instance_id, previous);
                slot.state = SlotState::Stopping;
                self.record(slot, previous);
            }
        }
    }

    pub(super) fn draining(&mut self, instance: &'a ContainerInstance) {
        let instance_id = instance.id();
        self.current = self
            .by_instance
            .get(instance_id)
            .map(|items| (instance_id, items));
        if is_ready(instance) {
            self.push(Action::ClearReady {
                instance_arn: instance.arn.clone(),
                reason: "instance is DRAINING".into(),
            });
        }
        let (with_copies, without): (Vec<&DaemonView>, Vec<&DaemonView>) =
            self.daemons.iter().copied().partition(|d| {
                self.daemon_tasks(d, instance_id)
                    .iter()
                    .any(|t| occupies(t))
            });
        for daemon in without {
            // A copy ECS stopped early, or a critical daemon's drain, stays on record
            // (status) until the instance is gone.
            if let Some(slot) = self.slot(daemon, instance_id).filter(|s| {
                s.record.stopped_early.is_none() && s.record.critical_drain_at.is_none()
            }) {
                self.push(Action::DeleteSlot {
                    key: slot.record.key_of(),
                    version: slot.version,
                });
            }
        }
        // The counts only rule a stop out; stopping takes the fresh read. Our copies are
        // taken out of the counts as ECS counts them, else a copy still PENDING (in both
        // counts) would pass for another task and hold the drain up.
        let ours_in_counts: i64 = self.items(instance_id).map_or(0, |items| {
            items.tasks.iter().map(|(_, _, t)| in_counts(t)).sum()
        });
        let counted =
            i64::from(instance.running_tasks) + i64::from(instance.pending_tasks) - ours_in_counts;
        let others_seen = self
            .observation
            .drain_census
            .get(instance_id)
            .map_or(counted, |&others| others as i64);
        self.report_early_stops(instance, others_seen);
        if with_copies.is_empty() {
            return;
        }
        let others = match self.observation.drain_census.get(instance_id) {
            Some(&others) => others as i64,
            None => {
                if counted <= 0 {
                    self.plan.drain_checks.push(instance.arn.clone());
                    return;
                }
                counted
            }
        };
        if others > 0 {
            for daemon in with_copies {
                self.trouble(
                    daemon,
                    instance_id,
                    "DRAINING",
                    format!("kept running until {others} other task(s) leave the instance"),
                );
            }
            return;
        }
        // Reverse start order: only the latest-starting daemons still present stop now.
        let last_order = with_copies.iter().map(|d| d.start_order).max();
        for daemon in with_copies
            .into_iter()
            .filter(|d| Some(d.start_order) == last_order)
        {
            self.stop_all(
                daemon,
                instance_id,
                "ecs-daemons: drain-last, no other task left on the DRAINING instance",
            );
        }
    }
}

impl<'a, 'g> Planner<'a, 'g> {
    /// A DAEMON service's copy stopped on this DRAINING instance that ecs-daemons did not
    /// ask to stop (its slot is not `Stopping`) while other tasks still ran: ECS stopped it
    /// before the applications (containers-roadmap #1700, amazon-ecs-agent #3829). Recorded
    /// on the slot once, reported by `status` and the `DaemonsStoppedEarly` metric.
    fn report_early_stops(&mut self, instance: &ContainerInstance, others: i64) {
        if others <= 0 {
            return;
        }
        let instance_id = instance.id();
        for daemon in self.daemons.clone() {
            let Some(previous) = self.slot(daemon, instance_id) else {
                continue;
            };
            if previous.record.state == SlotState::Stopping
                || previous.record.stopped_early.is_some()
            {
                continue;
            }
            let stopped = self
                .daemon_tasks(daemon, instance_id)
                .into_iter()
                .find(|t| {
                    t.desired_status == TaskStatus::Stopped
                        && t.group
                            .as_deref()
                            .and_then(crate::placement::services::daemon_of_group)
                            .is_some()
                });
            let Some(task) = stopped else { continue };
            let reason = format!(
                "ECS stopped copy {} while {others} other task(s) still ran on the DRAINING instance ({})",
                task.id(),
                task.stopped_reason.as_deref().unwrap_or("no reason given")
            );
            self.trouble(daemon, instance_id, "STOPPED_EARLY", reason.clone());
            self.plan.early_stops.push(EarlyStop {
                daemon: daemon.name.clone(),
                instance_id: instance_id.into(),
                task_arn: task.arn.clone(),
                others,
            });
            let mut slot = self.new_slot(daemon, instance_id, Some(previous));
            slot.stopped_early = Some(reason);
            self.record(slot, Some(previous));
        }
    }
}

/// How many times a task is in its instance's `runningTasksCount` + `pendingTasksCount`:
/// "tasks … that have a desired status of RUNNING" and "tasks … in the PENDING status" (API
/// reference, `ContainerInstance`): a PENDING task meant to run, read literally, in both.
pub(super) fn in_counts(task: &Task) -> i64 {
    i64::from(task.desired_status == TaskStatus::Running && !task.last_status.is_terminal())
        + i64::from(task.last_status == TaskStatus::Pending)
}
