//! Critical daemons on EC2 providers: an instance where one crash-loops is set DRAINING, so
//! ECS moves its applications to instances where the daemon runs, as ECS does on Managed
//! Instances for a critical managed daemon (developer guide, "Daemon auto repair": a
//! critical daemon's task that stops or turns unhealthy marks its instance impaired, which
//! ECS drains and replaces; `critical` defaults to true there). Never more
//! than `maxCriticalDrains` of the daemon's instances draining at once, counting every
//! DRAINING one whoever drained it (a scale-in's too): the limit is on capacity out of
//! service, and an unknown drain counts.

use super::*;

/// What became of a crash loop of a critical daemon.
pub(super) enum CriticalDrain {
    /// The drain action carries the slot: it must not be recorded again.
    Drained,
    /// Not drained, and why (for the crash-loop report).
    Held(String),
    /// Not a case for a drain (not critical, not a full reconcile, drained once already).
    NotApplicable,
}

impl<'a, 'g> Planner<'a, 'g> {
    /// A critical daemon crash-loops on an ACTIVE instance (`slot` as this plan would record
    /// it): drain the instance if the limit allows. Full reconciles only; never while the
    /// daemon rolls out (a revision that crash-loops everywhere is the breaker's to stop, not
    /// a reason to drain the fleet); never twice for one crash loop (an operator who set the
    /// instance ACTIVE again decided).
    pub(super) fn drain_for_critical(
        &mut self,
        daemon: &DaemonView,
        instance: &ContainerInstance,
        slot: &Slot,
        previous: Option<&Versioned<Slot>>,
    ) -> CriticalDrain {
        let Some(limit) = daemon.critical_drains else {
            return CriticalDrain::NotApplicable;
        };
        if self.observation.scope != Scope::Full || slot.critical_drain_at.is_some() {
            return CriticalDrain::NotApplicable;
        }
        if self.rollout_of(daemon).is_some() {
            return CriticalDrain::Held("critical: not drained while the daemon rolls out".into());
        }
        let targeted: Vec<&ContainerInstance> = self
            .observation
            .instances
            .iter()
            .filter(|i| daemon.targets(i))
            .collect();
        let max = limit.of(targeted.len());
        let draining = *self
            .critical_draining
            .entry(daemon.name.clone())
            .or_insert_with(|| {
                targeted
                    .iter()
                    .filter(|i| i.status == InstanceStatus::Draining)
                    .count()
            });
        if draining >= max {
            return CriticalDrain::Held(format!(
                "critical: not drained, {draining} of its instances are DRAINING already (maxCriticalDrains {limit})"
            ));
        }
        self.critical_draining
            .insert(daemon.name.clone(), draining + 1);
        let reason = format!(
            "critical daemon {} crash-loops here: stopped {} times in a row; last: {}",
            daemon.name,
            slot.consecutive_failures,
            slot.last_stop_reason.as_deref().unwrap_or_default()
        );
        let mut drained = slot.clone();
        drained.critical_drain_at = Some(self.observation.now);
        self.push(Action::DrainForCritical {
            instance_arn: instance.arn.clone(),
            daemon: daemon.name.clone(),
            reason,
            slot: drained,
            expected: previous.map_or(Expected::Absent, Versioned::expected),
        });
        CriticalDrain::Drained
    }
}
