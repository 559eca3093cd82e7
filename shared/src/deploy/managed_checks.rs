//! The checks of a daemon task definition against the stack and the providers, before
//! anything is created.

use super::*;
use crate::ecs::DaemonTaskDefinition;

/// ACTIVE, with an execution role the stack may pass, and task-level CPU and memory.
pub(super) fn check_definition(
    pinned: &str,
    definition: &DaemonTaskDefinition,
    allowed_roles: &[String],
) -> Result<(), DeployError> {
    if definition.status != "ACTIVE" {
        return Err(DeployError::DaemonTaskDefinitionNotActive {
            definition: pinned.into(),
            status: definition.status.clone(),
        });
    }
    let Some(execution_role) = definition
        .execution_role_arn
        .as_deref()
        .filter(|r| !r.is_empty())
    else {
        return Err(DeployError::NoExecutionRole(pinned.into()));
    };
    let roles = std::iter::once(execution_role).chain(definition.task_role_arn.as_deref());
    for role in roles {
        if !allowed_roles.is_empty() && !allowed_roles.iter().any(|a| a == role) {
            return Err(DeployError::RoleNotAllowed {
                definition: pinned.into(),
                role: role.into(),
                allowed: allowed_roles.join(", "),
            });
        }
    }
    if definition.cpu.is_none() || definition.memory_mib.is_none() {
        return Err(DeployError::DaemonSizeMissing(pinned.into()));
    }
    Ok(())
}

/// The daemon against the instance sizes each provider may launch: larger than its largest
/// is refused (ECS could place it nowhere); a large share of its smallest is a warning.
pub(super) fn check_fits(
    daemon: &str,
    definition: &DaemonTaskDefinition,
    providers: &[CapacityProvider],
    warn_share: f64,
) -> Result<Vec<String>, DeployError> {
    let mut warnings = Vec::new();
    for provider in providers {
        let crate::model::CapacityProviderKind::ManagedInstances { sizes } = &provider.kind else {
            continue;
        };
        let checks = [
            (
                "cpu",
                definition.cpu,
                sizes.largest_cpu,
                sizes.smallest_cpu,
                "CPU units",
            ),
            (
                "memory",
                definition.memory_mib,
                sizes.largest_memory_mib,
                sizes.smallest_memory_mib,
                "MiB",
            ),
        ];
        for (resource, needed, largest, smallest, unit) in checks {
            let Some(needed) = needed else { continue };
            if let Some(largest) = largest.filter(|largest| needed > *largest) {
                return Err(DeployError::TooLarge(Box::new(TooLarge {
                    daemon: daemon.into(),
                    instance: super::LARGEST_INSTANCE.into(),
                    provider: provider.name.clone(),
                    resource,
                    needed: format!("{needed} {unit}"),
                    available: format!("{largest} {unit}"),
                })));
            }
            if let Some(smallest) = smallest.filter(|s| needed as f64 > warn_share * *s as f64) {
                warnings.push(format!(
                    "daemon {daemon} takes {needed} of the {smallest} {unit} of the smallest instance capacity provider {} may launch ({:.0} %), more than the {:.0} % warning share",
                    provider.name,
                    100.0 * needed as f64 / smallest as f64,
                    100.0 * warn_share
                ));
            }
        }
    }
    Ok(warnings)
}
