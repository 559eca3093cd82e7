//! The three functions the CLI calls (deploy, rollback, status): their names, found in the
//! stack's outputs or given, and the one call it makes of them, behind a small trait so the
//! commands run on a fake in tests and on the Lambda API for real.

use std::future::Future;

use serde_json::Value;

use crate::error::CliError;

/// Which function a command invokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// `deploy`, `deploy --dry-run`, `undeploy`.
    Deploy,
    /// `rollback`, `pause`, `resume`, `promote`.
    Rollback,
    /// `status`, `status --watch`, `rollout wait`.
    Status,
}

/// The deployed names of the three functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionNames {
    pub deploy: String,
    pub rollback: String,
    pub status: String,
}

impl FunctionNames {
    pub fn of(&self, function: Function) -> &str {
        match function {
            Function::Deploy => &self.deploy,
            Function::Rollback => &self.rollback,
            Function::Status => &self.status,
        }
    }

    /// The names from a stack's outputs (template.yaml's `DeployFunctionName`,
    /// `RollbackFunctionName`, `StatusFunctionName`).
    pub fn from_outputs(outputs: &[(String, String)]) -> Result<Self, String> {
        let find = |key: &str| {
            outputs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    format!("has no output {key}: is it an ecs-daemons stack (template.yaml)?")
                })
        };
        Ok(Self {
            deploy: find("DeployFunctionName")?,
            rollback: find("RollbackFunctionName")?,
            status: find("StatusFunctionName")?,
        })
    }
}

/// Invokes a function synchronously and answers its JSON answer, or its error.
pub trait Functions {
    fn invoke(
        &self,
        function: Function,
        payload: &Value,
    ) -> impl Future<Output = Result<Value, CliError>>;
}

/// An invoke's raw outcome as the Lambda API reports it, read into the answer or the error:
/// a function error (`FunctionError` set, or an error body with `errorType`) keeps the
/// function's `errorType` and `errorMessage`.
pub fn read_answer(
    function: &str,
    body: &[u8],
    function_error: Option<&str>,
) -> Result<Value, CliError> {
    let text = || {
        String::from_utf8_lossy(body)
            .chars()
            .take(2000)
            .collect::<String>()
    };
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let error_type = value
        .as_ref()
        .and_then(|v| v.get("errorType"))
        .and_then(Value::as_str);
    match (function_error, error_type, value.as_ref()) {
        (None, None, Some(value)) => Ok(value.clone()),
        (_, Some(error_type), Some(value)) => Err(CliError::Function {
            error_type: error_type.to_string(),
            message: value
                .get("errorMessage")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        (Some(kind), _, _) => Err(CliError::Function {
            error_type: kind.to_string(),
            message: text(),
        }),
        (None, _, _) => Err(CliError::NotJson {
            function: function.to_string(),
            body: text(),
        }),
    }
}

/// The functions on the Lambda API.
pub struct LambdaFunctions {
    client: aws_sdk_lambda::Client,
    names: FunctionNames,
}

impl LambdaFunctions {
    pub fn new(client: aws_sdk_lambda::Client, names: FunctionNames) -> Self {
        Self { client, names }
    }
}

impl Functions for LambdaFunctions {
    async fn invoke(&self, function: Function, payload: &Value) -> Result<Value, CliError> {
        use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
        let name = self.names.of(function);
        let body = serde_json::to_vec(payload).map_err(|e| CliError::Usage(e.to_string()))?;
        let answer = self
            .client
            .invoke()
            .function_name(name)
            .payload(aws_sdk_lambda::primitives::Blob::new(body))
            .send()
            .await;
        match answer {
            Ok(output) => read_answer(
                name,
                output.payload().map(|p| p.as_ref()).unwrap_or_default(),
                output.function_error(),
            ),
            // A local runtime may answer a function error with an error status: its body
            // still names the error.
            Err(SdkError::ServiceError(error)) => {
                let raw = error.raw().body().bytes().unwrap_or_default();
                match read_answer(name, raw, None) {
                    Err(function_error @ CliError::Function { .. }) => Err(function_error),
                    _ => Err(CliError::Invoke {
                        function: name.to_string(),
                        message: DisplayErrorContext(error.err()).to_string(),
                    }),
                }
            }
            Err(error) => Err(CliError::Invoke {
                function: name.to_string(),
                message: DisplayErrorContext(&error).to_string(),
            }),
        }
    }
}

/// The function names from stack `stack`'s outputs (CloudFormation DescribeStacks).
pub async fn names_from_stack(
    client: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<FunctionNames, CliError> {
    let failed = |message: String| CliError::Stack {
        stack: stack.to_string(),
        message,
    };
    let answer = client
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_cloudformation::error::DisplayErrorContext(&e).to_string()))?;
    let found = answer
        .stacks()
        .first()
        .ok_or_else(|| failed("not found".into()))?;
    let outputs: Vec<(String, String)> = found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    FunctionNames::from_outputs(&outputs).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_stack_outputs() {
        let outputs: Vec<(String, String)> = [
            ("DeployFunctionName", "ecs-daemons-Deploy-1"),
            ("RollbackFunctionName", "ecs-daemons-Rollback-1"),
            ("StatusFunctionName", "ecs-daemons-Status-1"),
            ("TableName", "t"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names = FunctionNames::from_outputs(&outputs).unwrap();
        assert_eq!(names.of(Function::Rollback), "ecs-daemons-Rollback-1");
        let missing = FunctionNames::from_outputs(&outputs[1..]).unwrap_err();
        assert!(missing.contains("DeployFunctionName"), "{missing}");
    }

    #[test]
    fn answers_and_function_errors_are_told_apart() {
        assert_eq!(
            read_answer("status", br#"{"cluster":"prod"}"#, None).unwrap()["cluster"],
            "prod"
        );
        let refused = read_answer(
            "deploy",
            br#"{"errorType":"UnknownDaemon","errorMessage":"no daemon agent in prod"}"#,
            Some("Unhandled"),
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "UnknownDaemon: no daemon agent in prod"
        );
        // Without FunctionError too (a local runtime's error status).
        let same = read_answer("deploy", br#"{"errorType":"NoExecutionRole"}"#, None);
        assert!(matches!(same, Err(CliError::Function { .. })));
        let crashed = read_answer("deploy", b"Runtime exited", Some("Unhandled")).unwrap_err();
        assert!(crashed.to_string().starts_with("Unhandled: Runtime exited"));
        assert!(matches!(
            read_answer("deploy", b"<html>", None),
            Err(CliError::NotJson { .. })
        ));
    }
}
