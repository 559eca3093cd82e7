//! Carrying out starts and stops on the services placement: a copy is requested by adding
//! its service's letter to the instance's slot attribute, and removed by taking the letter
//! away; the services' schedulers start and stop the tasks (`placement::services`).

use super::act::Claimed;
use super::*;
use crate::placement::services::{daemon_of_group, slot_attribute, Letter, Letters};

/// A copy requested from a DAEMON service on an instance (its task comes later).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestedCopy {
    pub daemon: String,
    pub instance_id: String,
    /// The service asked for the copy.
    pub service: String,
}

/// The slot attributes a plan has changed so far, by (instance ARN, daemon): every change
/// starts from what the previous one left, not from the observation.
#[derive(Default)]
pub(super) struct SlotAttributes(BTreeMap<(String, String), Letters>);

impl SlotAttributes {
    fn current(&self, observation: &Observation, instance_arn: &str, daemon: &str) -> Letters {
        if let Some(letters) = self.0.get(&(instance_arn.to_string(), daemon.to_string())) {
            return *letters;
        }
        let attribute = slot_attribute(daemon);
        let observed = observation
            .instances
            .iter()
            .find(|i| i.arn == instance_arn)
            .and_then(|i| i.attributes.get(&attribute))
            .and_then(|v| v.as_deref());
        Letters::parse(observed)
    }

    fn set(&mut self, instance_arn: &str, daemon: &str, letters: Letters) {
        self.0
            .insert((instance_arn.to_string(), daemon.to_string()), letters);
    }
}

/// The daemon's view, if it runs as DAEMON services on the instance's capacity provider.
pub(super) fn services_for<'o>(
    observation: &'o Observation,
    daemon: &str,
    instance_arn: &str,
) -> Option<(
    &'o DaemonView,
    &'o crate::placement::services::ServicePlacement,
)> {
    let view = observation.daemons.iter().find(|d| d.name == daemon)?;
    let services = view.services.as_ref()?;
    let instance = observation
        .instances
        .iter()
        .find(|i| i.arn == instance_arn)?;
    services
        .covers(instance.capacity_provider.as_deref())
        .then_some((view, services))
}

/// ECS's reason a copy of `spec`'s size has no room on `instance`, as StartTask gives it.
fn no_room(instance: &ContainerInstance, spec: Option<&DaemonSpec>) -> Option<&'static str> {
    let spec = spec?;
    if spec.cpu.is_some_and(|cpu| cpu > instance.remaining.cpu) {
        return Some("RESOURCE:CPU");
    }
    if spec
        .memory_mib
        .is_some_and(|memory| memory > instance.remaining.memory_mib)
    {
        return Some("RESOURCE:MEMORY");
    }
    None
}

fn attribute(instance_arn: &str, daemon: &str, letters: Letters) -> InstanceAttribute {
    InstanceAttribute {
        container_instance: instance_arn.into(),
        name: slot_attribute(daemon),
        value: letters.value().map(str::to_string),
    }
}

