//! Wiring: settings in, a running server out.
//!
//! `Application::build` connects the store, loads the engine (snapshot + journal), starts the
//! sequencer and binds the listener (port 0 picks a free port, for tests). `run_until` serves
//! until its shutdown future resolves, then stops accepting, lets in-flight requests finish
//! (their batches commit), stops the sequencer after it drained and wrote a final snapshot.

use crate::auth::Verifier;
use crate::bus::{self, BusTasks};
use crate::cluster::forward;
use crate::cluster::task::LeadershipTask;
use crate::cluster::{Cluster, DataDirLock, Leadership, NodeIdentity};
use crate::config::Settings;
use crate::error::ApiError;
use crate::limits::SHUTDOWN_GRACE;
use crate::market_data::MarketData;
use crate::metrics::Metrics;
use crate::pool_spec::load_pools_file;
use crate::rate_limit::RateLimiter;
use crate::routes;
use crate::sequencer::{self, PoolsSetup, Role, SequencerTask};
use crate::state::AppState;
use crate::store::{postgres, sqlite};
use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// A built, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    sequencer: SequencerTask,
    /// The bus's tasks of the single process (a cluster's leadership task runs them while
    /// this node leads).
    bus: Option<BusTasks>,
    cluster: Option<ClusterTasks>,
    state: AppState,
    /// The embedded store's data directory, held until the process ends.
    _data_dir_lock: Option<DataDirLock>,
}

