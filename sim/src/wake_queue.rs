//! The wake queue as SQS holds it (template.yaml, `WakeQueue`): each message becomes
//! visible when its timer ends (SQS developer guide, *Amazon SQS message timers*), and
//! Lambda's poller hands it to the coverage-check a little later.

use std::sync::Arc;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use ecs_daemons::wake::{Wake, WakeQueue, WakeSent};

use crate::cluster_model::{ClusterModel, Rng};

/// A message on the queue: visible from `visible`, delivered `delivery` later.
#[derive(Clone, Debug)]
struct Message {
    id: u64,
    visible: DateTime<Utc>,
    wake: Wake,
}

/// Messages sent, and the latency of their delivery.
pub struct WakeQueueModel {
    model: Arc<ClusterModel>,
    messages: Mutex<Vec<Message>>,
    sent: Mutex<u64>,
    /// How long after its timer ends Lambda's poller hands a message over: undocumented, a
    /// pessimistic second by default ([`ecs_daemons::wake::DELIVERY_SECONDS`] says why).
    pub delivery: Duration,
    /// A fault: each message late by up to this much more, drawn (a delivery Lambda retried
    /// because the coverage-check's one concurrent execution was busy, or a slow poller).
    late: Mutex<Option<(Rng, Duration)>>,
}

/// What a visibility timeout leaves a message invisible after a failed delivery
/// (template.yaml's WakeQueue: six times the coverage-check's timeout, as Lambda advises).
pub const VISIBILITY_TIMEOUT_SECONDS: i64 = 720;

impl WakeQueueModel {
    pub fn new(model: Arc<ClusterModel>) -> Self {
        Self {
            model,
            messages: Mutex::new(Vec::new()),
            sent: Mutex::new(0),
            delivery: Duration::milliseconds((ecs_daemons::wake::DELIVERY_SECONDS * 1000.0) as i64),
            late: Mutex::new(None),
        }
    }

    /// From now on each message sent is late by up to `most` more (drawn from `seed`);
    /// `None` ends the fault.
    pub fn make_late(&self, late: Option<(u64, Duration)>) {
        *self
            .late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            late.map(|(seed, most)| (Rng::new(seed), most));
    }

    fn messages(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Messages sent so far (each SendMessage).
    pub fn sent(&self) -> u64 {
        *self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Messages on the queue, delivered or not yet.
    pub fn pending(&self) -> usize {
        self.messages().len()
    }

    /// When the next message reaches the coverage-check.
    pub fn next_delivery(&self) -> Option<DateTime<Utc>> {
        self.messages()
            .iter()
            .map(|m| m.visible + self.delivery)
            .min()
    }

    /// Up to `batch` messages delivered by `now`: (message id, body), as SQS records.
    pub fn receive(&self, now: DateTime<Utc>, batch: usize) -> Vec<(String, Wake)> {
        let mut messages = self.messages();
        messages.sort_by_key(|m| (m.visible, m.id));
        let mut received = Vec::new();
        for message in messages.iter_mut() {
            if received.len() == batch || message.visible + self.delivery > now {
                break;
            }
            // In flight until deleted, or visible again after the visibility timeout.
            message.visible = now + Duration::seconds(VISIBILITY_TIMEOUT_SECONDS) - self.delivery;
            received.push((format!("wake-{}", message.id), message.wake.clone()));
        }
        received
    }

    /// Deletes delivered messages (the batch answered without naming them).
    pub fn delete(&self, ids: &[String]) {
        self.messages()
            .retain(|m| !ids.contains(&format!("wake-{}", m.id)));
    }
}

impl WakeQueue for WakeQueueModel {
    fn send<'a>(&'a self, wake: &'a Wake) -> WakeSent<'a> {
        let now = self.model.now();
        let mut visible = now + Duration::seconds(i64::from(wake.delay_seconds(now)));
        if let Some((rng, most)) = self
            .late
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            visible +=
                Duration::milliseconds(rng.below(most.num_milliseconds().max(0) as u64 + 1) as i64);
        }
        let id = {
            let mut sent = self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *sent += 1;
            *sent
        };
        self.messages().push(Message {
            id,
            visible,
            wake: wake.clone(),
        });
        Box::pin(async { Ok(()) })
    }
}
