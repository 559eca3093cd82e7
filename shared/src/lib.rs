//! ecs-daemons: everything that is not a Lambda entry point.

pub mod arn;
pub mod aws;
pub mod ecs;
pub mod events;
pub mod model;
pub mod plan;
pub mod store;
pub mod telemetry;
