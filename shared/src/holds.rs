//! Scale-in that waits for the daemons. An Auto Scaling group with a terminate lifecycle hook
//! holds an instance in `Terminating:Wait`; the `lifecycle-hook` function sets the container
//! instance DRAINING and records a [`TerminationHold`]. Drain-last then runs as for any drain
//! (applications leave, the daemons stop last) and whichever function next sees the instance
//! empty completes the lifecycle action with CONTINUE. The coverage-check heartbeats holds that
//! take long and completes, and reports, those that reach the limit, so a termination is never
//! blocked forever and a hook never times out unnoticed.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::autoscaling::LifecycleAction;
use crate::model::{ContainerInstance, InstanceStatus};
use crate::store::{ItemKey, Record, RecordKind};

/// A terminate lifecycle action held until the instance is drained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationHold {
    pub cluster: String,
    pub instance_id: String,
    pub instance_arn: String,
    pub action: LifecycleAction,
    pub received_at: DateTime<Utc>,
    /// The last heartbeat (or the event): the hook's timeout counts from here.
    pub heartbeat_at: DateTime<Utc>,
    /// The limit: the action is completed then even if the drain has not finished.
    pub deadline: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<HoldEnd>,
}

impl TerminationHold {
    /// A new hold of `instance` for `action`, received `now`, ended at `limit` at the latest.
    pub fn new(
        cluster: &str,
        instance: &crate::model::ContainerInstance,
        action: LifecycleAction,
        now: DateTime<Utc>,
        limit: chrono::Duration,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            instance_id: instance.id().to_string(),
            instance_arn: instance.arn.clone(),
            action,
            received_at: now,
            heartbeat_at: now,
            deadline: now + limit,
            ended: None,
        }
    }
}

