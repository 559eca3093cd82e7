//! Durable state in one DynamoDB table (layout in DESIGN.md): daemon specs,
//! rollouts, per-(daemon, instance) slots and event-dedupe markers.
//!
//! Every write is conditional on the version the writer read (or on absence),
//! so a lost race is a [`StoreError::Conflict`], never an overwrite.

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use crate::rollout::{RolloutConfig, RolloutCounts, RolloutKind, RolloutState, SlotRollout};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod dynamodb;
pub use dynamodb::{create_table, DynamoStore, SPECS_BY_CLUSTER_INDEX};

/// The primary key of one item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    pub pk: String,
    pub sk: String,
}

impl ItemKey {
    pub fn daemon_partition(cluster: &str, daemon: &str) -> String {
        format!("DAEMON#{cluster}#{daemon}")
    }

    pub fn spec(cluster: &str, daemon: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, daemon),
            sk: "SPEC".into(),
        }
    }

    pub fn rollout(cluster: &str, daemon: &str, rollout_id: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, daemon),
            sk: format!("{}{rollout_id}", RecordKind::Rollout.prefix()),
        }
    }

    pub fn slot(cluster: &str, daemon: &str, instance_id: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, daemon),
            sk: format!("{}{instance_id}", RecordKind::Slot.prefix()),
        }
    }

    /// Holds live in a partition of their own per cluster; `#` keeps it apart from every
    /// daemon's (daemon names are letters, digits, `-` and `_`).
    pub const HOLDS: &'static str = "#holds";

    pub fn hold(cluster: &str, instance_id: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, Self::HOLDS),
            sk: format!("{}{instance_id}", RecordKind::Hold.prefix()),
        }
    }

    /// Times to coverage, per cluster, apart from every daemon's partition like the holds.
    pub const COVERAGE_TIMES: &'static str = "#coverage-times";

    pub fn coverage_time(cluster: &str, instance_id: &str) -> Self {
        Self {
            pk: Self::daemon_partition(cluster, Self::COVERAGE_TIMES),
            sk: format!("{}{instance_id}", RecordKind::CoverageTime.prefix()),
        }
    }

    pub fn event(event_id: &str) -> Self {
        Self {
            pk: format!("EVENT#{event_id}"),
            sk: "EVENT".into(),
        }
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pk, self.sk)
    }
}

/// The kinds of versioned records under a daemon's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Spec,
    Rollout,
    Slot,
    /// A terminate lifecycle action held until the instance is drained.
    Hold,
    /// A joined instance's time to coverage.
    CoverageTime,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spec => "SPEC",
            Self::Rollout => "ROLLOUT",
            Self::Slot => "SLOT",
            Self::Hold => "HOLD",
            Self::CoverageTime => "COVERAGE_TIME",
        }
    }

    /// Sort-key prefix shared by every record of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Spec => "SPEC",
            Self::Rollout => "ROLLOUT#",
            Self::Slot => "SLOT#",
            Self::Hold => "HOLD#",
            Self::CoverageTime => "JOINED#",
        }
    }
}

/// A record kept in the table.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: RecordKind;
    fn key(&self) -> ItemKey;
    /// The cluster, for records listed per cluster (specs).
    fn cluster_index(&self) -> Option<&str> {
        None
    }
}

/// What a conditional write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expected {
    /// The item must not exist yet.
    Absent,
    /// The item must be at exactly this version.
    Version(u64),
}

impl Expected {
    /// The version the item has after a successful write.
    pub fn next_version(self) -> u64 {
        match self {
            Self::Absent => 1,
            Self::Version(version) => version + 1,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("no item"),
            Self::Version(version) => write!(f, "version {version}"),
        }
    }
}

/// A record with the version it was read at; pass the version back to write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<R> {
    pub record: R,
    pub version: u64,
}

