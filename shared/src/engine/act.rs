//! Carrying out a plan's instance actions: readiness first, slot claims before StartTask,
//! stops, slot bookkeeping, times to coverage.

use super::*;

/// A slot won for a start, waiting for its StartTask batch.
#[derive(Clone)]
pub(super) struct Claimed {
    pub(super) instance_arn: String,
    pub(super) slot: Slot,
    pub(super) expected: Expected,
    pub(super) surge: Option<SurgeFallback>,
}

fn ready_attribute(instance_arn: &str) -> InstanceAttribute {
    InstanceAttribute {
        container_instance: instance_arn.into(),
        name: READY_ATTRIBUTE.into(),
        value: Some("true".into()),
    }
}

/// A plan's actions sorted for carrying out: readiness cleared first (one batch), then
/// slot writes, stops and starts, rollout records, and readiness set last (one batch).
#[derive(Default)]
struct Work {
    clear_ready: Vec<(String, String)>,
    set_ready: Vec<String>,
    starts: BTreeMap<String, Vec<Claimed>>,
    rollout_writes: Vec<Action>,
    stops_failed: bool,
    /// Slot attributes of the services placement changed so far.
    attributes: super::services::SlotAttributes,
}

/// How one request's copies start: their revision, the daemon's restart policy (for a
/// refused start) and launch options, and the provider whose environment they get.
pub(super) struct StartHow<'a> {
    task_definition: &'a str,
    policy: RestartPolicy,
    launch: &'a crate::launch::LaunchOptions,
    provider: Option<&'a str>,
}

impl<E: Ecs, S: Store> Engine<E, S> {
    pub(super) async fn act(
        &self,
        observation: &Observation,
        planned: Plan,
        invocation: &str,
        instance: Option<String>,
    ) -> Outcome {
        let cluster = observation.cluster.as_str();
        let mut outcome = Outcome {
            cluster: cluster.into(),
            instance,
            coverage: planned.coverage,
            rollouts: planned.rollouts,
            wake_at: planned.wake_at,
            stopped_early: planned.early_stops,
            ..Outcome::default()
        };
        let mut work = Work::default();
        let (clears, actions): (Vec<Action>, Vec<Action>) = planned
            .actions
            .into_iter()
            .partition(|a| matches!(a, Action::ClearReady { .. }));
        for action in clears {
            if let Action::ClearReady {
                instance_arn,
                reason,
            } = action
            {
                work.clear_ready.push((instance_arn, reason));
            }
        }
        // Readiness goes first, in one batch, so no application lands while copies change.
        self.clear_ready(cluster, &work.clear_ready, &mut outcome)
            .await;
        for action in actions {
            self.act_on(observation, action, invocation, &mut work, &mut outcome)
                .await;
        }
        if work.stops_failed {
            // A stop that did not go through leaves an instance with two copies: no new
            // surge until it is gone, so a rollout never has more than maxParallel in flight.
            for claims in work.starts.values_mut() {
                claims.retain(|c| c.surge.is_none());
            }
        }
        self.start_claimed(observation, &mut work, &mut outcome)
            .await;
        self.write_rollouts(observation, work.rollout_writes, &mut outcome)
            .await;
        self.set_ready(observation, &work.set_ready, &mut outcome)
            .await;
        outcome
    }

