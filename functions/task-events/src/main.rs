//! ECS Task State Change → daemon task bookkeeping, restarts, and drain-last.
//!
//! Input: an SQS batch (`aws_lambda_events::sqs::SqsEvent` shape) whose bodies are
//! `ecs_daemons::events::TaskStateChange` EventBridge events, or one such event;
//! answer: the SQS partial-batch response.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("task-events", ecs_daemons::runtime::task_event).await
}