impl<E: Ecs, S: Store> Engine<E, S> {
    /// Deletes the DAEMON services of undeployed daemons (ECS stops their tasks: DeleteService,
    /// "If there are still running tasks that require cleanup, the service status moves from
    /// ACTIVE to DRAINING", ECS API reference), then records them gone so later reconciles
    /// skip them. A service already deleted or never created counts as gone.
    pub(super) async fn retire_services(&self, observation: &Observation) -> Vec<String> {
        let mut errors = Vec::new();
        for retired in observation.retired.iter() {
            if retired.record.services.is_none() {
                if let Err(error) = self.note_cleaned_up(observation, retired).await {
                    errors.push(error.to_string());
                }
                continue;
            }
            let daemon = retired.record.daemon.as_str();
            let mut all_gone = true;
            for letter in [Letter::A, Letter::B] {
                let name = crate::placement::services::service_name(daemon, letter);
                match self.ecs.delete_service(&observation.cluster, &name).await {
                    Ok(_) => {}
                    Err(error)
                        if error.kind == crate::ecs::EcsErrorKind::NotFound
                            || error.code == "ServiceNotActiveException" => {}
                    Err(error) => {
                        all_gone = false;
                        errors.push(format!(
                            "the DAEMON service {name} of undeployed daemon {daemon} is deleted again by the next reconcile: {error}"
                        ));
                    }
                }
            }
            if all_gone {
                let mut record = retired.record.clone();
                record.services = None;
                match self.store.put(&record, retired.expected()).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(error) => errors.push(error.to_string()),
                }
            }
        }
        errors
    }

    /// An undeployed daemon with nothing left in the observation (its slots deleted and its
    /// copies gone, by earlier reconciles) is recorded clean, so its partition is no longer
    /// queried on every reconcile. Copies started later under its name would still be found:
    /// the list of ecs-daemons' own copies is cluster-wide.
    async fn note_cleaned_up(
        &self,
        observation: &Observation,
        retired: &Versioned<DaemonSpec>,
    ) -> Result<(), StoreError> {
        let daemon = retired.record.daemon.as_str();
        let slots_left = observation.slots.iter().any(|s| s.record.daemon == daemon);
        let copies_left = observation.tasks.iter().any(|t| {
            !t.last_status.is_terminal()
                && t.group.as_deref().is_some_and(|group| {
                    group.strip_prefix(crate::plan::GROUP_PREFIX) == Some(daemon)
                        || crate::placement::services::daemon_of_group(group)
                            .is_some_and(|(d, _)| d == daemon)
                })
        });
        if retired.record.cleaned_up_at.is_some() || slots_left || copies_left {
            return Ok(());
        }
        let mut record = retired.record.clone();
        record.cleaned_up_at = Some(observation.now);
        match self.store.put(&record, retired.expected()).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Writes one instance's slot attribute (deleting it when no letter is left).
    async fn write_letters(
        &self,
        cluster: &str,
        instance_arn: &str,
        daemon: &str,
        letters: Letters,
    ) -> Result<(), EcsError> {
        let change = attribute(instance_arn, daemon, letters);
        if change.value.is_some() {
            self.ecs.put_attributes(cluster, &[change]).await
        } else {
            self.ecs.delete_attributes(cluster, &[change]).await
        }
    }

    /// Stops a copy a DAEMON service runs: its letter leaves the instance's slot attribute,
    /// so its scheduler does not start it again, then StopTask ends it at once instead of at
    /// the scheduler's next look (which still stops it if StopTask fails). False if the
    /// copy still runs for now (the letter or the StopTask did not go through).
    pub(super) async fn remove_service_copy(
        &self,
        observation: &Observation,
        attributes: &mut SlotAttributes,
        stop: StoppedCopy,
        outcome: &mut Outcome,
    ) -> bool {
        let task = observation.tasks.iter().find(|t| t.arn == stop.task_arn);
        let letter = task
            .and_then(|t| t.group.as_deref())
            .and_then(daemon_of_group)
            .filter(|(daemon, _)| *daemon == stop.daemon)
            .map(|(_, letter)| letter);
        let (Some(task), Some(letter)) = (task, letter) else {
            outcome.errors.push(format!(
                "refused to stop {}: not a copy of daemon {}'s services",
                stop.task_arn, stop.daemon
            ));
            return true;
        };
        let Some(instance_arn) = task.container_instance_arn.clone() else {
            return true;
        };
        let letters = attributes
            .current(observation, &instance_arn, &stop.daemon)
            .with(letter, false);
        match self
            .write_letters(&observation.cluster, &instance_arn, &stop.daemon, letters)
            .await
        {
            Ok(()) => {
                attributes.set(&instance_arn, &stop.daemon, letters);
                let stopped = self
                    .ecs
                    .stop_task(&observation.cluster, &stop.task_arn, &stop.reason)
                    .await;
                if let Err(error) = &stopped {
                    // The copy still runs until its scheduler's look: no surge beside it now.
                    outcome.errors.push(format!(
                        "{error} (its service stops it when its scheduler next looks)"
                    ));
                }
                outcome.stopped.push(stop);
                stopped.is_ok()
            }
            Err(error) => {
                outcome.errors.push(error.to_string());
                false
            }
        }
    }

    /// Takes a letter no copy answers out of an instance's slot attribute (a withdrawn
    /// request: the service must not start it later).
    pub(super) async fn withdraw_request(
        &self,
        observation: &Observation,
        attributes: &mut SlotAttributes,
        instance_arn: &str,
        daemon: &str,
        letter: Letter,
        outcome: &mut Outcome,
    ) {
        let letters = attributes
            .current(observation, instance_arn, daemon)
            .with(letter, false);
        match self
            .write_letters(&observation.cluster, instance_arn, daemon, letters)
            .await
        {
            Ok(()) => {
                attributes.set(instance_arn, daemon, letters);
                outcome.withdrawn.push(RequestedCopy {
                    daemon: daemon.into(),
                    instance_id: resource_id(instance_arn).into(),
                    service: crate::placement::services::service_name(daemon, letter),
                });
            }
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }

    /// Requests copies of `task_definition` from the daemon's service that runs it, on the
    /// instances whose slots were claimed: one slot attribute write each.
    pub(super) async fn request_service_copies(
        &self,
        observation: &Observation,
        attributes: &mut SlotAttributes,
        task_definition: &str,
        claims: &[&Claimed],
        outcome: &mut Outcome,
    ) {
        let now = observation.now;
        for claimed in claims {
            let daemon = claimed.slot.daemon.clone();
            let policy = observation
                .daemons
                .iter()
                .find(|d| d.name == daemon)
                .map(|d| d.restart.clone())
                .unwrap_or_default();
            let Some((_, services)) = services_for(observation, &daemon, &claimed.instance_arn)
            else {
                continue;
            };
            let Some(letter) = services.letter_for(task_definition) else {
                // Deploy gives the revision to a service before the spec names it: a spec
                // without it was written around deploy. Refused until a deploy puts it right.
                let reason = format!(
                    "neither DAEMON service of {daemon} runs {task_definition}: deploy it again"
                );
                self.record_failed_start(claimed, &policy, &reason, now, outcome)
                    .await;
                continue;
            };
            let instance = observation
                .instances
                .iter()
                .find(|i| i.arn == claimed.instance_arn);
            let spec = observation
                .specs
                .iter()
                .find(|s| s.record.daemon == daemon)
                .map(|s| &s.record);
            if let Some(reason) = instance.and_then(|i| no_room(i, spec)) {
                self.record_failed_start(claimed, &policy, reason, now, outcome)
                    .await;
                continue;
            }
            self.request_one(observation, attributes, claimed, letter, outcome)
                .await;
        }
    }

    async fn request_one(
        &self,
        observation: &Observation,
        attributes: &mut SlotAttributes,
        claimed: &Claimed,
        letter: Letter,
        outcome: &mut Outcome,
    ) {
        let now = observation.now;
        let daemon = &claimed.slot.daemon;
        let letters = attributes
            .current(observation, &claimed.instance_arn, daemon)
            .with(letter, true);
        let mut slot = claimed.slot.clone();
        match self
            .write_letters(&observation.cluster, &claimed.instance_arn, daemon, letters)
            .await
        {
            Ok(()) => {
                attributes.set(&claimed.instance_arn, daemon, letters);
                if claimed.surge.is_none() {
                    slot.state = SlotState::Starting;
                }
                slot.updated_at = now;
                outcome.requested.push(RequestedCopy {
                    daemon: daemon.clone(),
                    instance_id: resource_id(&claimed.instance_arn).into(),
                    service: crate::placement::services::service_name(daemon, letter),
                });
            }
            Err(error) => {
                // The request never reached ECS: the claim is left expired, so the next
                // reconcile asks again at once instead of waiting out its grace.
                outcome.errors.push(error.to_string());
                let grace = Duration::seconds(crate::plan::SERVICE_REQUEST_GRACE_SECONDS);
                slot.updated_at = now - grace;
                if let Some(step) = slot.rollout.as_mut().filter(|_| claimed.surge.is_some()) {
                    step.since = now - grace;
                }
            }
        }
        self.write_slot(&slot, claimed.expected, outcome).await;
    }
}
