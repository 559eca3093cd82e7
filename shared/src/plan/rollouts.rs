//! Rollouts as a whole: the breaker, the end (and the automatic rollback), superseded
//! rollouts, and the next batch up to maxParallel, canary first.

use super::*;

/// The rollout's failure history with this reconcile's failures added once each, oldest
/// first, the newest [`Rollout::FAILURES_KEPT`] kept.
fn merge_failures(record: &mut Rollout, failures: Vec<RolloutFailure>) {
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
}

/// How many more instances may start their surge now: none while paused or waiting for a
/// manual canary's promote; else maxParallel less those in flight, and, until the canary
/// batch is done, only canaries (a failed one is replaced).
fn surge_budget(record: &Rollout, counts: &RolloutCounts) -> usize {
    if record.control.paused.is_some() || record.awaits_promote(counts) {
        return 0;
    }
    let config = &record.config;
    let in_flight = (counts.surging + counts.settling + counts.lingering) as usize;
    let mut budget = config
        .max_parallel
        .of(counts.total as usize)
        .saturating_sub(in_flight);
    if let Some(canary) = config.canary {
        let canary = (canary.instances as usize).min(counts.total as usize);
        if (counts.done as usize) < canary {
            budget = budget.min(canary.saturating_sub(counts.done as usize + in_flight));
        }
    }
    budget
}

/// The rollout that rolls back to `good` after the breaker tripped on `record` (whose
/// daemon runs `target`).
fn automatic_rollback(record: &Rollout, target: &str, good: &str, now: DateTime<Utc>) -> Rollout {
    Rollout {
        cluster: record.cluster.clone(),
        daemon: record.daemon.clone(),
        id: Rollout::new_id(now, &format!("{}auto", record.id)),
        kind: RolloutKind::AutoRollback,
        from_task_definition: Some(target.into()),
        to_task_definition: good.into(),
        config: record.config.clone(),
        state: RolloutState::InProgress,
        counts: RolloutCounts::default(),
        failures: Vec::new(),
        reason: Some(match record.alarm_watch.triggered_alarm_names.as_slice() {
            [] => format!("the circuit breaker tripped on {target}"),
            alarms => format!(
                "CloudWatch alarm(s) {} went into ALARM on {target}",
                alarms.join(", ")
            ),
        }),
        started_at: now,
        updated_at: now,
        finished_at: None,
        managed_instances: false,
        deployment_arn: None,
        control: crate::rollout::RolloutControl::default(),
        alarm_watch: crate::rollout::AlarmWatch::default(),
    }
}

/// How soon alarms that could not be read are read again (the schedule's cadence: a
/// CloudWatch alarm's state moves once a period, a minute at the shortest).
const ALARM_POLL_SECONDS: i64 = 60;

/// Where a rollout whose every instance is done stands with its alarms' bake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BakeStep {
    /// No alarms, or the bake is over with them read and quiet: the rollout succeeds.
    Baked,
    /// The bake begins now and ends then.
    Begins(DateTime<Utc>),
    /// The bake goes on until then.
    Until(DateTime<Utc>),
    /// The bake is over but the alarms could not be read: succeed only on a reading.
    Unjudged,
}

/// The bake after the last instance (`rollout.bakeSeconds`), during which the alarms are
/// still watched and the rollout stays IN_PROGRESS, as ECS keeps a deployment's rollout
/// state until its bake ends (developer guide, *How CloudWatch alarms detect Amazon ECS
/// deployment failures*).
fn bake_step(record: &Rollout, reading: &AlarmReading, now: DateTime<Utc>) -> BakeStep {
    let bake = match record.config.bake() {
        Some(bake) if !record.watched_alarms().is_empty() => bake,
        _ => return BakeStep::Baked,
    };
    match record.alarm_watch.baking_since {
        None if bake > Duration::zero() => BakeStep::Begins(now + bake),
        Some(since) if since + bake > now => BakeStep::Until(since + bake),
        _ if !matches!(reading, AlarmReading::Read(_)) => BakeStep::Unjudged,
        _ => BakeStep::Baked,
    }
}

