use sluice_analytics::startup::Application;
use sluice_shared::config::Settings;
use sluice_shared::telemetry::{get_subscriber, init_subscriber};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    init_subscriber(get_subscriber("sluice-analytics", "info", std::io::stdout));
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
