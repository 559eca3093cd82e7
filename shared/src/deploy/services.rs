//! The services placement's part of a deploy (DESIGN.md, "Placements"): which EC2 providers
//! get DAEMON services, the checks only that placement needs, and the services made to run
//! the revisions the declaration names.

use super::*;
use crate::ecs::{DaemonServiceDeclaration, CUSTOM_ATTRIBUTES_PER_INSTANCE};
use crate::model::ContainerInstance;
use crate::placement::services::{
    member_of, name_fits, service_name, slot_attribute, Letter, ServicePlacement,
};
use crate::placement::DAEMON_TAG;
use crate::plan::READY_ATTRIBUTE;

/// How a deploy places a daemon on EC2 Auto Scaling group capacity providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementChoice {
    /// DAEMON services where ECS's managed scaling or managed termination protection is on
    /// (only their tasks count as daemons there), standalone tasks elsewhere.
    #[default]
    Auto,
    /// Standalone tasks (exact drain-last); refused where managed scaling or managed
    /// termination protection is on.
    Tasks,
    /// DAEMON services on every EC2 provider.
    Services,
}

/// Whether the daemon runs as DAEMON services on an Auto Scaling group provider.
pub(super) fn uses_services(
    provider: &str,
    managed_scaling: bool,
    managed_termination_protection: bool,
    choice: PlacementChoice,
) -> Result<bool, DeployError> {
    let managed = managed_scaling || managed_termination_protection;
    match choice {
        PlacementChoice::Auto => Ok(managed),
        PlacementChoice::Services => Ok(true),
        PlacementChoice::Tasks if managed => Err(DeployError::TasksUnderManagedScaling {
            provider: provider.into(),
            feature: if managed_scaling {
                "managed scaling"
            } else {
                "managed termination protection"
            },
        }),
        PlacementChoice::Tasks => Ok(false),
    }
}

/// Custom attributes: ECS's own (`ecs.*`) do not count against the quota.
fn custom_attributes(instance: &ContainerInstance) -> usize {
    instance
        .attributes
        .keys()
        .filter(|name| !name.starts_with("ecs."))
        .count()
}

/// What only the services placement needs of the daemon and its instances: names within
/// ECS's limits, a network mode a DAEMON service can run without a network configuration,
/// and room for the slot attribute among each instance's 10 custom attributes.
pub(super) fn check_for_services(
    daemon: &str,
    definition: &TaskDefinition,
    instances: &[ContainerInstance],
) -> Result<(), DeployError> {
    name_fits(daemon).map_err(|why| invalid(format!("daemon name {daemon}: {why}")))?;
    if definition.network_mode.as_deref() == Some("awsvpc") {
        return Err(DeployError::AwsvpcForServices {
            definition: definition.family_revision(),
        });
    }
    let slot = slot_attribute(daemon);
    for instance in instances {
        let used = custom_attributes(instance);
        let missing: Vec<String> = [slot.as_str(), READY_ATTRIBUTE]
            .into_iter()
            .filter(|name| !instance.attributes.contains_key(*name))
            .map(str::to_string)
            .collect();
        if used + missing.len() > CUSTOM_ATTRIBUTES_PER_INSTANCE {
            return Err(DeployError::AttributeBudget {
                instance: instance.id().into(),
                used,
                missing,
            });
        }
    }
    Ok(())
}

/// Whether a deploy moves a provider the daemon already targets from standalone copies to
/// DAEMON services: a rollout of its own (the service copy starts beside the standalone one,
/// which stops once the new one is healthy).
pub(super) fn placement_moves(current: &DaemonSpec, spec: &DaemonSpec) -> bool {
    let on_services = |s: &DaemonSpec, provider: &str| {
        s.services
            .as_ref()
            .is_some_and(|services| services.covers(Some(provider)))
    };
    spec.capacity_providers.iter().any(|provider| {
        current.capacity_providers.contains(provider)
            && !on_services(current, provider)
            && on_services(spec, provider)
    })
}

/// The spec's services part for a deploy to `task_definition` on `providers` (`None`
/// without any), keeping the revisions the existing declaration's services run. Moving an
/// existing provider from services back to standalone copies is refused (the reverse move
/// is a rollout: [`placement_moves`]).
pub(super) fn declared_services(
    daemon: &str,
    providers: &[String],
    all_ec2: &[String],
    task_definition: &str,
    existing: Option<&DaemonSpec>,
) -> Result<Option<ServicePlacement>, DeployError> {
    if let Some(current) = existing {
        let had = current.services.as_ref();
        for provider in all_ec2 {
            let was_targeted = current.capacity_providers.contains(provider);
            let was_services = had.is_some_and(|s| s.covers(Some(provider)));
            let is_services = providers.contains(provider);
            if was_targeted && was_services && !is_services {
                return Err(DeployError::PlacementChange {
                    daemon: daemon.into(),
                    provider: provider.clone(),
                    from: if was_services { "services" } else { "tasks" },
                    to: if is_services { "services" } else { "tasks" },
                });
            }
        }
    }
    if providers.is_empty() {
        return Ok(None);
    }
    let kept = existing.and_then(|e| e.services.clone());
    Ok(Some(ServicePlacement {
        capacity_providers: providers.to_vec(),
        a: kept
            .as_ref()
            .map_or_else(|| task_definition.to_string(), |s| s.a.clone()),
        b: kept.map_or_else(|| task_definition.to_string(), |s| s.b),
    }))
}