impl Record for TerminationHold {
    const KIND: RecordKind = RecordKind::Hold;
    fn key(&self) -> ItemKey {
        ItemKey::hold(&self.cluster, &self.instance_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldEnd {
    pub at: DateTime<Utc>,
    pub why: HoldEndReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldEndReason {
    /// Applications gone, daemons stopped last: the normal end.
    Drained,
    /// The drain did not finish within the limit: completed anyway (reported).
    LimitReached,
    /// The container instance is no longer registered: nothing left to protect.
    InstanceGone,
    /// Auto Scaling had no pending action for the token any more (completed elsewhere,
    /// timed out, or a stale event).
    AlreadyEnded,
}

/// How holds are kept: from the hook's heartbeat timeout and the drain limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldSettings {
    /// A heartbeat is recorded once this much has passed since the last one.
    pub heartbeat_every: Duration,
    /// How long a drain may hold a termination.
    pub limit: Duration,
}

impl HoldSettings {
    /// Heartbeats at half the hook's timeout, so one missed coverage-check run is survived.
    pub fn new(heartbeat_timeout: Duration, limit: Duration) -> Self {
        Self {
            heartbeat_every: heartbeat_timeout / 2,
            limit,
        }
    }
}

impl Default for HoldSettings {
    fn default() -> Self {
        Self::new(Duration::seconds(300), Duration::hours(1))
    }
}

/// Whether holds can be kept as configured. Auto Scaling keeps an instance waiting at most
/// "48 hours or 100 times the heartbeat timeout, whichever is smaller" (EC2 Auto Scaling user
/// guide, lifecycle hooks), so a longer drain limit would never be reached; and a heartbeat
/// timeout shorter than two coverage-check intervals lets a hook time out between the runs
/// that heartbeat it.
pub fn check_hold_settings(
    heartbeat_timeout: Duration,
    limit: Duration,
    schedule_interval: Duration,
) -> Result<(), String> {
    let longest_wait = (heartbeat_timeout * 100).min(Duration::hours(48));
    if limit > longest_wait {
        return Err(format!(
            "DrainLimitSeconds {} exceeds what Auto Scaling keeps an instance waiting with a \
             heartbeat timeout of {} s: at most {} s (48 h or 100 x the timeout, whichever is \
             smaller); lower DrainLimitSeconds or raise LifecycleHeartbeatTimeout",
            limit.num_seconds(),
            heartbeat_timeout.num_seconds(),
            longest_wait.num_seconds()
        ));
    }
    if heartbeat_timeout < schedule_interval * 2 {
        return Err(format!(
            "LifecycleHeartbeatTimeout {} s is shorter than two coverage-check intervals ({} s): \
             a hook would time out between the runs that heartbeat it; raise it (and the hooks' \
             HeartbeatTimeout) to at least {} s, or run the check more often",
            heartbeat_timeout.num_seconds(),
            (schedule_interval * 2).num_seconds(),
            (schedule_interval * 2).num_seconds()
        ));
    }
    Ok(())
}

/// What to do about one open hold, decided from the instance as ECS describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStep {
    Wait {
        heartbeat: bool,
        /// The instance is ACTIVE again (someone reactivated it): drain it again.
        drain_again: bool,
    },
    Complete(HoldEndReason),
}

/// `emptied`: a fresh read of the instance's tasks found none left, stopping ones included
/// (asked for only where [`looks_drained`]).
pub fn decide_hold(
    hold: &TerminationHold,
    instance: Option<&ContainerInstance>,
    emptied: bool,
    now: DateTime<Utc>,
    settings: &HoldSettings,
) -> HoldStep {
    match instance {
        None => HoldStep::Complete(HoldEndReason::InstanceGone),
        Some(instance) if looks_drained(instance) && emptied => {
            HoldStep::Complete(HoldEndReason::Drained)
        }
        Some(_) if now >= hold.deadline => HoldStep::Complete(HoldEndReason::LimitReached),
        Some(instance) => HoldStep::Wait {
            heartbeat: now >= hold.heartbeat_at + settings.heartbeat_every,
            drain_again: instance.status == InstanceStatus::Active,
        },
    }
}

/// DRAINING with no task left by the counts. Only a candidate: the counts leave out tasks told
/// to stop that still run (`runningTasksCount` counts desired status RUNNING, API reference
/// `ContainerInstance`), such as a daemon copy flushing its last logs; a fresh read of the
/// instance's tasks decides (`Engine::emptied`).
pub fn looks_drained(instance: &ContainerInstance) -> bool {
    instance.status == InstanceStatus::Draining
        && instance.running_tasks == 0
        && instance.pending_tasks == 0
}

/// One thing done about a termination, in an invocation's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldReport {
    pub ec2_instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub group: String,
    /// `held`, `heartbeat`, `completed`, or `ignored` (another hook's event).
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<HoldEndReason>,
    pub detail: String,
}

pub(crate) fn completed(
    action: &LifecycleAction,
    instance_id: Option<&str>,
    why: HoldEndReason,
    detail: String,
) -> HoldReport {
    HoldReport {
        ec2_instance_id: action.ec2_instance_id.clone(),
        instance_id: instance_id.map(str::to_string),
        group: action.group.clone(),
        action: "completed",
        reason: Some(why),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;
    use std::collections::BTreeMap;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn hold() -> TerminationHold {
        TerminationHold {
            cluster: "prod".into(),
            instance_id: "i1".into(),
            instance_arn: "arn:aws:ecs:us-east-1:1:container-instance/prod/i1".into(),
            action: LifecycleAction {
                group: "asg".into(),
                hook: "drain".into(),
                token: Some("t".into()),
                ec2_instance_id: "i-0123".into(),
            },
            received_at: at(0),
            heartbeat_at: at(0),
            deadline: at(3600),
            ended: None,
        }
    }

    fn instance(status: InstanceStatus, tasks: i32) -> ContainerInstance {
        ContainerInstance {
            arn: "arn:aws:ecs:us-east-1:1:container-instance/prod/i1".into(),
            ec2_instance_id: Some("i-0123".into()),
            status,
            status_reason: None,
            agent_connected: true,
            capacity_provider: Some("general".into()),
            registered: Resources::default(),
            remaining: Resources::default(),
            running_tasks: tasks,
            pending_tasks: 0,
            attributes: BTreeMap::new(),
            version: 1,
            registered_at: None,
        }
    }

    #[test]
    fn a_hold_ends_when_drained_gone_or_at_the_limit_and_heartbeats_meanwhile() {
        let settings = HoldSettings::new(Duration::seconds(300), Duration::hours(1));
        let draining = instance(InstanceStatus::Draining, 2);
        assert_eq!(
            decide_hold(&hold(), Some(&draining), false, at(60), &settings),
            HoldStep::Wait {
                heartbeat: false,
                drain_again: false
            }
        );
        assert_eq!(
            decide_hold(&hold(), Some(&draining), false, at(150), &settings),
            HoldStep::Wait {
                heartbeat: true,
                drain_again: false
            },
            "at half the hook's timeout"
        );
        assert_eq!(
            decide_hold(
                &hold(),
                Some(&instance(InstanceStatus::Draining, 0)),
                true,
                at(10),
                &settings
            ),
            HoldStep::Complete(HoldEndReason::Drained)
        );
        assert_eq!(
            decide_hold(
                &hold(),
                Some(&instance(InstanceStatus::Draining, 0)),
                false,
                at(10),
                &settings
            ),
            HoldStep::Wait {
                heartbeat: false,
                drain_again: false
            },
            "the counts say empty, but a fresh read found a task still stopping"
        );
        assert_eq!(
            decide_hold(&hold(), Some(&draining), false, at(3600), &settings),
            HoldStep::Complete(HoldEndReason::LimitReached)
        );
        assert_eq!(
            decide_hold(&hold(), None, false, at(10), &settings),
            HoldStep::Complete(HoldEndReason::InstanceGone)
        );
        assert_eq!(
            decide_hold(
                &hold(),
                Some(&instance(InstanceStatus::Active, 3)),
                false,
                at(10),
                &settings
            ),
            HoldStep::Wait {
                heartbeat: false,
                drain_again: true
            },
            "reactivated by someone: drained again"
        );
        // An ACTIVE instance with no task is not "drained": it may take tasks any moment.
        assert!(!looks_drained(&instance(InstanceStatus::Active, 0)));
    }
}
