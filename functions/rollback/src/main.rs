//! Manual invoke → roll a daemon back to its last good (or a named) revision.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("rollback", ecs_daemons::runtime::rollback).await
}
