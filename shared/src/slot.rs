//! One daemon on one container instance: the slot an invocation claims before it starts a copy,
//! and what became of that copy. Pure data; keys and versions are `store`'s business.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rollout::SlotRollout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlotState {
    /// Won by an invocation that is about to call StartTask.
    Claimed,
    /// StartTask answered with a task that is not RUNNING yet.
    Starting,
    Running,
    /// The copy stopped unexpectedly; restarted after `retry_after`.
    Stopped,
    /// Asked to stop (drain-last, untargeted instance, replaced copy).
    Stopping,
    /// Stopped too often in a row: left alone and reported.
    CrashLooping,
}

/// The state of one daemon on one container instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub cluster: String,
    pub daemon: String,
    pub instance_id: String,
    pub state: SlotState,
    #[serde(default)]
    pub task_arn: Option<String>,
    #[serde(default)]
    pub task_definition: Option<String>,
    /// Who claimed the slot (invocation / request id), for finding half-done starts.
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// `version` of the task as ECS last reported it here; older events are ignored.
    #[serde(default)]
    pub task_version: i64,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub last_stop_reason: Option<String>,
    /// No restart before this time (exponential backoff).
    #[serde(default)]
    pub retry_after: Option<DateTime<Utc>>,
    /// This instance's step in the daemon's rollouts.
    #[serde(default)]
    pub rollout: Option<SlotRollout>,
    /// ECS stopped the copy (a DAEMON service's, on a DRAINING instance) while other tasks
    /// still ran there: what `status` reports.
    #[serde(default)]
    pub stopped_early: Option<String>,
    /// When ecs-daemons set the instance DRAINING because this critical daemon crash-loops
    /// there: never again for the same crash loop (an operator who set it ACTIVE decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_drain_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}
