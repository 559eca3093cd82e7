//! EC2 Auto Scaling terminate lifecycle hooks: an instance picked for termination waits in
//! `Terminating:Wait` until ecs-daemons has drained it (applications first, daemons last),
//! then the lifecycle action is completed with CONTINUE. Reached through the small
//! [`AutoScaling`] trait: the SDK adapter in [`sdk`], the cluster model in tests.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::EventError;

mod sdk;
pub use sdk::SdkAutoScaling;

pub const AUTOSCALING_SOURCE: &str = "aws.autoscaling";
pub const TERMINATE_ACTION: &str = "EC2 Instance-terminate Lifecycle Action";
pub const TERMINATING_TRANSITION: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// One pending lifecycle action: what `CompleteLifecycleAction` and
/// `RecordLifecycleActionHeartbeat` name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleAction {
    pub group: String,
    pub hook: String,
    /// From the event. None for an action the coverage check adopted because its event never
    /// arrived: Auto Scaling completes "the lifecycle action for the specified token or
    /// instance" (API reference, CompleteLifecycleAction), so the instance id names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub ec2_instance_id: String,
}

/// An instance of a hooked group waiting in `Terminating:Wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingTermination {
    pub group: String,
    pub ec2_instance_id: String,
}

/// The `LIFECYCLE_HOOK_NAME` default, as the README's setup creates the hook.
pub const DEFAULT_HOOK_NAME: &str = "ecs-daemons-drain";

/// The terminate hook ecs-daemons holds: its name and the groups that have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminateHook {
    pub name: String,
    pub groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoScalingErrorKind {
    /// No pending action for that token: already completed, timed out, or never existed.
    NoActiveAction,
    Throttled,
    AccessDenied,
    /// Network trouble, timeouts, 5xx after retries.
    Transient,
    /// Refused as invalid (a client error retrying will not fix).
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Auto Scaling {operation} for {instance} failed ({code}): {message}")]
pub struct AutoScalingError {
    pub operation: &'static str,
    pub instance: String,
    pub kind: AutoScalingErrorKind,
    pub code: String,
    pub message: String,
}

impl AutoScalingError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            AutoScalingErrorKind::Throttled | AutoScalingErrorKind::Transient
        )
    }
}

/// What a lifecycle call answers. Boxed: the trait is used as `dyn` by the engine, which
/// needs it only on the rare drains of instances with a hook.
pub type AutoScalingAnswer<'a> =
    Pin<Box<dyn Future<Output = Result<(), AutoScalingError>> + Send + 'a>>;

/// What `waiting_terminations` answers.
pub type WaitingAnswer<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<WaitingTermination>, AutoScalingError>> + Send + 'a>>;

/// The Auto Scaling API surface of ecs-daemons.
pub trait AutoScaling: Send + Sync {
    /// Instances of these groups in `Terminating:Wait` (`DescribeAutoScalingGroups`): how the
    /// coverage check finds a held termination whose event never reached ecs-daemons.
    fn waiting_terminations<'a>(&'a self, groups: &'a [String]) -> WaitingAnswer<'a>;
    /// `CompleteLifecycleAction` with `CONTINUE`: the instance may terminate now.
    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a>;
    /// `RecordLifecycleActionHeartbeat`: the wait restarts its heartbeat timeout.
    fn record_lifecycle_action_heartbeat<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a>;
}

impl<T: AutoScaling> AutoScaling for std::sync::Arc<T> {
    fn waiting_terminations<'a>(&'a self, groups: &'a [String]) -> WaitingAnswer<'a> {
        (**self).waiting_terminations(groups)
    }
    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        (**self).complete_lifecycle_action(action)
    }
    fn record_lifecycle_action_heartbeat<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        (**self).record_lifecycle_action_heartbeat(action)
    }
}

/// The `detail` of an "EC2 Instance-terminate Lifecycle Action" event.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminateActionDetail {
    pub lifecycle_action_token: String,
    pub auto_scaling_group_name: String,
    pub lifecycle_hook_name: String,
    #[serde(rename = "EC2InstanceId")]
    pub ec2_instance_id: String,
    pub lifecycle_transition: String,
}

/// A parsed terminate lifecycle event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminateEvent {
    pub id: String,
    pub action: LifecycleAction,
}

fn required_text(detail: &Value, field: &str) -> Result<(), EventError> {
    match detail.get(field) {
        Some(Value::String(text)) if !text.is_empty() && text.len() <= 1600 => Ok(()),
        _ => Err(EventError::Detail {
            detail_type: TERMINATE_ACTION.into(),
            path: field.into(),
            message: "a non-empty string of at most 1600 characters is required".into(),
        }),
    }
}

