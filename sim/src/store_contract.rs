//! The `Store` contract, run against the in-memory store (unit tests) and the
//! DynamoDB adapter over HTTP (integration tests), so both keep one semantics.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

use ecs_daemons::rollout::{RolloutKind, RolloutState};

use ecs_daemons::rollout::Rollout;
use ecs_daemons::slot::{Slot, SlotState};
use ecs_daemons::spec::DaemonSpec;
use ecs_daemons::store::{
    EventSeen, Expected, ItemKey, PreparedPut, Record, Store, StoreError, Versioned,
};

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + seconds, 0)
        .single()
        .expect("valid test timestamp")
}

pub fn spec(cluster: &str, daemon: &str, task_definition: &str) -> DaemonSpec {
    DaemonSpec {
        launch: Default::default(),
        cluster: cluster.into(),
        daemon: daemon.into(),
        task_definition: task_definition.into(),
        capacity_providers: vec!["asg-general".into()],
        start_order: 0,
        has_health_check: false,
        cpu: Some(1024),
        memory_mib: Some(512),
        last_good_task_definition: None,
        previous_good_task_definition: None,
        active_rollout: None,
        restart: Default::default(),
        rollout: Default::default(),
        services: None,
        instance_filter: None,
        retired_at: None,
        cleaned_up_at: None,
        critical_drains: None,
        revision_health_checks: Default::default(),
        health_check_grace_seconds: None,
        updated_at: at(0),
    }
}

pub fn slot(cluster: &str, daemon: &str, instance: &str, claimed_by: &str) -> Slot {
    Slot {
        cluster: cluster.into(),
        daemon: daemon.into(),
        instance_id: instance.into(),
        state: SlotState::Claimed,
        task_arn: None,
        task_definition: Some(format!("{daemon}:1")),
        claimed_by: Some(claimed_by.into()),
        task_version: 0,
        consecutive_failures: 0,
        last_stop_reason: None,
        retry_after: None,
        rollout: None,
        stopped_early: None,
        critical_drain_at: None,
        updated_at: at(1),
    }
}

fn rollout(cluster: &str, daemon: &str, id: &str) -> Rollout {
    Rollout {
        cluster: cluster.into(),
        daemon: daemon.into(),
        id: id.into(),
        kind: RolloutKind::Update,
        from_task_definition: Some(format!("{daemon}:1")),
        to_task_definition: format!("{daemon}:2"),
        config: Default::default(),
        state: RolloutState::InProgress,
        counts: Default::default(),
        failures: vec![],
        reason: None,
        started_at: at(2),
        updated_at: at(2),
        finished_at: None,
        managed_instances: false,
        deployment_arn: None,
        // A paused rollout: the operator's mark must survive the round trip.
        control: ecs_daemons::rollout::RolloutControl {
            paused: Some(ecs_daemons::rollout::OperatorMark {
                by: Some("alice@example.com".into()),
                invocation: "req-1".into(),
                at: at(3),
                reason: Some("canary looks slow".into()),
            }),
            ..Default::default()
        },
        // A bake under way: its start must survive the round trip too.
        alarm_watch: ecs_daemons::rollout::AlarmWatch {
            baking_since: Some(at(4)),
            triggered_alarm_names: Vec::new(),
        },
    }
}

