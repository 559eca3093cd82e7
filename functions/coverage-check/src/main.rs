//! Schedule or manual invoke → full reconcile of every managed cluster.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("coverage-check", ecs_daemons::runtime::coverage_check).await
}
