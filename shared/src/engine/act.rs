//! Carrying out a plan's instance actions: readiness first, slot claims before StartTask,
//! stops, slot bookkeeping, times to coverage.

use super::*;

/// A slot won for a start, waiting for its StartTask batch.
pub(super) struct Claimed {
    pub(super) instance_arn: String,
    pub(super) slot: Slot,
    pub(super) expected: Expected,
    pub(super) surge: Option<SurgeFallback>,
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
            ..Outcome::default()
        };
        let owned: BTreeSet<&str> = observation
            .tasks
            .iter()
            .filter(|t| self.owns(t))
            .map(|t| t.arn.as_str())
            .collect();
        let ready_attribute = |instance_arn: &String| InstanceAttribute {
            container_instance: instance_arn.clone(),
            name: READY_ATTRIBUTE.into(),
            value: Some("true".into()),
        };

        // Readiness goes first, in one batch, so no application lands while copies change.
        let (clears, actions): (Vec<Action>, Vec<Action>) = planned
            .actions
            .into_iter()
            .partition(|a| matches!(a, Action::ClearReady { .. }));
        let clear: Vec<(String, String)> = clears
            .into_iter()
            .filter_map(|a| match a {
                Action::ClearReady {
                    instance_arn,
                    reason,
                } => Some((instance_arn, reason)),
                _ => None,
            })
            .collect();
        if !clear.is_empty() {
            let attributes: Vec<InstanceAttribute> =
                clear.iter().map(|(arn, _)| ready_attribute(arn)).collect();
            match self.ecs.delete_attributes(cluster, &attributes).await {
                Ok(()) => {
                    outcome.ready_cleared = clear
                        .into_iter()
                        .map(|(arn, reason)| ClearedReady {
                            instance_id: resource_id(&arn).to_string(),
                            reason,
                        })
                        .collect()
                }
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
        let mut set = Vec::new();
        let mut starts: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        let mut rollout_writes = Vec::new();
        let mut stops_failed = false;
        for action in actions {
            match action {
                Action::ClearReady { .. } => {}
                Action::SetReady { instance_arn } => set.push(instance_arn),
                Action::RecordSlot { slot, expected } => {
                    self.write_slot(&slot, expected, &mut outcome).await;
                }
                Action::DeleteSlot { key, version } => match self.store.delete(&key, version).await
                {
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
                    if !owned.contains(task_arn.as_str()) {
                        outcome.errors.push(format!(
                            "refused to stop {task_arn}: not a task of ecs-daemons"
                        ));
                        continue;
                    }
                    match self.ecs.stop_task(cluster, &task_arn, &reason).await {
                        Ok(_) => outcome.stopped.push(StoppedCopy {
                            daemon,
                            instance_id,
                            task_arn,
                            reason,
                        }),
                        Err(error) => {
                            stops_failed = true;
                            outcome.errors.push(error.to_string());
                        }
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
                    if let Some(version) = self.write_slot(&claim, expected, &mut outcome).await {
                        starts.entry(task_definition).or_default().push(Claimed {
                            instance_arn,
                            slot: claim,
                            expected: Expected::Version(version),
                            surge,
                        });
                    }
                }
                rollout @ (Action::SwitchRevision { .. } | Action::RecordRollout { .. }) => {
                    rollout_writes.push(rollout)
                }
            }
        }
        if stops_failed {
            // A stop that did not go through leaves an instance with two copies: no new
            // surge until it is gone, so a rollout never has more than maxParallel in flight.
            for claims in starts.values_mut() {
                claims.retain(|c| c.surge.is_none());
            }
        }
        for (task_definition, claims) in starts {
            for batch in claims.chunks(START_TASK_MAX_INSTANCES) {
                let daemon = &batch[0].slot.daemon;
                let policy = observation
                    .daemons
                    .iter()
                    .find(|d| &d.name == daemon)
                    .map(|d| &d.restart);
                let policy = policy.cloned().unwrap_or_default();
                self.start_batch(
                    cluster,
                    &task_definition,
                    batch,
                    &policy,
                    observation.now,
                    &mut outcome,
                )
                .await;
            }
        }
        self.write_rollouts(observation, rollout_writes, &mut outcome)
            .await;
        if !set.is_empty() {
            let attributes: Vec<InstanceAttribute> = set.iter().map(ready_attribute).collect();
            match self.ecs.put_attributes(cluster, &attributes).await {
                Ok(()) => {
                    outcome.ready_set =
                        set.iter().map(|arn| resource_id(arn).to_string()).collect();
                    self.record_coverage_times(observation, &set, &mut outcome)
                        .await;
                }
                Err(error) => outcome.errors.push(error.to_string()),
            }
        }
        outcome
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
        task_definition: &str,
        batch: &[Claimed],
        policy: &RestartPolicy,
        now: DateTime<Utc>,
        outcome: &mut Outcome,
    ) {
        let daemon = batch[0].slot.daemon.clone();
        let mut tags = vec![(DAEMON_TAG.into(), daemon.clone())];
        // One batch is one daemon and revision, so one rollout at most.
        if let Some(rollout) = batch.iter().find_map(|c| c.slot.rollout.as_ref()) {
            tags.push((ROLLOUT_TAG.into(), rollout.rollout_id.clone()));
        }
        let request = StartTaskRequest {
            task_definition: task_definition.into(),
            container_instances: batch.iter().map(|c| c.instance_arn.clone()).collect(),
            started_by: self.config.started_by.clone(),
            group: crate::plan::daemon_group(&daemon),
            tags,
        };
        let answer = match self.ecs.start_task(cluster, &request).await {
            Ok(answer) => answer,
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
        for claimed in batch {
            let instance_id = resource_id(&claimed.instance_arn);
            let started = answer.tasks.iter().find(|t| {
                t.container_instance_arn.as_deref().map(resource_id) == Some(instance_id)
            });
            if let Some(task) = started {
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
                    instance_id: instance_id.into(),
                    task_arn: task.arn.clone(),
                });
                continue;
            }
            let reason = answer
                .failures
                .iter()
                .find(|f| f.arn.as_deref().map(resource_id) == Some(instance_id))
                .map_or_else(
                    || "StartTask placed no task on the instance".to_string(),
                    |f| format!("StartTask failed: {f}"),
                );
            self.record_failed_start(claimed, policy, &reason, now, outcome)
                .await;
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