/// Versioned writes, conflicts, deletes, queries per kind, listing by cluster, event markers.
/// `slots` slot records are written to cross the adapter's page boundaries.
pub async fn check_store_contract<S: Store>(store: &S, cluster: &str, slots: usize) {
    let agent = spec(cluster, "agent", "agent:1");
    assert_eq!(store.put(&agent, Expected::Absent).await, Ok(1));
    let read: Versioned<DaemonSpec> = store
        .get(&agent.key())
        .await
        .unwrap()
        .expect("spec written");
    assert_eq!(
        read,
        Versioned {
            record: agent.clone(),
            version: 1
        }
    );

    match store.put(&agent, Expected::Absent).await {
        Err(StoreError::Conflict {
            expected: Expected::Absent,
            found: Some(1),
            ..
        }) => {}
        other => panic!("second create must conflict with version 1, got {other:?}"),
    }
    let updated = DaemonSpec {
        task_definition: "agent:2".into(),
        ..agent.clone()
    };
    assert_eq!(store.put(&updated, read.expected()).await, Ok(2));
    let stale = DaemonSpec {
        task_definition: "agent:3".into(),
        ..agent.clone()
    };
    match store.put(&stale, Expected::Version(1)).await {
        Err(StoreError::Conflict { found: Some(2), .. }) => {}
        other => panic!("a stale write must conflict with version 2, got {other:?}"),
    }
    let kept: Versioned<DaemonSpec> = store.get(&agent.key()).await.unwrap().unwrap();
    assert_eq!(
        kept.record.task_definition, "agent:2",
        "a lost race never overwrites"
    );
    assert_eq!(kept.version, 2);

    let ghost = spec(cluster, "ghost", "ghost:1");
    match store.put(&ghost, Expected::Version(5)).await {
        Err(StoreError::Conflict { found: None, .. }) => {}
        other => panic!("updating a missing item must conflict, got {other:?}"),
    }
    assert_eq!(store.get::<DaemonSpec>(&ghost.key()).await, Ok(None));

    let logs = spec(cluster, "log-router", "fluent-bit:7");
    store.put(&logs, Expected::Absent).await.unwrap();
    store
        .put(
            &spec("some-other-cluster", "agent", "agent:1"),
            Expected::Absent,
        )
        .await
        .unwrap();
    let mut listed: Vec<String> = store
        .list_in_cluster::<DaemonSpec>(cluster)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.record.daemon)
        .collect();
    listed.sort();
    assert_eq!(listed, vec!["agent", "log-router"]);

    // A daemon's Managed Instances part lives beside its spec and is listed by its own kind.
    let managed = ecs_daemons::managed::ManagedDaemon {
        cluster: cluster.into(),
        daemon: "agent".into(),
        daemon_task_definition: "agent-daemon:1".into(),
        capacity_providers: vec!["mi-general".into()],
        critical: true,
        rollout: Default::default(),
        launch: ecs_daemons::launch::LaunchOptions {
            tags: [("team".to_string(), "obs".to_string())].into(),
            enable_execute_command: true,
            ..Default::default()
        },
        daemon_arn: None,
        pending_rollout: Some("r1".into()),
        deployment_arn: None,
        last_good: None,
        previous_good: None,
        active_rollout: Some("r1".into()),
        impaired_starts: vec![ecs_daemons::managed::ImpairedStart {
            event_id: "e-1".into(),
            at: chrono::Utc::now(),
            failure_type: Some("TASK_CREATION_FAILED".into()),
            reason: Some("RESOURCE:CPU".into()),
            container_instance_id: Some("i-1".into()),
            task_arn: None,
            capacity_provider: Some("mi-general".into()),
            daemon_task_definition: Some("agent-daemon:1".into()),
        }],
        retired_at: Some(chrono::Utc::now()),
        updated_at: chrono::Utc::now(),
    };
    store.put(&managed, Expected::Absent).await.unwrap();
    let listed = store
        .list_in_cluster::<ecs_daemons::managed::ManagedDaemon>(cluster)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record, managed);
    assert_eq!(
        store
            .list_in_cluster::<DaemonSpec>(cluster)
            .await
            .unwrap()
            .len(),
        2,
        "specs are listed apart from managed daemons"
    );

    for index in 0..slots {
        store
            .put(
                &slot(cluster, "agent", &format!("ci-{index:05}"), "test"),
                Expected::Absent,
            )
            .await
            .unwrap();
    }
    store
        .put(
            &rollout(cluster, "agent", "20261124T100000-a"),
            Expected::Absent,
        )
        .await
        .unwrap();
    store
        .put(
            &rollout(cluster, "agent", "20261124T110000-b"),
            Expected::Absent,
        )
        .await
        .unwrap();
    let found_slots: Vec<Versioned<Slot>> = store.query(cluster, "agent").await.unwrap();
    assert_eq!(found_slots.len(), slots, "every slot, across pages");
    assert!(found_slots
        .windows(2)
        .all(|pair| pair[0].record.instance_id < pair[1].record.instance_id));
    let rollouts: Vec<Versioned<Rollout>> = store.query(cluster, "agent").await.unwrap();
    assert_eq!(
        rollouts
            .iter()
            .map(|r| r.record.id.as_str())
            .collect::<Vec<_>>(),
        vec!["20261124T100000-a", "20261124T110000-b"]
    );
    assert!(store
        .query::<Slot>(cluster, "log-router")
        .await
        .unwrap()
        .is_empty());

    let first_slot = ItemKey::slot(cluster, "agent", "ci-00000");
    match store.get::<DaemonSpec>(&first_slot).await {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("reading a slot as a spec must be refused, got {other:?}"),
    }
    match store.delete(&first_slot, 7).await {
        Err(StoreError::Conflict { found: Some(1), .. }) => {}
        other => panic!("delete at a wrong version must conflict, got {other:?}"),
    }
    store.delete(&first_slot, 1).await.unwrap();
    assert_eq!(store.get::<Slot>(&first_slot).await, Ok(None));

    let ttl = Duration::hours(1);
    assert_eq!(
        store.remember_event("evt-1", at(0), ttl).await,
        Ok(EventSeen::FirstTime)
    );
    assert_eq!(
        store.remember_event("evt-1", at(60), ttl).await,
        Ok(EventSeen::Duplicate)
    );
    assert_eq!(
        store.remember_event("evt-2", at(60), ttl).await,
        Ok(EventSeen::FirstTime)
    );
    assert_eq!(
        store.remember_event("evt-1", at(7200), ttl).await,
        Ok(EventSeen::FirstTime),
        "an expired marker no longer counts, even before TTL removes it"
    );
    store.forget_event("evt-2").await.unwrap();
    assert_eq!(
        store.remember_event("evt-2", at(61), ttl).await,
        Ok(EventSeen::FirstTime),
        "a forgotten event counts again"
    );
    check_wake_bookings(store, cluster).await;
    check_put_all(store, cluster).await;
}

