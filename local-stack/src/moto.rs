//! A moto server for DynamoDB on a free loopback port, for `demo --local-stack` (the test
//! command starts its own through scripts/moto.sh).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::stack::StackError;

pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

impl MotoServer {
    pub async fn start(workspace: &Path, log: &Path) -> Result<Self, StackError> {
        let server = workspace.join(".tools/venv-local/bin/moto_server");
        if !server.exists() {
            return Err(StackError::Config(format!(
                "{} is missing: run bash scripts/setup.sh first",
                server.display()
            )));
        }
        let port = crate::free_port().map_err(StackError::Serve)?;
        let output = std::fs::File::create(log).map_err(StackError::Serve)?;
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(StackError::Serve)?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .map_err(StackError::Serve)?;
        let address = format!("127.0.0.1:{port}");
        let moto = Self {
            child,
            endpoint: format!("http://{address}"),
        };
        for _ in 0..150 {
            let answer =
                crate::http::request("GET", &address, "/moto-api/", b"", Duration::from_secs(2))
                    .await;
            if matches!(answer, Ok((200, _))) {
                return Ok(moto);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(StackError::Config(format!(
            "moto did not answer on {address} within 30 s (see {})",
            log.display()
        )))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
