//! `chitose ingest`: wires config, producer, ops endpoint and one source.

use crate::config::{IngestConfig, SourceKind};
use crate::edge::{Edge, EdgeScratch};
use crate::files::FilesSource;
use crate::metrics::IngestMetrics;
use crate::producer::{Delivery, RawProducer, Tracker};
use crate::simulate::{Generator, Verdict};
use chitose_runtime::ops::{self, Readiness};
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::catalog::SchemaStore;
use chitose_schemas::codec::Timestamp;
use std::time::{Duration, Instant};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] chitose_runtime::config::ConfigError),
    /// Kafka client setup failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A listen address does not parse or bind.
    #[error("{key}: {message}")]
    Listen {
        /// Config key.
        key: &'static str,
        /// Cause.
        message: String,
    },
    /// The files source failed.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    /// The generator's config is invalid.
    #[error(transparent)]
    Simulate(#[from] crate::simulate::ConfigError),
    /// The HTTPS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A token hash cannot be used.
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    /// The SS-MIX2 storage or its state cannot be read or written.
    #[error("ss-mix2: {0}")]
    Ssmix2(String),
}

/// What a run did, for the caller's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read.
    pub read: u64,
    /// Records acknowledged.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
}

/// The source's name, as a metric label.
pub fn source_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Files => "files",
        SourceKind::Http => "http",
        SourceKind::Simulate => "simulate",
        SourceKind::Ssmix2 => "ssmix2",
    }
}

/// Runs the configured source until it ends or `shutdown` fires.
pub async fn run(cfg: IngestConfig, shutdown: Shutdown) -> Result<RunSummary, ServiceError> {
    let metrics = IngestMetrics::new(&cfg.prefecture, source_name(cfg.source));
    run_with(cfg, metrics, shutdown).await
}

/// As [`run`], counting into `metrics` (which the caller can read live).
pub async fn run_with(
    cfg: IngestConfig,
    metrics: IngestMetrics,
    shutdown: Shutdown,
) -> Result<RunSummary, ServiceError> {
    cfg.validate()?;
    // TLS material and token hashes are read before anything binds: a bad
    // file stops the start, it does not surface at the first request.
    let (mut tls, mut tokens) = match cfg.source {
        SourceKind::Http => (
            crate::tls::Tls::from_config(&cfg.http.tls)?,
            Some(crate::token::TokenSet::load(
                &cfg.prefecture,
                &cfg.http.token_sha256,
                &cfg.http.token_sha256_files,
            )?),
        ),
        _ => (None, None),
    };
    // Bind the source's port before /readyz can say ready, so "ready" means
    // a client can connect.
    let mut http_listener = match cfg.source {
        SourceKind::Http => Some(
            tokio::net::TcpListener::bind(cfg.http.listen)
                .await
                .map_err(|e| ServiceError::Listen {
                    key: "http.listen",
                    message: e.to_string(),
                })?,
        ),
        _ => None,
    };
    let ready = Readiness::default();
    let ops_addr = ops::serve(cfg.ops_listen, metrics.registry.clone(), ready.clone())
        .await
        .map_err(|e| ServiceError::Listen {
            key: "ops_listen",
            message: e.to_string(),
        })?;
    tracing::info!(%ops_addr, "ops endpoint: /metrics /healthz /readyz");

    let topic = cfg.topic_name();
    if let Err(e) = cfg
        .kafka
        .ensure_topics(&[(&topic, cfg.topic_partitions)])
        .await
    {
        tracing::warn!(error = %e, %topic, "could not create the topic; assuming it exists");
    }
    let producer = RawProducer::new(&cfg.kafka, &topic, cfg.max_in_flight, metrics.clone())?;
    // Readiness follows the broker.
    {
        let p = producer.clone();
        let r = ready.clone();
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (p2, r2) = (p.clone(), r.clone());
                let _ = tokio::task::spawn_blocking(move || p2.probe(&r2)).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = sd.wait() => break,
                }
            }
        });
        let (p2, r2) = (producer.clone(), ready.clone());
        let _ = tokio::task::spawn_blocking(move || p2.probe(&r2)).await;
    }
    let store = SchemaStore::embedded();
    match cfg.source {
        SourceKind::Files => {
            let edge = Edge::new(&store, Some(cfg.prefecture.clone()));
            let src = FilesSource::new(
                cfg.files.clone(),
                cfg.kafka.clone(),
                producer.clone(),
                edge,
                metrics.clone(),
                cfg.prefecture.clone(),
            )?;
            src.run(shutdown).await?;
        }
        SourceKind::Http => {
            let app = crate::http::router(
                &cfg.http,
                &cfg.prefecture,
                tokens.take().expect("loaded above for the http source"),
                producer.clone(),
                &store,
                metrics.clone(),
                ready.clone(),
            );
            let listener = http_listener
                .take()
                .expect("bound above for the http source");
            tracing::info!(
                addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                tls = tls.is_some(),
                "http source listening"
            );
            crate::http::serve(
                listener,
                app,
                tls.take(),
                cfg.http.header_timeout,
                metrics.clone(),
                shutdown.clone(),
            )
            .await
            .map_err(|e| ServiceError::Listen {
                key: "http.listen",
                message: e.to_string(),
            })?;
        }
        SourceKind::Simulate => simulate(&cfg, &store, &producer, &metrics, shutdown).await?,
        SourceKind::Ssmix2 => {
            ssmix2(&cfg, &store, &producer, &metrics, shutdown).await?;
        }
    }
    // SIGTERM: everything enqueued is acknowledged before exit.
    let p = producer.clone();
    let _ = tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30))).await;
    Ok(RunSummary {
        read: metrics.read.get(),
        accepted: metrics.accepted.get(),
        rejected: {
            use prometheus::core::Collector;
            metrics
                .rejected
                .collect()
                .iter()
                .flat_map(|f| f.get_metric())
                .map(|m| m.get_counter().get_value() as u64)
                .sum()
        },
    })
}

