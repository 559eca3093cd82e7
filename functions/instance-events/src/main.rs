//! ECS Container Instance State Change → reconcile that instance for every daemon.
//!
//! Input: an SQS batch (`aws_lambda_events::sqs::SqsEvent` shape) whose bodies are
//! `ecs_daemons::events::ContainerInstanceStateChange` EventBridge events, or one such event;
//! answer: the SQS partial-batch response.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("instance-events", ecs_daemons::runtime::instance_event).await
}