    /// One action of the plan's body: slot writes, stops and claims now; starts, rollout
    /// writes and readiness gathered into `work` for their batches.
    async fn act_on(
        &self,
        observation: &Observation,
        action: Action,
        invocation: &str,
        work: &mut Work,
        outcome: &mut Outcome,
    ) {
        match action {
            Action::ClearReady { .. } => {}
            Action::SetReady { instance_arn } => work.set_ready.push(instance_arn),
            Action::RecordSlot { slot, expected } => {
                self.write_slot(&slot, expected, outcome).await;
            }
            Action::DeleteSlot { key, version } => match self.store.delete(&key, version).await {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => outcome.conflicts += 1,
                Err(error) => outcome.errors.push(error.to_string()),
            },
            Action::Stop {
                task_arn,
                instance_id,
                daemon,
                reason,
            } => {
                let stopped = StoppedCopy {
                    daemon,
                    instance_id,
                    task_arn,
                    reason,
                };
                if !self.stop(observation, stopped, work, outcome).await {
                    work.stops_failed = true;
                }
            }
            Action::Start {
                instance_arn,
                task_definition,
                mut claim,
                expected,
                surge,
            } => {
                claim.claimed_by = Some(invocation.into());
                if let Some(version) = self.write_slot(&claim, expected, outcome).await {
                    work.starts
                        .entry(task_definition)
                        .or_default()
                        .push(Claimed {
                            instance_arn,
                            slot: claim,
                            expected: Expected::Version(version),
                            surge,
                        });
                }
            }
            Action::DrainForCritical {
                instance_arn,
                daemon,
                reason,
                slot,
                expected,
            } => {
                let drained = super::CriticalDrained {
                    instance_id: resource_id(&instance_arn).to_string(),
                    daemon,
                    reason,
                };
                self.drain_for_critical(
                    observation,
                    &instance_arn,
                    drained,
                    &slot,
                    expected,
                    outcome,
                )
                .await;
            }
            Action::WithdrawRequest {
                instance_arn,
                daemon,
                letter,
                ..
            } => {
                self.withdraw_request(
                    observation,
                    &mut work.attributes,
                    &instance_arn,
                    &daemon,
                    letter,
                    outcome,
                )
                .await;
            }
            rollout @ (Action::SwitchRevision { .. } | Action::RecordRollout { .. }) => {
                work.rollout_writes.push(rollout)
            }
        }
    }

    /// Stops a copy: a service's by taking its letter from the slot attribute, a standalone
    /// one by StopTask. Answers whether it went through.
    async fn stop(
        &self,
        observation: &Observation,
        stopped: StoppedCopy,
        work: &mut Work,
        outcome: &mut Outcome,
    ) -> bool {
        let service_copy = observation
            .tasks
            .iter()
            .find(|t| t.arn == stopped.task_arn)
            .and_then(|t| t.group.as_deref())
            .and_then(crate::placement::services::daemon_of_group)
            .is_some();
        if service_copy {
            self.remove_service_copy(observation, &mut work.attributes, stopped, outcome)
                .await
        } else {
            self.stop_copy(observation, stopped, outcome).await
        }
    }

    /// Sets an instance DRAINING for a crash-looping critical daemon, then records it on the
    /// slot.
    async fn drain_for_critical(
        &self,
        observation: &Observation,
        instance_arn: &str,
        drained: super::CriticalDrained,
        slot: &Slot,
        expected: Expected,
        outcome: &mut Outcome,
    ) {
        let instances = [instance_arn.to_string()];
        if let Err(error) = self
            .ecs
            .drain_container_instances(&observation.cluster, &instances)
            .await
        {
            outcome.errors.push(error.to_string());
            return;
        }
        tracing::warn!(
            cluster = %observation.cluster,
            instance = %drained.instance_id,
            daemon = %drained.daemon,
            reason = %drained.reason,
            "instance set DRAINING: a critical daemon crash-loops there"
        );
        // Drained either way: a lost write leaves the slot to the next look, which sees the
        // instance DRAINING and drains nothing more.
        self.write_slot(slot, expected, outcome).await;
        outcome.critical_drains.push(drained);
    }

