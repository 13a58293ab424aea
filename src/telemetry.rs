//! Logging: a tracing subscriber writing logfmt or JSON to stderr.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a bad level is reported, not fatal.
pub fn init(log: &LogConfig) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(&log.level).map_err(|e| format!("log.level {:?}: {e}", log.level))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("installing the log subscriber: {e}"))
}
