//! ECS Task State Change → daemon task bookkeeping, restarts, and drain-last.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("task-events", ecs_daemons::runtime::task_event).await
}
