//! The `offpeak` command line: the server (`serve`, `serve --demo`, `demo`), `token`, and a
//! client of the REST API for buyers and suppliers (`book`, `bid`, `orders`, `cancel`,
//! `leases`, `release-lease`, `capacity ...`).
//!
//! The client reads `OFFPEAK_URL` (default `http://127.0.0.1:8080`) and `OFFPEAK_TOKEN`, prints
//! aligned tables (or the server's JSON with `--json`), writes errors to stderr with the
//! server's code and message, and exits with a code scripts can trust (see [`Outcome`]):
//! 0 ok, 1 refused by the server (4xx), 2 usage, 3 unreachable or server error (5xx).

pub mod client;
pub mod table;

use crate::auth::{self, Role, SigningKey, Verifier};
use crate::config::{JwtKeySource, Settings};
use crate::demo::{self, DemoOptions};
use crate::money::parse_usd;
use crate::startup::{shutdown_signal, Application};
use crate::telemetry::LogFormat;
use crate::timestamp::{format_rfc3339, now_ms};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
pub use client::{CliError, Client, Outcome};
use matching_engine::TimeMs;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use table::Table;

/// offpeak: a spot market for idle GPU-hours.
#[derive(Parser, Debug)]
#[command(
    name = "offpeak",
    version,
    about,
    after_help = "Client commands read OFFPEAK_URL (default http://127.0.0.1:8080) and \
        OFFPEAK_TOKEN.\nExit codes: 0 ok, 1 refused by the server (4xx), 2 usage error, \
        3 server unreachable or failing (5xx)."
)]
pub struct Cli {
    /// Print the server's JSON instead of a table (client commands).
    #[arg(long, global = true)]
    pub json: bool,
    /// The server's base URL (default: OFFPEAK_URL, else http://127.0.0.1:8080).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (configured by environment variables; see the README).
    Serve(ServeArgs),
    /// Run the server with the demo market: `serve --demo`.
    Demo(DemoArgs),
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
    /// List the pools with their best prices and capacity.
    Pools,
    /// Show a pool's order book.
    Book {
        /// The pool, e.g. h100-sxm.us-east.
        pool: String,
        /// Price levels per side.
        #[arg(long, default_value_t = 10)]
        depth: u32,
    },
    /// Place a bid (role buyer).
    Bid(BidArgs),
    /// List your orders (role buyer).
    Orders {
        /// Only open, filled, cancelled or expired orders.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Cancel an order (role buyer).
    Cancel {
        /// The order id.
        id: String,
    },
    /// List your leases (role buyer).
    Leases {
        /// Only active, preempting, preempted, completed or released leases.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// End one of your leases now (role buyer).
    ReleaseLease {
        /// The lease id.
        id: String,
    },
    /// Release, reclaim and list capacity blocks (role supplier).
    #[command(subcommand)]
    Capacity(CapacityCommand),
}

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

/// `offpeak bid`.
#[derive(Args, Debug)]
pub struct BidArgs {
    /// The pool, e.g. h100-sxm.us-east.
    #[arg(long)]
    pub pool: String,
    /// GPUs wanted.
    #[arg(long)]
    pub gpus: u32,
    /// Lease length needed, in hours (e.g. 4 or 0.5).
    #[arg(
        long,
        required_unless_present = "duration_s",
        conflicts_with = "duration_s"
    )]
    pub hours: Option<f64>,
    /// Lease length needed, in seconds.
    #[arg(long)]
    pub duration_s: Option<u32>,
    /// Limit price per GPU-hour in USD, e.g. 1.20.
    #[arg(long, value_name = "USD")]
    pub max_price: String,
    /// The least GPUs one execution may give (default: all of --gpus).
    #[arg(long)]
    pub min_gpus: Option<u32>,
    /// The longest lease wanted, in hours (default: --hours).
    #[arg(long)]
    pub max_hours: Option<f64>,
    /// Immediate or cancel: take what is there now, cancel the rest.
    #[arg(long, conflicts_with = "fok")]
    pub ioc: bool,
    /// Fill or kill: all at once or nothing.
    #[arg(long)]
    pub fok: bool,
    /// Bid again for the GPUs of a preempted lease.
    #[arg(long)]
    pub persistent: bool,
    /// Idempotency key: the same key returns the first result.
    #[arg(long)]
    pub client_order_id: Option<String>,
}

