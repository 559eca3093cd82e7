//! The services placement's own clean-up: a letter in an instance's slot attribute asks a
//! DAEMON service for a copy; one that no live copy answers and no pending start wants (a
//! request of a revision replaced meanwhile, or one a tripped breaker abandoned) is
//! withdrawn before the scheduler makes it come true.

use super::*;
use crate::placement::services::{daemon_of_group, slot_attribute, Letters};

impl<'a, 'g> Planner<'a, 'g> {
    /// The revision and rollout a daemon has once this plan's switches are carried out.
    fn effective(&self, daemon: &'a DaemonView) -> (String, Option<String>) {
        self.plan
            .actions
            .iter()
            .find_map(|action| match action {
                Action::SwitchRevision {
                    daemon: name,
                    task_definition,
                    active_rollout,
                    ..
                } if *name == daemon.name => {
                    Some((task_definition.clone(), active_rollout.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                (
                    daemon.task_definition.clone(),
                    daemon.active_rollout.clone(),
                )
            })
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
                let attribute = slot_attribute(&daemon.name);
                let observed = Letters::parse(
                    instance
                        .attributes
                        .get(&attribute)
                        .and_then(|v| v.as_deref()),
                );
                if observed == Letters::default() {
                    continue;
                }
                let (target, rollout) = self.effective(daemon);
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