/// Parses an "EC2 Instance-terminate Lifecycle Action" event, naming what is wrong.
pub fn parse_terminate_event(raw: Value) -> Result<TerminateEvent, EventError> {
    let Value::Object(envelope) = &raw else {
        return Err(EventError::Envelope("expected a JSON object".into()));
    };
    let text = |field: &str| envelope.get(field).and_then(Value::as_str).unwrap_or("");
    if text("source") != AUTOSCALING_SOURCE {
        return Err(EventError::WrongSource {
            expected: AUTOSCALING_SOURCE,
            found: text("source").chars().take(100).collect(),
        });
    }
    if text("detail-type") != TERMINATE_ACTION {
        return Err(EventError::WrongDetailType {
            expected: TERMINATE_ACTION.into(),
            found: text("detail-type").chars().take(100).collect(),
        });
    }
    let id = text("id").to_string();
    if id.is_empty() {
        return Err(EventError::MissingId);
    }
    let detail = envelope.get("detail").cloned().unwrap_or(Value::Null);
    for field in [
        "LifecycleActionToken",
        "AutoScalingGroupName",
        "LifecycleHookName",
        "EC2InstanceId",
        "LifecycleTransition",
    ] {
        required_text(&detail, field)?;
    }
    let detail: TerminateActionDetail =
        serde_path_to_error::deserialize(detail).map_err(|error| EventError::Detail {
            detail_type: TERMINATE_ACTION.into(),
            path: error.path().to_string(),
            message: error.into_inner().to_string(),
        })?;
    if detail.lifecycle_transition != TERMINATING_TRANSITION {
        return Err(EventError::Detail {
            detail_type: TERMINATE_ACTION.into(),
            path: "LifecycleTransition".into(),
            message: format!(
                "expected {TERMINATING_TRANSITION}, got {:?}",
                detail
                    .lifecycle_transition
                    .chars()
                    .take(100)
                    .collect::<String>()
            ),
        });
    }
    let ec2 = &detail.ec2_instance_id;
    if !(ec2.starts_with("i-")
        && ec2.len() <= 32
        && ec2[2..].chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(EventError::Detail {
            detail_type: TERMINATE_ACTION.into(),
            path: "EC2InstanceId".into(),
            message: format!(
                "{:?} is not an EC2 instance id",
                ec2.chars().take(40).collect::<String>()
            ),
        });
    }
    Ok(TerminateEvent {
        id,
        action: LifecycleAction {
            group: detail.auto_scaling_group_name,
            hook: detail.lifecycle_hook_name,
            token: Some(detail.lifecycle_action_token),
            ec2_instance_id: detail.ec2_instance_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        serde_json::from_str(include_str!("../../events/lifecycle-terminate.json")).unwrap()
    }

    #[test]
    fn the_sample_event_parses() {
        let event = parse_terminate_event(sample()).unwrap();
        assert_eq!(event.action.group, "asg-general");
        assert_eq!(event.action.hook, "ecs-daemons-drain");
        assert_eq!(event.action.ec2_instance_id, "i-0a1b2c3d4e5f60718");
        assert_eq!(
            event.action.token.as_deref(),
            Some("87654321-4321-4321-4321-210987654321")
        );
    }

    #[test]
    fn wrong_events_are_named() {
        let mut launch = sample();
        launch["detail-type"] = json!("EC2 Instance-launch Lifecycle Action");
        assert!(matches!(
            parse_terminate_event(launch),
            Err(EventError::WrongDetailType { .. })
        ));
        let mut ecs = sample();
        ecs["source"] = json!("aws.ecs");
        assert!(matches!(
            parse_terminate_event(ecs),
            Err(EventError::WrongSource { .. })
        ));
        let mut no_token = sample();
        no_token["detail"]
            .as_object_mut()
            .unwrap()
            .remove("LifecycleActionToken");
        let error = parse_terminate_event(no_token).unwrap_err().to_string();
        assert!(error.contains("LifecycleActionToken"), "{error}");
        let mut launching = sample();
        launching["detail"]["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_LAUNCHING");
        let error = parse_terminate_event(launching).unwrap_err().to_string();
        assert!(error.contains("EC2_INSTANCE_TERMINATING"), "{error}");
        let mut query = sample();
        query["detail"]["EC2InstanceId"] = json!("i-1 or ec2InstanceId != x");
        let error = parse_terminate_event(query).unwrap_err().to_string();
        assert!(error.contains("not an EC2 instance id"), "{error}");
        assert!(parse_terminate_event(json!([1])).is_err());
    }
}
