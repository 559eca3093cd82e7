//! Carrying out a plan's rollout actions: spec switches with the rollouts they end and start
//! (one transaction), then progress records.

use super::*;

impl<E: Ecs, S: Store> Engine<E, S> {
    /// Rollout bookkeeping after the instance actions: spec switches, then progress and ends
    /// of the running rollouts. All conditional.
    pub(super) async fn write_rollouts(
        &self,
        observation: &Observation,
        actions: Vec<Action>,
        outcome: &mut Outcome,
    ) {
        let (switches, mut records): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::SwitchRevision { .. }));
        for switch in switches {
            let Action::SwitchRevision { ref daemon, .. } = switch else {
                continue;
            };
            // The end of the rollout this switch closes goes into the same transaction: a
            // switch that landed without its end would leave a rollout in progress that the
            // spec no longer names, and its outcome (FAILED, SUCCEEDED) would be lost.
            let ending = records
                .iter()
                .position(|a| {
                    matches!(a, Action::RecordRollout { rollout, .. }
                        if &rollout.daemon == daemon && rollout.state != RolloutState::InProgress)
                })
                .map(|index| records.remove(index));
            self.switch_revision(observation, switch, ending, outcome)
                .await;
        }
        for action in records {
            let Action::RecordRollout { rollout, expected } = action else {
                continue;
            };
            match self.store.put(rollout.as_ref(), expected).await {
                Ok(_) if rollout.state != RolloutState::InProgress => {
                    outcome.rollouts_ended.push(EndedRollout::of(&rollout))
                }
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
    }

    /// One transaction: the rollout the switch starts (if any), the spec, and the end of the
    /// rollout it closes (if any). Lost or failed, nothing is written and the next full
    /// reconcile decides again.
    pub(super) async fn switch_revision(
        &self,
        observation: &Observation,
        switch: Action,
        ending: Option<Action>,
        outcome: &mut Outcome,
    ) {
        let Action::SwitchRevision {
            daemon,
            task_definition,
            active_rollout,
            last_good,
            new_rollout,
        } = switch
        else {
            return;
        };
        let Some(current) = observation.specs.iter().find(|s| s.record.daemon == daemon) else {
            return;
        };
        let mut spec = current.record.clone();
        // The revision switched to keeps its own health-check fact (an automatic rollback
        // from a health-checked revision to one without must not wait for HEALTHY).
        spec.has_health_check = spec.health_check_of(&task_definition);
        spec.task_definition = task_definition;
        spec.active_rollout = active_rollout;
        if last_good.is_some() && last_good != spec.last_good_task_definition {
            spec.previous_good_task_definition = spec.last_good_task_definition.take();
        }
        spec.last_good_task_definition = last_good;
        spec.updated_at = observation.now;
        let ended = match ending {
            Some(Action::RecordRollout { rollout, expected }) => Some((rollout, expected)),
            _ => None,
        };
        let puts = new_rollout
            .as_deref()
            .map(|rollout| PreparedPut::of(rollout, Expected::Absent))
            .into_iter()
            .chain(std::iter::once(PreparedPut::of(&spec, current.expected())))
            .chain(
                ended
                    .as_ref()
                    .map(|(rollout, expected)| PreparedPut::of(rollout.as_ref(), *expected)),
            )
            .collect::<Result<Vec<_>, _>>();
        let written = match puts {
            Ok(puts) => self.store.put_all(&puts).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(_) => {
                if let Some(rollout) = new_rollout {
                    outcome.rollouts_started.push(rollout.id.clone());
                }
                if let Some((rollout, _)) = ended {
                    outcome.rollouts_ended.push(EndedRollout::of(&rollout));
                }
            }
            Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }
}
