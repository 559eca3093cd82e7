//! The I/O half of held terminations: the lifecycle event, heartbeats, the limit, completion
//! once drained (on a fresh read), and the adoption of terminations whose event was lost.
//! The records and the pure decision are in `crate::holds`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::autoscaling::{parse_terminate_event, AutoScalingErrorKind, LifecycleAction};
use crate::holds::{
    completed, decide_hold, looks_drained, HoldEnd, HoldEndReason, HoldReport, HoldStep,
    TerminationHold,
};

/// The `lifecycle-hook` function's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The hold itself (held, or let go at once); what the reconcile did is in `reconcile`.
    pub terminations: Vec<HoldReport>,
    /// The reconcile of the instance that started drain-last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Outcome>,
}

impl<E: Ecs, S: Store> Engine<E, S> {
    pub(super) fn lifecycle(&self) -> Result<&dyn crate::autoscaling::AutoScaling, EngineError> {
        self.autoscaling
            .as_deref()
            .ok_or(EngineError::NoAutoScaling)
    }

    /// Completes with CONTINUE; an action Auto Scaling no longer has is an end too (logged).
    pub(super) async fn complete_action(
        &self,
        action: &LifecycleAction,
    ) -> Result<HoldEndReason, EngineError> {
        match self.lifecycle()?.complete_lifecycle_action(action).await {
            Ok(()) => Ok(HoldEndReason::Drained),
            Err(error) if error.kind == AutoScalingErrorKind::NoActiveAction => {
                tracing::warn!(
                    ec2_instance = %action.ec2_instance_id,
                    group = %action.group,
                    error = %error,
                    "the lifecycle action had already ended (completed, timed out or stale token)"
                );
                Ok(HoldEndReason::AlreadyEnded)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The "EC2 Instance-terminate Lifecycle Action" event: find the container instance in
    /// the managed clusters, drain it, record the hold, and start drain-last at once. An
    /// instance no managed cluster knows is let go at once (and reported).
    pub async fn on_terminate_event(
        &self,
        raw: Value,
        now: DateTime<Utc>,
        invocation: &str,
    ) -> Result<TerminateOutcome, EngineError> {
        let event = parse_terminate_event(raw).map_err(EngineError::from)?;
        let action = event.action;
        if action.hook != self.config.hook_name {
            return Ok(self.ignore_other_hook(&action));
        }
        let Some((cluster, instance)) = self.find_container_instance(&action).await? else {
            return self.let_go_unknown(&action).await;
        };
        let key = ItemKey::hold(&cluster, instance.id());
        let existing = self.store.get::<TerminationHold>(&key).await?;
        let same_action = existing
            .as_ref()
            .is_some_and(|h| h.record.action.token == action.token);
        let other_open = existing
            .as_ref()
            .is_some_and(|h| !same_action && h.record.ended.is_none());
        if other_open {
            if let Some(stale) = self.stale_token(&action, &instance).await? {
                return Ok(TerminateOutcome {
                    cluster: Some(cluster),
                    terminations: vec![stale],
                    reconcile: None,
                });
            }
        }
        if !same_action {
            let hold = TerminationHold::new(
                &cluster,
                &instance,
                action.clone(),
                now,
                self.config.holds.limit,
            );
            let expected = existing
                .as_ref()
                .map_or(Expected::Absent, Versioned::expected);
            self.store.put(&hold, expected).await?;
        }
        if instance.status == InstanceStatus::Active {
            self.ecs
                .drain_container_instances(&cluster, std::slice::from_ref(&instance.arn))
                .await?;
        }
        let terminations = vec![HoldReport {
            ec2_instance_id: action.ec2_instance_id.clone(),
            instance_id: Some(instance.id().to_string()),
            group: action.group.clone(),
            action: "held",
            reason: None,
            detail: format!(
                "draining {} of {cluster}: applications first, daemons last; completes by {} at the latest",
                instance.id(),
                now + self.config.holds.limit
            ),
        }];
        // Drain-last now: an instance with nothing but daemons on it stops them at once.
        let reconcile = self
            .reconcile_instance_now(&cluster, &instance.arn, now, invocation)
            .await?;
        Ok(TerminateOutcome {
            cluster: Some(cluster),
            terminations,
            reconcile: Some(reconcile),
        })
    }

    /// An event for another terminate hook of the group: its action is not ours to heartbeat
    /// or complete, and its instance is drained by ours (whose own event comes too).
    fn ignore_other_hook(&self, action: &LifecycleAction) -> TerminateOutcome {
        let detail = format!(
            "event for lifecycle hook {:?} of {}, not ecs-daemons' {:?}: ignored",
            action.hook.chars().take(255).collect::<String>(),
            action.group,
            self.config.hook_name
        );
        tracing::info!(ec2_instance = %action.ec2_instance_id, group = %action.group, "{detail}");
        TerminateOutcome {
            cluster: None,
            terminations: vec![HoldReport {
                ec2_instance_id: action.ec2_instance_id.clone(),
                instance_id: None,
                group: action.group.clone(),
                action: "ignored",
                reason: None,
                detail,
            }],
            reconcile: None,
        }
    }

    /// The container instance of the action's EC2 instance, in the first managed cluster
    /// that has it.
    async fn find_container_instance(
        &self,
        action: &LifecycleAction,
    ) -> Result<Option<(String, ContainerInstance)>, EngineError> {
        for cluster in &self.config.clusters {
            let arns = self
                .ecs
                .list_container_instances_of_ec2(cluster, &action.ec2_instance_id)
                .await?;
            if arns.is_empty() {
                continue;
            }
            // Checked again on the description: the filter is ECS's, the decision ours.
            let instance = self
                .ecs
                .describe_container_instances(cluster, &arns)
                .await?
                .into_iter()
                .find(|i| i.ec2_instance_id.as_deref() == Some(action.ec2_instance_id.as_str()));
            if let Some(instance) = instance {
                return Ok(Some((cluster.clone(), instance)));
            }
        }
        Ok(None)
    }

    /// An instance no managed cluster knows: nothing to drain, the termination continues.
    async fn let_go_unknown(
        &self,
        action: &LifecycleAction,
    ) -> Result<TerminateOutcome, EngineError> {
        let why = self.complete_action(action).await?;
        let detail = format!(
            "{} is not a container instance of a managed cluster ({}): nothing to drain, termination continues",
            action.ec2_instance_id,
            self.config.clusters.join(", ")
        );
        tracing::warn!(ec2_instance = %action.ec2_instance_id, group = %action.group, "{detail}");
        let why = if why == HoldEndReason::AlreadyEnded {
            why
        } else {
            HoldEndReason::InstanceGone
        };
        Ok(TerminateOutcome {
            cluster: None,
            terminations: vec![completed(action, None, why, detail)],
            reconcile: None,
        })
    }

    /// Two tokens for one instance: one is stale, and Auto Scaling knows which. A heartbeat
    /// on the event's token tells; the report when it is the stale one.
    async fn stale_token(
        &self,
        action: &LifecycleAction,
        instance: &ContainerInstance,
    ) -> Result<Option<HoldReport>, EngineError> {
        let Err(error) = self
            .lifecycle()?
            .record_lifecycle_action_heartbeat(action)
            .await
        else {
            return Ok(None);
        };
        if error.kind != AutoScalingErrorKind::NoActiveAction {
            return Err(error.into());
        }
        let detail = format!(
            "stale event: Auto Scaling has no pending action for token {}; the hold of {} stays as it is",
            action.token.as_deref().unwrap_or("(none)"),
            instance.id()
        );
        tracing::warn!(ec2_instance = %action.ec2_instance_id, "{detail}");
        Ok(Some(completed(
            action,
            Some(instance.id()),
            HoldEndReason::AlreadyEnded,
            detail,
        )))
    }

    /// Completes the holds of the instances that are drained now (called by every reconcile
    /// with the instances it described). One GetItem per drained instance.
    pub(crate) async fn settle_drained(
        &self,
        cluster: &str,
        instances: &[ContainerInstance],
        now: DateTime<Utc>,
    ) -> (Vec<HoldReport>, Vec<String>) {
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        if self.autoscaling.is_none() {
            return (reports, errors);
        }
        for instance in instances.iter().filter(|i| looks_drained(i)) {
            let hold = match self
                .store
                .get::<TerminationHold>(&ItemKey::hold(cluster, instance.id()))
                .await
            {
                Ok(Some(hold)) if hold.record.ended.is_none() => hold,
                Ok(_) => continue,
                Err(error) => {
                    errors.push(error.to_string());
                    continue;
                }
            };
            match self.emptied(cluster, instance).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    errors.push(error.to_string());
                    continue;
                }
            }
            match self
                .end_hold(hold, Some(instance), HoldEndReason::Drained, now)
                .await
            {
                Ok(report) => reports.push(report),
                Err(error) => errors.push(error.to_string()),
            }
        }
        (reports, errors)
    }

    /// The safety net for lost lifecycle events: instances of the hooked groups waiting in
    /// `Terminating:Wait` that are container instances of this cluster and have no hold are
    /// adopted. A heartbeat by instance id confirms that ecs-daemons' hook is the one waiting
    /// (and restarts its timeout, which ran since the event was lost); then the hold is
    /// recorded and the instance drained, and drain-last goes on as for any held termination.
    /// One DescribeAutoScalingGroups per 50 groups, one GetItem per waiting instance.
    pub(crate) async fn adopt_terminations(
        &self,
        cluster: &str,
        instances: &[ContainerInstance],
        now: DateTime<Utc>,
    ) -> (Vec<HoldReport>, Vec<String>) {
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        let (Some(autoscaling), Some(hook)) =
            (self.autoscaling.as_deref(), &self.config.terminate_hook)
        else {
            return (reports, errors);
        };
        if hook.groups.is_empty() || instances.is_empty() {
            return (reports, errors);
        }
        let waiting = match autoscaling.waiting_terminations(&hook.groups).await {
            Ok(waiting) => waiting,
            Err(error) => return (reports, vec![error.to_string()]),
        };
        let mut to_drain = Vec::new();
        for termination in waiting {
            let Some(instance) = instances.iter().find(|i| {
                i.ec2_instance_id.as_deref() == Some(termination.ec2_instance_id.as_str())
            }) else {
                continue;
            };
            match self
                .adopt_one(cluster, instance, &termination, hook, autoscaling, now)
                .await
            {
                Ok(None) => {}
                Ok(Some(report)) => {
                    if report.action == "held" && instance.status == InstanceStatus::Active {
                        to_drain.push(instance.arn.clone());
                    }
                    reports.push(report);
                }
                Err(error) => errors.push(error),
            }
        }
        if !to_drain.is_empty() {
            if let Err(error) = self.ecs.drain_container_instances(cluster, &to_drain).await {
                errors.push(error.to_string());
            }
        }
        (reports, errors)
    }

    /// Adopts one termination waiting for our hook whose event never arrived: a hold,
    /// recorded only if none exists (the lifecycle-hook function's stands). `None` when there
    /// is already a hold; a report of "held" (to drain) or "completed" (another hook's).
    async fn adopt_one(
        &self,
        cluster: &str,
        instance: &ContainerInstance,
        termination: &crate::autoscaling::WaitingTermination,
        hook: &crate::autoscaling::TerminateHook,
        autoscaling: &dyn crate::autoscaling::AutoScaling,
        now: DateTime<Utc>,
    ) -> Result<Option<HoldReport>, String> {
        let key = ItemKey::hold(cluster, instance.id());
        if self
            .store
            .get::<TerminationHold>(&key)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(None);
        }
        let action = LifecycleAction {
            group: termination.group.clone(),
            hook: hook.name.clone(),
            token: None,
            ec2_instance_id: termination.ec2_instance_id.clone(),
        };
        let mut hold = TerminationHold::new(
            cluster,
            instance,
            action.clone(),
            now,
            self.config.holds.limit,
        );
        let detail = match autoscaling.record_lifecycle_action_heartbeat(&action).await {
            Ok(()) => format!(
                "adopted: {} waits in Terminating:Wait for {} but its event never arrived; draining {}, applications first, daemons last",
                action.ec2_instance_id,
                hook.name,
                instance.id()
            ),
            // Another hook holds it (ours is done or absent): remember, and leave it be.
            Err(error) if error.kind == AutoScalingErrorKind::NoActiveAction => {
                hold.ended = Some(HoldEnd {
                    at: now,
                    why: HoldEndReason::AlreadyEnded,
                });
                format!(
                    "{} waits in Terminating:Wait, but not for {}: left to its own hook",
                    action.ec2_instance_id, hook.name
                )
            }
            Err(error) => return Err(error.to_string()),
        };
        match self.store.put(&hold, Expected::Absent).await {
            Ok(_) => {}
            // The lifecycle-hook function recorded it meanwhile: its hold stands.
            Err(error) if error.is_conflict() => return Ok(None),
            Err(error) => return Err(error.to_string()),
        }
        tracing::warn!(ec2_instance = %action.ec2_instance_id, group = %action.group, "{detail}");
        Ok(Some(HoldReport {
            ec2_instance_id: action.ec2_instance_id.clone(),
            instance_id: Some(instance.id().to_string()),
            group: action.group.clone(),
            action: if hold.ended.is_none() {
                "held"
            } else {
                "completed"
            },
            reason: hold.ended.as_ref().map(|end| end.why),
            detail,
        }))
    }