/// Service `letter` of `daemon` running `task_definition`, launched as `launch` says: its
/// tags are ecs-daemons' and the user's, and reach its tasks by `propagateTags` SERVICE
/// unless the user chose the task definition's or none.
fn declaration(
    daemon: &str,
    letter: Letter,
    task_definition: &str,
    launch: &crate::launch::LaunchOptions,
) -> DaemonServiceDeclaration {
    let mut tags = vec![(DAEMON_TAG.to_string(), daemon.to_string())];
    tags.extend(launch.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    DaemonServiceDeclaration {
        service_name: service_name(daemon, letter),
        task_definition: task_definition.into(),
        member_of: vec![member_of(daemon, letter)],
        tags,
        propagate_tags: launch
            .propagate_tags
            .map_or("SERVICE", |p| p.as_str())
            .into(),
        enable_execute_command: launch.enable_execute_command,
    }
}

/// The tags to add (new or changed) and the keys to remove so a service carries exactly the
/// declared tags; AWS's own (`aws:`) are left alone.
pub(super) fn tag_changes(
    declared: &[(String, String)],
    current: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let add = declared
        .iter()
        .filter(|pair| !current.contains(pair))
        .cloned()
        .collect();
    let remove = current
        .iter()
        .filter(|(key, _)| !key.starts_with("aws:") && !declared.iter().any(|(k, _)| k == key))
        .map(|(key, _)| key.clone())
        .collect();
    (add, remove)
}

/// CreateService's idempotency token: the invocation's id, cut to ECS's 36 characters.
fn client_token(invocation: &str, letter: Letter) -> String {
    let kept: String = invocation.chars().take(34).collect();
    format!("{kept}-{}", letter.as_str())
}

/// Makes the daemon's services exist and one of them run the spec's revision, before the
/// spec that names it is written: a missing service is created (a retried deploy finds the
/// one it made); a revision neither runs goes to the idle service, the one whose revision
/// no copy uses (`busy`: the revisions instances run now). With both busy (a rollout in
/// flight between them) the deploy is refused.
/// The daemon's services still to create fit the cluster's services-per-cluster quota:
/// checked before anything is created (a quota met half way would leave one service).
async fn check_service_quota<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    cluster: &str,
    daemon: &str,
    described: &[crate::ecs::ServiceState],
) -> Result<(), DeployError> {
    let missing = [Letter::A, Letter::B]
        .into_iter()
        .filter(|letter| {
            !described
                .iter()
                .any(|s| s.name == service_name(daemon, *letter) && s.is_active())
        })
        .count();
    if missing == 0 {
        return Ok(());
    }
    let quota = engine.config().services_per_cluster;
    let active = engine.ecs().active_services_count(cluster).await?;
    if active + missing > quota {
        return Err(DeployError::ServiceQuota {
            cluster: cluster.into(),
            daemon: daemon.into(),
            active,
            needed: missing,
            quota,
        });
    }
    Ok(())
}

