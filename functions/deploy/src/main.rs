//! Manual invoke → validate and record a daemon, then start covering.
//!
//! Input: `ecs_daemons::deploy::DeployRequest` (`dryRun: true` for the dry run); answer:
//! `ecs_daemons::deploy::DeployAnswer` or `ecs_daemons::dry_run::DryRunAnswer`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    ecs_daemons::runtime::serve("deploy", ecs_daemons::runtime::deploy).await
}
