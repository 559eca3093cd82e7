//! Manual invoke → roll a daemon back to its last good (or a named) revision.
//!
//! Input: `ecs_daemons::deploy::RollbackRequest` (`toRevision`, `dryRun`); answer:
//! `ecs_daemons::deploy::RollbackAnswer` or `ecs_daemons::dry_run::DryRunAnswer`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("rollback", ecs_daemons::runtime::rollback).await
}