impl<'a, 'g> Planner<'a, 'g> {
    /// Full reconciles only: trip the breaker, finish, or start the next surges of each rollout.
    pub(super) fn advance_rollouts(&mut self) {
        self.supersede_stale_rollouts();
        for daemon in self.daemons.clone() {
            let Some(rollout) = self.rollout_of(daemon) else {
                continue;
            };
            let Tally {
                mut counts,
                candidates,
                failures,
            } = self.tallies.remove(&daemon.name).unwrap_or_default();
            counts.threshold = rollout
                .record
                .config
                .failure_threshold
                .of(counts.total as usize) as u32;
            let mut record = rollout.record.clone();
            record.updated_at = self.observation.now;
            merge_failures(&mut record, failures);
            let firing: Vec<String> = self
                .observation
                .alarms
                .firing(record.watched_alarms())
                .iter()
                .map(|alarm| alarm.name.clone())
                .collect();
            if counts.failures >= counts.threshold {
                let last = record.failures.last().map_or_else(String::new, |f| {
                    format!("; last on {}: {}", f.instance_id, f.reason)
                });
                let reason = format!(
                    "the circuit breaker tripped: {} failure(s) reached the threshold of {}{last}",
                    counts.failures, counts.threshold
                );
                self.trip_breaker(daemon, rollout, record, counts, reason);
            } else if !firing.is_empty() {
                // ECS's rule for a deployment with alarms (developer guide, *How CloudWatch
                // alarms detect Amazon ECS deployment failures*): any in ALARM fails it.
                let reason = format!(
                    "CloudWatch alarm(s) {} went into ALARM {}",
                    firing.join(", "),
                    match record.alarm_watch.baking_since {
                        Some(_) => "during the bake after the last instance",
                        None => "while the rollout ran",
                    }
                );
                record.alarm_watch.triggered_alarm_names = firing;
                self.trip_breaker(daemon, rollout, record, counts, reason);
            } else if counts.done == counts.total && counts.lingering == 0 {
                match bake_step(&record, &self.observation.alarms, self.observation.now) {
                    BakeStep::Baked => self.succeed(daemon, rollout, record, counts),
                    step => self.bake(daemon, rollout, record, counts, step),
                }
            } else {
                self.surge_next(daemon, rollout, record, counts, candidates);
            }
        }
    }

    /// Every instance is done but the alarms are still watched: the bake begins (recorded),
    /// or goes on until it ends or the alarms can be read.
    fn bake(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        mut record: Rollout,
        counts: RolloutCounts,
        step: BakeStep,
    ) {
        let now = self.observation.now;
        match step {
            BakeStep::Begins(until) => {
                record.alarm_watch.baking_since = Some(now);
                self.wake_at(until);
            }
            BakeStep::Until(until) => self.wake_at(until),
            BakeStep::Unjudged => self.wake_at(now + Duration::seconds(ALARM_POLL_SECONDS)),
            BakeStep::Baked => {}
        }
        self.plan
            .rollouts
            .insert(daemon.name.clone(), counts.clone());
        if record.counts != counts || record.alarm_watch != rollout.record.alarm_watch {
            record.counts = counts;
            self.push(Action::RecordRollout {
                rollout: Box::new(record),
                expected: rollout.expected(),
            });
        }
    }

    /// Rollouts left in progress that the spec no longer names were replaced.
    fn supersede_stale_rollouts(&mut self) {
        let now = self.observation.now;
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
    }

