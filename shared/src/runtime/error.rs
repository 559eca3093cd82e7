//! The one error type of the Lambda layer, and the `errorType` a caller sees: what kind of
//! mistake or failure, by name, with a message that says what to fix.

use crate::deploy::DeployError;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("could not encode the answer: {0}")]
    Encode(#[from] serde_json::Error),
}

impl FunctionError {
    /// The `errorType` a caller sees: what kind of mistake or failure, by name.
    pub fn error_type(&self) -> &'static str {
        use crate::deploy::DeployError as D;
        let engine = |error: &EngineError| match error {
            EngineError::Event(_) => "InvalidEvent",
            EngineError::Ecs(_) => "EcsError",
            EngineError::Store(_) => "StoreError",
            EngineError::ClusterNotManaged { .. } => "ClusterNotManaged",
            EngineError::AutoScaling(_) => "AutoScalingError",
            EngineError::NoAutoScaling => "ConfigurationError",
        };
        match self {
            Self::Config(_) => "ConfigurationError",
            Self::Engine(error) => engine(error),
            Self::Encode(_) => "EncodingError",
            Self::Deploy(error) => match error {
                D::InvalidRequest(_) => "InvalidRequest",
                D::TaskDefinitionNotFound(_) => "TaskDefinitionNotFound",
                D::NoExecutionRole(_) => "NoExecutionRole",
                D::ClusterNotFound { .. } => "ClusterNotFound",
                D::CapacityProviderNotInCluster { .. } => "CapacityProviderNotInCluster",
                D::FamilyNotAllowed { .. } => "FamilyNotAllowed",
                D::FargateProvider { .. } => "FargateProvider",
                D::ManagedInstancesNeedDaemonTaskDefinition { .. } => {
                    "ManagedInstancesNeedDaemonTaskDefinition"
                }
                D::UnknownProviderKind { .. } => "UnknownProviderKind",
                D::AutoScalingNeedsTaskDefinition { .. } => "AutoScalingNeedsTaskDefinition",
                D::UnusedTaskDefinition { .. } => "UnusedTaskDefinition",
                D::DaemonTaskDefinitionNotFound(_) => "DaemonTaskDefinitionNotFound",
                D::DaemonTaskDefinitionNotActive { .. } => "DaemonTaskDefinitionNotActive",
                D::DaemonSizeMissing(_) => "DaemonSizeMissing",
                D::RoleNotAllowed { .. } => "RoleNotAllowed",
                D::TooLarge(_) => "DaemonTooLarge",
                D::NoGoodRevision { .. } => "NoGoodRevision",
                D::AlreadyOn { .. } => "AlreadyOnRevision",
                D::Conflict { .. } => "Conflict",
                D::UnknownDaemon { .. } => "UnknownDaemon",
                D::NoRolloutInProgress { .. } => "NoRolloutInProgress",
                D::NotPaused { .. } => "RolloutNotPaused",
                D::CanaryNotWaiting { .. } => "CanaryNotWaiting",
                D::ControlOnManagedInstances { .. } => "ControlOnManagedInstances",
                D::UndeployPending { .. } => "UndeployPending",
                D::DaemonBeingDeleted { .. } => "DaemonBeingDeleted",
                D::TasksUnderManagedScaling { .. } => "TasksUnderManagedScaling",
                D::AwsvpcForServices { .. } => "AwsvpcForServices",
                D::AttributeBudget { .. } => "AttributeBudget",
                D::PlacementChange { .. } => "PlacementChange",
                D::ServicesBusy { .. } => "ServicesBusy",
                D::ServiceQuota { .. } => "ServiceQuota",
                D::UnknownAlarm { .. } => "UnknownAlarm",
                D::AlarmsNotReadable { .. } => "AlarmsNotReadable",
                D::Alarms(_) => "CloudWatchError",
                D::Ecs(_) => "EcsError",
                D::Store(_) => "StoreError",
                D::Engine(error) => engine(error),
            },
        }
    }
}

impl From<FunctionError> for lambda_runtime::Diagnostic {
    fn from(error: FunctionError) -> Self {
        Self {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_see_what_kind_of_mistake_they_made() {
        let diagnostic =
            lambda_runtime::Diagnostic::from(FunctionError::Deploy(DeployError::UnknownDaemon {
                cluster: "prod".into(),
                daemon: "nobody".into(),
            }));
        assert_eq!(diagnostic.error_type, "UnknownDaemon");
        assert!(
            diagnostic.error_message.contains("nobody"),
            "{}",
            diagnostic.error_message
        );
        let config =
            lambda_runtime::Diagnostic::from(FunctionError::Config("TABLE_NAME is not set".into()));
        assert_eq!(config.error_type, "ConfigurationError");
    }
}
