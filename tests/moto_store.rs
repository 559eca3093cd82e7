//! The DynamoDB `Store` adapter against moto: the shared store contract over real
//! HTTP, query pages crossed, and the 16-way claim race.

mod common;

use std::sync::Arc;

use ecs_daemons::store::{create_table, DynamoStore};
use ecs_daemons_sim::store_contract::{check_claim_race, check_store_contract};

async fn fresh_store() -> DynamoStore {
    let config = common::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = common::unique("ecs-daemons");
    create_table(&client, &table).await.expect("create table");
    DynamoStore::new(client, table)
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract_across_pages() {
    // 7 items per page: 40 slots take 6 query pages, 3 specs listed across pages too.
    let store = fresh_store().await.with_page_limit(7);
    check_store_contract(&store, "prod", 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_claims_of_one_slot_have_one_winner() {
    let store = Arc::new(fresh_store().await);
    check_claim_race(store, "prod", 16).await;
}

#[tokio::test]
async fn missing_table_is_a_clear_error() {
    let config = common::sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), "no-such-table");
    let error = ecs_daemons::store::Store::get::<ecs_daemons::spec::DaemonSpec>(
        &store,
        &ecs_daemons::store::ItemKey::spec("prod", "agent"),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("GetItem") && text.contains("ResourceNotFoundException"),
        "{text}"
    );
}