    /// The coverage-check's pass over a cluster's open holds: heartbeats, the limit,
    /// instances gone. One Query, and one DescribeContainerInstances when holds are open.
    pub(crate) async fn keep_holds(
        &self,
        cluster: &str,
        now: DateTime<Utc>,
    ) -> (Vec<HoldReport>, Vec<String>) {
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        if self.autoscaling.is_none() {
            return (reports, errors);
        }
        let holds: Vec<Versioned<TerminationHold>> =
            match self.store.query(cluster, ItemKey::HOLDS).await {
                Ok(holds) => holds,
                Err(error) => return (reports, vec![error.to_string()]),
            };
        let open: Vec<Versioned<TerminationHold>> = holds
            .into_iter()
            .filter(|h| h.record.ended.is_none())
            .collect();
        if open.is_empty() {
            return (reports, errors);
        }
        let arns: Vec<String> = open.iter().map(|h| h.record.instance_arn.clone()).collect();
        let instances = match self.ecs.describe_container_instances(cluster, &arns).await {
            Ok(instances) => instances,
            Err(error) => return (reports, vec![error.to_string()]),
        };
        let mut drain_again = BTreeSet::new();
        for hold in open {
            let instance = instances
                .iter()
                .find(|i| i.id() == hold.record.instance_id)
                .filter(|i| i.status != InstanceStatus::Inactive);
            let emptied = match instance {
                Some(instance) if looks_drained(instance) => {
                    match self.emptied(cluster, instance).await {
                        Ok(emptied) => emptied,
                        Err(error) => {
                            errors.push(error.to_string());
                            continue;
                        }
                    }
                }
                _ => false,
            };
            match decide_hold(&hold.record, instance, emptied, now, &self.config.holds) {
                HoldStep::Complete(why) => match self.end_hold(hold, instance, why, now).await {
                    Ok(report) => reports.push(report),
                    Err(error) => errors.push(error.to_string()),
                },
                HoldStep::Wait {
                    heartbeat,
                    drain_again: again,
                } => {
                    if again {
                        drain_again.insert(hold.record.instance_arn.clone());
                    }
                    if heartbeat {
                        match self.heartbeat(hold, now).await {
                            Ok(report) => reports.push(report),
                            Err(error) => errors.push(error.to_string()),
                        }
                    }
                }
            }
        }
        if !drain_again.is_empty() {
            let arns: Vec<String> = drain_again.into_iter().collect();
            if let Err(error) = self.ecs.drain_container_instances(cluster, &arns).await {
                errors.push(error.to_string());
            }
        }
        (reports, errors)
    }