    /// The breaker tripped (failures or alarms): the rollout fails, and the daemon switches
    /// back to its last good revision (with an automatic rollback where configured).
    fn trip_breaker(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        mut record: Rollout,
        counts: RolloutCounts,
        reason: String,
    ) {
        let now = self.observation.now;
        let target = daemon.task_definition.clone();
        record.state = RolloutState::Failed;
        record.reason = Some(reason);
        record.finished_at = Some(now);
        record.counts = counts.clone();
        // Restarts this plan meant on the failing revision are dropped: it must not
        // spread further; the instances get the good revision from the next reconcile.
        self.plan.actions.retain(|action| {
            !matches!(action, Action::Start { task_definition, claim, .. }
                if *task_definition == target && claim.daemon == daemon.name)
        });
        // On DAEMON services only a revision one of them runs can come back without a
        // deploy: the last good one if so, else the one an update moved away from (never
        // the one a rollback left: it is the revision that failed).
        let good = match &daemon.services {
            Some(services)
                if daemon
                    .last_good
                    .as_deref()
                    .is_none_or(|good| services.letter_for(good).is_none()) =>
            {
                record.from_task_definition.clone().filter(|from| {
                    record.kind == RolloutKind::Update && services.letter_for(from).is_some()
                })
            }
            _ => daemon.last_good.clone(),
        };
        let back = good
            .clone()
            .filter(|good| *good != target && record.config.auto_rollback);
        let switch = match back {
            Some(good) => {
                let rollback = automatic_rollback(&record, &target, &good, now);
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
                task_definition: good.unwrap_or_else(|| target.clone()),
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
    }

    /// Every instance is done: the rollout succeeds and its revision becomes the last good.
    fn succeed(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        mut record: Rollout,
        counts: RolloutCounts,
    ) {
        let target = daemon.task_definition.clone();
        record.state = RolloutState::Succeeded;
        record.finished_at = Some(self.observation.now);
        record.counts = counts.clone();
        self.push(Action::SwitchRevision {
            daemon: daemon.name.clone(),
            task_definition: target.clone(),
            active_rollout: None,
            last_good: Some(target),
            new_rollout: None,
        });
        self.plan.rollouts.insert(daemon.name.clone(), counts);
        self.push(Action::RecordRollout {
            rollout: Box::new(record),
            expected: rollout.expected(),
        });
    }

    /// The next batch: claims up to the budget, fresh instances first in a stable order,
    /// failed ones retried after them; the rollout's progress recorded where it changed.
    fn surge_next(
        &mut self,
        daemon: &DaemonView,
        rollout: &Versioned<Rollout>,
        mut record: Rollout,
        mut counts: RolloutCounts,
        mut candidates: Vec<(String, bool)>,
    ) {
        let now = self.observation.now;
        let config = &rollout.record.config;
        let budget = surge_budget(&rollout.record, &counts);
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
            if retry {
                counts.failed -= 1;
            } else {
                counts.pending -= 1;
            }
            counts.surging += 1;
            self.claim_surge(daemon, &record.id, instance_arn, config.surge_fallback);
        }
        // New copies report RUNNING on their own time, and another rollout's copies stop on
        // theirs: look again soon while any are on the way. Settling copies wake the check at
        // their own moment (minHealthySeconds).
        if counts.surging > 0 || counts.lingering > 0 {
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

    /// Claims one instance's slot for the new copy beside the old one.
    fn claim_surge(
        &mut self,
        daemon: &DaemonView,
        rollout_id: &str,
        instance_arn: String,
        fallback: SurgeFallback,
    ) {
        let instance_id = resource_id(&instance_arn).to_string();
        let previous = self.slot(daemon, &instance_id);
        let mut claim = self.new_slot(daemon, &instance_id, previous);
        let failures = claim
            .rollout
            .as_ref()
            .filter(|r| r.rollout_id == rollout_id)
            .map_or(0, |r| r.failures);
        claim.rollout = Some(SlotRollout {
            rollout_id: rollout_id.into(),
            step: RolloutStep::Surging,
            since: self.observation.now,
            new_task_arn: None,
            failures,
            last_failure: None,
            gap: false,
        });
        self.push(Action::Start {
            instance_arn,
            task_definition: daemon.task_definition.clone(),
            claim,
            expected: previous.map_or(Expected::Absent, Versioned::expected),
            surge: Some(fallback),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Amount, Canary, Promote, RolloutConfig};

    fn counts(total: u32, surging: u32, settling: u32, done: u32) -> RolloutCounts {
        RolloutCounts {
            total,
            surging,
            settling,
            done,
            ..RolloutCounts::default()
        }
    }

    fn in_progress(config: RolloutConfig) -> Rollout {
        Rollout {
            state: RolloutState::InProgress,
            config,
            ..failed_update()
        }
    }

    fn mark() -> crate::rollout::OperatorMark {
        crate::rollout::OperatorMark {
            by: Some("alice".into()),
            invocation: "req-1".into(),
            at: DateTime::<Utc>::UNIX_EPOCH,
            reason: None,
        }
    }

    #[test]
    fn a_rollout_with_alarms_bakes_after_its_last_instance_before_it_succeeds() {
        use crate::alarms::{AlarmState, AlarmValue};
        let at = |seconds: i64| DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds);
        let quiet = AlarmReading::Read(
            [(
                "errors".to_string(),
                AlarmState {
                    name: "errors".into(),
                    value: AlarmValue::Ok,
                    reason: String::new(),
                    period_seconds: Some(60),
                    evaluation_periods: Some(3),
                },
            )]
            .into_iter()
            .collect(),
        );
        let unread = AlarmReading::Unreadable("Throttling".into());
        let plain = in_progress(RolloutConfig::default());
        assert_eq!(bake_step(&plain, &quiet, at(0)), BakeStep::Baked);
        let mut gated = in_progress(RolloutConfig {
            alarms: vec!["errors".into()],
            bake_seconds: Some(180),
            ..RolloutConfig::default()
        });
        gated.kind = RolloutKind::Update;
        assert_eq!(bake_step(&gated, &quiet, at(0)), BakeStep::Begins(at(180)));
        gated.alarm_watch.baking_since = Some(at(0));
        assert_eq!(bake_step(&gated, &quiet, at(100)), BakeStep::Until(at(180)));
        assert_eq!(
            bake_step(&gated, &unread, at(100)),
            BakeStep::Until(at(180))
        );
        assert_eq!(bake_step(&gated, &quiet, at(180)), BakeStep::Baked);
        assert_eq!(
            bake_step(&gated, &unread, at(200)),
            BakeStep::Unjudged,
            "never done on alarms nobody read"
        );
        let no_bake = in_progress(RolloutConfig {
            alarms: vec!["errors".into()],
            bake_seconds: Some(0),
            ..RolloutConfig::default()
        });
        assert_eq!(bake_step(&no_bake, &unread, at(0)), BakeStep::Unjudged);
        assert_eq!(bake_step(&no_bake, &quiet, at(0)), BakeStep::Baked);
        let mut rollback = gated.clone();
        rollback.kind = RolloutKind::AutoRollback;
        rollback.alarm_watch.baking_since = None;
        assert_eq!(
            bake_step(&rollback, &unread, at(0)),
            BakeStep::Baked,
            "a rollback is not gated by the alarms that failed its predecessor"
        );
    }

    #[test]
    fn the_budget_is_max_parallel_less_in_flight_and_canaries_first() {
        let config = RolloutConfig {
            max_parallel: Amount::Count(4),
            ..RolloutConfig::default()
        };
        let plain = in_progress(config.clone());
        assert_eq!(surge_budget(&plain, &counts(20, 0, 0, 0)), 4);
        assert_eq!(surge_budget(&plain, &counts(20, 1, 2, 5)), 1);
        assert_eq!(
            surge_budget(&plain, &counts(20, 3, 2, 5)),
            0,
            "never below zero"
        );
        let canary = in_progress(RolloutConfig {
            canary: Some(Canary::automatic(2)),
            ..config
        });
        assert_eq!(
            surge_budget(&canary, &counts(20, 0, 0, 0)),
            2,
            "canaries only"
        );
        assert_eq!(surge_budget(&canary, &counts(20, 1, 0, 0)), 1);
        assert_eq!(
            surge_budget(&canary, &counts(20, 0, 1, 1)),
            0,
            "canary still settling"
        );
        assert_eq!(
            surge_budget(&canary, &counts(20, 0, 0, 2)),
            4,
            "canaries done"
        );
        assert_eq!(
            surge_budget(&canary, &counts(1, 0, 0, 0)),
            1,
            "a one-instance canary"
        );
    }

    #[test]
    fn a_paused_rollout_and_an_unpromoted_manual_canary_start_nothing() {
        let mut paused = in_progress(RolloutConfig {
            max_parallel: Amount::Count(4),
            ..RolloutConfig::default()
        });
        paused.control.paused = Some(mark());
        assert_eq!(surge_budget(&paused, &counts(20, 0, 0, 5)), 0);
        paused.control.paused = None;
        paused.control.resumed = Some(mark());
        assert_eq!(surge_budget(&paused, &counts(20, 0, 0, 5)), 4, "resumed");

        let mut manual = in_progress(RolloutConfig {
            max_parallel: Amount::Count(4),
            canary: Some(Canary {
                instances: 2,
                promote: Promote::Manual,
            }),
            ..RolloutConfig::default()
        });
        assert_eq!(
            surge_budget(&manual, &counts(20, 0, 0, 0)),
            2,
            "the canary batch starts by itself"
        );
        assert_eq!(surge_budget(&manual, &counts(20, 0, 1, 1)), 0);
        assert!(!manual.awaits_promote(&counts(20, 0, 1, 1)));
        assert!(manual.awaits_promote(&counts(20, 0, 0, 2)));
        assert_eq!(
            surge_budget(&manual, &counts(20, 0, 0, 2)),
            0,
            "waits for promote"
        );
        assert!(
            manual.awaits_promote(&counts(1, 0, 0, 1)),
            "a canary larger than the fleet waits once the fleet is done"
        );
        manual.control.promoted = Some(mark());
        assert_eq!(surge_budget(&manual, &counts(20, 0, 0, 2)), 4, "promoted");
        assert!(!manual.awaits_promote(&counts(20, 0, 0, 2)));
    }

    #[test]
    fn failures_are_kept_once_each_oldest_dropped_first() {
        let at = |s: i64| DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(s);
        let failure = |instance: &str, s: i64| RolloutFailure {
            instance_id: instance.into(),
            reason: "exit 1".into(),
            at: at(s),
        };
        let mut record = failed_update();
        merge_failures(&mut record, vec![failure("i-1", 5), failure("i-2", 3)]);
        merge_failures(&mut record, vec![failure("i-1", 5)]);
        let seen: Vec<_> = record
            .failures
            .iter()
            .map(|f| f.instance_id.as_str())
            .collect();
        assert_eq!(seen, ["i-2", "i-1"], "sorted by time, a repeat not added");
        let many = (0..Rollout::FAILURES_KEPT as i64 + 3)
            .map(|s| failure(&format!("i-{s}"), 100 + s))
            .collect();
        merge_failures(&mut record, many);
        assert_eq!(record.failures.len(), Rollout::FAILURES_KEPT);
        assert_eq!(
            record.failures.last().map(|f| f.at),
            Some(at(100 + Rollout::FAILURES_KEPT as i64 + 2)),
            "the newest are kept"
        );
    }

    fn failed_update() -> Rollout {
        Rollout {
            cluster: "prod".into(),
            daemon: "agent".into(),
            id: "r1".into(),
            kind: RolloutKind::Update,
            from_task_definition: Some("agent:1".into()),
            to_task_definition: "agent:2".into(),
            config: RolloutConfig::default(),
            state: RolloutState::Failed,
            counts: RolloutCounts::default(),
            failures: Vec::new(),
            reason: None,
            started_at: DateTime::<Utc>::UNIX_EPOCH,
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            finished_at: None,
            managed_instances: false,
            deployment_arn: None,
            control: crate::rollout::RolloutControl::default(),
            alarm_watch: crate::rollout::AlarmWatch::default(),
        }
    }

    #[test]
    fn an_automatic_rollback_goes_from_the_failed_revision_to_the_last_good() {
        let rollback = automatic_rollback(
            &failed_update(),
            "agent:2",
            "agent:1",
            DateTime::<Utc>::UNIX_EPOCH,
        );
        assert_eq!(rollback.kind, RolloutKind::AutoRollback);
        assert_eq!(rollback.state, RolloutState::InProgress);
        assert_eq!(rollback.to_task_definition, "agent:1");
        assert_eq!(rollback.from_task_definition.as_deref(), Some("agent:2"));
        assert_ne!(rollback.id, "r1");
    }
}