/// `offpeak capacity ...`.
#[derive(Subcommand, Debug)]
pub enum CapacityCommand {
    /// Release a block of idle GPUs at a reserve price for a window.
    Release {
        /// Your id for the block (unique among your blocks).
        #[arg(long)]
        block_id: String,
        /// The pool, e.g. h100-sxm.us-east.
        #[arg(long)]
        pool: String,
        /// GPUs released.
        #[arg(long)]
        gpus: u32,
        /// Lowest price per GPU-hour accepted, in USD.
        #[arg(long, value_name = "USD")]
        reserve_price: String,
        /// The window's length from now, in hours.
        #[arg(long, required_unless_present = "until", conflicts_with = "until")]
        hours: Option<f64>,
        /// The window's end, RFC 3339 (e.g. 2030-01-02T03:04:05Z).
        #[arg(long)]
        until: Option<String>,
        /// A machine of the block as NAME:GPUS (repeat; their GPUs must add up to --gpus).
        #[arg(long = "node", value_name = "NAME:GPUS")]
        nodes: Vec<String>,
    },
    /// Take GPUs of a block back; leases on them get the pool's notice.
    Reclaim {
        /// The block id.
        block_id: String,
        /// GPUs wanted back.
        #[arg(long)]
        gpus: u32,
        /// Notice in seconds (default: the pool's).
        #[arg(long)]
        notice_s: Option<u32>,
        /// Allow a notice shorter than the pool's promise (recorded).
        #[arg(long)]
        emergency: bool,
    },
    /// Warn a block's buyers that a reclaim is coming.
    Forecast {
        /// The block id.
        block_id: String,
        /// When, from now (e.g. 10m, 2h).
        #[arg(long = "in", value_name = "DURATION")]
        within: humantime::Duration,
    },
    /// List your blocks.
    List {
        /// Only pending, open or closed blocks.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// Runs the parsed command line and returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve_blocking(ServeArgs::default()),
        Some(Command::Serve(args)) => serve_blocking(args),
        Some(Command::Demo(args)) => serve_blocking(ServeArgs {
            demo: true,
            seed: args.seed,
            speed: args.speed,
            log_format: args.log_format,
        }),
        Some(Command::Token {
            sub,
            role,
            ttl,
            key_file,
        }) => match token(&sub, role, ttl, key_file) {
            Ok(token) => {
                println!("{token}");
                Outcome::Ok.into()
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Outcome::Usage.into()
            }
        },
        Some(command) => client_blocking(cli.json, cli.url.as_deref(), command),
    }
}

fn serve_blocking(args: ServeArgs) -> ExitCode {
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

fn client_blocking(json: bool, url: Option<&str>, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Outcome::Unavailable.into();
        }
    };
    let result = runtime.block_on(async {
        let client = Client::from_env(url)?;
        execute(&client, json, command).await
    });
    match result {
        Ok(()) => Outcome::Ok.into(),
        Err(error) => {
            match (&error.body, json) {
                (Some(body), true) => eprintln!("{body}"),
                _ => eprintln!("error: {}", error.message),
            }
            error.outcome.into()
        }
    }
}

/// Hours as whole seconds: positive, finite, at most `u32::MAX`.
fn hours_to_seconds(hours: f64, flag: &str) -> Result<u32, CliError> {
    let seconds = hours * 3600.0;
    if !seconds.is_finite() || seconds < 1.0 || seconds > f64::from(u32::MAX) {
        return Err(CliError::usage(format!(
            "{flag} must be a positive number of hours (got {hours})"
        )));
    }
    Ok(seconds.round() as u32)
}

