//! Moments met to the second. When a reconcile leaves a step due at a known time (a copy's
//! minHealthySeconds over, a restart backoff elapsed, a claim's grace, the next poll of a
//! rollout's starting copies), ecs-daemons sends itself a delayed message on the wake queue;
//! the coverage-check receives it at that time and reconciles the cluster. The schedule
//! stays as the safety net for a wake that is lost.
//!
//! Why an SQS message timer and not a one-time EventBridge Scheduler schedule: SQS delays a
//! message to the second, up to 15 minutes (SQS developer guide, *Amazon SQS message
//! timers*; API reference, *SendMessage*, DelaySeconds 0 to 900), while "all schedule types
//! on EventBridge Scheduler invoke their targets with 60 second precision" (EventBridge
//! Scheduler user guide, *Schedule types*): no better than the schedule it would relieve.
//! A wake further away than 15 minutes is chained: the message carries its moment, and a
//! message received early is sent again for the rest.
//!
//! One pending wake per cluster, kept in the table ([`crate::store::Store::book_wake`]):
//! a reconcile sends a message only when no earlier one is pending, since the reconcile that
//! earlier wake brings plans the whole cluster again and books the next moment itself.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// SQS's longest message timer (API reference, *SendMessage*, DelaySeconds).
pub const SQS_MAX_DELAY_SECONDS: i64 = 900;

/// How long after its timer ends a wake reaches the coverage-check, as the dry run assumes
/// it and the cluster model's harness delivers it by default. AWS documents that Lambda's
/// poller long-polls (a receive returns as soon as a message is visible: SQS developer guide,
/// *Amazon SQS short and long polling*) but gives no figure for the event source mapping as
/// a whole: a pessimistic second.
pub const DELIVERY_SECONDS: f64 = 1.0;

/// The environment variable naming the wake queue (template.yaml, `WakeQueue`); without it a
/// function books no wakes and timed steps wait for the schedule.
pub const QUEUE_URL_VARIABLE: &str = "WAKE_QUEUE_URL";

/// One wake: reconcile `cluster` at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    pub cluster: String,
    pub at: DateTime<Utc>,
}

/// The body of a wake message: `{"wake": {"cluster": …, "at": …}}`.
#[derive(Serialize, Deserialize)]
struct WakeBody {
    wake: Wake,
}

impl Wake {
    pub fn body(&self) -> String {
        serde_json::json!({ "wake": self }).to_string()
    }

    /// The wake a message body holds, or why it holds none.
    pub fn from_body(body: &Value) -> Result<Self, String> {
        serde_json::from_value::<WakeBody>(body.clone())
            .map(|b| b.wake)
            .map_err(|error| format!("not a wake message ({error})"))
    }

    /// The timer its message gets when sent at `now`: whole seconds, never late (a fraction
    /// is waited out by the receiver, [`Self::step`]), at most SQS's 15 minutes.
    pub fn delay_seconds(&self, now: DateTime<Utc>) -> i32 {
        let millis = (self.at - now).num_milliseconds().max(0);
        (millis / 1000).min(SQS_MAX_DELAY_SECONDS) as i32
    }

    /// What the receiver does with it at `now`.
    pub fn step(&self, now: DateTime<Utc>) -> WakeStep {
        let left = self.at - now;
        if left <= Duration::zero() {
            WakeStep::Reconcile
        } else if left < Duration::seconds(1) {
            // The timer's whole seconds are over; the fraction is waited out here.
            WakeStep::WaitThenReconcile(left)
        } else {
            WakeStep::SendAgain
        }
    }
}

/// What a received wake asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeStep {
    /// Its moment has come.
    Reconcile,
    /// Less than a second is left (the timer counts whole seconds).
    WaitThenReconcile(Duration),
    /// Further away than one message timer reaches: chained with another message.
    SendAgain,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SQS SendMessage to the wake queue failed ({code}): {message}")]
pub struct WakeError {
    pub code: String,
    pub message: String,
}

/// What `send` answers. Boxed: the trait is used as `dyn` by the engine.
pub type WakeSent<'a> = Pin<Box<dyn Future<Output = Result<(), WakeError>> + Send + 'a>>;

/// The wake queue of ecs-daemons.
pub trait WakeQueue: Send + Sync {
    /// Sends `wake` with the timer [`Wake::delay_seconds`] gives it at the queue's own clock.
    fn send<'a>(&'a self, wake: &'a Wake) -> WakeSent<'a>;
}

impl<T: WakeQueue + ?Sized> WakeQueue for std::sync::Arc<T> {
    fn send<'a>(&'a self, wake: &'a Wake) -> WakeSent<'a> {
        (**self).send(wake)
    }
}

/// The production [`WakeQueue`]: SQS through the SDK.
#[derive(Clone, Debug)]
pub struct SqsWakeQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsWakeQueue {
    pub fn new(config: &aws_config::SdkConfig, queue_url: String) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            queue_url,
        }
    }

    /// The queue `WAKE_QUEUE_URL` names, if set.
    pub fn from_environment(config: &aws_config::SdkConfig) -> Option<Self> {
        let url = std::env::var(QUEUE_URL_VARIABLE).ok()?;
        (!url.is_empty()).then(|| Self::new(config, url))
    }
}

impl WakeQueue for SqsWakeQueue {
    fn send<'a>(&'a self, wake: &'a Wake) -> WakeSent<'a> {
        Box::pin(async move {
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(wake.body())
                .delay_seconds(wake.delay_seconds(Utc::now()))
                .send()
                .await
                .map(|_| ())
                .map_err(|error| {
                    use aws_sdk_sqs::error::ProvideErrorMetadata;
                    WakeError {
                        code: error.code().unwrap_or("Unknown").to_string(),
                        message: error
                            .message()
                            .map_or_else(|| error.to_string(), str::to_string),
                    }
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(millis: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + millis)
            .single()
            .expect("a valid moment")
    }

    fn wake(millis: i64) -> Wake {
        Wake {
            cluster: "prod".into(),
            at: at(millis),
        }
    }

    #[test]
    fn the_timer_counts_whole_seconds_never_past_the_moment_nor_sqs_limit() {
        assert_eq!(
            wake(30_700).delay_seconds(at(0)),
            30,
            "the fraction is left"
        );
        assert_eq!(wake(30_000).delay_seconds(at(0)), 30);
        assert_eq!(wake(-5_000).delay_seconds(at(0)), 0, "already due");
        assert_eq!(wake(3_600_000).delay_seconds(at(0)), 900, "chained beyond");
    }

    #[test]
    fn a_received_wake_reconciles_waits_out_its_fraction_or_is_sent_again() {
        assert_eq!(wake(0).step(at(0)), WakeStep::Reconcile);
        assert_eq!(wake(-100).step(at(0)), WakeStep::Reconcile);
        assert_eq!(
            wake(700).step(at(0)),
            WakeStep::WaitThenReconcile(Duration::milliseconds(700))
        );
        assert_eq!(wake(2_700_000).step(at(900_000)), WakeStep::SendAgain);
    }

    #[test]
    fn a_wake_travels_as_its_message_body() {
        let sent = wake(1_234);
        let body: Value = serde_json::from_str(&sent.body()).expect("JSON");
        assert_eq!(Wake::from_body(&body), Ok(sent));
        assert!(Wake::from_body(&serde_json::json!({"detail-type": "x"})).is_err());
    }
}
