//! The services placement's own clean-up: a letter in an instance's slot attribute asks a
//! DAEMON service for a copy; one that no live copy answers and no pending start wants (a
//! request of a revision replaced meanwhile, or one a tripped breaker abandoned) is
//! withdrawn before the scheduler makes it come true.

use super::*;
use crate::placement::services::{daemon_of_group, slot_attribute, Letters, SLOT_ATTRIBUTE_PREFIX};

/// How many letters of the instance's slot attribute no live copy of the daemon answers,
/// `own` (a rollout's request of its new copy) aside: requests a DAEMON service's scheduler
/// may still act on, whatever this plan withdraws (its look may come first). Each is a
/// copy on its way that no task shows yet.
pub(super) fn unanswered_requests(
    daemon: &DaemonView,
    instance: &ContainerInstance,
    live: &[&Task],
    own: Option<Letter>,
) -> usize {
    if !daemon
        .services
        .as_ref()
        .is_some_and(|s| s.covers(instance.capacity_provider.as_deref()))
    {
        return 0;
    }
    let observed = observed_letters(instance, &daemon.name);
    [Letter::A, Letter::B]
        .into_iter()
        .filter(|letter| observed.has(*letter) && Some(*letter) != own)
        .filter(|letter| {
            !live.iter().any(|t| {
                t.group
                    .as_deref()
                    .and_then(daemon_of_group)
                    .is_some_and(|(name, l)| name == daemon.name && l == *letter)
            })
        })
        .count()
}

/// The letters of the daemon's slot attribute on the instance, as observed.
fn observed_letters(instance: &ContainerInstance, daemon: &str) -> Letters {
    Letters::parse(
        instance
            .attributes
            .get(&slot_attribute(daemon))
            .and_then(|v| v.as_deref()),
    )
}

impl<'a, 'g> Planner<'a, 'g> {
    /// Letters of a daemon no longer declared (undeployed, or its declaration gone) left in
    /// slot attributes with no live copy behind them: taken out, so its services (if ECS
    /// still has them) never start a copy, and the attribute goes with the last letter. A
    /// live copy's letter is taken out by its stop (`clean_up`).
    pub(super) fn withdraw_undeclared_letters(&mut self, actions: &mut Vec<Action>) {
        let observation = self.observation;
        for instance in &observation.instances {
            let live: Vec<&Task> = self
                .by_instance
                .get(instance.id())
                .map(|items| {
                    items
                        .tasks
                        .iter()
                        .filter(|(_, _, t)| is_live(t))
                        .map(|(_, _, t)| *t)
                        .collect()
                })
                .unwrap_or_default();
            for (name, value) in &instance.attributes {
                let Some(daemon) = name.strip_prefix(SLOT_ATTRIBUTE_PREFIX) else {
                    continue;
                };
                if self.daemons.iter().any(|d| d.name == daemon) {
                    continue;
                }
                let letters = Letters::parse(value.as_deref());
                for letter in [Letter::A, Letter::B] {
                    let copy_runs = live.iter().any(|t| {
                        t.group.as_deref().and_then(daemon_of_group) == Some((daemon, letter))
                    });
                    if letters.has(letter) && !copy_runs {
                        actions.push(Action::WithdrawRequest {
                            instance_arn: instance.arn.clone(),
                            daemon: daemon.into(),
                            letter,
                            reason: format!("ecs-daemons: daemon {daemon} is no longer declared"),
                        });
                    }
                }
            }
        }
    }

    /// The revision, rollout and the revision that rollout moves away from, once this
    /// plan's switches are carried out.
    fn effective(&self, daemon: &'a DaemonView) -> (String, Option<String>, Option<String>) {
        let switched = self.plan.actions.iter().find_map(|action| match action {
            Action::SwitchRevision {
                daemon: name,
                task_definition,
                active_rollout,
                new_rollout,
                ..
            } if *name == daemon.name => Some((
                task_definition.clone(),
                active_rollout.clone(),
                new_rollout
                    .as_ref()
                    .and_then(|r| r.from_task_definition.clone()),
            )),
            _ => None,
        });
        switched.unwrap_or_else(|| {
            let from = self
                .rollout_of(daemon)
                .and_then(|r| r.record.from_task_definition.clone());
            (
                daemon.task_definition.clone(),
                daemon.active_rollout.clone(),
                from,
            )
        })
    }

    /// The revision of the slot's own copy when its DAEMON service restarts it by itself:
    /// the copy stopped (or is being replaced), its revision is in force, or the good one a
    /// rollout moves away from (never a revision a rollback leaves: it failed), and its
    /// letter stays in the slot attribute.
    fn restarted_revision<'s>(&self, daemon: &'a DaemonView, slot: &'s Slot) -> Option<&'s str> {
        let (target, _, from) = self.effective(daemon);
        slot.task_definition.as_deref().filter(|revision| {
            slot.task_arn.is_some()
                && slot.state != SlotState::Stopping
                && (*revision == target
                    || (Some(*revision) == from.as_deref()
                        && Some(*revision) == daemon.last_good.as_deref()))
        })
    }