fn price(text: &str, flag: &str) -> Result<String, CliError> {
    parse_usd(text.trim())
        .map(|_| text.trim().to_owned())
        .map_err(|e| CliError::usage(format!("{flag} {text:?}: {e}")))
}

fn list_query(status: Option<String>, limit: Option<u32>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(status) = status {
        query.push(("status", status));
    }
    if let Some(limit) = limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::usage(format!("cannot print the answer: {e}")))?;
    println!("{text}");
    Ok(())
}

fn print_table(table: &Table) {
    let mut out = std::io::stdout().lock();
    let _ = table.write(&mut out);
    let _ = out.flush();
}

async fn execute(client: &Client, json: bool, command: Command) -> Result<(), CliError> {
    let (answer, show): (Value, fn(&Value)) = match command {
        Command::Pools => (
            client
                .send(Method::GET, client.url(&["v1", "pools"], &[]), None, false)
                .await?,
            show_pools,
        ),
        Command::Book { pool, depth } => (
            client
                .send(
                    Method::GET,
                    client.url(
                        &["v1", "pools", &pool, "book"],
                        &[("depth", depth.to_string())],
                    ),
                    None,
                    false,
                )
                .await?,
            show_book,
        ),
        Command::Bid(args) => {
            let body = bid_body(&args)?;
            (
                client
                    .send(
                        Method::POST,
                        client.url(&["v1", "orders"], &[]),
                        Some(&body),
                        true,
                    )
                    .await?,
                show_order_with_leases,
            )
        }
        Command::Orders { status, limit } => (
            client
                .send(
                    Method::GET,
                    client.url(&["v1", "orders"], &list_query(status, limit)),
                    None,
                    true,
                )
                .await?,
            show_orders,
        ),
        Command::Cancel { id } => (
            client
                .send(
                    Method::DELETE,
                    client.url(&["v1", "orders", &id], &[]),
                    None,
                    true,
                )
                .await?,
            show_order_with_leases,
        ),
        Command::Leases { status, limit } => (
            client
                .send(
                    Method::GET,
                    client.url(&["v1", "leases"], &list_query(status, limit)),
                    None,
                    true,
                )
                .await?,
            show_leases,
        ),
        Command::ReleaseLease { id } => (
            client
                .send(
                    Method::POST,
                    client.url(&["v1", "leases", &id, "release"], &[]),
                    None,
                    true,
                )
                .await?,
            show_one_lease,
        ),
        Command::Capacity(command) => capacity(client, command).await?,
        Command::Serve(_) | Command::Demo(_) | Command::Token { .. } => {
            return Err(CliError::usage("not a client command"))
        }
    };
    if json {
        print_json(&answer)
    } else {
        show(&answer);
        Ok(())
    }
}

fn bid_body(args: &BidArgs) -> Result<Value, CliError> {
    let duration_s = match (args.hours, args.duration_s) {
        (Some(hours), None) => hours_to_seconds(hours, "--hours")?,
        (None, Some(seconds)) => seconds,
        _ => return Err(CliError::usage("give either --hours or --duration-s")),
    };
    let mut body = Map::new();
    body.insert("pool".into(), json!(args.pool));
    body.insert("gpus".into(), json!(args.gpus));
    body.insert(
        "price".into(),
        json!(price(&args.max_price, "--max-price")?),
    );
    body.insert("duration_s".into(), json!(duration_s));
    if let Some(hours) = args.max_hours {
        body.insert(
            "max_duration_s".into(),
            json!(hours_to_seconds(hours, "--max-hours")?),
        );
    }
    if let Some(min) = args.min_gpus {
        body.insert("min_gpus".into(), json!(min));
    }
    let tif = if args.ioc {
        "ioc"
    } else if args.fok {
        "fok"
    } else {
        "gtc"
    };
    body.insert("tif".into(), json!(tif));
    if args.persistent {
        body.insert("persistent".into(), json!(true));
    }
    if let Some(id) = &args.client_order_id {
        body.insert("client_order_id".into(), json!(id));
    }
    Ok(Value::Object(body))
}

