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
    let client = mongodb::Client::with_options(options(&settings.url, app_name).await?)?;
    Ok(client.database(&settings.database))
}

/// The client options of `url`, with Sluice's timeouts where the URL names none.
async fn options(url: &str, app_name: &str) -> anyhow::Result<ClientOptions> {
    let mut opts = ClientOptions::parse(url)
        .await
        .with_context(|| format!("invalid mongo.url `{url}`"))?;
    opts.app_name = Some(app_name.to_owned());
    opts.connect_timeout.get_or_insert(Duration::from_secs(2));
    opts.server_selection_timeout
        .get_or_insert(Duration::from_secs(3));
    Ok(opts)
}

pub async fn ping(db: &Database) -> anyhow::Result<()> {
    db.run_command(doc! {"ping": 1})
        .await
        .context("MongoDB ping")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timeouts_default_to_seconds_and_the_url_may_name_its_own() {
        let plain = options("mongodb://127.0.0.1:27018/?directConnection=true", "t")
            .await
            .unwrap();
        assert_eq!(plain.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(plain.server_selection_timeout, Some(Duration::from_secs(3)));
        assert_eq!(plain.app_name.as_deref(), Some("t"));
        let named = options(
            "mongodb://127.0.0.1:27018/?connectTimeoutMS=1800000&serverSelectionTimeoutMS=500",
            "t",
        )
        .await
        .unwrap();
        assert_eq!(named.connect_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(
            named.server_selection_timeout,
            Some(Duration::from_millis(500))
        );
    }
}
