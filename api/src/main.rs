use clap::Parser;
use sluice_api::cli::{Cli, Command};
use sluice_api::startup::Application;
use sluice_shared::config::Settings;
use sluice_shared::telemetry::{get_subscriber, init_subscriber};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // One log line per request costs more than the request at 50k/s: request spans are
            // logged only when RUST_LOG asks for them (`RUST_LOG=info,tracing_actix_web=info`).
            init_subscriber(get_subscriber(
                "sluice-api",
                "info,tracing_actix_web=warn",
                std::io::stdout,
            ));
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        admin => {
            // Admin commands print their result on stdout; their logs go to stderr, warnings only.
            init_subscriber(get_subscriber("sluice-api", "warn", std::io::stderr));
            sluice_api::cli::run(admin, settings).await
        }
    }
}