fn parse_node(text: &str) -> Result<Value, CliError> {
    let parsed = text
        .rsplit_once(':')
        .and_then(|(name, gpus)| Some((name, gpus.parse::<u32>().ok()?)));
    match parsed {
        Some((name, gpus)) if !name.is_empty() => Ok(json!({"node": name, "gpus": gpus})),
        _ => Err(CliError::usage(format!(
            "--node {text:?} must be NAME:GPUS, e.g. rack12-n3:8"
        ))),
    }
}

async fn capacity(
    client: &Client,
    command: CapacityCommand,
) -> Result<(Value, fn(&Value)), CliError> {
    Ok(match command {
        CapacityCommand::Release {
            block_id,
            pool,
            gpus,
            reserve_price,
            hours,
            until,
            nodes,
        } => {
            let until = match (hours, until) {
                (Some(hours), None) => {
                    let seconds = hours_to_seconds(hours, "--hours")?;
                    format_rfc3339(TimeMs(now_ms().0 + i64::from(seconds) * 1000))
                }
                (None, Some(until)) => {
                    crate::timestamp::parse_rfc3339(&until)
                        .map_err(|e| CliError::usage(format!("--until: {e}")))?;
                    until
                }
                _ => return Err(CliError::usage("give either --hours or --until")),
            };
            let nodes = nodes
                .iter()
                .map(|n| parse_node(n))
                .collect::<Result<Vec<_>, _>>()?;
            let body = json!({
                "block_id": block_id,
                "pool": pool,
                "gpus": gpus,
                "reserve_price": price(&reserve_price, "--reserve-price")?,
                "available_until": until,
                "nodes": nodes,
            });
            (
                client
                    .send(
                        Method::POST,
                        client.url(&["v1", "capacity"], &[]),
                        Some(&body),
                        true,
                    )
                    .await?,
                show_one_block,
            )
        }
        CapacityCommand::Reclaim {
            block_id,
            gpus,
            notice_s,
            emergency,
        } => {
            let mut body = json!({"gpus": gpus, "emergency": emergency});
            if let Some(notice) = notice_s {
                body["notice_s"] = json!(notice);
            }
            (
                client
                    .send(
                        Method::POST,
                        client.url(&["v1", "capacity", &block_id, "reclaim"], &[]),
                        Some(&body),
                        true,
                    )
                    .await?,
                show_reclaim,
            )
        }
        CapacityCommand::Forecast { block_id, within } => {
            let within = std::time::Duration::from(within);
            let ms = i64::try_from(within.as_millis())
                .map_err(|_| CliError::usage("--in is too long"))?;
            let body = json!({"reclaim_at": format_rfc3339(TimeMs(now_ms().0.saturating_add(ms)))});
            (
                client
                    .send(
                        Method::POST,
                        client.url(&["v1", "capacity", &block_id, "forecast"], &[]),
                        Some(&body),
                        true,
                    )
                    .await?,
                show_one_block,
            )
        }
        CapacityCommand::List { status, limit } => (
            client
                .send(
                    Method::GET,
                    client.url(&["v1", "capacity"], &list_query(status, limit)),
                    None,
                    true,
                )
                .await?,
            show_blocks,
        ),
    })
}

fn show_pools(answer: &Value) {
    let mut t = Table::new(&[
        "POOL",
        "BID",
        "ASK",
        "LAST",
        "IDLE",
        "LEASED",
        "RECLAIMING",
        "NOTICE",
    ]);
    for p in answer["pools"].as_array().into_iter().flatten() {
        t.row(vec![
            table::text(&p["id"]),
            table::text(&p["best_bid"]),
            table::text(&p["best_ask"]),
            table::text(&p["last_price"]),
            table::text(&p["idle_gpus"]),
            table::text(&p["leased_gpus"]),
            table::text(&p["reclaiming_gpus"]),
            table::duration(&p["notice_s"]),
        ]);
    }
    print_table(&t);
}

