//! [`AutoScaling`] over aws-sdk-autoscaling.

use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::{
    AutoScaling, AutoScalingAnswer, AutoScalingError, AutoScalingErrorKind, LifecycleAction,
};

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
    action: &LifecycleAction,
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
        instance: action.ec2_instance_id.clone(),
        kind,
        code,
        message,
    }
}

impl AutoScaling for SdkAutoScaling {
    fn complete_lifecycle_action<'a>(
        &'a self,
        action: &'a LifecycleAction,
    ) -> AutoScalingAnswer<'a> {
        Box::pin(async move {
            self.client
                .complete_lifecycle_action()
                .auto_scaling_group_name(&action.group)
                .lifecycle_hook_name(&action.hook)
                .lifecycle_action_token(&action.token)
                .instance_id(&action.ec2_instance_id)
                .lifecycle_action_result("CONTINUE")
                .send()
                .await
                .map_err(|e| call_error("CompleteLifecycleAction", action, e))?;
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
                .lifecycle_action_token(&action.token)
                .instance_id(&action.ec2_instance_id)
                .send()
                .await
                .map_err(|e| call_error("RecordLifecycleActionHeartbeat", action, e))?;
            Ok(())
        })
    }
}