/// A cluster node's own tasks: leadership and the notification listener.
struct ClusterTasks {
    leadership: Arc<Leadership>,
    task: LeadershipTask,
    listener_stop: watch::Sender<bool>,
    listener: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Connects, recovers the engine state, and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // Bind first: a taken port fails the start before anything is journaled.
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let verifier = Verifier::from_settings(&settings.jwt, &settings.data_dir)
            .context("setting up JWT verification")?;
        let lease_key = crate::lease_token::LeaseKey::load_or_generate(
            settings.lease_tokens.key_file.as_deref(),
            &settings.data_dir,
        )
        .context("loading the lease token key")?;
        let address = listener.local_addr()?;
        let node = node_identity(&settings, address);
        let (store, leadership, data_dir_lock) = match &settings.database_url {
            Some(url) => (
                postgres::connect(url.expose()).context("configuring PostgreSQL")?,
                Some(Arc::new(
                    Leadership::new(url.expose(), node.clone(), settings.cluster.leader_ttl)
                        .context("configuring leadership")?,
                )),
                None,
            ),
            None => {
                // Before the store is opened: a second process never touches the file.
                let lock = DataDirLock::acquire(&settings.data_dir)?;
                let store = sqlite::open(&settings.data_dir).with_context(|| {
                    format!(
                        "opening the embedded SQLite store in {}",
                        settings.data_dir.display()
                    )
                })?;
                (store, None, Some(lock))
            }
        };
        let cluster = Arc::new(
            Cluster::new(node, leadership.clone(), settings.cluster.leader_ttl)
                .context("building the client that forwards writes")?,
        );
        let (journal_head_tx, journal_head) = watch::channel(0u64);
        let pools = match &settings.pools_file {
            Some(path) => PoolsSetup::File(load_pools_file(path)?),
            None => PoolsSetup::Defaults,
        };
        let market = Arc::new(MarketData::new());
        let metrics = Arc::new(Metrics::default());
        let (handle, sequencer) = sequencer::start(
            store.clone(),
            pools,
            market.clone(),
            metrics.clone(),
            sequencer::Tuning {
                idle_tick: settings.idle_tick,
                snapshot_every: settings.snapshot_every,
                commit_pipeline: settings.commit_pipeline,
            },
            leadership.as_ref().map(|_| journal_head),
        )
        .await?;
        let ws = crate::ws::start(handle.clone(), metrics.clone());
        let bus = bus::connect(&settings.bus).context("configuring the bus")?;
        let start_bus = {
            let (bus, bus_settings) = (bus.clone(), settings.bus.clone());
            let (handle, store, metrics) = (handle.clone(), store.clone(), metrics.clone());
            move |sole_consumer: bool| {
                bus::start(
                    &bus,
                    &bus_settings,
                    handle.clone(),
                    store.clone(),
                    metrics.clone(),
                    sole_consumer,
                )
            }
        };
        let (bus_tasks, cluster_tasks) = match &leadership {
            None => (Some(start_bus(false)), None),
            Some(leadership) => {
                let leader_changed = Arc::new(Notify::new());
                let (listener_stop, stopped) = watch::channel(false);
                let listener = tokio::spawn(crate::cluster::listener::run(
                    cluster.clone(),
                    journal_head_tx,
                    leader_changed.clone(),
                    stopped,
                ));
                let task = crate::cluster::task::start(
                    cluster.clone(),
                    leadership.clone(),
                    handle.clone(),
                    Box::new(start_bus),
                    leader_changed,
                )
                .await;
                let tasks = ClusterTasks {
                    leadership: leadership.clone(),
                    task,
                    listener_stop,
                    listener,
                };
                (None, Some(tasks))
            }
        };
        // One registry: the hub's and the bus's own series are read from them at each scrape.
        metrics.read_at_scrape(ws.stats.clone());
        metrics.read_at_scrape(bus.status.clone());
        let state = AppState {
            sequencer: handle,
            store,
            verifier: Arc::new(verifier),
            rate_limiter: Arc::new(RateLimiter::new(settings.rate_limit)),
            market,
            metrics,
            ws,
            bus,
            lease_key: Arc::new(lease_key),
            lease_token_audience: settings.lease_tokens.audience.as_str().into(),
            lease_token_issuer: settings.jwt.issuer.as_str().into(),
            cluster,
        };
        let server = run(listener, state.clone(), settings.http_workers)?;
        let position = state.cluster.position(&state.sequencer);
        tracing::info!(address = %address, node = %state.cluster.node.node_id, role = position.role.as_str(), epoch = position.epoch, "listening on http://{address}");
        Ok(Application {
            port: address.port(),
            server,
            sequencer,
            bus: bus_tasks,
            cluster: cluster_tasks,
            state,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (for in-process consumers such as a WebSocket feed or tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let served = tokio::select! {
            served = &mut server => served,
            _ = shutdown => {
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                // WebSocket connections never finish by themselves: stop accepting, tell them
                // to go away (they reconnect), then drain the requests still in flight.
                handle.pause().await;
                self.state.ws.close_all().await;
                handle.stop(true).await;
                server.await
            }
        };
        let sequencer_handle = self.state.sequencer.clone();
        drop(self.state);
        // Signals in flight commit and are acknowledged before the sequencer stops.
        if let Some(bus) = self.bus {
            bus.stop().await;
        }
        match self.cluster {
            None => self.sequencer.stop().await,
            Some(cluster) => {
                // No more renewals; once the last batch committed, leadership is given up
                // (the standbys are notified and one takes over at once).
                cluster.task.stop().await;
                let leadership = cluster.leadership.clone();
                self.sequencer
                    .stop_then(Box::pin(async move {
                        if let Role::Leader { epoch } = sequencer_handle.role() {
                            match leadership.release(epoch).await {
                                Ok(()) => tracing::info!(epoch, "leadership handed over"),
                                Err(e) => tracing::warn!(error = %e, "could not give leadership up; it expires"),
                            }
                        }
                    }))
                    .await;
                let _ = cluster.listener_stop.send(true);
                let _ = cluster.listener.await;
            }
        }
        served
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")
    }
}

/// This node's id and address for the others: from the settings, or the host name and the
/// bound port (`http://` and the bound address; the host name if it is a wildcard).
fn node_identity(settings: &Settings, address: SocketAddr) -> NodeIdentity {
    let host = Settings::host_name();
    NodeIdentity {
        node_id: settings
            .cluster
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", address.port())),
        advertise_url: settings.cluster.advertise_url.clone().unwrap_or_else(|| {
            if address.ip().is_unspecified() {
                format!("http://{host}:{}", address.port())
            } else {
                format!("http://{address}")
            }
        }),
    }
}

/// The HTTP server over `listener`, sharing `state` with every worker.
pub fn run(listener: TcpListener, state: AppState, workers: usize) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let metrics = data.metrics.clone();
        let shared = data.clone();
        App::new()
            .app_data(data.clone())
            .wrap_fn(move |request, service| {
                let (method, path) = (request.method().clone(), request.path().to_owned());
                let started = std::time::Instant::now();
                // A write that reached a standby goes to the leader.
                let routed = match forward::route(&shared.cluster, &shared.sequencer, &request) {
                    Some(to) => Err((request, to)),
                    None => Ok(service.call(request)),
                };
                let metrics = metrics.clone();
                let shared = shared.clone();
                async move {
                    let response = match routed {
                        Ok(response) => response.await?,
                        Err((request, to)) => forward::forward(&shared.cluster, request, to).await,
                    };
                    tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
                    // Every error answer carries its ApiError (handlers, extractors, 404, 405).
                    if let Some(error) = response.response().error().and_then(|e| e.as_error::<ApiError>()) {
                        metrics.api_error(error.code());
                    }
                    Ok(response)
                }
            })
            .configure(crate::web::configure)
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
    })
    .on_connect(crate::ws::socket::remember)
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
