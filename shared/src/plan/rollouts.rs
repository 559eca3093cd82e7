//! Rollouts as a whole: the breaker, the end (and the automatic rollback), superseded
//! rollouts, and the next batch up to maxParallel, canary first.

use super::*;

impl<'a, 'g> Planner<'a, 'g> {
    /// Full reconciles only: trip the breaker, finish, or start the next surges of each rollout.
    pub(super) fn advance_rollouts(&mut self) {
        let now = self.observation.now;
        // Rollouts left in progress that the spec no longer names were replaced.
        for stale in &self.observation.rollouts {
            let active = self
                .daemons
                .iter()
                .position(|d| d.name == stale.record.daemon)
                .and_then(|index| self.rollouts[index])
                .map(|r| r.record.id.as_str());
            if stale.record.state == RolloutState::InProgress
                && active != Some(stale.record.id.as_str())
                && stale.version > 0
            {
                let mut ended = stale.record.clone();
                ended.state = RolloutState::Superseded;
                ended.reason = Some(match active {
                    Some(id) => format!("replaced by rollout {id}"),
                    None => "no longer the daemon's active rollout".into(),
                });
                ended.finished_at = Some(now);
                ended.updated_at = now;
                self.push(Action::RecordRollout {
                    rollout: Box::new(ended),
                    expected: stale.expected(),
                });
            }
        }
        for daemon in self.daemons.clone() {
            let Some(rollout) = self.rollout_of(daemon) else {
                continue;
            };
            let Tally {
                mut counts,
                mut candidates,
                failures,
            } = self.tallies.remove(&daemon.name).unwrap_or_default();
            let config = &rollout.record.config;
            let target = daemon.task_definition.clone();
            counts.threshold = config.failure_threshold.of(counts.total as usize) as u32;
            let mut record = rollout.record.clone();
            record.updated_at = now;
            for failure in failures {
                if !record
                    .failures
                    .iter()
                    .any(|f| f.instance_id == failure.instance_id && f.at == failure.at)
                {
                    record.failures.push(failure);
                }
            }
            record.failures.sort_by_key(|f| f.at);
            let excess = record.failures.len().saturating_sub(Rollout::FAILURES_KEPT);
            record.failures.drain(..excess);

            if counts.failures >= counts.threshold {
                let last = record.failures.last().map_or_else(String::new, |f| {
                    format!("; last on {}: {}", f.instance_id, f.reason)
                });
                record.state = RolloutState::Failed;
                record.reason = Some(format!(
                    "the circuit breaker tripped: {} failure(s) reached the threshold of {}{last}",
                    counts.failures, counts.threshold
                ));
                record.finished_at = Some(now);
                record.counts = counts.clone();
                // Restarts this plan meant on the failing revision are dropped: it must not
                // spread further; the instances get the good revision from the next reconcile.
                self.plan.actions.retain(|action| {
                    !matches!(action, Action::Start { task_definition, claim, .. }
                        if *task_definition == target && claim.daemon == daemon.name)
                });
                let back = daemon
                    .last_good
                    .clone()
                    .filter(|good| *good != target && config.auto_rollback);
                let switch = match back {
                    Some(good) => {
                        let rollback = Rollout {
                            cluster: record.cluster.clone(),
                            daemon: daemon.name.clone(),
                            id: Rollout::new_id(now, &format!("{}auto", record.id)),
                            kind: RolloutKind::AutoRollback,
                            from_task_definition: Some(target.clone()),
                            to_task_definition: good.clone(),
                            config: config.clone(),
                            state: RolloutState::InProgress,
                            counts: RolloutCounts::default(),
                            failures: Vec::new(),
                            reason: Some(format!("the circuit breaker tripped on {target}")),
                            started_at: now,
                            updated_at: now,
                            finished_at: None,
                        };
                        Action::SwitchRevision {
                            daemon: daemon.name.clone(),
                            task_definition: good,
                            active_rollout: Some(rollback.id.clone()),
                            last_good: daemon.last_good.clone(),
                            new_rollout: Some(Box::new(rollback)),
                        }
                    }
                    // No rollback: instances stay where they are, and instances that join get
                    // the last good revision rather than the one that just failed.
                    None => Action::SwitchRevision {
                        daemon: daemon.name.clone(),
                        task_definition: daemon.last_good.clone().unwrap_or_else(|| target.clone()),
                        active_rollout: None,
                        last_good: daemon.last_good.clone(),
                        new_rollout: None,
                    },
                };
                self.push(switch);
                self.plan.rollouts.insert(daemon.name.clone(), counts);
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
                continue;
            }
            if counts.done == counts.total {
                record.state = RolloutState::Succeeded;
                record.finished_at = Some(now);
                record.counts = counts.clone();
                self.push(Action::SwitchRevision {
                    daemon: daemon.name.clone(),
                    task_definition: target.clone(),
                    active_rollout: None,
                    last_good: Some(target.clone()),
                    new_rollout: None,
                });
                self.plan.rollouts.insert(daemon.name.clone(), counts);
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
                continue;
            }
            let in_flight = (counts.surging + counts.settling) as usize;
            let mut budget = config
                .max_parallel
                .of(counts.total as usize)
                .saturating_sub(in_flight);
            if let Some(canary) = config.canary {
                // Until the canary batch is done, only canaries run (a failed one is replaced).
                let canary = (canary as usize).min(counts.total as usize);
                if (counts.done as usize) < canary {
                    budget = budget.min(canary.saturating_sub(counts.done as usize + in_flight));
                }
            }
            // Fresh instances first, in a stable order; failed ones retried after them.
            candidates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            self.plan.rollout_queues.insert(
                daemon.name.clone(),
                RolloutQueue {
                    order: candidates.iter().map(|(arn, _)| arn.clone()).collect(),
                    now: budget.min(candidates.len()),
                    max_parallel: config.max_parallel.of(counts.total as usize),
                },
            );
            for (instance_arn, retry) in candidates.into_iter().take(budget) {
                let instance_id = resource_id(&instance_arn).to_string();
                let previous = self.slot(daemon, &instance_id);
                let mut claim = self.new_slot(daemon, &instance_id, previous);
                let failures = claim
                    .rollout
                    .as_ref()
                    .filter(|r| r.rollout_id == record.id)
                    .map_or(0, |r| r.failures);
                claim.rollout = Some(SlotRollout {
                    rollout_id: record.id.clone(),
                    step: RolloutStep::Surging,
                    since: now,
                    new_task_arn: None,
                    failures,
                    last_failure: None,
                    gap: false,
                });
                if retry {
                    counts.failed -= 1;
                } else {
                    counts.pending -= 1;
                }
                counts.surging += 1;
                self.push(Action::Start {
                    instance_arn,
                    task_definition: target.clone(),
                    claim,
                    expected: previous.map_or(Expected::Absent, Versioned::expected),
                    surge: Some(config.surge_fallback),
                });
            }
            // New copies report RUNNING on their own time: look again soon while any are on
            // the way. Settling copies wake the check at their own moment (minHealthySeconds).
            if counts.surging > 0 {
                self.wake_at(now + Duration::seconds(ROLLOUT_POLL_SECONDS));
            }
            record.counts = counts.clone();
            self.plan.rollouts.insert(daemon.name.clone(), counts);
            if record != rollout.record {
                self.push(Action::RecordRollout {
                    rollout: Box::new(record),
                    expected: rollout.expected(),
                });
            }
        }
    }
}
