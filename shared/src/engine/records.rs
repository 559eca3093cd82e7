//! The records deploy, rollback and status read and write, by name: declarations, rollouts,
//! slots and times to coverage. Every write is conditional on the version read.

use super::*;
use crate::managed::ManagedDaemon;
use crate::store::Record;

impl<E: Ecs, S: Store> Engine<E, S> {
    /// A daemon's declaration, if it is declared in the cluster.
    /// A daemon's EC2 declaration, unless it was undeployed.
    pub async fn declaration(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Option<Versioned<DaemonSpec>>, StoreError> {
        let stored = self.stored_declaration(cluster, daemon).await?;
        Ok(stored.filter(|spec| spec.record.retired_at.is_none()))
    }

    /// A daemon's EC2 declaration as stored, undeployed (retired) or not.
    pub async fn stored_declaration(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Option<Versioned<DaemonSpec>>, StoreError> {
        self.store.get(&ItemKey::spec(cluster, daemon)).await
    }

    /// Every daemon declared in the cluster, the undeployed ones (retired) included.
    pub async fn declarations(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<DaemonSpec>>, StoreError> {
        self.store.list_in_cluster::<DaemonSpec>(cluster).await
    }

    /// Writes a declaration if it is still at the version read.
    pub async fn write_declaration(
        &self,
        spec: &DaemonSpec,
        expected: Expected,
    ) -> Result<u64, StoreError> {
        self.store.put(spec, expected).await
    }

    /// A daemon's Managed Instances part, if it has one.
    pub async fn managed_daemon(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Option<Versioned<ManagedDaemon>>, StoreError> {
        self.store
            .get(&ItemKey::managed_daemon(cluster, daemon))
            .await
    }

    /// Every daemon of the cluster with a Managed Instances part.
    pub async fn managed_daemons(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<ManagedDaemon>>, StoreError> {
        self.store.list_in_cluster::<ManagedDaemon>(cluster).await
    }

    /// Writes a Managed Instances part if it is still at the version read.
    pub async fn write_managed_daemon(
        &self,
        managed: &ManagedDaemon,
        expected: Expected,
    ) -> Result<u64, StoreError> {
        self.store.put(managed, expected).await
    }

    /// Writes a retired declaration (an EC2 spec or a Managed Instances part) and, in the
    /// same transaction, the rollout it ended (if any).
    pub async fn retire_declaration<R: crate::store::Record>(
        &self,
        declaration: &R,
        expected: Expected,
        ended: Option<(&Rollout, Expected)>,
    ) -> Result<(), StoreError> {
        let mut puts = vec![PreparedPut::of(declaration, expected)?];
        if let Some((ended, expected)) = ended {
            puts.push(PreparedPut::of(ended, expected)?);
        }
        self.store.put_all(&puts).await.map(|_| ())
    }

    /// Switches a declaration (a spec or a Managed Instances part) to a new rollout: the
    /// declaration (if still at the version read) and the rollout's first record land
    /// together or not at all.
    pub async fn switch_to_rollout<R: Record>(
        &self,
        spec: &R,
        expected: Expected,
        rollout: &Rollout,
    ) -> Result<(), StoreError> {
        self.switch_to_rollout_ending(spec, expected, rollout, None)
            .await
    }

    /// [`Self::switch_to_rollout`], ending the rollout it replaces in the same transaction
    /// (a crash between two writes would leave that one in progress for ever).
    pub async fn switch_to_rollout_ending<R: Record>(
        &self,
        spec: &R,
        expected: Expected,
        rollout: &Rollout,
        ended: Option<(&Rollout, Expected)>,
    ) -> Result<(), StoreError> {
        let mut puts = vec![
            PreparedPut::of(spec, expected)?,
            PreparedPut::of(rollout, Expected::Absent)?,
        ];
        if let Some((ended, expected)) = ended {
            puts.push(PreparedPut::of(ended, expected)?);
        }
        self.store.put_all(&puts).await.map(|_| ())
    }

    /// One rollout of a daemon.
    pub async fn rollout(
        &self,
        cluster: &str,
        daemon: &str,
        id: &str,
    ) -> Result<Option<Versioned<Rollout>>, StoreError> {
        self.store.get(&ItemKey::rollout(cluster, daemon, id)).await
    }

    /// A daemon's rollouts, oldest first.
    pub async fn rollouts(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<Rollout>>, StoreError> {
        self.store.query(cluster, daemon).await
    }

    /// Writes a rollout's record if it is still at the version read.
    pub async fn write_rollout(
        &self,
        rollout: &Rollout,
        expected: Expected,
    ) -> Result<u64, StoreError> {
        self.store.put(rollout, expected).await
    }

    /// Deletes a finished rollout's record if it is still at the version read.
    pub async fn forget_rollout(&self, rollout: &Versioned<Rollout>) -> Result<(), StoreError> {
        self.store
            .delete(&crate::store::Record::key(&rollout.record), rollout.version)
            .await
    }

    /// A daemon's slots: one per instance it has been on.
    pub async fn slots(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<Slot>>, StoreError> {
        self.store.query(cluster, daemon).await
    }

    /// The cluster's recorded times to coverage (status's window).
    pub async fn coverage_times(
        &self,
        cluster: &str,
    ) -> Result<Vec<crate::coverage_time::CoverageTime>, StoreError> {
        let records: Vec<Versioned<crate::coverage_time::CoverageTime>> =
            self.store.query(cluster, ItemKey::COVERAGE_TIMES).await?;
        Ok(records.into_iter().map(|r| r.record).collect())
    }
}
