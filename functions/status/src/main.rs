//! Manual invoke → specs, coverage and slots in trouble, as JSON.
//!
//! Input: `ecs_daemons::deploy::StatusRequest`; answer: `ecs_daemons::deploy::StatusAnswer`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("status", ecs_daemons::runtime::status).await
}
