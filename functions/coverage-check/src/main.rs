//! Schedule or manual invoke → full reconcile of every managed cluster.
//!
//! Input: the schedule's EventBridge event, `{}` (every managed cluster) or
//! `{"cluster": "name"}`; answer: one `ecs_daemons::engine::Outcome` per cluster.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("coverage-check", ecs_daemons::runtime::coverage_check).await
}