impl<R> Versioned<R> {
    /// What a write of this record expects: version 0 stands for a record not stored yet.
    pub fn expected(&self) -> Expected {
        match self.version {
            0 => Expected::Absent,
            version => Expected::Version(version),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("conflict on {key}: expected {expected}, found {}", found.map_or("no item".to_string(), |v| format!("version {v}")))]
    Conflict {
        key: ItemKey,
        expected: Expected,
        found: Option<u64>,
    },
    #[error("DynamoDB {operation} on {target} failed ({code}): {message}")]
    Call {
        operation: &'static str,
        target: String,
        code: String,
        message: String,
        retryable: bool,
    },
    #[error("stored item {key} cannot be read as {kind}: {message}")]
    Corrupt {
        key: String,
        kind: &'static str,
        message: String,
    },
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// DynamoDB's limit on the items of one `TransactWriteItems`.
pub const TRANSACTION_MAX_ITEMS: usize = 100;

/// One conditional put of a transaction: the record already encoded, with what it expects.
/// Records of different kinds go into one [`Store::put_all`] this way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedPut {
    pub key: ItemKey,
    pub kind: RecordKind,
    pub data: String,
    pub cluster_index: Option<String>,
    pub expected: Expected,
}

impl PreparedPut {
    pub fn of<R: Record>(record: &R, expected: Expected) -> Result<Self, StoreError> {
        Ok(Self {
            key: record.key(),
            kind: R::KIND,
            data: encode(record)?,
            cluster_index: record.cluster_index().map(str::to_string),
            expected,
        })
    }
}

/// Whether an event id was seen before (EventBridge delivers at least once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSeen {
    FirstTime,
    Duplicate,
}

/// The table behind ecs-daemons.
pub trait Store: Send + Sync {
    /// Reads one record (strongly consistent).
    fn get<R: Record>(
        &self,
        key: &ItemKey,
    ) -> impl Future<Output = Result<Option<Versioned<R>>, StoreError>> + Send;

    /// Writes a record if the stored one is as expected; returns the new version.
    fn put<R: Record>(
        &self,
        record: &R,
        expected: Expected,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Writes all the puts or none (one transaction, at most [`TRANSACTION_MAX_ITEMS`]), each
    /// under its own condition; answers the new versions in order. A lost condition is
    /// `Conflict` naming the first item whose condition failed.
    fn put_all(
        &self,
        puts: &[PreparedPut],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// Deletes a record if it is at the expected version.
    fn delete(
        &self,
        key: &ItemKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every record of kind `R` in one daemon's partition, in sort-key order (strongly consistent).
    fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<R>>, StoreError>> + Send;

    /// Every daemon spec of a cluster (through the sparse by-cluster index).
    fn list_specs(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<DaemonSpec>>, StoreError>> + Send;

    /// Records an event id for `ttl`; answers whether it was already recorded and not expired.
    fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> impl Future<Output = Result<EventSeen, StoreError>> + Send;

    /// Removes an event marker, so a delivery that failed half-way is processed again on retry.
    fn forget_event(&self, event_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A declared daemon: what runs, where, in which order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSpec {
    pub cluster: String,
    pub daemon: String,
    /// Pinned `family:revision`.
    pub task_definition: String,
    pub capacity_providers: Vec<String>,
    /// Lower starts first and stops last.
    #[serde(default)]
    pub start_order: i32,
    /// Facts of the pinned task definition (revisions are immutable, so they are kept
    /// here instead of being described on every event).
    #[serde(default)]
    pub has_health_check: bool,
    #[serde(default)]
    pub cpu: Option<i64>,
    #[serde(default)]
    pub memory_mib: Option<i64>,
    /// The last revision whose rollout succeeded (rollback target).
    #[serde(default)]
    pub last_good_task_definition: Option<String>,
    /// The good revision before that one: where `rollback` goes once the current revision
    /// has itself succeeded.
    #[serde(default)]
    pub previous_good_task_definition: Option<String>,
    /// The rollout in flight, if any.
    #[serde(default)]
    pub active_rollout: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How revisions of this daemon roll out (the latest deploy's choice).
    #[serde(default)]
    pub rollout: RolloutConfig,
    pub updated_at: DateTime<Utc>,
}

/// How a daemon that stops unexpectedly is restarted on its instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RestartPolicy {
    /// After this many failures in a row the slot is crash-looping: reported, not restarted.
    pub max_consecutive_failures: u32,
    /// The second restart waits this long, every further one twice as long as the one before.
    pub base_backoff_seconds: u32,
    pub max_backoff_seconds: u32,
    /// A copy that ran (healthy) this long clears the failure count.
    pub stable_after_seconds: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_consecutive_failures: 5,
            base_backoff_seconds: 10,
            max_backoff_seconds: 300,
            stable_after_seconds: 60,
        }
    }
}

impl RestartPolicy {
    /// Wait before restart number `failures` (1-based): the first restart is immediate.
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::zero();
        }
        let doubled =
            u64::from(self.base_backoff_seconds).saturating_mul(1u64 << (failures - 2).min(20));
        Duration::seconds(doubled.min(u64::from(self.max_backoff_seconds)) as i64)
    }
}

impl Record for DaemonSpec {
    const KIND: RecordKind = RecordKind::Spec;
    fn key(&self) -> ItemKey {
        ItemKey::spec(&self.cluster, &self.daemon)
    }
    fn cluster_index(&self) -> Option<&str> {
        Some(&self.cluster)
    }
}

/// One instance that failed during a rollout, with ECS's own reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFailure {
    pub instance_id: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One rollout of a daemon from one revision to another, and its progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub cluster: String,
    pub daemon: String,
    /// Sorts by start time, so a query lists history in order.
    pub id: String,
    pub kind: RolloutKind,
    pub from_task_definition: Option<String>,
    pub to_task_definition: String,
    pub config: RolloutConfig,
    pub state: RolloutState,
    #[serde(default)]
    pub counts: RolloutCounts,
    /// The latest failures (at most [`Rollout::FAILURES_KEPT`]).
    #[serde(default)]
    pub failures: Vec<RolloutFailure>,
    /// Why it failed or was superseded.
    #[serde(default)]
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Rollout {
    pub const FAILURES_KEPT: usize = 50;
    /// Rollout records kept per daemon.
    pub const HISTORY_KEPT: usize = 20;

    /// A sortable id: start time, then a suffix that tells two starts of one millisecond apart.
    pub fn new_id(now: DateTime<Utc>, suffix: &str) -> String {
        let tail: String = suffix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .rev()
            .take(6)
            .collect();
        format!("{}-{tail}", now.format("%Y%m%dT%H%M%S%3fZ"))
    }
}

impl Record for Rollout {
    const KIND: RecordKind = RecordKind::Rollout;
    fn key(&self) -> ItemKey {
        ItemKey::rollout(&self.cluster, &self.daemon, &self.id)
    }
}

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
    pub updated_at: DateTime<Utc>,
}

impl Slot {
    pub fn key_of(&self) -> ItemKey {
        ItemKey::slot(&self.cluster, &self.daemon, &self.instance_id)
    }
}

impl Record for Slot {
    const KIND: RecordKind = RecordKind::Slot;
    fn key(&self) -> ItemKey {
        ItemKey::slot(&self.cluster, &self.daemon, &self.instance_id)
    }
}

/// Serialized form of a record, shared by both stores so they agree on what is storable.
/// A record as the table stores it (JSON in `data`); every store adapter uses it.
pub fn encode<R: Record>(record: &R) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|error| StoreError::Corrupt {
        key: record.key().to_string(),
        kind: R::KIND.as_str(),
        message: error.to_string(),
    })
}