    /// No task left on the instance at all, on a fresh read (stopping ones count as left).
    pub(crate) async fn emptied(
        &self,
        cluster: &str,
        instance: &ContainerInstance,
    ) -> Result<bool, EngineError> {
        let tasks = self.ecs.tasks_on_instance(cluster, &instance.arn).await?;
        Ok(tasks.iter().all(|task| task.last_status.is_terminal()))
    }

    pub(super) async fn heartbeat(
        &self,
        hold: Versioned<TerminationHold>,
        now: DateTime<Utc>,
    ) -> Result<HoldReport, EngineError> {
        let action = &hold.record.action;
        match self
            .lifecycle()?
            .record_lifecycle_action_heartbeat(action)
            .await
        {
            Ok(()) => {
                let mut kept = hold.record.clone();
                kept.heartbeat_at = now;
                self.store.put(&kept, hold.expected()).await?;
                Ok(HoldReport {
                    ec2_instance_id: action.ec2_instance_id.clone(),
                    instance_id: Some(hold.record.instance_id.clone()),
                    group: action.group.clone(),
                    action: "heartbeat",
                    reason: None,
                    detail: format!(
                        "still draining since {}; completes by {} at the latest",
                        hold.record.received_at, hold.record.deadline
                    ),
                })
            }
            // Auto Scaling let it go (the hook timed out, or someone completed it).
            Err(error) if error.kind == AutoScalingErrorKind::NoActiveAction => {
                tracing::warn!(ec2_instance = %action.ec2_instance_id, error = %error, "the held lifecycle action ended without ecs-daemons");
                self.record_end(hold, HoldEndReason::AlreadyEnded, now)
                    .await
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn end_hold(
        &self,
        hold: Versioned<TerminationHold>,
        instance: Option<&ContainerInstance>,
        why: HoldEndReason,
        now: DateTime<Utc>,
    ) -> Result<HoldReport, EngineError> {
        let answered = self.complete_action(&hold.record.action).await?;
        let why = if answered == HoldEndReason::AlreadyEnded {
            answered
        } else {
            why
        };
        if why == HoldEndReason::LimitReached {
            let tasks = instance.map_or(0, |i| i.running_tasks + i.pending_tasks);
            tracing::error!(
                cluster = %hold.record.cluster,
                instance = %hold.record.instance_id,
                ec2_instance = %hold.record.action.ec2_instance_id,
                tasks_left = tasks,
                "the drain did not finish within the limit: termination continues with {tasks} task(s) on the instance"
            );
        }
        self.record_end(hold, why, now).await
    }

    pub(super) async fn record_end(
        &self,
        hold: Versioned<TerminationHold>,
        why: HoldEndReason,
        now: DateTime<Utc>,
    ) -> Result<HoldReport, EngineError> {
        let mut ended = hold.record.clone();
        ended.ended = Some(HoldEnd { at: now, why });
        self.store.put(&ended, hold.expected()).await?;
        let detail = match why {
            HoldEndReason::Drained => {
                "drained: applications gone, daemons stopped last; termination continues"
                    .to_string()
            }
            HoldEndReason::LimitReached => format!(
                "the drain did not finish by {} (the limit): termination continues anyway",
                hold.record.deadline
            ),
            HoldEndReason::InstanceGone => {
                "the container instance is no longer registered; termination continues".to_string()
            }
            HoldEndReason::AlreadyEnded => {
                "Auto Scaling had already ended the lifecycle action".to_string()
            }
        };
        Ok(completed(
            &hold.record.action,
            Some(resource_id(&hold.record.instance_arn)),
            why,
            detail,
        ))
    }
}
