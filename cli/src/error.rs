//! The CLI's one error type, and the exit code each kind of error ends the process with.

/// Exit codes, documented in the README (*The CLI*).
pub mod exit {
    /// Done; for `rollout wait` and `status --watch`, every watched rollout succeeded.
    pub const OK: i32 = 0;
    /// A watched rollout failed (its breaker or an alarm tripped), was rolled back, or was
    /// superseded by another deploy or rollback.
    pub const ROLLOUT_FAILED: i32 = 1;
    /// `rollout wait` gave up at its `--timeout`: the rollout is still in progress.
    pub const TIMED_OUT: i32 = 2;
    /// The function refused the request: the message says what to fix.
    pub const REFUSED: i32 = 3;
    /// ecs-daemons or AWS failed (ECS, DynamoDB, CloudWatch, a write race): retrying may help.
    pub const FAILED: i32 = 4;
    /// The functions could not be reached: the stack, its outputs, the Lambda call itself.
    pub const UNREACHABLE: i32 = 5;
    /// The command line itself is wrong.
    pub const USAGE: i32 = 64;
}

/// The `errorType`s of failures on ecs-daemons' or AWS's side (`runtime::error`); every
/// other `errorType` is a refusal of the request.
const FAILURE_TYPES: &[&str] = &[
    "EcsError",
    "StoreError",
    "AutoScalingError",
    "CloudWatchError",
    "Conflict",
    "ConfigurationError",
    "EncodingError",
    "Unhandled",
];

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The function answered with an error (its `errorType` and `errorMessage`).
    #[error("{error_type}: {message}")]
    Function { error_type: String, message: String },
    /// The Lambda call did not go through.
    #[error("invoking {function}: {message}")]
    Invoke { function: String, message: String },
    /// The function's answer is not the JSON it should be.
    #[error("{function} answered something that is not JSON: {body}")]
    NotJson { function: String, body: String },
    /// The stack or its outputs.
    #[error("stack {stack}: {message}")]
    Stack { stack: String, message: String },
    /// A mistake on the command line or in a request file.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Function { error_type, .. } if FAILURE_TYPES.contains(&error_type.as_str()) => {
                exit::FAILED
            }
            Self::Function { .. } => exit::REFUSED,
            Self::Invoke { .. } | Self::NotJson { .. } | Self::Stack { .. } => exit::UNREACHABLE,
            Self::Usage(_) => exit::USAGE,
        }
    }

    /// Worth asking again (a status poll while waiting): a failure, not a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self.exit_code(), exit::FAILED | exit::UNREACHABLE)
            && !matches!(self, Self::Stack { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(error_type: &str) -> CliError {
        CliError::Function {
            error_type: error_type.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn refusals_and_failures_end_with_their_own_codes() {
        assert_eq!(function("UnknownDaemon").exit_code(), exit::REFUSED);
        assert_eq!(function("NoExecutionRole").exit_code(), exit::REFUSED);
        assert_eq!(function("EcsError").exit_code(), exit::FAILED);
        assert_eq!(function("Conflict").exit_code(), exit::FAILED);
        assert!(function("StoreError").is_transient());
        assert!(!function("InvalidRequest").is_transient());
        let invoke = CliError::Invoke {
            function: "f".into(),
            message: "timed out".into(),
        };
        assert_eq!(invoke.exit_code(), exit::UNREACHABLE);
        assert!(invoke.is_transient());
        assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(
            function("UnknownDaemon").to_string(),
            "UnknownDaemon: m",
            "one line: the type, then what to fix"
        );
    }
}
