//! The `offpeak` binary: `offpeak serve` (the default) and `offpeak token`.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use offpeak::auth::{self, Role, SigningKey, Verifier};
use offpeak::config::{JwtKeySource, Settings};
use offpeak::startup::Application;
use std::path::PathBuf;

/// offpeak: a spot market for idle GPU-hours.
#[derive(Parser)]
#[command(name = "offpeak", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server (configured by environment variables; see the README).
    Serve,
    /// Print a signed JWT for an account, using the server's configured key.
    Token {
        /// The account id (`sub`).
        #[arg(long)]
        sub: String,
        /// buyer, supplier, viewer or admin.
        #[arg(long)]
        role: Role,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Private key PEM, when the server verifies with OFFPEAK_JWT_PUBLIC_KEY_FILE.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offpeak::telemetry::init();
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    match cli.command.unwrap_or(Commands::Serve) {
        Commands::Serve => {
            tracing::info!(?settings, "starting offpeak {}", env!("CARGO_PKG_VERSION"));
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Commands::Token {
            sub,
            role,
            ttl,
            key_file,
        } => {
            let verifier = Verifier::from_settings(&settings.jwt, &settings.data_dir)?;
            let key = match (&settings.jwt.key, key_file) {
                (JwtKeySource::Secret(secret), None) => {
                    SigningKey::Secret(secret.expose().as_bytes().to_vec())
                }
                (JwtKeySource::Generated, None) => SigningKey::Secret(
                    auth::load_or_create_secret(&settings.data_dir)?.into_bytes(),
                ),
                (JwtKeySource::PublicKeyFile { .. }, Some(path)) => SigningKey::PrivatePem(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                ),
                (JwtKeySource::PublicKeyFile { .. }, None) => {
                    bail!(
                        "the server verifies with a public key: pass --key-file <private key PEM>"
                    )
                }
                (_, Some(_)) => {
                    bail!("--key-file is only for OFFPEAK_JWT_PUBLIC_KEY_FILE deployments")
                }
            };
            let token = auth::mint_token(
                &settings.jwt,
                &key,
                verifier.algorithm(),
                &sub,
                role,
                ttl.into(),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
