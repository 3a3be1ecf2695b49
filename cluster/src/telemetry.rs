//! Tracing set-up: human-readable lines by default, JSON with a flag, the
//! filter from `--log` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per event.
    Json,
}

/// Logging flags every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long = "log-format",
        env = "CHATROOM_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG when unset.
    #[arg(long = "log", env = "CHATROOM_LOG", default_value = "info")]
    pub filter: String,
}

/// Installs the global subscriber. Fails if one is already installed.
pub fn init(args: &LogArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if args.filter == "info" => EnvFilter::try_new(from_env)?,
        _ => EnvFilter::try_new(&args.filter)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
}