/// A stored record read back, naming the item if it cannot be read.
pub fn decode<R: Record>(key: &str, data: &str) -> Result<R, StoreError> {
    serde_json::from_str(data).map_err(|error| StoreError::Corrupt {
        key: key.to_string(),
        kind: R::KIND.as_str(),
        message: error.to_string(),
    })
}

/// Shared handles (tests keep one to inspect what the engine wrote).
impl<T: Store> Store for std::sync::Arc<T> {
    fn get<R: Record>(
        &self,
        key: &ItemKey,
    ) -> impl Future<Output = Result<Option<Versioned<R>>, StoreError>> + Send {
        (**self).get(key)
    }
    fn put<R: Record>(
        &self,
        record: &R,
        expected: Expected,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).put(record, expected)
    }
    fn put_all(
        &self,
        puts: &[PreparedPut],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send {
        (**self).put_all(puts)
    }
    fn delete(
        &self,
        key: &ItemKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).delete(key, expected_version)
    }
    fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<R>>, StoreError>> + Send {
        (**self).query(cluster, daemon)
    }
    fn list_specs(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<DaemonSpec>>, StoreError>> + Send {
        (**self).list_specs(cluster)
    }
    fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> impl Future<Output = Result<EventSeen, StoreError>> + Send {
        (**self).remember_event(event_id, now, ttl)
    }
    fn forget_event(&self, event_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).forget_event(event_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_table_layout() {
        assert_eq!(
            ItemKey::spec("prod", "agent").to_string(),
            "DAEMON#prod#agent/SPEC"
        );
        assert_eq!(ItemKey::slot("prod", "agent", "ci-1").sk, "SLOT#ci-1");
        assert_eq!(ItemKey::rollout("prod", "agent", "r1").sk, "ROLLOUT#r1");
        assert_eq!(ItemKey::event("e1").pk, "EVENT#e1");
    }
}
