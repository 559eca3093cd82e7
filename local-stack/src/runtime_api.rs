//! A one-event Lambda runtime API on loopback, for measuring a release `bootstrap` as Lambda
//! runs it: when the process first asks for an event (it is ready), what it answers, and
//! what it costs meanwhile. Later polls are held open, as Lambda holds them while frozen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::http::{encode, read_message};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
pub const REQUEST_ID: &str = "bench-request-1";

#[derive(Default)]
struct State {
    event: Option<Value>,
    function_arn: String,
    first_poll: Option<Instant>,
    answer: Option<(Result<Value, String>, Instant)>,
}

pub struct FakeRuntime {
    pub address: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    server: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeRuntime {
    /// Serves `event` (if any) to the first poll for the function `function_arn`.
    pub async fn start(event: Option<Value>, function_arn: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let state = Arc::new(Mutex::new(State {
            event,
            function_arn: function_arn.into(),
            ..State::default()
        }));
        let changed = Arc::new(Notify::new());
        let (server_state, server_changed) = (state.clone(), changed.clone());
        let server = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (state, changed) = (server_state.clone(), server_changed.clone());
                tokio::spawn(async move {
                    let peer = peer.to_string();
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    while let Ok(Some(request)) = read_message(&mut reader, &peer).await {
                        let Some(response) = answer(&state, &changed, &request) else {
                            // A poll with no event left: held open, as Lambda holds it.
                            std::future::pending::<()>().await;
                            return;
                        };
                        if write.write_all(&response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            address,
            state,
            changed,
            server,
        })
    }

    /// Waits until the process has asked for its first event; answers when it did.
    pub async fn first_poll(&self, timeout: Duration) -> Option<Instant> {
        self.wait(timeout, |s| s.first_poll).await
    }

    /// Waits for the function's answer (or its error) to the event.
    pub async fn answer(&self, timeout: Duration) -> Option<(Result<Value, String>, Instant)> {
        self.wait(timeout, |s| s.answer.clone()).await
    }

    async fn wait<T>(&self, timeout: Duration, seen: impl Fn(&State) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(value) = seen(&lock(&self.state)) {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return seen(&lock(&self.state));
            }
        }
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(
    state: &Mutex<State>,
    changed: &Notify,
    request: &crate::http::Message,
) -> Option<Vec<u8>> {
    let mut parts = request.start_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let accepted = || {
        encode(
            "HTTP/1.1 202 Accepted",
            &[("content-type", "application/json")],
            b"{}",
        )
    };
    let mut state = lock(state);
    let response = if method == "GET" && path == NEXT {
        state.first_poll.get_or_insert_with(Instant::now);
        let event = state.event.take();
        changed.notify_waiters();
        let event = event?;
        let deadline = (chrono::Utc::now() + chrono::Duration::seconds(60))
            .timestamp_millis()
            .to_string();
        let body = serde_json::to_vec(&event).unwrap_or_default();
        encode(
            "HTTP/1.1 200 OK",
            &[
                ("content-type", "application/json"),
                ("lambda-runtime-aws-request-id", REQUEST_ID),
                ("lambda-runtime-deadline-ms", &deadline),
                ("lambda-runtime-invoked-function-arn", &state.function_arn),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000",
                ),
            ],
            &body,
        )
    } else if method == "POST" && path.ends_with("/response") {
        let body = serde_json::from_slice(&request.body)
            .map_err(|e| format!("the answer is not JSON: {e}"));
        state.answer = Some((body, Instant::now()));
        accepted()
    } else if method == "POST" && path.ends_with("/error") {
        let body = String::from_utf8_lossy(&request.body).to_string();
        state.answer = Some((Err(body), Instant::now()));
        accepted()
    } else {
        encode("HTTP/1.1 404 Not Found", &[], b"")
    };
    changed.notify_waiters();
    Some(response)
}