/// One pending wake per cluster: a later one waits for the earlier one's reconcile, an
/// earlier one takes its place, and one whose moment has come no longer counts.
pub async fn check_wake_bookings<S: Store>(store: &S, cluster: &str) {
    use ecs_daemons::store::WakeBooking::{Booked, EarlierPending};
    let book = |wake: i64, now: i64| store.book_wake(cluster, at(wake), at(now));
    assert_eq!(book(100, 0).await, Ok(Booked), "the first wake");
    assert_eq!(book(130, 5).await, Ok(EarlierPending), "a later one waits");
    assert_eq!(
        book(100, 6).await,
        Ok(EarlierPending),
        "the same moment is pending"
    );
    assert_eq!(
        book(90, 7).await,
        Ok(Booked),
        "an earlier one takes its place"
    );
    assert_eq!(book(130, 90).await, Ok(Booked), "the pending one has come");
    assert_eq!(
        store
            .book_wake(&format!("{cluster}-other"), at(200), at(91))
            .await,
        Ok(Booked),
        "each cluster has its own"
    );
}

/// `put_all` writes records of different kinds together or not at all: a spec switch, the
/// rollout it ends and the rollout it starts.
pub async fn check_put_all<S: Store>(store: &S, cluster: &str) {
    let spec_v1 = spec(cluster, "tx", "tx:1");
    store.put(&spec_v1, Expected::Absent).await.unwrap();
    let running = rollout(cluster, "tx", "r1");
    store.put(&running, Expected::Absent).await.unwrap();

    let mut ended = running.clone();
    ended.state = RolloutState::Failed;
    let next = rollout(cluster, "tx", "r2");
    let mut switched = spec_v1.clone();
    switched.active_rollout = Some("r2".into());
    let puts = |rollout_version: u64| {
        vec![
            PreparedPut::of(&next, Expected::Absent).unwrap(),
            PreparedPut::of(&switched, Expected::Version(1)).unwrap(),
            PreparedPut::of(&ended, Expected::Version(rollout_version)).unwrap(),
        ]
    };
    // One condition lost (the ended rollout moved on meanwhile): nothing is written.
    store.put(&running, Expected::Version(1)).await.unwrap();
    match store.put_all(&puts(1)).await {
        Err(StoreError::Conflict { key, found, .. }) => {
            assert_eq!(key, ended.key());
            assert_eq!(found, Some(2), "the conflict names the version found");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get::<Rollout>(&next.key()).await, Ok(None));
    let spec_now = store
        .get::<DaemonSpec>(&spec_v1.key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (spec_now.version, spec_now.record.active_rollout),
        (1, None)
    );
    let rollout_now = store.get::<Rollout>(&running.key()).await.unwrap().unwrap();
    assert_eq!(
        (rollout_now.version, rollout_now.record.state),
        (2, RolloutState::InProgress)
    );

    // Every condition holds: all three land, with their new versions.
    assert_eq!(store.put_all(&puts(2)).await, Ok(vec![1, 2, 3]));
    let ended_now = store.get::<Rollout>(&running.key()).await.unwrap().unwrap();
    assert_eq!(ended_now.record.state, RolloutState::Failed);
    let listed = store.list_in_cluster::<DaemonSpec>(cluster).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s.record.active_rollout.as_deref() == Some("r2")),
        "a spec written in a transaction is listed by cluster: {listed:?}"
    );
    assert_eq!(
        store
            .get::<Rollout>(&next.key())
            .await
            .unwrap()
            .map(|r| r.version),
        Some(1)
    );
}

/// `contenders` tasks race to claim one slot: exactly one wins, the rest get `Conflict`,
/// and the stored record is the winner's.
pub async fn check_claim_race<S: Store + 'static>(store: Arc<S>, cluster: &str, contenders: usize) {
    let mut handles = Vec::new();
    for contender in 0..contenders {
        let store = Arc::clone(&store);
        let claim = slot(
            cluster,
            "agent",
            "ci-contested",
            &format!("invocation-{contender}"),
        );
        handles.push(tokio::spawn(async move {
            (contender, store.put(&claim, Expected::Absent).await)
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for handle in handles {
        let (contender, outcome) = handle.await.expect("claim task finished");
        match outcome {
            Ok(1) => winners.push(contender),
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            other => panic!("unexpected claim outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    assert_eq!(conflicts, contenders - 1);
    let stored: Versioned<Slot> = store
        .get(&ItemKey::slot(cluster, "agent", "ci-contested"))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(
        stored.record.claimed_by,
        Some(format!("invocation-{}", winners[0]))
    );
    assert_eq!(stored.version, 1);
}
