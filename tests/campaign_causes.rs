//! One deterministic scenario per cause the 10,000-seed campaign found (issue 15), each failing
//! on the code before its fix, and the neighbours of each: other paths that could break the
//! same invariant the same way.
//!
//! - A rollout's end and the spec switch that goes with it land together or not at all.
//! - Drain-last stops a daemon only on a fresh read of every task on the instance.
//! - A termination whose lifecycle event was lost is adopted by the coverage check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::cluster_model::{ModelConfig, TaskDefinitionModel};
use ecs_daemons::deploy::DeployRequest;
use ecs_daemons::engine::Engine;
use ecs_daemons::rollout::{Amount, RolloutConfig, RolloutKind, RolloutState};
use ecs_daemons::simulation::Harness;
use ecs_daemons::store::{
    DaemonSpec, EventSeen, Expected, ItemKey, MemoryStore, PreparedPut, Record, RecordKind,
    Rollout, Store, StoreError, Versioned,
};

const CLUSTER: &str = "prod";
const DAEMON: &str = "agent";

/// A store on which another invocation's progress write lands on the daemon's running
/// rollouts just before the first spec write (once): the race seed 5441 of the campaign hit.
struct ProgressRacesSpecSwitch {
    inner: Arc<MemoryStore>,
    raced: AtomicBool,
}

impl ProgressRacesSpecSwitch {
    async fn race(&self, writes_spec: bool) -> Result<(), StoreError> {
        if !writes_spec || self.raced.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let rollouts: Vec<Versioned<Rollout>> = self.inner.query(CLUSTER, DAEMON).await?;
        for rollout in rollouts
            .iter()
            .filter(|r| r.record.state == RolloutState::InProgress)
        {
            self.inner.put(&rollout.record, rollout.expected()).await?;
        }
        Ok(())
    }
}

impl Store for ProgressRacesSpecSwitch {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        self.inner.get(key).await
    }
    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        self.race(R::KIND == RecordKind::Spec).await?;
        self.inner.put(record, expected).await
    }
    async fn put_all(&self, puts: &[PreparedPut]) -> Result<Vec<u64>, StoreError> {
        self.race(puts.iter().any(|p| p.kind == RecordKind::Spec))
            .await?;
        self.inner.put_all(puts).await
    }
    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        self.inner.delete(key, expected_version).await
    }
    async fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.inner.query(cluster, daemon).await
    }
    async fn list_specs(&self, cluster: &str) -> Result<Vec<Versioned<DaemonSpec>>, StoreError> {
        self.inner.list_specs(cluster).await
    }
    async fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<EventSeen, StoreError> {
        self.inner.remember_event(event_id, now, ttl).await
    }
    async fn forget_event(&self, event_id: &str) -> Result<(), StoreError> {
        self.inner.forget_event(event_id).await
    }
}

async fn rollouts(harness: &Harness) -> Vec<Rollout> {
    let records: Vec<Versioned<Rollout>> = harness.store.query(CLUSTER, DAEMON).await.unwrap();
    records.into_iter().map(|r| r.record).collect()
}

/// Cause (rollout scenario, seeds 2643, 4283, 5441, 8792): a rollout's end was two writes, the
/// spec switch and then the rollout record; a progress write between them made the second one
/// lose, and the next reconcile found a rollout in progress that the spec no longer named and
/// recorded it SUPERSEDED: the breaker's FAILED, its reason and the instances it left on the
/// old revision vanished from the history.
#[tokio::test]
async fn a_breaker_trip_racing_a_progress_write_is_recorded_failed_not_superseded() {
    let mut harness = Harness::new(CLUSTER, &["general"], ModelConfig::default());
    let good = harness
        .model
        .register_task_definition(TaskDefinitionModel::new(DAEMON, 256, 256));
    let denied = harness.model.register_task_definition(TaskDefinitionModel {
        execution_role_denied: true,
        ..TaskDefinitionModel::new(DAEMON, 256, 256)
    });
    for _ in 0..4 {
        harness.model.add_instance(CLUSTER, "general", 2048, 4096);
    }
    let request = |task_definition: &str| DeployRequest {
        rollout: Some(RolloutConfig {
            max_parallel: Amount::Count(1),
            min_healthy_seconds: 10,
            failure_threshold: Amount::Count(1),
            auto_rollback: true,
            ..RolloutConfig::default()
        }),
        ..DeployRequest::new(CLUSTER, DAEMON, task_definition, &["general"], 0)
    };
    harness.deploy(request(&good)).await.unwrap();
    harness
        .run_for(Duration::seconds(60), Duration::seconds(1))
        .await;
    harness.deploy(request(&denied)).await.unwrap();

    // The full reconciles run on a store where a progress write races the first spec switch.
    let racing = Engine::new(
        Arc::clone(&harness.model),
        ProgressRacesSpecSwitch {
            inner: Arc::clone(&harness.store),
            raced: AtomicBool::new(false),
        },
        harness.engine.config.clone(),
    );
    for second in 0..600 {
        harness.model.advance(Duration::seconds(1));
        harness.deliver_events().await;
        if second % 20 == 0 {
            racing
                .reconcile_cluster(CLUSTER, harness.model.now(), &format!("check-{second}"))
                .await
                .unwrap();
        }
    }

    let history = rollouts(&harness).await;
    let update = history
        .iter()
        .find(|r| r.to_task_definition == denied)
        .expect("the update's record");
    assert_eq!(
        update.state,
        RolloutState::Failed,
        "the breaker's outcome is kept: {update:?}"
    );
    assert!(
        update
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("circuit breaker")),
        "{:?}",
        update.reason
    );
    assert!(
        history.iter().all(|r| r.state != RolloutState::Superseded),
        "no rollout was superseded, none was replaced: {history:?}"
    );
    let rollback = history
        .iter()
        .find(|r| r.kind == RolloutKind::AutoRollback)
        .expect("the automatic rollback started");
    assert_eq!(rollback.state, RolloutState::Succeeded, "{rollback:?}");
    let on_denied = harness
        .model
        .tasks(CLUSTER)
        .iter()
        .filter(|t| t.definition == denied && !t.last_status.is_terminal())
        .count();
    assert_eq!(on_denied, 0, "every instance is back on the good revision");
}
