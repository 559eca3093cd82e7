//! The real function binaries under `cargo lambda watch` (cargo-lambda's local Lambda
//! runtime API), invoked through its invoke API as AWS would invoke them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http::{post, HttpError};

#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    #[error("cargo-lambda not found at {0} (bash scripts/setup.sh installs it; CARGO_LAMBDA names another)")]
    NoCargoLambda(PathBuf),
    #[error("{what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the function binaries failed (see {0})")]
    Build(PathBuf),
    #[error("cargo lambda watch did not listen on {address} within {seconds} s (see {log})")]
    NotListening {
        address: String,
        seconds: u64,
        log: PathBuf,
    },
    #[error("invoking {function}: {source}")]
    Http {
        function: String,
        #[source]
        source: HttpError,
    },
    #[error("{function} answered HTTP {status}: {body}")]
    Status {
        function: String,
        status: u16,
        body: String,
    },
    #[error("{function} failed: {error_type}: {message}")]
    Function {
        function: String,
        error_type: String,
        message: String,
    },
    #[error("{function} answered something that is not JSON: {body}")]
    NotJson { function: String, body: String },
}

/// The function crates, by binary name.
pub const FUNCTIONS: &[&str] = &[
    "instance-events",
    "task-events",
    "coverage-check",
    "deploy",
    "rollback",
    "status",
];

/// How long one invoke may take (a cold function process starts within it).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct LambdaEmulator {
    child: Child,
    address: String,
}

fn cargo_lambda(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_LAMBDA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".tools/venv-local/bin/cargo-lambda"))
}

impl LambdaEmulator {
    /// Builds the function binaries (debug, in `target/local-stack`, apart from the test
    /// build's own target directory), then starts `cargo lambda watch` on a free loopback
    /// port with `environment` for every function. Its output goes to `log`.
    pub async fn start(
        workspace: &Path,
        environment: &[(String, String)],
        log: &Path,
    ) -> Result<Self, LambdaError> {
        let cargo_lambda = cargo_lambda(workspace);
        if !cargo_lambda.exists() {
            return Err(LambdaError::NoCargoLambda(cargo_lambda));
        }
        let target_dir = workspace.join("target/local-stack");
        let log_file = |what: &str| {
            crate::append_log(log).map_err(|source| LambdaError::Spawn {
                what: format!("opening {} for {what}", log.display()),
                source,
            })
        };
        let mut build = Command::new("cargo");
        build
            .current_dir(workspace)
            .arg("build")
            .env("CARGO_TARGET_DIR", &target_dir);
        for function in FUNCTIONS {
            build.args(["--bin", function]);
        }
        let status = build
            .stdout(log_file("the build")?)
            .stderr(log_file("the build")?)
            .status()
            .await
            .map_err(|source| LambdaError::Spawn {
                what: "cargo build".into(),
                source,
            })?;
        if !status.success() {
            return Err(LambdaError::Build(log.to_path_buf()));
        }

        let port = crate::free_port().map_err(|source| LambdaError::Spawn {
            what: "finding a free loopback port".into(),
            source,
        })?;
        let address = format!("127.0.0.1:{port}");
        let mut watch = Command::new(&cargo_lambda);
        watch
            .current_dir(workspace)
            .args([
                "lambda",
                "watch",
                "--ignore-changes",
                "--invoke-address",
                "127.0.0.1",
            ])
            .args(["--invoke-port", &port.to_string()])
            // (Its --target-dir flag also reaches `cargo metadata`, which refuses it.)
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["--timeout", &INVOKE_TIMEOUT.as_secs().to_string()]);
        for (key, value) in environment {
            watch.arg("--env-var").arg(format!("{key}={value}"));
        }
        // Its own process group, so that stopping it stops the function processes it started.
        watch
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(log_file("cargo lambda watch")?)
            .stderr(log_file("cargo lambda watch")?);
        let child = watch.spawn().map_err(|source| LambdaError::Spawn {
            what: format!("{} lambda watch", cargo_lambda.display()),
            source,
        })?;
        let emulator = Self { child, address };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(&emulator.address)
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                return Err(LambdaError::NotListening {
                    address: emulator.address.clone(),
                    seconds: 60,
                    log: log.to_path_buf(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(emulator)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Invokes `function` with `payload` (RequestResponse) and answers its result, or its
    /// error as Lambda reports it.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, LambdaError> {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let path = format!("/2015-03-31/functions/{function}/invocations");
        let (status, response) = post(&self.address, &path, &body, INVOKE_TIMEOUT)
            .await
            .map_err(|source| LambdaError::Http {
                function: function.into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&response.body).to_string();
        let value: Option<Value> = serde_json::from_slice(&response.body).ok();
        let function_error = response.header("x-amz-function-error").is_some();
        match (status, value) {
            (200, Some(value)) if !function_error => Ok(value),
            (_, Some(value)) if value.get("errorType").is_some() || function_error => {
                Err(LambdaError::Function {
                    function: function.into(),
                    error_type: value["errorType"].as_str().unwrap_or("Unhandled").into(),
                    message: value["errorMessage"].as_str().unwrap_or(&text).into(),
                })
            }
            (200, None) => Err(LambdaError::NotJson {
                function: function.into(),
                body: text,
            }),
            (status, _) => Err(LambdaError::Status {
                function: function.into(),
                status,
                body: text,
            }),
        }
    }
}

impl Drop for LambdaEmulator {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The whole group: watch and the function processes it spawned.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
    }
}
