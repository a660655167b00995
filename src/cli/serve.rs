//! The commands that run on this machine rather than against a server: `serve` (and its
//! `demo` alias), which builds the [`Application`] and runs it until Ctrl-C or SIGTERM after
//! printing a banner that tells a newcomer where the page is and how to get a token, and
//! `token`, which mints a JWT with the very key the server verifies with (same environment).

use super::Outcome;
use crate::auth::{self, Role, SigningKey, Verifier};
use crate::config::{JwtKeySource, Settings};
use crate::demo::{self, DemoOptions};
use crate::startup::{shutdown_signal, Application};
use crate::telemetry::LogFormat;
use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `offpeak serve`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Also run the demo market: simulated schedulers and startups trading.
    #[arg(long)]
    pub demo: bool,
    /// Demo: random seed.
    #[arg(long, requires = "demo")]
    pub seed: Option<u64>,
    /// Demo: simulated seconds per real second (1440 = a day a minute).
    #[arg(long, requires = "demo")]
    pub speed: Option<f64>,
    /// Log lines on stderr: readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `offpeak demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Random seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated seconds per real second (1440 = a day a minute).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Log lines on stderr: readable text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl From<DemoArgs> for ServeArgs {
    fn from(args: DemoArgs) -> ServeArgs {
        ServeArgs {
            demo: true,
            seed: args.seed,
            speed: args.speed,
            log_format: args.log_format,
        }
    }
}

/// `offpeak token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The account id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// buyer, supplier, viewer or admin.
    #[arg(long)]
    pub role: Role,
    /// Lifetime, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,
    /// Private key PEM, when the server verifies with OFFPEAK_JWT_PUBLIC_KEY_FILE.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

/// Runs the server on a multi-threaded runtime and maps its end to an exit code.
pub fn serve_blocking(args: ServeArgs) -> ExitCode {
    crate::telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "offpeak stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server (and the demo when asked) until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let demo_options = if args.demo {
        let defaults = DemoOptions::default();
        let options = DemoOptions {
            seed: args.seed.unwrap_or(defaults.seed),
            speed: args.speed.unwrap_or(defaults.speed),
            ..defaults
        };
        options.validate()?;
        Some(options)
    } else {
        None
    };
    let settings = Settings::from_env()?;
    tracing::info!(?settings, "starting offpeak {}", env!("CARGO_PKG_VERSION"));
    let app = Application::build(settings.clone()).await?;
    print_banner(&settings, app.port(), demo_options.is_some());
    let demo = match demo_options {
        Some(options) => Some(demo::start(app.state().sequencer.clone(), options)?),
        None => None,
    };
    app.run_until(async move {
        shutdown_signal().await;
        // The demo stops first, so its last command is answered before the sequencer drains.
        if let Some(demo) = demo {
            demo.stop().await;
        }
    })
    .await
}

/// Tells a newcomer where the page is and how to get a token.
fn print_banner(settings: &Settings, port: u16, demo: bool) {
    let host = match settings.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let url = format!("http://{host}:{port}");
    // Under `cargo run` the binary is not on the PATH: show the command that works.
    let me = if std::env::var_os("CARGO").is_some() {
        "cargo run -q --release --"
    } else {
        "offpeak"
    };
    let store = match &settings.database_url {
        Some(_) => "PostgreSQL (DATABASE_URL)".to_owned(),
        None => format!(
            "SQLite in {}",
            settings
                .data_dir
                .join(crate::store::sqlite::DATABASE_FILE)
                .display()
        ),
    };
    let env = match &settings.jwt.key {
        JwtKeySource::Generated if std::env::var_os("OFFPEAK_DATA_DIR").is_some() => {
            format!("OFFPEAK_DATA_DIR={} ", settings.data_dir.display())
        }
        _ => String::new(),
    };
    let key_file = match &settings.jwt.key {
        JwtKeySource::PublicKeyFile { .. } => " --key-file <private key PEM>",
        _ => "",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\noffpeak {} is running{}\n  page:   {url}/\n  API:    {url}/v1/pools\n  store:  {store}\n  \
         token:  export OFFPEAK_TOKEN=$({env}{me} token --sub acme --role buyer{key_file})\n  \
         try:    OFFPEAK_URL={url} {me} bid --pool h100-sxm.us-east --gpus 8 --hours 4 --max-price 1.20\n  \
         stop:   Ctrl-C\n",
        env!("CARGO_PKG_VERSION"),
        if demo {
            " with the demo market"
        } else {
            ""
        },
    );
    let _ = out.flush();
}

/// Prints a token for `offpeak token`; a configuration problem is a usage error.
pub fn print_token(args: TokenArgs) -> ExitCode {
    match token(&args.sub, args.role, args.ttl, args.key_file) {
        Ok(token) => {
            println!("{token}");
            Outcome::Ok.into()
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Usage.into()
        }
    }
}

/// Mints a token with the key the server would verify it with.
fn token(
    sub: &str,
    role: Role,
    ttl: humantime::Duration,
    key_file: Option<PathBuf>,
) -> anyhow::Result<String> {
    let settings = Settings::from_env()?;
    let verifier = Verifier::from_settings(&settings.jwt, &settings.data_dir)?;
    let key = match (&settings.jwt.key, key_file) {
        (JwtKeySource::Secret(secret), None) => {
            SigningKey::Secret(secret.expose().as_bytes().to_vec())
        }
        (JwtKeySource::Generated, None) => {
            SigningKey::Secret(auth::load_or_create_secret(&settings.data_dir)?.into_bytes())
        }
        (JwtKeySource::PublicKeyFile { .. }, Some(path)) => SigningKey::PrivatePem(
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (JwtKeySource::PublicKeyFile { .. }, None) => {
            bail!("the server verifies with a public key: pass --key-file <private key PEM>")
        }
        (_, Some(_)) => bail!("--key-file is only for OFFPEAK_JWT_PUBLIC_KEY_FILE deployments"),
    };
    auth::mint_token(
        &settings.jwt,
        &key,
        verifier.algorithm(),
        sub,
        role,
        ttl.into(),
    )
}
