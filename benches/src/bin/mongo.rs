//! `sluice-bench-mongo`: the MongoDB server's own `insert_many(100)` rate into a collection with the
//! same indexes as `sluice.events`, the ceiling the worker's drain rate is compared with.
use std::time::Instant;

use mongodb::bson::{doc, DateTime as BsonDate, Document};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sluice_shared::config::Settings::load()?;
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let db = mongodb::Client::with_uri_str(&settings.mongo.url)
        .await?
        .database(&format!(
            "sluice_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
    let events = db.collection::<Document>("events");
    for keys in [
        doc! {"accountId": 1, "timestamp": -1, "eventType": 1},
        doc! {"accountId": 1, "userId": 1, "timestamp": -1},
    ] {
        events
            .create_index(mongodb::IndexModel::builder().keys(keys).build())
            .await?;
    }
    let started = Instant::now();
    for b in 0..total / 100 {
        let docs: Vec<Document> = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                doc! {"_id": format!("acc:{n}"), "eventId": n.to_string(), "accountId": "acc",
                "eventType": format!("type_{}", n % 20), "userId": format!("user-{}", n % 10_000),
                "timestamp": BsonDate::now(), "receivedAt": BsonDate::now(),
                "properties": {"plan": "pro", "amount": (n % 500) as i64}}
            })
            .collect();
        events.insert_many(docs).ordered(false).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"docs\": {total}, \"seconds\": {secs:.2}, \"docs_per_sec\": {:.0}}}",
        total as f64 / secs
    );
    db.drop().await?;
    Ok(())
}
