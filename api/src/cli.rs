//! The `sluice-api` command line: the server, migrations, and admin commands for accounts and keys.
use std::path::Path;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_shared::config::Settings;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-api",
    about = "Sluice ingestion api and its admin commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply the PostgreSQL migrations.
    Migrate,
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Ensure the demo account and key exist; the key is written to `--key-file` once and read
    /// back from it afterwards (a key cannot be shown twice).
    Demo {
        #[arg(long, default_value = "demo@sluice.local")]
        email: String,
        /// The demo account's password (for the dashboard), set if it has none.
        #[arg(long, default_value = "sluice-demo-password")]
        password: String,
        #[arg(long)]
        key_file: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account; prints its id.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for an account; prints the key (shown only this once).
    Create {
        #[arg(long)]
        account: Uuid,
        #[arg(long)]
        name: String,
    },
    /// Revoke a key everywhere.
    Revoke {
        #[arg(long)]
        id: Uuid,
    },
    /// List an account's keys (never their secrets).
    List {
        #[arg(long)]
        account: Uuid,
    },
}

/// Runs an admin command (anything but `serve`), printing its result on stdout.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    let pool = store::pool(&settings.postgres)?;
    match command {
        Command::Serve => anyhow::bail!("`serve` is not an admin command"),
        Command::Migrate => store::migrate(&pool).await,
        Command::Accounts {
            command: AccountsCommand::Create { email },
        } => {
            let id = store::create_account(&pool, &email, None).await?;
            println!("{id}");
            Ok(())
        }
        Command::Keys { command } => keys(&settings, &pool, command).await,
        Command::Demo {
            email,
            password,
            key_file,
        } => demo(&pool, &email, &password, &key_file).await,
    }
}

async fn keys(settings: &Settings, pool: &PgPool, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { account, name } => {
            let (_, key) = store::create_key(pool, account, &name).await?;
            println!("{key}");
        }
        KeysCommand::Revoke { id } => {
            let redis = sluice_shared::redis::connect(&settings.redis).await?;
            // The tombstone lives as long as the api's setting says (it must outlast the
            // stale-if-error window), as it does when the api revokes.
            let ttl = settings.api.key_tombstone_ttl_secs;
            let revoked = crate::revocation::revoke(pool, &redis, id, None, ttl)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !revoked {
                anyhow::bail!("no live key with id {id}");
            }
            println!("revoked {id}");
        }
        KeysCommand::List { account } => {
            for k in store::list_keys(pool, account).await? {
                println!("{}", serde_json::to_string(&k)?);
            }
        }
    }
    Ok(())
}

/// The demo account (with a password, for the dashboard) and its key, written to `key_file`
/// once and read back from it afterwards.
async fn demo(pool: &PgPool, email: &str, password: &str, key_file: &Path) -> anyhow::Result<()> {
    let account = match store::find_account_by_email(pool, email).await? {
        Some(id) => id,
        None => store::create_account(pool, email, None).await?,
    };
    let hash = crate::accounts::hash_password(password)?;
    store::set_password_if_none(pool, account, &hash).await?;
    if key_file.exists() {
        print!("{}", std::fs::read_to_string(key_file)?);
        return Ok(());
    }
    let (_, key) = store::create_key(pool, account, "demo").await?;
    std::fs::write(key_file, format!("{key}\n"))
        .with_context(|| format!("writing {}", key_file.display()))?;
    println!("{key}");
    Ok(())
}
