use clap::{Parser, Subcommand};
use sluice_shared::config::Settings;
use sluice_shared::telemetry::{get_subscriber, init_subscriber};
use sluice_store::{replay, DeadLetterReason, Owner, ReplayFilter};
use sluice_worker::startup::Application;
use sluice_worker::APP_NAME;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = APP_NAME,
    about = "Sluice stream consumer and its dead-letter tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the stream (the default).
    Run,
    /// Dead-letter tools.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Put dead letters back on the stream (each once; a second replay adds nothing).
    Replay {
        /// Only this reason: invalid, write_rejected or poison.
        #[arg(long)]
        reason: Option<DeadLetterReason>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Only dead letters from this time on (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Print dead letters as JSON lines, newest first (tenants see theirs in the dashboard;
    /// letters no account can be found for are visible only here and in the metrics).
    List {
        /// Only letters that could not be attributed to an account.
        #[arg(long)]
        unattributed: bool,
        /// Only this reason: invalid, write_rejected or poison.
        #[arg(long)]
        reason: Option<DeadLetterReason>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            init_subscriber(get_subscriber(APP_NAME, "info", std::io::stdout));
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Dlq {
            command:
                DlqCommand::List {
                    unattributed,
                    reason,
                    limit,
                },
        } => {
            init_subscriber(get_subscriber(APP_NAME, "warn", std::io::stderr));
            let db = sluice_store::connect(&settings.mongo, sluice_worker::APP_NAME).await?;
            let owner = if unattributed {
                Owner::Unattributed
            } else {
                Owner::Any
            };
            for letter in sluice_store::list_dead_letters(&db, owner, reason, limit).await? {
                println!(
                    "{}",
                    mongodb::bson::to_bson(&letter)?.into_relaxed_extjson()
                );
            }
            Ok(())
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    reason,
                    account,
                    since,
                },
        } => {
            init_subscriber(get_subscriber(APP_NAME, "warn", std::io::stderr));
            let db = sluice_store::connect(&settings.mongo, sluice_worker::APP_NAME).await?;
            let redis = sluice_shared::redis::connect(&settings.redis).await?;
            let filter = ReplayFilter {
                reason,
                account,
                since,
                until: None,
            };
            let enqueuer = sluice_shared::enqueue::Enqueuer::new(
                redis,
                settings.redis.layout(),
                settings.api.dedup_window_secs,
            );
            let report = replay(&db, &enqueuer, &filter).await?;
            println!(
                "{}",
                serde_json::json!({"replayed": report.replayed, "unreplayable": report.unreplayable})
            );
            Ok(())
        }
    }
}
