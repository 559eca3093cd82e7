//! `status`'s view of a daemon's Managed Instances part: what is declared beside ECS's own
//! account of it, and drift (a daemon changed or deleted outside ecs-daemons).

use super::*;
use crate::managed::{self as rules, ManagedDaemon};

/// A daemon's Managed Instances part as `status` shows it: what is declared, and ECS's own
/// account of it (counts per provider, the latest deployment with its breaker and rollback).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStatus {
    pub daemon_task_definition: String,
    pub capacity_providers: Vec<String>,
    pub critical: bool,
    pub daemon_arn: Option<String>,
    /// Instances running the daemon, and (non-critical daemons) running without it.
    pub providers: Vec<ManagedProviderCount>,
    /// ECS's latest deployment of the daemon.
    pub deployment: Option<crate::ecs::DaemonDeployment>,
    /// The daemon was changed or deleted outside ecs-daemons: what happened and the fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// A change decided and not yet confirmed by ECS (the next deploy finishes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_rollout: Option<String>,
    /// When the daemon was undeployed (ECS deletes it; counts show what is left meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undeployed_at: Option<DateTime<Utc>>,
    /// Copies ECS could not start, newest first, with ECS's reasons (from its
    /// `DAEMON_TASK_START_IMPAIRED` events).
    pub impaired_starts: Vec<rules::ImpairedStart>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedProviderCount {
    pub capacity_provider: String,
    pub running: i32,
    pub without_daemon: i32,
}

/// The Managed Instances part's status and its rollouts (newest first, the one in flight
/// taking its state from ECS's deployment).
async fn status_of<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    record: &ManagedDaemon,
) -> Result<(ManagedStatus, Vec<super::RolloutView>), DeployError> {
    let mut view = ManagedStatus {
        daemon_task_definition: record.daemon_task_definition.clone(),
        capacity_providers: record.capacity_providers.clone(),
        critical: record.critical,
        daemon_arn: record.daemon_arn.clone(),
        providers: Vec::new(),
        deployment: None,
        drift: None,
        pending_rollout: record.pending_rollout.clone(),
        impaired_starts: record.impaired_starts.iter().rev().cloned().collect(),
        undeployed_at: record.retired_at,
    };
    if let Some(arn) = &record.daemon_arn {
        match engine.ecs().describe_daemon(arn).await {
            Ok(state) => {
                view.providers = provider_counts(&state);
                if let Some(deployment_arn) = &state.deployment_arn {
                    view.deployment = engine
                        .ecs()
                        .describe_daemon_deployments(std::slice::from_ref(deployment_arn))
                        .await?
                        .into_iter()
                        .next();
                }
                if record.retired_at.is_none() {
                    view.drift = engine
                        .managed_drift(record, state.deployment_arn.as_deref())
                        .await?;
                }
            }
            Err(error) if error.kind == EcsErrorKind::NotFound && record.retired_at.is_some() => {}
            Err(error) if error.kind == EcsErrorKind::NotFound => {
                view.drift = Some(rules::deleted_drift(arn));
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut rollouts = engine.rollouts(&record.cluster, &record.daemon).await?;
    rollouts.retain(|r| r.record.managed_instances);
    rollouts.reverse();
    let history = rollouts
        .into_iter()
        .map(|r| {
            let mut rollout = r.record;
            let live = view
                .deployment
                .as_ref()
                .filter(|d| rollout.deployment_arn.as_deref() == Some(d.deployment_arn.as_str()));
            if let Some(deployment) = live.filter(|_| rollout.state == RolloutState::InProgress) {
                rollout.state = rules::rollout_state(&deployment.status);
                rollout.reason = deployment.status_reason.clone();
                rollout.finished_at = deployment.finished_at;
            }
            super::RolloutView::of(rollout, None)
        })
        .collect();
    Ok((view, history))
}

fn provider_counts(state: &crate::ecs::DaemonState) -> Vec<ManagedProviderCount> {
    let mut counts: Vec<ManagedProviderCount> = Vec::new();
    for counted in state.current_revisions.iter().flat_map(|r| &r.providers) {
        let name = counted
            .capacity_provider_arn
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        match counts.iter_mut().find(|c| c.capacity_provider == name) {
            Some(found) => {
                found.running += counted.running;
                found.without_daemon += counted.without_daemon;
            }
            None => counts.push(ManagedProviderCount {
                capacity_provider: name,
                running: counted.running,
                without_daemon: counted.without_daemon,
            }),
        }
    }
    counts
}

/// Adds each daemon's Managed Instances part to `daemons`: beside its EC2 part (one history,
/// newest first), or as a daemon of its own.
pub(super) async fn add_managed<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    daemons: &mut Vec<super::DaemonStatus>,
    managed: Vec<Versioned<ManagedDaemon>>,
) -> Result<(), DeployError> {
    for part in managed {
        let (view, mut history) = status_of(engine, &part.record).await?;
        match daemons.iter_mut().find(|d| d.daemon == part.record.daemon) {
            Some(both) => {
                both.history.extend(history);
                both.history
                    .sort_by_key(|r| std::cmp::Reverse(r.started_at));
                both.managed = Some(view);
            }
            None => {
                let current = (!history.is_empty()).then(|| history.remove(0));
                daemons.push(super::DaemonStatus {
                    daemon: part.record.daemon.clone(),
                    task_definition: None,
                    capacity_providers: Vec::new(),
                    launch: part.record.launch.clone(),
                    start_order: 0,
                    coverage: DaemonCoverage::default(),
                    slots_in_trouble: Vec::new(),
                    rollout: current,
                    history,
                    managed: Some(view),
                    services: None,
                    undeployed_at: None,
                    instance_filter: None,
                    max_critical_drains: None,
                });
            }
        }
    }
    Ok(())
}
