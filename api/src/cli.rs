//! The `sluice-api` command line: the server, migrations, and admin commands for accounts and keys.
use clap::{Parser, Subcommand};
use uuid::Uuid;

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
