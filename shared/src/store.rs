//! Durable state in one DynamoDB table (layout in DESIGN.md): daemon specs,
//! rollouts, per-(daemon, instance) slots and event-dedupe markers.
//!
//! Every write is conditional on the version the writer read (or on absence),
//! so a lost race is a [`StoreError::Conflict`], never an overwrite.

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Duration, Utc};

use crate::rollout::Rollout;
use crate::slot::Slot;
use crate::spec::DaemonSpec;
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

    /// The cluster of a [`Self::daemon_partition`] (ECS cluster names hold no `#`).
    pub fn cluster_of_daemon_partition(partition: &str) -> Option<&str> {
        let (cluster, _daemon) = partition.strip_prefix("DAEMON#")?.split_once('#')?;
        Some(cluster).filter(|c| !c.is_empty())
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

    /// A cluster's pending wake ([`Store::book_wake`]).
    pub fn wake(cluster: &str) -> Self {
        Self {
            pk: format!("WAKE#{cluster}"),
            sk: "WAKE".into(),
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
    /// A daemon's Managed Instances part (ECS's native managed daemon).
    ManagedDaemon,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spec => "SPEC",
            Self::Rollout => "ROLLOUT",
            Self::Slot => "SLOT",
            Self::Hold => "HOLD",
            Self::CoverageTime => "COVERAGE_TIME",
            Self::ManagedDaemon => "MANAGED_DAEMON",
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
            Self::ManagedDaemon => "MANAGED",
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

/// What [`Store::book_wake`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeBooking {
    /// The wake is now the cluster's pending one: send its message.
    Booked,
    /// A wake at or before it is pending: its reconcile books this one again if still due.
    EarlierPending,
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

    /// Every record of kind `R` of a cluster (through the sparse by-cluster index; only
    /// records with a [`Record::cluster_index`] are listed: specs and managed daemons).
    fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<R>>, StoreError>> + Send;

    /// Records an event id for `ttl`; answers whether it was already recorded and not expired.
    fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> impl Future<Output = Result<EventSeen, StoreError>> + Send;

    /// Removes an event marker, so a delivery that failed half-way is processed again on retry.
    fn forget_event(&self, event_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes `at` the cluster's pending wake unless one at or before it is pending (a pending
    /// wake at or before `now` has come, and no longer counts). One conditional write.
    fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<WakeBooking, StoreError>> + Send;
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

impl Record for DaemonSpec {
    const KIND: RecordKind = RecordKind::Spec;
    fn key(&self) -> ItemKey {
        ItemKey::spec(&self.cluster, &self.daemon)
    }
    fn cluster_index(&self) -> Option<&str> {
        Some(&self.cluster)
    }
}

impl Record for Rollout {
    const KIND: RecordKind = RecordKind::Rollout;
    fn key(&self) -> ItemKey {
        ItemKey::rollout(&self.cluster, &self.daemon, &self.id)
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
    fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Versioned<R>>, StoreError>> + Send {
        (**self).list_in_cluster(cluster)
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
    fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<WakeBooking, StoreError>> + Send {
        (**self).book_wake(cluster, at, now)
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