fn show_book(answer: &Value) {
    println!("{}  (seq {})", table::text(&answer["pool"]), answer["seq"]);
    let mut t = Table::new(&["SIDE", "PRICE", "GPUS", "ORDERS"]);
    // Asks from the highest down to the best, then bids from the best down: the spread sits
    // in the middle, as on an exchange ladder.
    let asks: Vec<&Value> = answer["asks"].as_array().into_iter().flatten().collect();
    for level in asks.iter().rev() {
        t.row(vec![
            "ask".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    for level in answer["bids"].as_array().into_iter().flatten() {
        t.row(vec![
            "bid".into(),
            table::text(&level["price"]),
            table::text(&level["gpus"]),
            table::text(&level["orders"]),
        ]);
    }
    print_table(&t);
    if t.is_empty() {
        println!("(the book is empty)");
    }
}

const ORDER_HEADERS: &[&str] = &[
    "ID", "POOL", "PRICE", "GPUS", "FILLED", "LEFT", "DURATION", "TIF", "STATUS", "CREATED",
];

fn order_row(o: &Value) -> Vec<String> {
    let mut tif = table::text(&o["tif"]);
    if o["persistent"].as_bool() == Some(true) {
        tif.push_str("+persistent");
    }
    let mut status = table::text(&o["status"]);
    if let Some(reason) = o["cancel_reason"].as_str() {
        status = format!("{status} ({reason})");
    }
    vec![
        table::text(&o["id"]),
        table::text(&o["pool"]),
        table::text(&o["price"]),
        table::text(&o["gpus"]),
        table::text(&o["filled_gpus"]),
        table::text(&o["remaining_gpus"]),
        table::duration(&o["duration_s"]),
        tif,
        status,
        table::time(&o["created_at"]),
    ]
}

fn show_orders(answer: &Value) {
    let mut t = Table::new(ORDER_HEADERS);
    for o in answer["orders"].as_array().into_iter().flatten() {
        t.row(order_row(o));
    }
    print_table(&t);
}

fn show_order_with_leases(answer: &Value) {
    let mut t = Table::new(ORDER_HEADERS);
    t.row(order_row(&answer["order"]));
    print_table(&t);
    if let Some(leases) = answer["leases"].as_array().filter(|l| !l.is_empty()) {
        println!();
        print_leases(leases.iter());
    }
}

const LEASE_HEADERS: &[&str] = &[
    "ID",
    "ORDER",
    "POOL",
    "GPUS",
    "PRICE",
    "STATUS",
    "STARTED",
    "ENDS",
    "NOTICE_ENDS",
    "COST",
];

fn print_leases<'a>(leases: impl Iterator<Item = &'a Value>) {
    let mut t = Table::new(LEASE_HEADERS);
    for l in leases {
        t.row(vec![
            table::text(&l["id"]),
            table::text(&l["order_id"]),
            table::text(&l["pool"]),
            table::text(&l["gpus"]),
            table::text(&l["price"]),
            table::text(&l["status"]),
            table::time(&l["started_at"]),
            table::time(&l["ends_at"]),
            table::time(&l["notice_ends_at"]),
            table::text(&l["cost"]),
        ]);
    }
    print_table(&t);
}

fn show_leases(answer: &Value) {
    print_leases(answer["leases"].as_array().into_iter().flatten());
}

fn show_one_lease(answer: &Value) {
    print_leases(std::iter::once(&answer["lease"]));
}

const BLOCK_HEADERS: &[&str] = &[
    "BLOCK",
    "POOL",
    "STATUS",
    "GPUS",
    "SOLD",
    "UNSOLD",
    "RECLAIMING",
    "RECLAIMED",
    "RESERVE",
    "UNTIL",
    "REVENUE",
];

fn block_row(b: &Value) -> Vec<String> {
    vec![
        table::text(&b["block_id"]),
        table::text(&b["pool"]),
        table::text(&b["status"]),
        table::text(&b["gpus"]),
        table::text(&b["gpus_sold"]),
        table::text(&b["gpus_unsold"]),
        table::text(&b["gpus_reclaiming"]),
        table::text(&b["gpus_reclaimed"]),
        table::text(&b["reserve_price"]),
        table::time(&b["available_until"]),
        table::text(&b["revenue"]),
    ]
}

fn show_blocks(answer: &Value) {
    let mut t = Table::new(BLOCK_HEADERS);
    for b in answer["blocks"].as_array().into_iter().flatten() {
        t.row(block_row(b));
    }
    print_table(&t);
}

fn show_one_block(answer: &Value) {
    let mut t = Table::new(BLOCK_HEADERS);
    t.row(block_row(&answer["block"]));
    print_table(&t);
    if let Some(n) = answer["leases_opened"].as_u64().filter(|n| *n > 0) {
        println!("{n} lease(s) opened at once");
    }
    if let Some(n) = answer["leases_warned"].as_u64() {
        println!("{n} lease(s) warned");
    }
}

fn show_reclaim(answer: &Value) {
    show_one_block(answer);
    let r = &answer["reclaim"];
    println!(
        "reclaimed {} GPUs: {} from the book, {} lease(s) preempted, notice ends {}{}",
        table::text(&r["gpus"]),
        table::text(&r["gpus_from_book"]),
        table::text(&r["leases_preempted"]),
        table::time(&r["notice_ends_at"]),
        if r["emergency"].as_bool() == Some(true) {
            " (emergency)"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("offpeak").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bid_flags_build_the_request_body() {
        let cli = parse(&[
            "bid",
            "--pool",
            "h100-sxm.us-east",
            "--gpus",
            "8",
            "--hours",
            "4",
            "--max-price",
            "1.20",
            "--ioc",
            "--persistent",
        ])
        .unwrap();
        let Some(Command::Bid(args)) = cli.command else {
            panic!("not a bid")
        };
        let body = bid_body(&args).unwrap();
        assert_eq!(
            body,
            json!({"pool": "h100-sxm.us-east", "gpus": 8, "price": "1.20", "duration_s": 14400, "tif": "ioc", "persistent": true})
        );
    }

    #[test]
    fn conflicting_or_missing_flags_are_usage_errors() {
        assert!(parse(&["bid", "--pool", "p", "--gpus", "1", "--max-price", "1"]).is_err());
        assert!(parse(&[
            "bid",
            "--pool",
            "p",
            "--gpus",
            "1",
            "--hours",
            "1",
            "--max-price",
            "1",
            "--ioc",
            "--fok"
        ])
        .is_err());
        assert!(parse(&["serve", "--speed", "10"]).is_err());
        assert!(parse(&[
            "bid",
            "--pool",
            "p",
            "--gpus",
            "-1",
            "--hours",
            "1",
            "--max-price",
            "1"
        ])
        .is_err());
    }

    #[test]
    fn bad_values_are_usage_errors_not_panics() {
        for hours in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert_eq!(
                hours_to_seconds(hours, "--hours").unwrap_err().outcome,
                Outcome::Usage
            );
        }
        assert_eq!(hours_to_seconds(0.5, "--hours").unwrap(), 1800);
        assert_eq!(
            price("abc", "--max-price").unwrap_err().outcome,
            Outcome::Usage
        );
        assert_eq!(
            price("1.2345678", "--max-price").unwrap_err().outcome,
            Outcome::Usage
        );
        assert_eq!(price("1.25", "--max-price").unwrap(), "1.25");
        assert!(parse_node("rack1-n1:8").is_ok());
        for bad in ["rack1", ":8", "rack1:x", "rack1:-1"] {
            assert_eq!(
                parse_node(bad).unwrap_err().outcome,
                Outcome::Usage,
                "{bad}"
            );
        }
    }
}
