//! The Lambda layer shared by every function: configuration from the environment and the
//! production engine (`config`), the error a caller sees (`error`), JSON logs and metrics
//! (`logging`), the runtime loop (`serving`), and one handler per function (`handlers`).
//! Each `functions/*/src/main.rs` is one line: `serve(name, handler)`.

mod config;
mod error;
mod handlers;
mod logging;
mod serving;

pub use config::{
    books_wakes, engine_config_from, holds_terminations, production_engine, rate_seconds,
    reads_alarms, ProductionEngine,
};
pub use error::FunctionError;
pub use handlers::{
    coverage_check, deploy, ecs_events, instance_event, lifecycle_hook, plan_wakes, rollback,
    rollout_stream_clusters, status, stream_batch_of_inserts, task_event, WakePlan,
};
pub use logging::{log_lines, InvocationContext};
pub use serving::serve;
