//! The model's EC2 Auto Scaling: one group per capacity provider, optionally with a terminate
//! lifecycle hook. Scaling in an instance of a hooked group puts it in `Terminating:Wait` and
//! emits the "EC2 Instance-terminate Lifecycle Action" event; the instance terminates when the
//! action is completed, or when its heartbeat timeout passes. Completing while a task still
//! runs on the instance is counted: the invariant the simulation checks.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{iso, ClusterModel, World, ACCOUNT, REGION};
use ecs_daemons::arn::resource_id;
use ecs_daemons::autoscaling::{
    AutoScaling, AutoScalingAnswer, AutoScalingError, AutoScalingErrorKind, LifecycleAction,
    WaitingAnswer, WaitingTermination, AUTOSCALING_SOURCE, TERMINATE_ACTION,
    TERMINATING_TRANSITION,
};

#[derive(Clone, Debug)]
struct Group {
    name: String,
    hook: Option<(String, Duration)>,
}

#[derive(Clone, Debug)]
struct Pending {
    cluster: String,
    instance_id: String,
    action: LifecycleAction,
    timeout: Duration,
    expires_at: DateTime<Utc>,
    /// No heartbeat keeps the action waiting past this: "The maximum amount of time that you
    /// can keep an instance in a wait state is 48 hours or 100 times the heartbeat timeout,
    /// whichever is smaller" (EC2 Auto Scaling user guide, *Amazon EC2 Auto Scaling lifecycle
    /// hooks*); then the hook's default result applies, and a terminating instance goes.
    longest_until: DateTime<Utc>,
}

/// The latest moment a lifecycle action started at `started` may still wait (see
/// [`Pending::longest_until`]).
fn longest_wait_until(started: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    started + (timeout * 100).min(Duration::hours(48))
}

/// What happened to terminate lifecycle actions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub started: u64,
    pub completed: u64,
    pub heartbeats: u64,
    /// Actions nobody completed before the hook's timeout.
    pub timed_out: u64,
    /// Completions while a task (daemon or application) still ran on the instance.
    pub completed_with_tasks: Vec<String>,
    /// Calls refused: no active action for the token.
    pub refused: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Lifecycle {
    /// By capacity provider.
    groups: BTreeMap<String, Group>,
    /// By EC2 instance id.
    pending: BTreeMap<String, Pending>,
    stats: HookStats,
}

impl World {
    /// Auto Scaling terminates an instance (scale-in, or the group's own choice). With a
    /// terminate hook on its group, the instance waits and the lifecycle event is emitted
    /// (answered: the action); without one it terminates at once.
    pub(super) fn terminate(&mut self, cluster: &str, id: &str) -> Option<LifecycleAction> {
        let id = id.to_string();
        let waiting = {
            let world = &mut *self;
            let (provider, ec2) = {
                let model = world.clusters.get(cluster)?.instances.get(&id)?;
                (model.provider.clone(), model.ec2_instance_id.clone())
            };
            if world.lifecycle.pending.contains_key(&ec2) {
                return None;
            }
            let hooked = world.lifecycle.groups.get(&provider).and_then(|g| {
                g.hook
                    .clone()
                    .map(|(hook, timeout)| (g.name.clone(), hook, timeout))
            });
            match hooked {
                Some((group, hook, timeout)) => {
                    let token = world.id("");
                    let action = LifecycleAction {
                        group: group.clone(),
                        hook: hook.clone(),
                        token: Some(format!(
                            "{}-{}-{}-{}-{}",
                            &token[0..8],
                            &token[8..12],
                            &token[12..16],
                            &token[16..20],
                            &token[4..16]
                        )),
                        ec2_instance_id: ec2.clone(),
                    };
                    let now = world.now;
                    world.lifecycle.pending.insert(
                        ec2.clone(),
                        Pending {
                            cluster: cluster.into(),
                            instance_id: id.clone(),
                            action: action.clone(),
                            timeout,
                            expires_at: now + timeout,
                            longest_until: longest_wait_until(now, timeout),
                        },
                    );
                    world.lifecycle.stats.started += 1;
                    let event_id = world.id("");
                    let body = json!({
                        "version": "0",
                        "id": format!("{}-{}-{}-{}-{}", &event_id[0..8], &event_id[8..12], &event_id[12..16], &event_id[16..20], &event_id[4..16]),
                        "detail-type": TERMINATE_ACTION,
                        "source": AUTOSCALING_SOURCE,
                        "account": ACCOUNT,
                        "time": iso(now),
                        "region": REGION,
                        "resources": [format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:{token}:autoScalingGroupName/{group}")],
                        "detail": {
                            "LifecycleActionToken": action.token,
                            "AutoScalingGroupName": group,
                            "LifecycleHookName": hook,
                            "EC2InstanceId": ec2,
                            "LifecycleTransition": TERMINATING_TRANSITION,
                            "Origin": "AutoScalingGroup",
                            "Destination": "EC2",
                        }
                    });
                    world.emit(body);
                    Some(action)
                }
                None => None,
            }
        };
        if waiting.is_none() {
            self.deregister(cluster, &id);
        }
        waiting
    }

    /// The actions whose heartbeat timeout passed: (cluster, instance id) to terminate.
    pub(super) fn lifecycle_timeouts(&mut self) -> Vec<(String, String)> {
        let now = self.now;
        let expired: Vec<String> = self
            .lifecycle
            .pending
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(ec2, _)| ec2.clone())
            .collect();
        let mut gone = Vec::new();
        for ec2 in expired {
            if let Some(pending) = self.lifecycle.pending.remove(&ec2) {
                self.lifecycle.stats.timed_out += 1;
                gone.push((pending.cluster, pending.instance_id));
            }
        }
        gone
    }
}

