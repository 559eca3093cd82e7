//! Booking the next moment a cluster's reconcile moves things on (see [`crate::wake`]).

use super::*;
use crate::store::WakeBooking;
use crate::wake::{Wake, WakeError};

/// A wake is never booked sooner than this after the reconcile that asked for it: a plan
/// that keeps asking for "now" polls once a second instead of spinning.
const SOONEST_WAKE_MILLIS: i64 = 1_000;

impl<E: Ecs, S: Store> Engine<E, S> {
    /// Wakes the coverage-check through `wakes` at the moments reconciles leave due.
    pub fn with_wakes(mut self, wakes: std::sync::Arc<dyn crate::wake::WakeQueue>) -> Self {
        self.wakes = Some(wakes);
        self
    }

    /// Books `outcome`'s wake and sends its message when it is the cluster's earliest. A
    /// failure is an error of the outcome, not of the invocation: the reconcile's work is
    /// done, and the schedule is the wake's safety net.
    pub(super) async fn book_wake(&self, outcome: &mut Outcome, now: DateTime<Utc>) {
        let (Some(wakes), Some(at)) = (&self.wakes, outcome.wake_at) else {
            return;
        };
        let wake = Wake {
            cluster: outcome.cluster.clone(),
            at: at.max(now + Duration::milliseconds(SOONEST_WAKE_MILLIS)),
        };
        match self.store.book_wake(&wake.cluster, wake.at, now).await {
            Ok(WakeBooking::EarlierPending) => {}
            // Booked but not sent: the booking counts until its moment, then any reconcile
            // books again (the schedule's within a minute).
            Ok(WakeBooking::Booked) => {
                if let Err(error) = wakes.send(&wake).await {
                    outcome.errors.push(error.to_string());
                }
            }
            Err(error) => outcome.errors.push(format!("booking a wake: {error}")),
        }
    }

    /// The wakes of a batch's outcomes: each cluster's earliest, booked on its first outcome.
    pub(super) async fn book_batch_wakes(&self, outcomes: &mut [Outcome], now: DateTime<Utc>) {
        let mut earliest: BTreeMap<String, (usize, DateTime<Utc>)> = BTreeMap::new();
        for (position, outcome) in outcomes.iter().enumerate() {
            if let Some(at) = outcome.wake_at {
                let entry = earliest
                    .entry(outcome.cluster.clone())
                    .or_insert((position, at));
                entry.1 = entry.1.min(at);
            }
        }
        for (position, at) in earliest.into_values() {
            let outcome = &mut outcomes[position];
            let own = outcome.wake_at.replace(at);
            self.book_wake(outcome, now).await;
            outcome.wake_at = own;
        }
    }

    /// A received wake further away than one message timer reaches: sent on for the rest.
    pub async fn send_wake_again(&self, wake: &Wake) -> Result<(), WakeError> {
        match &self.wakes {
            Some(wakes) => wakes.send(wake).await,
            None => Err(WakeError {
                code: "NoWakeQueue".into(),
                message: format!(
                    "this function has no wake queue ({} is not set)",
                    crate::wake::QUEUE_URL_VARIABLE
                ),
            }),
        }
    }
}
