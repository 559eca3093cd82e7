//! AWS SDK configuration shared by every function.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

/// Attempts per call, the first included. ECS throttles per account and region
/// (token buckets of 100, refilled at 20–40/s): backing off up to 8 times spreads
/// a burst over several seconds, well inside a Lambda invocation.
pub const MAX_ATTEMPTS: u32 = 8;

/// The budget of one call, every attempt and backoff included. The functions' timeouts
/// (template.yaml) are at least twice it, so a call that runs out its budget still leaves
/// the invocation time to record what happened and answer (a partial-batch response, not a
/// timeout that brings every message of the batch back).
pub const OPERATION_TIMEOUT_SECONDS: u64 = 20;

/// One attempt's budget: a hung connection is abandoned and retried within the call's.
pub const ATTEMPT_TIMEOUT_SECONDS: u64 = 5;

/// Loads region, credentials and endpoint (`AWS_ENDPOINT_URL*` included) from the
/// environment, with the retry and timeout policy of this system.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(ATTEMPT_TIMEOUT_SECONDS))
                .operation_timeout(Duration::from_secs(OPERATION_TIMEOUT_SECONDS))
                .build(),
        )
        .load()
        .await
}