async fn simulate(
    cfg: &IngestConfig,
    store: &SchemaStore,
    producer: &RawProducer,
    metrics: &crate::metrics::IngestMetrics,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let mut gen_cfg = cfg.simulate.generator.clone();
    gen_cfg.hub = Some(cfg.prefecture.clone());
    let mut g = Generator::new(gen_cfg)?;
    let edge = Edge::new(store, Some(cfg.prefecture.clone()));
    let mut scratch = EdgeScratch::default();
    let started = Instant::now();
    // Deliveries are counted, not awaited one by one.
    let tracker = Tracker::default();
    let mut delivered = Vec::new();
    let (mut sent, mut settled) = (0u64, 0u64);
    let mut n = 0u64;
    let mut failed = 0u64;
    while cfg.simulate.events == 0 || n < cfg.simulate.events {
        if shutdown.is_triggered() {
            break;
        }
        if cfg.simulate.rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / cfg.simulate.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        n += 1;
        let line = g.next_line();
        metrics.read.inc();
        match edge.accept_with(&line.bytes, Timestamp::now(), &mut scratch) {
            Ok(message) => {
                let key = &scratch.event().patient.local_patient_id;
                match producer
                    .send_tracked(key, &message, &[], &tracker, sent)
                    .await
                {
                    Ok(()) => sent += 1,
                    Err(_) => failed += 1,
                }
            }
            Err(e) => {
                debug_assert!(
                    matches!(line.verdict, Verdict::Bad(_)),
                    "a good simulated line was rejected: {e}"
                );
                metrics
                    .rejected
                    .with_label_values(&[e.reason.as_str()])
                    .inc();
            }
        }
        tally(&tracker, &mut delivered, &mut settled, &mut failed);
    }
    while settled < sent {
        tracker.noted().await;
        tally(&tracker, &mut delivered, &mut settled, &mut failed);
    }
    if failed > 0 {
        // Simulated data has no checkpoint to resume from: say how much
        // was not delivered rather than pretend.
        tracing::error!(failed, "simulated records the broker did not acknowledge");
    }
    Ok(())
}

/// Counts the deliveries `tracker` noted since the last call.
fn tally(tracker: &Tracker, delivered: &mut Vec<Delivery>, settled: &mut u64, failed: &mut u64) {
    tracker.take(delivered);
    for (_, r) in delivered.drain(..) {
        *settled += 1;
        *failed += u64::from(r.is_err());
    }
}

/// The SS-MIX2 source: walk the storage, queue new messages, let the files
/// source send the queue; again every poll interval.
async fn ssmix2(
    cfg: &IngestConfig,
    store: &SchemaStore,
    producer: &RawProducer,
    metrics: &IngestMetrics,
    mut shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let s = &cfg.ssmix2;
    let mut walker = crate::ssmix2::tree::Walker::open(
        &s.root,
        &s.state_dir,
        &s.facility_code,
        &cfg.prefecture,
        s.batch_messages,
        Some(metrics.clone()),
    )
    .map_err(ServiceError::Ssmix2)?
    .with_min_age(s.min_age);
    let mut queue_cfg = cfg.files.clone();
    queue_cfg.dir = s.state_dir.join("queue");
    queue_cfg.exit_when_idle = true;
    queue_cfg.encoding = "utf-8".into();
    queue_cfg.csv = Default::default();
    let queue = FilesSource::new(
        queue_cfg,
        cfg.kafka.clone(),
        producer.clone(),
        Edge::new(store, Some(cfg.prefecture.clone())),
        metrics.clone(),
        cfg.prefecture.clone(),
    )?;
    loop {
        let w = tokio::task::block_in_place(|| walker.pass()).map_err(ServiceError::Ssmix2)?;
        if w.messages > 0 {
            tracing::info!(
                messages = w.messages,
                events = w.events,
                corrections = w.corrections,
                rejected = w.rejected,
                skipped = w.skipped,
                "ss-mix2 messages queued"
            );
        }
        queue.run(shutdown.clone()).await?;
        if shutdown.is_triggered()
            || (cfg.files.exit_when_idle && w.messages == 0 && w.deferred == 0)
        {
            return Ok(());
        }
        // Files too young to take are looked at again soon.
        let wait = if w.deferred > 0 {
            s.min_age.min(s.poll_interval)
        } else {
            s.poll_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(()),
        }
    }
}
