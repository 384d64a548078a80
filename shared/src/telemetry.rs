//! Structured logs: bunyan JSON through `tracing-bunyan-formatter`, filtered by `RUST_LOG`.
use tracing::subscriber::set_global_default;
use tracing::Subscriber;
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{layer::SubscriberExt, EnvFilter, Registry};

/// A subscriber writing bunyan JSON to `sink`; `RUST_LOG` overrides `default_filter`.
pub fn get_subscriber<Sink>(
    name: &str,
    default_filter: &str,
    sink: Sink,
) -> impl Subscriber + Send + Sync
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    Registry::default()
        .with(filter)
        .with(JsonStorageLayer)
        .with(BunyanFormattingLayer::new(name.to_owned(), sink))
}

/// Installs the subscriber for the whole process; call once.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    let _ = tracing_log::LogTracer::init();
    let _ = set_global_default(subscriber);
}

/// For tests: logs to stdout only with `TEST_LOG=1`, and never twice.
pub fn init_test_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            init_subscriber(get_subscriber("test", "info", std::io::stdout));
        } else {
            init_subscriber(get_subscriber("test", "info", std::io::sink));
        }
    });
}
