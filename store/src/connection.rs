//! The MongoDB connection: one client per service, named after it (the server's logs and
//! `currentOp` show who is asking).
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::Database;
use sluice_shared::config::MongoSettings;

/// The database of `settings`, through a client whose app name is `app_name` (the calling
/// service: `sluice-worker`, `sluice-analytics`, `sluice-api`). A down server is noticed fast: a
/// connect (and the monitor's heartbeat) times out after 2 s, a server selection after 3 s, unless
/// `mongo.url` sets `connectTimeoutMS` / `serverSelectionTimeoutMS` itself.
pub async fn connect(settings: &MongoSettings, app_name: &str) -> anyhow::Result<Database> {
    let mut opts = ClientOptions::parse(&settings.url)
        .await
        .with_context(|| format!("invalid mongo.url `{}`", settings.url))?;
    opts.app_name = Some(app_name.to_owned());
    opts.connect_timeout.get_or_insert(Duration::from_secs(2));
    opts.server_selection_timeout
        .get_or_insert(Duration::from_secs(3));
    let client = mongodb::Client::with_options(opts)?;
    Ok(client.database(&settings.database))
}

pub async fn ping(db: &Database) -> anyhow::Result<()> {
    db.run_command(doc! {"ping": 1})
        .await
        .context("MongoDB ping")?;
    Ok(())
}
