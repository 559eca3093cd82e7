//! EC2 Instance-terminate Lifecycle Action → drain the instance, hold the termination until
//! the applications left and the daemons stopped last, then CONTINUE.
//!
//! Input: `ecs_daemons::autoscaling::TerminateEvent` (the EventBridge event); answer:
//! `ecs_daemons::engine::TerminateOutcome`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("lifecycle-hook", ecs_daemons::runtime::lifecycle_hook).await
}
