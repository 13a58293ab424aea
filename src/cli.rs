//! Command line, in Thanos style: `thanos-fanout [flags]` runs the service,
//! `thanos-fanout check` checks every remote endpoint and exits,
//! `thanos-fanout demo` runs it in front of three synthetic remotes (only in
//! a binary built with the `demo` feature; the container image's is not).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::ReloadFrom;
use crate::config::{Config, ConfigSource, LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "thanos-fanout",
    version,
    about = "One Thanos StoreAPI endpoint in front of many remote sidecars, reached over per-remote mutual TLS"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML configuration file.
    #[arg(long, global = true, env = "FANOUT_CONFIG")]
    config: Option<PathBuf>,
    /// StoreAPI listen address (overrides grpc.listen).
    #[arg(long = "grpc-address", global = true)]
    grpc_address: Option<String>,
    /// Metrics and probes listen address (overrides http.listen).
    #[arg(long = "http-address", global = true)]
    http_address: Option<String>,
    /// Log level or filter (overrides log.level).
    #[arg(long = "log.level", global = true)]
    log_level: Option<String>,
    /// Log format (overrides log.format).
    #[arg(long = "log.format", global = true, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and every remote endpoint, then exit: resolve each
    /// target, dial each endpoint with the TLS settings the service would
    /// use, call Info, and report each step (certificate, handshake, Info,
    /// latency) with the likely fix for each failure. Exit code 0 when every
    /// endpoint is fine, 1 when one failed, 2 when the config is invalid.
    Check {
        /// Report format: aligned text, or one JSON object for scripts.
        #[arg(long, value_enum, default_value_t = crate::check::Output::Human)]
        output: crate::check::Output,
    },
    /// Run in front of three synthetic remote clusters over mutual TLS.
    #[cfg(feature = "demo")]
    Demo {
        /// Run the self-check query, print it and exit.
        #[arg(long)]
        once: bool,
    },
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            grpc_listen: self.grpc_address.clone(),
            http_listen: self.http_address.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
        }
    }
}

/// Parses the command line and runs; the exit code tells how it went.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // The container image's binary is built without the demo: say so,
            // rather than leave the README's `demo` looking like a typo.
            #[cfg(not(feature = "demo"))]
            if asks_for_the_missing_demo(&e) {
                eprintln!(
                    "thanos-fanout: this binary was built without the demo (cargo feature `demo`, \
                     on by default); `cargo run --release -- demo` in the source tree runs it"
                );
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    let mut overrides = cli.overrides();
    #[cfg(feature = "demo")]
    if matches!(cli.command, Some(Command::Demo { .. })) {
        // The demo is for one machine: stay on loopback unless told otherwise.
        overrides
            .grpc_listen
            .get_or_insert_with(|| "127.0.0.1:10901".into());
        overrides
            .http_listen
            .get_or_insert_with(|| "127.0.0.1:10902".into());
    }
    if let Some(Command::Check { .. }) = cli.command {
        if cli.config.is_none() {
            eprintln!("thanos-fanout check: --config is required");
            return ExitCode::from(2);
        }
        // The report is the output; logs only for real trouble unless asked.
        overrides.log_level.get_or_insert_with(|| "error".into());
    }
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("thanos-fanout: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("thanos-fanout: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        // The span exporter's connection lives on the runtime.
        let _runtime = runtime.enter();
        match crate::telemetry::init(&config.log, &config.tracing) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("thanos-fanout: {e}");
                return ExitCode::from(2);
            }
        }
    };
    // The service reads the same layers again when the file changes or on SIGHUP.
    let reload = ReloadFrom {
        source: ConfigSource::Layered {
            file: cli.config.clone(),
            overrides,
        },
        sighup: true,
    };
    let result = match cli.command {
        Some(Command::Check { output }) => {
            let code = check(&runtime, &config, cli.config.as_deref(), output);
            telemetry.shutdown();
            return code;
        }
        #[cfg(feature = "demo")]
        Some(Command::Demo { once }) => runtime
            .block_on(crate::demo::run(config, once))
            .map_err(|e| e.to_string()),
        None => runtime.block_on(async move {
            match crate::app::start_with(config, reload).await {
                Ok(running) => running
                    .run_until(crate::app::shutdown_signal)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("thanos-fanout: {e}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

/// Whether the command line failed to parse only because it asks for `demo`
/// of a binary built without it.
#[cfg(not(feature = "demo"))]
fn asks_for_the_missing_demo(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    matches!(
        e.get(ContextKind::InvalidSubcommand),
        Some(ContextValue::String(command)) if command == "demo"
    )
}

/// `thanos-fanout check`: prints the report; exit code 1 if any endpoint failed.
fn check(
    runtime: &tokio::runtime::Runtime,
    config: &crate::config::ValidConfig,
    path: Option<&std::path::Path>,
    output: crate::check::Output,
) -> ExitCode {
    let report = runtime.block_on(crate::check::run(config, path));
    match output {
        crate::check::Output::Human => print!("{}", crate::check::human(&report)),
        crate::check::Output::Json => println!("{}", crate::check::json(&report)),
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_a_subcommand_only_when_built_with_it() {
        let parsed = Cli::try_parse_from(["thanos-fanout", "--config", "f.yaml", "demo", "--once"]);
        #[cfg(feature = "demo")]
        assert!(
            matches!(
                parsed,
                Ok(Cli {
                    command: Some(Command::Demo { once: true }),
                    ..
                })
            ),
            "{parsed:?}"
        );
        #[cfg(not(feature = "demo"))]
        {
            assert!(asks_for_the_missing_demo(&parsed.expect_err("no demo")));
            let typo = Cli::try_parse_from(["thanos-fanout", "dmo"]).expect_err("no such command");
            assert!(!asks_for_the_missing_demo(&typo));
            let help = Cli::try_parse_from(["thanos-fanout", "--help"]).expect_err("help");
            assert!(!asks_for_the_missing_demo(&help));
        }
    }
}
