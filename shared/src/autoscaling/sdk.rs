//! [`AutoScaling`] over aws-sdk-autoscaling.

use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{
    AutoScaling, AutoScalingAnswer, AutoScalingError, AutoScalingErrorKind, LifecycleAction,
    WaitingAnswer, WaitingTermination,
};

/// `DescribeAutoScalingGroups` takes this many group names per call (API reference).
const GROUP_NAMES_PER_CALL: usize = 50;

/// The production `AutoScaling`: one SDK client for the process.
#[derive(Clone, Debug)]
pub struct SdkAutoScaling {
    client: aws_sdk_autoscaling::Client,
}

impl SdkAutoScaling {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        Self { client }
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        Self::new(aws_sdk_autoscaling::Client::new(config))
    }
}

/// Maps an SDK error, classifying by Auto Scaling's error code and message.
fn call_error<E>(
    operation: &'static str,
    instance: &str,
    error: SdkError<E, HttpResponse>,
) -> AutoScalingError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or("").to_string();
    let message = error
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| DisplayErrorContext(&error).to_string());
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let kind = match (&error, code.as_str()) {
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => AutoScalingErrorKind::Transient,
        // Auto Scaling's answer to a completed, timed-out or unknown action.
        (_, "ValidationError") if message.contains("No active Lifecycle Action") => {
            AutoScalingErrorKind::NoActiveAction
        }
        (_, "Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
            AutoScalingErrorKind::Throttled
        }
        (_, "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") => {
            AutoScalingErrorKind::AccessDenied
        }
        (_, "ServiceUnavailable" | "InternalFailure" | "ResourceContention") => {
            AutoScalingErrorKind::Transient
        }
        _ if status.is_some_and(|status| status >= 500) => AutoScalingErrorKind::Transient,
        _ => AutoScalingErrorKind::Invalid,
    };
    let code = if code.is_empty() {
        status.map_or("NoResponse".to_string(), |s| format!("HTTP {s}"))
    } else {
        code
    };
    AutoScalingError {
        operation,
        instance: instance.to_string(),
        kind,
        code,
        message,
    }
}

impl AutoScaling for SdkAutoScaling {
    fn waiting_terminations<'a>(&'a self, groups: &'a [String]) -> WaitingAnswer<'a> {
        Box::pin(async move {
            let mut waiting = Vec::new();
            for names in groups.chunks(GROUP_NAMES_PER_CALL) {
                let mut next_token = None;
                loop {
                    let page = self
                        .client
                        .describe_auto_scaling_groups()
                        .set_auto_scaling_group_names(Some(names.to_vec()))
                        .set_next_token(next_token)
                        .send()
                        .await
                        .map_err(|e| {
                            call_error("DescribeAutoScalingGroups", &names.join(","), e)
                        })?;
                    for group in page.auto_scaling_groups() {
                        let name = group.auto_scaling_group_name().unwrap_or_default();
                        waiting.extend(
                            group
                                .instances()
                                .iter()
                                .filter(|i| {
                                    i.lifecycle_state()
                                        == Some(&aws_sdk_autoscaling::types::LifecycleState::TerminatingWait)
                                })
                                .filter_map(|i| i.instance_id())
                                .map(|id| WaitingTermination {
                                    group: name.to_string(),
                                    ec2_instance_id: id.to_string(),
                                }),
                        );
                    }
                    match page.next_token() {
                        Some(token) => next_token = Some(token.to_string()),
                        None => break,
                    }
                }
            }
            Ok(waiting)
        })
    }

    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        Box::pin(async move {
            self.client
                .complete_lifecycle_action()
                .auto_scaling_group_name(&action.group)
                .lifecycle_hook_name(&action.hook)
                .set_lifecycle_action_token(action.token.clone())
                .instance_id(&action.ec2_instance_id)
                .lifecycle_action_result("CONTINUE")
                .send()
                .await
                .map_err(|e| call_error("CompleteLifecycleAction", &action.ec2_instance_id, e))?;
            Ok(())
        })
    }

    fn record_lifecycle_action_heartbeat<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        Box::pin(async move {
            self.client
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(&action.group)
                .lifecycle_hook_name(&action.hook)
                .set_lifecycle_action_token(action.token.clone())
                .instance_id(&action.ec2_instance_id)
                .send()
                .await
                .map_err(|e| {
                    call_error("RecordLifecycleActionHeartbeat", &action.ec2_instance_id, e)
                })?;
            Ok(())
        })
    }
}
