//! An in-memory [`Store`] with the DynamoDB adapter's semantics (conditional
//! writes, versions, expiring event markers), for fast tests and the model.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};

use ecs_daemons::store::{
    decode, encode, EventSeen, Expected, ItemKey, PreparedPut, Record, Store, StoreError,
    Versioned, WakeBooking, TRANSACTION_MAX_ITEMS,
};

#[derive(Clone, Debug)]
struct Item {
    kind: &'static str,
    version: u64,
    data: String,
    spec_cluster: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<BTreeMap<ItemKey, Item>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn items(&self) -> MutexGuard<'_, BTreeMap<ItemKey, Item>> {
        // A panic while holding the lock cannot leave a half-written item (each
        // write is one insert), so a poisoned map is still consistent.
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of items stored, event markers included.
    pub fn len(&self) -> usize {
        self.items().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item as (key, version, stored JSON), in key order: tests compare two snapshots
    /// to prove that an input changed nothing.
    pub fn snapshot(&self) -> Vec<(String, u64, String)> {
        self.items()
            .iter()
            .map(|(key, item)| (key.to_string(), item.version, item.data.clone()))
            .collect()
    }

    fn check(key: &ItemKey, current: Option<&Item>, expected: Expected) -> Result<(), StoreError> {
        let found = current.map(|item| item.version);
        let matches = match expected {
            Expected::Absent => found.is_none(),
            Expected::Version(version) => found == Some(version),
        };
        if matches {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                found,
            })
        }
    }
}

fn read<R: Record>(key: &ItemKey, item: &Item) -> Result<Versioned<R>, StoreError> {
    if item.kind != R::KIND.as_str() {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            kind: R::KIND.as_str(),
            message: format!("the item is a {}", item.kind),
        });
    }
    Ok(Versioned {
        record: decode(&key.to_string(), &item.data)?,
        version: item.version,
    })
}

impl Store for MemoryStore {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        self.items()
            .get(key)
            .map(|item| read(key, item))
            .transpose()
    }

    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        let key = record.key();
        let data = encode(record)?;
        let mut items = self.items();
        Self::check(&key, items.get(&key), expected)?;
        let version = expected.next_version();
        let item = Item {
            kind: R::KIND.as_str(),
            version,
            data,
            spec_cluster: record.cluster_index().map(str::to_string),
            expires_at: None,
        };
        items.insert(key, item);
        Ok(version)
    }

    async fn put_all(&self, puts: &[PreparedPut]) -> Result<Vec<u64>, StoreError> {
        if puts.len() > TRANSACTION_MAX_ITEMS {
            return Err(StoreError::Call {
                operation: "TransactWriteItems",
                target: format!("{} items", puts.len()),
                code: "ValidationException".into(),
                message: format!("at most {TRANSACTION_MAX_ITEMS} items per transaction"),
                retryable: false,
            });
        }
        // One lock for the whole transaction: every condition holds, then every put lands.
        let mut items = self.items();
        for put in puts {
            Self::check(&put.key, items.get(&put.key), put.expected)?;
        }
        let mut versions = Vec::with_capacity(puts.len());
        for put in puts {
            let version = put.expected.next_version();
            items.insert(
                put.key.clone(),
                Item {
                    kind: put.kind.as_str(),
                    version,
                    data: put.data.clone(),
                    spec_cluster: put.cluster_index.clone(),
                    expires_at: None,
                },
            );
            versions.push(version);
        }
        Ok(versions)
    }

    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        let mut items = self.items();
        Self::check(key, items.get(key), Expected::Version(expected_version))?;
        items.remove(key);
        Ok(())
    }

    async fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        let pk = ItemKey::daemon_partition(cluster, daemon);
        let prefix = R::KIND.prefix();
        let start = ItemKey {
            pk: pk.clone(),
            sk: prefix.to_string(),
        };
        self.items()
            .range(start..)
            .take_while(|(key, _)| key.pk == pk && key.sk.starts_with(prefix))
            .map(|(key, item)| read(key, item))
            .collect()
    }

    async fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        self.items()
            .iter()
            .filter(|(_, item)| {
                item.kind == R::KIND.as_str() && item.spec_cluster.as_deref() == Some(cluster)
            })
            .map(|(key, item)| read(key, item))
            .collect()
    }

    async fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<WakeBooking, StoreError> {
        let key = ItemKey::wake(cluster);
        let mut items = self.items();
        // The pending wake's moment is kept where DynamoDB keeps `wakeAt`.
        let pending = items.get(&key).and_then(|item| item.expires_at);
        if pending.is_some_and(|pending| pending > now && pending <= at) {
            return Ok(WakeBooking::EarlierPending);
        }
        let item = Item {
            kind: "WAKE",
            version: 1,
            data: String::new(),
            spec_cluster: None,
            expires_at: Some(at),
        };
        items.insert(key, item);
        Ok(WakeBooking::Booked)
    }

    async fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<EventSeen, StoreError> {
        let key = ItemKey::event(event_id);
        let mut items = self.items();
        // Like DynamoDB TTL, an expired marker may linger; it no longer counts.
        if items
            .get(&key)
            .is_some_and(|item| item.expires_at.is_some_and(|at| at > now))
        {
            return Ok(EventSeen::Duplicate);
        }
        let item = Item {
            kind: "EVENT",
            version: 1,
            data: String::new(),
            spec_cluster: None,
            expires_at: Some(now + ttl),
        };
        items.insert(key, item);
        Ok(EventSeen::FirstTime)
    }

    async fn forget_event(&self, event_id: &str) -> Result<(), StoreError> {
        self.items().remove(&ItemKey::event(event_id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store_contract::{check_claim_race, check_store_contract};

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        check_store_contract(&MemoryStore::new(), "prod", 250).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_claim_race_has_one_winner() {
        check_claim_race(Arc::new(MemoryStore::new()), "prod", 16).await;
    }
}
