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
    meter: Mutex<RequestUnits>,
}

/// What the calls so far would have cost a DynamoDB on-demand table, in request units
/// (developer guide, *Read/write capacity mode*: a strongly consistent read is one unit per
/// 4 KB read, an eventually consistent one half of that, as a global secondary index's
/// query always is; a write one unit per KB written, a failed conditional write too; a
/// transactional write two per KB). Item sizes as *Item sizes and formats* counts them:
/// attribute names and values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestUnits {
    pub read: f64,
    pub write: f64,
}

/// An item's size as DynamoDB counts it (names and values; numbers at their 21-byte most).
fn item_bytes(key: &ItemKey, item: &Item) -> usize {
    let named = |name: &str, value: usize| name.len() + value;
    named("pk", key.pk.len())
        + named("sk", key.sk.len())
        + named("kind", item.kind.len())
        + named("version", 21)
        + named("data", item.data.len())
        + item
            .spec_cluster
            .as_ref()
            .map_or(0, |cluster| named("specCluster", cluster.len()))
        + item.expires_at.map_or(0, |_| named("expiresAt", 21))
}

fn read_units(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Request units spent so far.
    pub fn request_units(&self) -> RequestUnits {
        *self.meter()
    }

    fn meter(&self) -> MutexGuard<'_, RequestUnits> {
        self.meter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn charge(&self, read: f64, write: f64) {
        let mut meter = self.meter();
        meter.read += read;
        meter.write += write;
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
        let items = self.items();
        let found = items.get(key);
        self.charge(
            read_units(found.map_or(0, |item| item_bytes(key, item))),
            0.0,
        );
        found.map(|item| read(key, item)).transpose()
    }

    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        let key = record.key();
        let data = encode(record)?;
        let mut items = self.items();
        let version = expected.next_version();
        let item = Item {
            kind: R::KIND.as_str(),
            version,
            data,
            spec_cluster: record.cluster_index().map(str::to_string),
            expires_at: None,
        };
        self.charge(0.0, write_units(item_bytes(&key, &item)));
        Self::check(&key, items.get(&key), expected)?;
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
        let prepared: Vec<Item> = puts
            .iter()
            .map(|put| Item {
                kind: put.kind.as_str(),
                version: put.expected.next_version(),
                data: put.data.clone(),
                spec_cluster: put.cluster_index.clone(),
                expires_at: None,
            })
            .collect();
        let units: f64 = puts
            .iter()
            .zip(&prepared)
            .map(|(put, item)| 2.0 * write_units(item_bytes(&put.key, item)))
            .sum();
        self.charge(0.0, units);
        for put in puts {
            Self::check(&put.key, items.get(&put.key), put.expected)?;
        }
        let mut versions = Vec::with_capacity(puts.len());
        for (put, item) in puts.iter().zip(prepared) {
            versions.push(item.version);
            items.insert(put.key.clone(), item);
        }
        Ok(versions)
    }

    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        let mut items = self.items();
        self.charge(
            0.0,
            write_units(items.get(key).map_or(0, |item| item_bytes(key, item))),
        );
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
        let items = self.items();
        let found: Vec<(&ItemKey, &Item)> = items
            .range(start..)
            .take_while(|(key, _)| key.pk == pk && key.sk.starts_with(prefix))
            .collect();
        let bytes = found.iter().map(|(key, item)| item_bytes(key, item)).sum();
        self.charge(read_units(bytes), 0.0);
        found
            .into_iter()
            .map(|(key, item)| read(key, item))
            .collect()
    }

    async fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        let items = self.items();
        let found: Vec<(&ItemKey, &Item)> = items
            .iter()
            .filter(|(_, item)| {
                item.kind == R::KIND.as_str() && item.spec_cluster.as_deref() == Some(cluster)
            })
            .collect();
        // The by-cluster index: a global secondary index reads eventually consistent.
        let bytes = found.iter().map(|(key, item)| item_bytes(key, item)).sum();
        self.charge(read_units(bytes) / 2.0, 0.0);
        found
            .into_iter()
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
        self.charge(0.0, 1.0);
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
        self.charge(0.0, 1.0);
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
        self.charge(0.0, 1.0);
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
