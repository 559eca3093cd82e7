//! [`Store`] on aws-sdk-dynamodb. Items hold their key, kind, version and the
//! record as JSON in `data`; spec items also carry `specCluster`, the key of a
//! sparse index listing a cluster's daemons; event markers carry `expiresAt`,
//! the table's TTL attribute.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TableStatus, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};

use super::{
    decode, encode, EventSeen, Expected, ItemKey, PreparedPut, Record, Store, StoreError,
    Versioned, WakeBooking, TRANSACTION_MAX_ITEMS,
};

pub const SPECS_BY_CLUSTER_INDEX: &str = "specs-by-cluster";
const PK: &str = "pk";
const SK: &str = "sk";
const KIND: &str = "kind";
const VERSION: &str = "version";
const DATA: &str = "data";
const SPEC_CLUSTER: &str = "specCluster";
const EXPIRES_AT: &str = "expiresAt";
/// A pending wake's moment, in milliseconds since the epoch.
const WAKE_AT: &str = "wakeAt";

type Item = HashMap<String, AttributeValue>;

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// Items per query page; `None` lets DynamoDB fill 1 MB pages.
    page_limit: Option<i32>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_limit: None,
        }
    }

    /// Smaller query pages (tests use it to cross page boundaries with few items).
    pub fn with_page_limit(mut self, items: i32) -> Self {
        self.page_limit = Some(items);
        self
    }

    pub fn from_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }
}

fn call_error<E>(
    operation: &'static str,
    target: impl Into<String>,
    error: SdkError<E, HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16());
    let code = error.code().map(str::to_string);
    let retryable = matches!(
        error,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || status.is_some_and(|s| s >= 500)
        || matches!(
            code.as_deref(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "TransactionConflictException"
            )
        );
    StoreError::Call {
        operation,
        target: target.into(),
        code: code.unwrap_or_else(|| status.map_or("NoResponse".into(), |s| format!("HTTP {s}"))),
        message: error
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(&error).to_string()),
        retryable,
    }
}

fn key_item(key: &ItemKey) -> Item {
    HashMap::from([
        (PK.to_string(), AttributeValue::S(key.pk.clone())),
        (SK.to_string(), AttributeValue::S(key.sk.clone())),
    ])
}

fn version_of(item: &Item) -> Option<u64> {
    item.get(VERSION)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn read<R: Record>(item: &Item) -> Result<Versioned<R>, StoreError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    };
    let key = format!("{}/{}", text(PK).unwrap_or("?"), text(SK).unwrap_or("?"));
    let corrupt = |message: String| StoreError::Corrupt {
        key: key.clone(),
        kind: R::KIND.as_str(),
        message,
    };
    match text(KIND) {
        Some(kind) if kind == R::KIND.as_str() => {}
        other => return Err(corrupt(format!("the item's kind is {other:?}"))),
    }
    let version =
        version_of(item).ok_or_else(|| corrupt("the item has no numeric version".into()))?;
    let data = text(DATA).ok_or_else(|| corrupt("the item has no data".into()))?;
    Ok(Versioned {
        record: decode(&key, data)?,
        version,
    })
}

/// Turns a lost condition into `Conflict`, reading the current version from the returned old item.
fn conflict_or<E>(
    key: &ItemKey,
    expected: Expected,
    operation: &'static str,
    error: SdkError<E, HttpResponse>,
    old_item: impl Fn(&E) -> Option<&Item>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if error.code() == Some("ConditionalCheckFailedException") {
        let found = error
            .as_service_error()
            .and_then(&old_item)
            .and_then(version_of);
        return StoreError::Conflict {
            key: key.clone(),
            expected,
            found,
        };
    }
    call_error(operation, key.to_string(), error)
}

impl DynamoStore {
    /// One conditional put of a transaction, conditioned as `put` is.
    fn transaction_put(
        &self,
        put: &PreparedPut,
    ) -> Result<Put, aws_sdk_dynamodb::error::BuildError> {
        let mut item = key_item(&put.key);
        item.insert(KIND.into(), AttributeValue::S(put.kind.as_str().into()));
        item.insert(
            VERSION.into(),
            AttributeValue::N(put.expected.next_version().to_string()),
        );
        item.insert(DATA.into(), AttributeValue::S(put.data.clone()));
        if let Some(cluster) = &put.cluster_index {
            item.insert(SPEC_CLUSTER.into(), AttributeValue::S(cluster.clone()));
        }
        let request = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match put.expected {
            Expected::Absent => request.condition_expression("attribute_not_exists(pk)"),
            Expected::Version(current) => request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", AttributeValue::N(current.to_string())),
        };
        request.build()
    }
}

