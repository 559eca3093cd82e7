//! The command line (clap): one subcommand per thing an operator does, the functions found
//! by `--stack` or named by flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ecs-daemons",
    version,
    about = "Drive ecs-daemons: deploy, roll back, pause, watch and wait for daemon rollouts",
    after_help = "Exit codes: 0 done (rollouts succeeded), 1 a watched rollout failed, was rolled back or superseded, \
                  2 `rollout wait` timed out, 3 refused (the message says what to fix), 4 ecs-daemons or AWS failed \
                  (retry), 5 the functions could not be reached, 64 usage."
)]
pub struct Cli {
    /// The ecs-daemons stack whose outputs name the functions (CloudFormation DescribeStacks).
    #[arg(long, env = "ECS_DAEMONS_STACK", global = true)]
    pub stack: Option<String>,
    /// The deploy function's name or ARN (instead of --stack).
    #[arg(long, env = "ECS_DAEMONS_DEPLOY_FUNCTION", global = true)]
    pub deploy_function: Option<String>,
    /// The rollback function's name or ARN (instead of --stack).
    #[arg(long, env = "ECS_DAEMONS_ROLLBACK_FUNCTION", global = true)]
    pub rollback_function: Option<String>,
    /// The status function's name or ARN (instead of --stack).
    #[arg(long, env = "ECS_DAEMONS_STATUS_FUNCTION", global = true)]
    pub status_function: Option<String>,
    /// Print the functions' answers as they are (JSON), one per line.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Declare a daemon, change it, or roll a new revision out (the deploy invoke).
    Deploy(DeployArgs),
    /// Roll back to the last good revision, or to --to-revision.
    Rollback(RollbackArgs),
    /// Stop every copy and retire the daemon (its history stays for status).
    Undeploy(UndeployArgs),
    /// Hold a rollout where it is: no new batch, no old copy stopped.
    Pause(ControlArgs),
    /// Let a paused rollout go on.
    Resume(ControlArgs),
    /// Let a rollout waiting after its manual canary go on.
    Promote(ControlArgs),
    /// Coverage, rollouts and instances in trouble, per daemon and capacity provider.
    Status(StatusArgs),
    /// Rollouts: wait for one to end (for deployment pipelines).
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait for the daemon's rollout in progress (or --rollout) to end: exit 0 when it
    /// succeeded, 1 when it failed or was rolled back, 2 at --timeout.
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct Target {
    /// The ECS cluster.
    #[arg(long, env = "ECS_DAEMONS_CLUSTER")]
    pub cluster: String,
    /// The daemon's name.
    #[arg(long)]
    pub daemon: String,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A deploy request in JSON (as events/invoke-deploy.json), for every setting; the flags
    /// below override its fields.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    #[arg(long, env = "ECS_DAEMONS_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long)]
    pub daemon: Option<String>,
    /// Pinned `family:revision` for EC2 Auto Scaling group providers.
    #[arg(long)]
    pub task_definition: Option<String>,
    /// Pinned `family:revision` of a daemon task definition, for Managed Instances providers.
    #[arg(long)]
    pub daemon_task_definition: Option<String>,
    /// A capacity provider to cover (repeat for several; replaces the file's list).
    #[arg(long = "capacity-provider")]
    pub capacity_providers: Vec<String>,
    /// Change nothing: show the plan the real run would follow.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: Target,
    /// A revision of the daemon's family (default: the last one whose rollout succeeded).
    #[arg(long)]
    pub to_revision: Option<u32>,
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    #[command(flatten)]
    pub target: Target,
    /// Change nothing: show the copies it would stop.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub target: Target,
    /// Who asks, shown by status (default: $USER).
    #[arg(long, env = "USER", hide_env_values = true)]
    pub by: Option<String>,
    /// Why, shown by status.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, env = "ECS_DAEMONS_CLUSTER")]
    pub cluster: String,
    /// One daemon (default: every daemon of the cluster).
    #[arg(long)]
    pub daemon: Option<String>,
    /// Follow the rollouts in progress live until they end (exit codes as `rollout wait`).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two reads while watching.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub target: Target,
    /// The rollout's id (default: every rollout of the daemon in progress, else its latest).
    #[arg(long)]
    pub rollout: Option<String>,
    /// Seconds to wait at most.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Seconds between two reads.
    #[arg(long, default_value_t = 10)]
    pub interval: u64,
}
