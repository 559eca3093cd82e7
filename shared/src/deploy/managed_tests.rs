//! The Managed Instances checks of a deploy.

use super::*;
use crate::ecs::DaemonTaskDefinition;

fn definition() -> DaemonTaskDefinition {
    DaemonTaskDefinition {
        arn: "arn:aws:ecs:us-east-1:111122223333:daemon-task-definition/agent:1".into(),
        family: "agent".into(),
        revision: 1,
        status: "ACTIVE".into(),
        execution_role_arn: Some("arn:aws:iam::111122223333:role/exec".into()),
        task_role_arn: None,
        cpu: Some(1024),
        memory_mib: Some(512),
    }
}

#[test]
fn a_daemon_task_definition_is_checked_before_anything_is_created() {
    assert!(check_definition("agent:1", &definition(), &[]).is_ok());
    let inactive = DaemonTaskDefinition {
        status: "DELETE_IN_PROGRESS".into(),
        ..definition()
    };
    assert!(matches!(
        check_definition("agent:1", &inactive, &[]),
        Err(DeployError::DaemonTaskDefinitionNotActive { .. })
    ));
    let no_role = DaemonTaskDefinition {
        execution_role_arn: None,
        ..definition()
    };
    assert!(matches!(
        check_definition("agent:1", &no_role, &[]),
        Err(DeployError::NoExecutionRole(_))
    ));
    let allowed = ["arn:aws:iam::111122223333:role/other".to_string()];
    let refused = check_definition("agent:1", &definition(), &allowed).unwrap_err();
    assert!(refused.to_string().contains("role/exec"), "{refused}");
    let sizeless = DaemonTaskDefinition {
        cpu: None,
        ..definition()
    };
    assert!(matches!(
        check_definition("agent:1", &sizeless, &[]),
        Err(DeployError::DaemonSizeMissing(_))
    ));
}

#[test]
fn a_daemon_larger_than_the_largest_instance_is_refused() {
    use crate::model::{CapacityProviderKind, InstanceSizes};
    let provider = |largest_cpu: Option<i64>, smallest_cpu: Option<i64>| CapacityProvider {
        name: "mi".into(),
        arn: "arn:aws:ecs:us-east-1:111122223333:capacity-provider/mi".into(),
        status: "ACTIVE".into(),
        kind: CapacityProviderKind::ManagedInstances {
            sizes: InstanceSizes {
                largest_cpu,
                smallest_cpu,
                ..InstanceSizes::default()
            },
        },
    };
    let refused = check_fits("agent", &definition(), &[provider(Some(512), None)], 0.25)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("largest instance") && refused.contains("mi"),
        "{refused}"
    );
    let warned = check_fits("agent", &definition(), &[provider(None, Some(2048))], 0.25).unwrap();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        check_fits("agent", &definition(), &[provider(None, None)], 0.25)
            .unwrap()
            .is_empty()
    );
}