impl Store for DynamoStore {
    async fn get<R: Record>(&self, key: &ItemKey) -> Result<Option<Versioned<R>>, StoreError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| call_error("GetItem", key.to_string(), e))?;
        answer.item().map(read).transpose()
    }

    async fn put<R: Record>(&self, record: &R, expected: Expected) -> Result<u64, StoreError> {
        let key = record.key();
        let version = expected.next_version();
        let mut item = key_item(&key);
        item.insert(KIND.into(), AttributeValue::S(R::KIND.as_str().into()));
        item.insert(VERSION.into(), AttributeValue::N(version.to_string()));
        item.insert(DATA.into(), AttributeValue::S(encode(record)?));
        if let Some(cluster) = record.cluster_index() {
            item.insert(SPEC_CLUSTER.into(), AttributeValue::S(cluster.to_string()));
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match expected {
            Expected::Absent => request.condition_expression("attribute_not_exists(pk)"),
            Expected::Version(current) => request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", AttributeValue::N(current.to_string())),
        };
        request
            .send()
            .await
            .map_err(|e| conflict_or(&key, expected, "PutItem", e, |service| match service {
                aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item(),
                _ => None,
            }))?;
        Ok(version)
    }

    async fn put_all(&self, puts: &[PreparedPut]) -> Result<Vec<u64>, StoreError> {
        let invalid = |message: String| StoreError::Call {
            operation: "TransactWriteItems",
            target: format!("{} items", puts.len()),
            code: "ValidationException".into(),
            message,
            retryable: false,
        };
        if puts.is_empty() || puts.len() > TRANSACTION_MAX_ITEMS {
            return Err(invalid(format!(
                "a transaction takes 1 to {TRANSACTION_MAX_ITEMS} items, got {}",
                puts.len()
            )));
        }
        let mut items = Vec::with_capacity(puts.len());
        for put in puts {
            let request = self
                .transaction_put(put)
                .map_err(|error| invalid(error.to_string()))?;
            items.push(TransactWriteItem::builder().put(request).build());
        }
        let answer = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        if let Err(error) = answer {
            use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
            // A cancelled transaction names, per item, why: the first lost condition is
            // the conflict (with the version found); anything else is a call error.
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                error.as_service_error()
            {
                let lost = cancelled
                    .cancellation_reasons()
                    .iter()
                    .zip(puts)
                    .find(|(reason, _)| reason.code() == Some("ConditionalCheckFailed"));
                if let Some((reason, put)) = lost {
                    return Err(StoreError::Conflict {
                        key: put.key.clone(),
                        expected: put.expected,
                        found: reason.item().and_then(version_of),
                    });
                }
            }
            return Err(call_error(
                "TransactWriteItems",
                format!("{} items", puts.len()),
                error,
            ));
        }
        Ok(puts.iter().map(|p| p.expected.next_version()).collect())
    }

    async fn delete(&self, key: &ItemKey, expected_version: u64) -> Result<(), StoreError> {
        let expected = Expected::Version(expected_version);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(key)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(|e| conflict_or(key, expected, "DeleteItem", e, |service| match service {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => c.item(),
                _ => None,
            }))?;
        Ok(())
    }

    async fn query<R: Record>(
        &self,
        cluster: &str,
        daemon: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        let pk = ItemKey::daemon_partition(cluster, daemon);
        let prefix = R::KIND.prefix();
        let mut records = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
                .set_limit(self.page_limit)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| call_error("Query", format!("{pk} {prefix}*"), e))?;
            for item in page.items() {
                records.push(read(item)?);
            }
            start_key = page.last_evaluated_key().cloned();
            if start_key.is_none() {
                return Ok(records);
            }
        }
    }

    async fn list_in_cluster<R: Record>(
        &self,
        cluster: &str,
    ) -> Result<Vec<Versioned<R>>, StoreError> {
        let mut specs = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SPECS_BY_CLUSTER_INDEX)
                .key_condition_expression("#cluster = :cluster")
                .expression_attribute_names("#cluster", SPEC_CLUSTER)
                .expression_attribute_values(":cluster", AttributeValue::S(cluster.to_string()))
                .set_limit(self.page_limit)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| {
                    call_error("Query", format!("{SPECS_BY_CLUSTER_INDEX} {cluster}"), e)
                })?;
            for item in page.items() {
                if item
                    .get(KIND)
                    .and_then(|k| k.as_s().ok())
                    .map(String::as_str)
                    == Some(R::KIND.as_str())
                {
                    specs.push(read(item)?);
                }
            }
            start_key = page.last_evaluated_key().cloned();
            if start_key.is_none() {
                return Ok(specs);
            }
        }
    }

    async fn remember_event(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<EventSeen, StoreError> {
        let key = ItemKey::event(event_id);
        let mut item = key_item(&key);
        item.insert(KIND.into(), AttributeValue::S("EVENT".into()));
        item.insert(VERSION.into(), AttributeValue::N("1".into()));
        item.insert(
            EXPIRES_AT.into(),
            AttributeValue::N((now + ttl).timestamp().to_string()),
        );
        // TTL deletes lazily (up to days later): an expired marker no longer counts.
        let answer = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #expires < :now")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(EventSeen::FirstTime),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => {
                Ok(EventSeen::Duplicate)
            }
            Err(error) => Err(call_error("PutItem", key.to_string(), error)),
        }
    }

    async fn book_wake(
        &self,
        cluster: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<WakeBooking, StoreError> {
        let key = ItemKey::wake(cluster);
        let mut item = key_item(&key);
        item.insert(KIND.into(), AttributeValue::S("WAKE".into()));
        item.insert(VERSION.into(), AttributeValue::N("1".into()));
        item.insert(
            WAKE_AT.into(),
            AttributeValue::N(at.timestamp_millis().to_string()),
        );
        // TTL removes a cluster's wake an hour after its moment (the cluster may be gone).
        item.insert(
            EXPIRES_AT.into(),
            AttributeValue::N((at + Duration::hours(1)).timestamp().to_string()),
        );
        let answer = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #wake <= :now OR #wake > :at")
            .expression_attribute_names("#wake", WAKE_AT)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.timestamp_millis().to_string()),
            )
            .expression_attribute_values(
                ":at",
                AttributeValue::N(at.timestamp_millis().to_string()),
            )
            .send()
            .await;
        match answer {
            Ok(_) => Ok(WakeBooking::Booked),
            Err(error) if error.code() == Some("ConditionalCheckFailedException") => {
                Ok(WakeBooking::EarlierPending)
            }
            Err(error) => Err(call_error("PutItem", key.to_string(), error)),
        }
    }

    async fn forget_event(&self, event_id: &str) -> Result<(), StoreError> {
        let key = ItemKey::event(event_id);
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_item(&key)))
            .send()
            .await
            .map_err(|e| call_error("DeleteItem", key.to_string(), e))?;
        Ok(())
    }
}

fn build_error(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Call {
        operation: "CreateTable",
        target: what.to_string(),
        code: "BuildError".into(),
        message: error.to_string(),
        retryable: false,
    }
}

/// Creates the table the way template.yaml declares it (for tests and the local demo) and waits until it is ACTIVE.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error(name, e))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| build_error(name, e))
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(SPECS_BY_CLUSTER_INDEX)
        .key_schema(key(SPEC_CLUSTER, KeyType::Hash)?)
        .key_schema(key(PK, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| build_error(SPECS_BY_CLUSTER_INDEX, e))?;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PK)?)
        .attribute_definitions(attribute(SK)?)
        .attribute_definitions(attribute(SPEC_CLUSTER)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(index)
        .send()
        .await
        .map_err(|e| call_error("CreateTable", table, e))?;
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| call_error("DescribeTable", table, e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    }
    Err(StoreError::Call {
        operation: "DescribeTable",
        target: table.to_string(),
        code: "Timeout".into(),
        message: "the table did not become ACTIVE within 60 s".into(),
        retryable: true,
    })
}