pub(super) async fn ensure_services<E: Ecs, S: Store>(
    engine: &Engine<E, S>,
    spec: &mut DaemonSpec,
    busy: &[&str],
    invocation: &str,
) -> Result<(), DeployError> {
    let Some(services) = spec.services.as_mut() else {
        return Ok(());
    };
    let (cluster, daemon) = (spec.cluster.as_str(), spec.daemon.as_str());
    let names = [
        service_name(daemon, Letter::A),
        service_name(daemon, Letter::B),
    ];
    let described = engine.ecs().describe_services(cluster, &names).await?;
    let target = spec.task_definition.as_str();
    if services.letter_for(target).is_none() {
        let taken: Vec<Letter> = busy
            .iter()
            .filter_map(|revision| services.letter_for(revision))
            .collect();
        // Idle: no copy runs the revisions in use from it, and ECS runs no task of it (a
        // failed rollout may have left copies of a third revision there).
        let running = |letter: Letter| {
            described.iter().any(|s| {
                s.name == service_name(daemon, letter)
                    && s.is_active()
                    && s.running_count + s.pending_count > 0
            })
        };
        let Some(idle) = [Letter::A, Letter::B]
            .into_iter()
            .find(|letter| !taken.contains(letter) && !running(*letter))
        else {
            let running = [Letter::A, Letter::B]
                .map(|letter| {
                    format!(
                        "{} runs {}",
                        service_name(daemon, letter),
                        services.revision_of(letter)
                    )
                })
                .join(", ");
            return Err(DeployError::ServicesBusy {
                daemon: daemon.into(),
                running,
            });
        };
        services.set_revision(idle, target);
    }
    check_service_quota(engine, cluster, daemon, &described).await?;
    for letter in [Letter::A, Letter::B] {
        let name = service_name(daemon, letter);
        let declared = declaration(daemon, letter, services.revision_of(letter), &spec.launch);
        let state = described.iter().find(|s| s.name == name && s.is_active());
        let Some(state) = state else {
            engine
                .ecs()
                .create_daemon_service(cluster, &declared, &client_token(invocation, letter))
                .await?;
            continue;
        };
        if !state
            .task_definition
            .ends_with(&format!("/{}", declared.task_definition))
        {
            // Only the idle service is ever pointed elsewhere, and given the launch options
            // with it: no copy of it runs, so ECS's stop-then-start deployment stops nothing.
            engine
                .ecs()
                .update_daemon_service(cluster, &declared)
                .await?;
        }
        // Tags change without a deployment: copies started from now on get them.
        let (add, remove) = tag_changes(&declared.tags, &state.tags);
        if !add.is_empty() {
            engine.ecs().tag_service(&state.arn, &add).await?;
        }
        if !remove.is_empty() {
            engine.ecs().untag_service(&state.arn, &remove).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placement_follows_managed_scaling_unless_forced() {
        assert!(uses_services("p", true, false, PlacementChoice::Auto).unwrap());
        assert!(uses_services("p", false, true, PlacementChoice::Auto).unwrap());
        assert!(!uses_services("p", false, false, PlacementChoice::Auto).unwrap());
        assert!(uses_services("p", false, false, PlacementChoice::Services).unwrap());
        let refused = uses_services("p", true, false, PlacementChoice::Tasks).unwrap_err();
        assert!(refused.to_string().contains("managed scaling"), "{refused}");
    }

    #[test]
    fn a_service_is_retagged_to_exactly_the_declared_tags() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let declared = vec![pair("ecs-daemons:daemon", "agent"), pair("team", "obs")];
        let current = vec![
            pair("ecs-daemons:daemon", "agent"),
            pair("team", "platform"),
            pair("cost", "x"),
            pair("aws:cloudformation:stack-name", "s"),
        ];
        let (add, remove) = tag_changes(&declared, &current);
        assert_eq!(add, vec![pair("team", "obs")]);
        assert_eq!(remove, vec!["cost".to_string()]);
        assert_eq!(tag_changes(&declared, &declared), (vec![], vec![]));
    }

    #[test]
    fn a_kept_provider_keeps_its_placement() {
        let existing = DaemonSpec {
            services: Some(ServicePlacement {
                capacity_providers: vec!["scaled".into()],
                a: "agent:1".into(),
                b: "agent:2".into(),
            }),
            capacity_providers: vec!["scaled".into(), "fixed".into()],
            ..crate::deploy::tests::spec_for_tests()
        };
        let all = vec!["scaled".to_string(), "fixed".to_string()];
        let kept = declared_services(
            "agent",
            &["scaled".into()],
            &all,
            "agent:3",
            Some(&existing),
        )
        .unwrap()
        .unwrap();
        assert_eq!((kept.a.as_str(), kept.b.as_str()), ("agent:1", "agent:2"));
        // "fixed" moves from standalone copies to services: allowed (a rollout).
        let moved = declared_services("agent", &all, &all, "agent:3", Some(&existing)).unwrap();
        assert!(moved.unwrap().covers(Some("fixed")));
        // "scaled" back to standalone copies: refused.
        let back = declared_services("agent", &[], &all, "agent:3", Some(&existing));
        assert!(matches!(back, Err(DeployError::PlacementChange { .. })));
        let fresh = declared_services("agent", &["scaled".into()], &all, "agent:3", None)
            .unwrap()
            .unwrap();
        assert_eq!((fresh.a.as_str(), fresh.b.as_str()), ("agent:3", "agent:3"));
    }

    #[test]
    fn services_need_a_network_mode_and_attribute_room_they_can_use() {
        let mut definition = crate::deploy::tests::definition_for_tests();
        let mut instance = crate::deploy::tests::instance_for_tests();
        for n in 0..8 {
            instance
                .attributes
                .insert(format!("team.{n}"), Some("x".into()));
        }
        instance
            .attributes
            .insert("ecs.os-type".into(), Some("linux".into()));
        check_for_services("agent", &definition, std::slice::from_ref(&instance)).unwrap();
        instance
            .attributes
            .insert("team.8".into(), Some("x".into()));
        let full = check_for_services("agent", &definition, std::slice::from_ref(&instance));
        assert!(
            matches!(&full, Err(DeployError::AttributeBudget { used: 9, missing, .. }) if missing.len() == 2),
            "{full:?}"
        );
        definition.network_mode = Some("awsvpc".into());
        let awsvpc = check_for_services("agent", &definition, &[]);
        assert!(matches!(awsvpc, Err(DeployError::AwsvpcForServices { .. })));
    }
}