    /// A copy placed otherwise than the daemon's provider places it now, with no rollout to
    /// replace it (one that failed, or whose rollback failed, left it): reported, since on
    /// DAEMON services a standalone copy counts as an application task for ECS.
    pub(super) fn report_misplaced(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        keeper: &Task,
    ) {
        let provider = instance.capacity_provider.as_deref();
        if placed_right(keeper, daemon, provider) {
            return;
        }
        let cure = "a rollout replaces it: deploy a new revision, or the revision of the \
                    failed rollout again";
        let reason = if daemon.services.as_ref().is_some_and(|s| s.covers(provider)) {
            format!(
                "copy {} runs as a standalone task where DAEMON services place {}: ECS counts \
                 it as an application task, so managed scaling does not scale this instance \
                 in and managed termination protection keeps it; {cure}",
                keeper.id(),
                daemon.name
            )
        } else {
            format!(
                "copy {} runs from a DAEMON service where {} runs as standalone tasks; {cure}",
                keeper.id(),
                daemon.name
            )
        };
        self.trouble(daemon, instance.id(), "MISPLACED", reason);
    }

    /// A DAEMON service restarts a stopped copy by itself as long as its letter stays: the
    /// slot's copy is waited for, not requested again beside it.
    pub(super) fn service_restarts(
        &self,
        daemon: &'a DaemonView,
        instance: &ContainerInstance,
        slot: &Slot,
    ) -> bool {
        let Some(services) = daemon
            .services
            .as_ref()
            .filter(|s| s.covers(instance.capacity_provider.as_deref()))
        else {
            return false;
        };
        let observed = observed_letters(instance, &daemon.name);
        self.restarted_revision(daemon, slot)
            .and_then(|revision| services.letter_for(revision))
            .is_some_and(|letter| observed.has(letter))
    }

    /// Letters of the instance's slot attribute that nothing answers or wants any more.
    pub(super) fn withdraw_stale_requests(&mut self) {
        let observation = self.observation;
        for instance in observation
            .instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Active)
        {
            let instance_id = instance.id();
            self.current = self
                .by_instance
                .get(instance_id)
                .map(|items| (instance_id, items));
            for daemon in self.daemons.clone() {
                let Some(services) = daemon
                    .services
                    .as_ref()
                    .filter(|s| s.covers(instance.capacity_provider.as_deref()))
                else {
                    continue;
                };
                let observed = observed_letters(instance, &daemon.name);
                if observed == Letters::default() {
                    continue;
                }
                let (target, rollout, _) = self.effective(daemon);
                let mut wanted = Letters::default();
                for task in self.live_tasks(daemon, instance_id) {
                    if let Some((_, letter)) = task.group.as_deref().and_then(daemon_of_group) {
                        wanted = wanted.with(letter, true);
                    }
                }
                let starts = self.plan.actions.iter().filter_map(|action| match action {
                    Action::Start {
                        instance_arn,
                        task_definition,
                        claim,
                        ..
                    } if *instance_arn == instance.arn && claim.daemon == daemon.name => {
                        Some(task_definition.clone())
                    }
                    _ => None,
                });
                let slot = self.slot(daemon, instance_id).map(|s| &s.record);
                let waiting = slot.and_then(|slot| {
                    let steady = matches!(slot.state, SlotState::Claimed | SlotState::Starting)
                        && slot.task_arn.is_none();
                    let surging = slot.rollout.as_ref().is_some_and(|step| {
                        step.step == RolloutStep::Surging
                            && step.new_task_arn.is_none()
                            && Some(&step.rollout_id) == rollout.as_ref()
                    });
                    match (steady, surging) {
                        (true, _) => slot.task_definition.clone(),
                        (false, true) => Some(target.clone()),
                        (false, false) => None,
                    }
                });
                for revision in starts.chain(waiting) {
                    // Only a request of the revision in force is still wanted.
                    if revision == target {
                        if let Some(letter) = services.letter_for(&revision) {
                            wanted = wanted.with(letter, true);
                        }
                    }
                }
                // The slot's own copy, stopped and being restarted by its service.
                let restarted = slot.and_then(|slot| self.restarted_revision(daemon, slot));
                if let Some(letter) = restarted.and_then(|r| services.letter_for(r)) {
                    wanted = wanted.with(letter, true);
                }
                for letter in [Letter::A, Letter::B] {
                    if observed.has(letter) && !wanted.has(letter) {
                        self.push(Action::WithdrawRequest {
                            instance_arn: instance.arn.clone(),
                            daemon: daemon.name.clone(),
                            letter,
                            reason: format!(
                                "ecs-daemons: no copy of {} is wanted from service {} any more",
                                target,
                                crate::placement::services::service_name(&daemon.name, letter)
                            ),
                        });
                    }
                }
            }
        }
    }
}