    async fn clear_ready(&self, cluster: &str, clear: &[(String, String)], outcome: &mut Outcome) {
        if clear.is_empty() {
            return;
        }
        let attributes: Vec<InstanceAttribute> =
            clear.iter().map(|(arn, _)| ready_attribute(arn)).collect();
        match self.ecs.delete_attributes(cluster, &attributes).await {
            Ok(()) => {
                outcome.ready_cleared = clear
                    .iter()
                    .map(|(arn, reason)| ClearedReady {
                        instance_id: resource_id(arn).to_string(),
                        reason: reason.clone(),
                    })
                    .collect()
            }
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }

    async fn set_ready(&self, observation: &Observation, set: &[String], outcome: &mut Outcome) {
        if set.is_empty() {
            return;
        }
        let attributes: Vec<InstanceAttribute> =
            set.iter().map(|arn| ready_attribute(arn)).collect();
        match self
            .ecs
            .put_attributes(&observation.cluster, &attributes)
            .await
        {
            Ok(()) => {
                outcome.ready_set = set.iter().map(|arn| resource_id(arn).to_string()).collect();
                self.record_coverage_times(observation, set, outcome).await;
            }
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }

    /// Stops one copy through the placement; false if the stop did not go through. Only a
    /// task observed as one of this placement's copies is ever stopped.
    async fn stop_copy(
        &self,
        observation: &Observation,
        stop: StoppedCopy,
        outcome: &mut Outcome,
    ) -> bool {
        let owned = observation
            .tasks
            .iter()
            .any(|t| t.arn == stop.task_arn && self.owns(t));
        if !owned {
            outcome.errors.push(format!(
                "refused to stop {}: not a task of ecs-daemons",
                stop.task_arn
            ));
            return true;
        }
        let placement = self.placement();
        match placement
            .remove_copy(&observation.cluster, &stop.task_arn, &stop.reason)
            .await
        {
            Ok(()) => {
                outcome.stopped.push(stop);
                true
            }
            Err(error) => {
                outcome.errors.push(error.to_string());
                false
            }
        }
    }

    /// The won claims, in requests of the placement's size per daemon revision.
    async fn start_claimed(
        &self,
        observation: &Observation,
        work: &mut Work,
        outcome: &mut Outcome,
    ) {
        let per_request = self.placement().max_instances_per_request();
        for (task_definition, claims) in &work.starts {
            // Where the daemon runs as DAEMON services, its services start the copies.
            let (on_services, standalone): (Vec<&Claimed>, Vec<&Claimed>) =
                claims.iter().partition(|c| {
                    super::services::services_for(observation, &c.slot.daemon, &c.instance_arn)
                        .is_some()
                });
            if !on_services.is_empty() {
                self.request_service_copies(
                    observation,
                    &mut work.attributes,
                    task_definition,
                    &on_services,
                    outcome,
                )
                .await;
            }
            // One request per daemon, and per provider where the daemon's copies there get
            // an environment of their own (StartTask's overrides are the whole request's).
            let mut groups: BTreeMap<(&str, Option<String>), Vec<Claimed>> = BTreeMap::new();
            for claim in standalone {
                let view = observation
                    .daemons
                    .iter()
                    .find(|d| d.name == claim.slot.daemon);
                let provider = observation
                    .instances
                    .iter()
                    .find(|i| i.arn == claim.instance_arn)
                    .and_then(|i| i.capacity_provider.clone())
                    .filter(|p| view.is_some_and(|d| d.launch.environment.contains_key(p)));
                groups
                    .entry((claim.slot.daemon.as_str(), provider))
                    .or_default()
                    .push(claim.clone());
            }
            for ((daemon, provider), claims) in &groups {
                let view = observation.daemons.iter().find(|d| d.name == *daemon);
                let default_launch = crate::launch::LaunchOptions::default();
                let how = StartHow {
                    task_definition,
                    policy: view.map(|d| d.restart.clone()).unwrap_or_default(),
                    launch: view.map_or(&default_launch, |d| &d.launch),
                    provider: provider.as_deref(),
                };
                for batch in claims.chunks(per_request) {
                    self.start_batch(&observation.cluster, &how, batch, observation.now, outcome)
                        .await;
                }
            }
        }
    }

    /// Joined instances that became ready now: their time to coverage, recorded once each
    /// (a conditional write: a second readiness of the same instance is not a join).
    pub(super) async fn record_coverage_times(
        &self,
        observation: &Observation,
        ready: &[String],
        outcome: &mut Outcome,
    ) {
        for arn in ready {
            let Some(instance) = observation.instances.iter().find(|i| &i.arn == arn) else {
                continue;
            };
            let Some(time) = crate::coverage_time::measure(
                &observation.cluster,
                instance,
                &observation.daemons,
                &observation.tasks,
                observation.now,
            ) else {
                continue;
            };
            match self.store.put(&time, Expected::Absent).await {
                Ok(_) => outcome.coverage_times.push(time),
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
    }

    /// Conditional slot write; a lost race is counted, not an error.
    pub(super) async fn write_slot(
        &self,
        slot: &Slot,
        expected: Expected,
        outcome: &mut Outcome,
    ) -> Option<u64> {
        match self.store.put(slot, expected).await {
            Ok(version) => Some(version),
            Err(StoreError::Conflict { .. }) => {
                outcome.conflicts += 1;
                None
            }
            Err(error) => {
                outcome.errors.push(error.to_string());
                None
            }
        }
    }

    pub(super) async fn start_batch(
        &self,
        cluster: &str,
        how: &StartHow<'_>,
        batch: &[Claimed],
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) {
        let StartHow {
            task_definition,
            policy,
            launch,
            provider,
        } = how;
        let daemon = batch[0].slot.daemon.clone();
        let instances: Vec<String> = batch.iter().map(|c| c.instance_arn.clone()).collect();
        let request = CopyRequest {
            daemon: &daemon,
            task_definition,
            instances: &instances,
            launch,
            provider: *provider,
            // One batch is one daemon and revision, so one rollout at most.
            rollout_id: batch
                .iter()
                .find_map(|c| c.slot.rollout.as_ref())
                .map(|r| r.rollout_id.as_str()),
        };
        let answers = match self.placement().make_copies(cluster, &request).await {
            Ok(answers) => answers,
            Err(error) if error.is_retryable() => {
                // The start may or may not have happened (StartTask has no idempotency token):
                // the claims stay, and the next reconcile looks for the task before retrying.
                outcome.errors.push(error.to_string());
                return;
            }
            Err(error) => {
                // ECS refused the request itself: count it as a failed start on every instance.
                for claimed in batch {
                    self.record_failed_start(claimed, policy, &error.to_string(), now, outcome)
                        .await;
                }
                return;
            }
        };
        if answers.len() != batch.len() {
            // A placement answers once per instance; anything else is its defect. The claims
            // stay, so the next reconcile looks for the copies before starting any again.
            outcome.errors.push(format!(
                "{:?} placement answered {} of {} instances for {daemon}",
                self.placement().kind(),
                answers.len(),
                batch.len()
            ));
            return;
        }
        for (claimed, answer) in batch.iter().zip(answers) {
            let task = match answer {
                CopyAnswer::Started(task) => task,
                CopyAnswer::Refused(reason) => {
                    self.record_failed_start(claimed, policy, &reason, now, outcome)
                        .await;
                    continue;
                }
            };
            let mut slot = claimed.slot.clone();
            match slot.rollout.as_mut().filter(|_| claimed.surge.is_some()) {
                // The old copy stays the slot's task until the new one has proven itself.
                Some(step) => step.new_task_arn = Some(task.arn.clone()),
                None => {
                    slot.state = SlotState::Starting;
                    slot.task_arn = Some(task.arn.clone());
                    slot.task_version = task.version;
                }
            }
            slot.updated_at = now;
            self.write_slot(&slot, claimed.expected, outcome).await;
            outcome.started.push(StartedCopy {
                daemon: daemon.clone(),
                instance_id: resource_id(&claimed.instance_arn).into(),
                task_arn: task.arn,
            });
        }
    }

    pub(super) async fn record_failed_start(
        &self,
        claimed: &Claimed,
        policy: &RestartPolicy,
        reason: &str,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) {
        let claim = &claimed.slot;
        let expected = claimed.expected;
        outcome.start_failures.push(FailedStart {
            daemon: claim.daemon.clone(),
            instance_id: claim.instance_id.clone(),
            reason: reason.into(),
        });
        let no_room = reason.contains("RESOURCE:");
        if let (Some(fallback), Some(step)) = (claimed.surge, claim.rollout.as_ref()) {
            // A surge that did not start: the old copy keeps running; the rollout decides.
            let mut slot = claim.clone();
            let mut step = step.clone();
            step.since = now;
            if no_room && fallback == SurgeFallback::StopFirst {
                step.step = RolloutStep::GapStopping;
                step.gap = true;
            } else {
                step.step = RolloutStep::Failed;
                step.failures += 1;
                step.last_failure = Some(reason.into());
            }
            slot.rollout = Some(step);
            slot.updated_at = now;
            self.write_slot(&slot, expected, outcome).await;
            return;
        }
        let mut slot = claim.clone();
        slot.consecutive_failures += 1;
        slot.last_stop_reason = Some(reason.into());
        // A refused start (no room, no agent) is not retried at once: at least the base backoff.
        slot.retry_after = Some(now + policy.backoff(slot.consecutive_failures.max(2)));
        // No room is not a crash: the daemon starts once tasks leave, so it is never given up on.
        slot.state = if !no_room && slot.consecutive_failures >= policy.max_consecutive_failures {
            SlotState::CrashLooping
        } else {
            SlotState::Stopped
        };
        slot.updated_at = now;
        self.write_slot(&slot, expected, outcome).await;
    }
}