fn no_action(operation: &'static str, action: &LifecycleAction) -> AutoScalingError {
    AutoScalingError {
        operation,
        instance: action.ec2_instance_id.clone(),
        kind: AutoScalingErrorKind::NoActiveAction,
        code: "ValidationError".into(),
        message: format!(
            "No active Lifecycle Action found with token {}",
            action.token.as_deref().unwrap_or("(none: by instance id)")
        ),
    }
}

impl ClusterModel {
    /// Gives the capacity provider's Auto Scaling group a terminate lifecycle hook.
    pub fn add_terminate_hook(
        &self,
        provider: &str,
        group: &str,
        hook: &str,
        heartbeat_timeout: Duration,
    ) {
        self.world().lifecycle.groups.insert(
            provider.into(),
            Group {
                name: group.into(),
                hook: Some((hook.into(), heartbeat_timeout)),
            },
        );
    }

    /// Auto Scaling picks the instance for scale-in. With a terminate hook on its group, the
    /// instance waits and the lifecycle event is emitted (answered: the action); without one
    /// it terminates at once.
    pub fn scale_in(&self, cluster: &str, instance: &str) -> Option<LifecycleAction> {
        self.world().terminate(cluster, resource_id(instance))
    }

    pub fn hook_stats(&self) -> HookStats {
        self.world().lifecycle.stats.clone()
    }

    /// The lifecycle actions still waiting (EC2 instance ids).
    pub fn waiting_terminations(&self) -> Vec<String> {
        self.world().lifecycle.pending.keys().cloned().collect()
    }
}

/// Whether a call names this pending action: its group and hook, and its token or, without
/// one, its instance ("the lifecycle action for the specified token or instance", API
/// reference, CompleteLifecycleAction and RecordLifecycleActionHeartbeat).
fn names(pending: &LifecycleAction, asked: &LifecycleAction) -> bool {
    pending.group == asked.group
        && pending.hook == asked.hook
        && pending.ec2_instance_id == asked.ec2_instance_id
        && (asked.token.is_none() || asked.token == pending.token)
}

impl AutoScaling for ClusterModel {
    /// An instance with a pending terminate action is in `Terminating:Wait` until the action is
    /// completed or its heartbeat timeout passes (EC2 Auto Scaling user guide, "Amazon EC2 Auto
    /// Scaling lifecycle hooks"; API reference, `Instance.LifecycleState`), and
    /// DescribeAutoScalingGroups lists it so. The model has one hook per group; with several
    /// (ECS managed draining's beside ours) the real call lists the instance while any waits,
    /// which `adopt_terminations` handles by a heartbeat naming our hook.
    fn waiting_terminations<'a>(&'a self, groups: &'a [String]) -> WaitingAnswer<'a> {
        Box::pin(async move {
            let world = self.world();
            Ok(world
                .lifecycle
                .pending
                .values()
                .filter(|p| groups.contains(&p.action.group))
                .map(|p| WaitingTermination {
                    group: p.action.group.clone(),
                    ec2_instance_id: p.action.ec2_instance_id.clone(),
                })
                .collect())
        })
    }

    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        Box::pin(async move {
            let finished = {
                let mut world = self.world();
                let matches = world
                    .lifecycle
                    .pending
                    .get(&action.ec2_instance_id)
                    .is_some_and(|p| names(&p.action, action));
                if !matches {
                    world.lifecycle.stats.refused += 1;
                    return Err(no_action("CompleteLifecycleAction", action));
                }
                let pending = world
                    .lifecycle
                    .pending
                    .remove(&action.ec2_instance_id)
                    .expect("checked just above");
                let left: Vec<String> = world
                    .clusters
                    .get(&pending.cluster)
                    .map(|c| {
                        c.tasks
                            .values()
                            .filter(|t| {
                                t.instance_id == pending.instance_id && !t.last_status.is_terminal()
                            })
                            .map(|t| format!("{} ({})", t.id, t.group))
                            .collect()
                    })
                    .unwrap_or_default();
                if !left.is_empty() {
                    let at = world.now;
                    world.lifecycle.stats.completed_with_tasks.push(format!(
                        "{} at {at}: {}",
                        pending.instance_id,
                        left.join(", ")
                    ));
                }
                world.lifecycle.stats.completed += 1;
                (pending.cluster, pending.instance_id)
            };
            self.deregister_instance(&finished.0, &finished.1);
            Ok(())
        })
    }

    fn record_lifecycle_action_heartbeat<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        Box::pin(async move {
            let mut world = self.world();
            let now = world.now;
            let refused = match world.lifecycle.pending.get_mut(&action.ec2_instance_id) {
                Some(pending) if names(&pending.action, action) => {
                    pending.expires_at = (now + pending.timeout).min(pending.longest_until);
                    false
                }
                _ => true,
            };
            if refused {
                world.lifecycle.stats.refused += 1;
                return Err(no_action("RecordLifecycleActionHeartbeat", action));
            }
            world.lifecycle.stats.heartbeats += 1;
            Ok(())
        })
    }
}
