use anyhow::Context;
use clap::Parser;
use sluice_api::cli::{AccountsCommand, Cli, Command, KeysCommand};
use sluice_api::startup::Application;
use sluice_api::{auth, store};
use sluice_shared::config::Settings;
use sluice_shared::telemetry::{get_subscriber, init_subscriber};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    let command = cli.command.unwrap_or(Command::Serve);
    // Admin commands print their result on stdout; their logs go to stderr, warnings only.
    if matches!(command, Command::Serve) {
        // One log line per request costs more than the request at 50k/s: request spans are
        // logged only when RUST_LOG asks for them (`RUST_LOG=info,tracing_actix_web=info`).
        init_subscriber(get_subscriber(
            "sluice-api",
            "info,tracing_actix_web=warn",
            std::io::stdout,
        ));
    } else {
        init_subscriber(get_subscriber("sluice-api", "warn", std::io::stderr));
    }
    match command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => store::migrate(&store::pool(&settings.postgres)?).await,
        Command::Accounts {
            command: AccountsCommand::Create { email },
        } => {
            let id = store::create_account(&store::pool(&settings.postgres)?, &email, None).await?;
            println!("{id}");
            Ok(())
        }
        Command::Keys { command } => keys(settings, command).await,
        Command::Demo {
            email,
            password,
            key_file,
        } => {
            let pool = store::pool(&settings.postgres)?;
            let account = match store::find_account_by_email(&pool, &email).await? {
                Some(id) => id,
                None => store::create_account(&pool, &email, None).await?,
            };
            let hash = sluice_api::accounts::hash_password(&password)?;
            store::set_password_if_none(&pool, account, &hash).await?;
            if key_file.exists() {
                print!("{}", std::fs::read_to_string(&key_file)?);
                return Ok(());
            }
            let (_, key) = store::create_key(&pool, account, "demo").await?;
            std::fs::write(&key_file, format!("{key}\n"))
                .with_context(|| format!("writing {}", key_file.display()))?;
            println!("{key}");
            Ok(())
        }
    }
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = store::pool(&settings.postgres)?;
    match command {
        KeysCommand::Create { account, name } => {
            let (_, key) = store::create_key(&pool, account, &name).await?;
            println!("{key}");
        }
        KeysCommand::Revoke { id } => {
            let redis = sluice_shared::redis::connect(&settings.redis).await?;
            // The tombstone lives as long as the api's setting says (it must outlast the
            // stale-if-error window), as it does when the api revokes.
            let ttl = settings.api.key_tombstone_ttl_secs;
            let revoked = auth::revoke_with_ttl(&pool, &redis, id, None, ttl)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !revoked {
                anyhow::bail!("no live key with id {id}");
            }
            println!("revoked {id}");
        }
        KeysCommand::List { account } => {
            for k in store::list_keys(&pool, account).await? {
                println!("{}", serde_json::to_string(&k)?);
            }
        }
    }
    Ok(())
}
