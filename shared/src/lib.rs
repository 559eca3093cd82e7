//! ecs-daemons: everything that is not a Lambda entry point.

pub mod alarms;
pub mod arn;
pub mod autoscaling;
pub mod aws;
pub mod coverage_time;
pub mod deploy;
pub mod dry_run;
pub mod ecs;
pub mod engine;
pub mod events;
pub mod holds;
pub mod instance_filter;
pub mod launch;
pub mod managed;
pub mod metrics;
pub mod model;
pub mod pacing;
pub mod placement;
pub mod plan;
pub mod rollout;
pub mod runtime;
pub mod slot;
pub mod spec;
pub mod sqs;
pub mod store;
pub mod telemetry;
