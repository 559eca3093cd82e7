//! Manual invoke → validate and record a daemon, then start covering.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("deploy", ecs_daemons::runtime::deploy).await
}
