//! One handler per function: parse the input, call the library, log, answer.

mod coverage_check;
mod deploy;
mod ecs_events;
mod lifecycle_hook;
mod rollback;
mod status;

pub use coverage_check::{
    coverage_check, plan_wakes, rollout_stream_clusters, stream_batch_of_inserts, WakePlan,
};
pub use deploy::deploy;
pub use ecs_events::{ecs_events, instance_event, task_event};
pub use lifecycle_hook::lifecycle_hook;
pub use rollback::rollback;
pub use status::status;
