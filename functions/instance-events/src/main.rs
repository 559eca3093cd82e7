//! ECS Container Instance State Change → reconcile that instance for every daemon.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("instance-events", ecs_daemons::runtime::instance_event).await
}
