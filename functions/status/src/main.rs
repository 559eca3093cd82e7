//! Manual invoke → specs, coverage and slots in trouble, as JSON.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("status", ecs_daemons::runtime::status).await
}
