//! The single writer: the only code of the agent that touches netfilter.
//!
//! A thread of its own owns the cluster state and one netlink session. It waits for a change, gathers
//! the burst that follows for at most the coalescing delay (counted from when it takes the
//! burst's first change, and ending then even if more are queued, so neither a steady stream
//! nor a flood postpones programming), applying each change to the cluster state as it comes, and,
//! once every watch has synced, sends the difference between the new table and
//! the applied one as one transaction. The first transaction after start replaces whatever
//! table a previous agent left (kept in place until then: fail static). A refused transaction
//! leaves the previous table in the kernel; it is retried with backoff as a full replace.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nft_backend::build::build;
use nft_backend::nft::Table;
use nft_netlink::{ApplyReport, NetlinkError, Session};

use crate::cluster::{Change, Cluster};
use crate::metrics::Metrics;

/// A change and when its watch event arrived.
#[derive(Debug)]
pub struct Stamped {
    pub change: Change,
    pub received: Instant,
}

/// How long the table must stay unchanged before it is read back after incremental applies.
const VERIFY_AFTER_IDLE: Duration = Duration::from_millis(500);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Writer {
    cluster: Cluster,
    session: Option<Session>,
    metrics: Arc<Metrics>,
    /// What the kernel holds of our table, as far as we applied it; `None` until the first
    /// full apply and after any failure (the next apply replaces the whole table).
    applied: Option<Table>,
    /// Arrival times of the events not yet enforced.
    waiting: Vec<Instant>,
    /// Changes taken since the last successful apply that changed what the compiler reads.
    dirty: bool,
    /// Incremental applies since the last read-back.
    unverified: bool,
    retry: Option<(Instant, Duration)>,
}

/// Runs the writer until the channel closes.
pub fn run(node: &str, changes: Receiver<Stamped>, coalesce: Duration, metrics: Arc<Metrics>) {
    let mut w = Writer {
        cluster: Cluster::new(node),
        session: None,
        metrics,
        applied: None,
        waiting: Vec::new(),
        dirty: false,
        unverified: false,
        retry: None,
    };
    w.report_existing();
    loop {
        let wait = w
            .next_deadline()
            .map(|t| t.saturating_duration_since(Instant::now()));
        let first = match wait {
            None => changes.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(wait) => changes.recv_timeout(wait),
        };
        match first {
            Ok(stamped) => {
                // The delay counts from when the writer takes the burst's first change (not
                // from its arrival), so a backlog is still taken a window at a time.
                let deadline = Instant::now() + coalesce;
                w.take(stamped);
                // Stop at the deadline even when more changes are queued: a flood of them
                // is programmed every delay, not after it ends.
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match changes.recv_timeout(left) {
                        Ok(stamped) => w.take(stamped),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                if w.dirty || w.applied.is_none() {
                    w.program();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if w.retry.is_some_and(|(at, _)| Instant::now() >= at) {
                    w.program();
                } else if w.unverified {
                    w.verify();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Writer {
    fn take(&mut self, stamped: Stamped) {
        // A change that changes nothing the compiler reads (a status update) is not waited
        // for, and alone does not make the writer build the table.
        if self.cluster.apply(stamped.change) {
            self.dirty = true;
            self.waiting.push(stamped.received);
        }
    }

    /// When the writer must act without a new event: a retry, or a read-back when idle.
    fn next_deadline(&self) -> Option<Instant> {
        match self.retry {
            Some((at, _)) => Some(at),
            None if self.unverified => Some(Instant::now() + VERIFY_AFTER_IDLE),
            None => None,
        }
    }

    fn session(&mut self) -> Result<&mut Session, NetlinkError> {
        if self.session.is_none() {
            self.session = Some(Session::open()?);
        }
        Ok(self.session.as_mut().expect("opened above"))
    }

    /// Says what a previous agent left in the kernel; it stays until the first apply.
    fn report_existing(&mut self) {
        match self.session().and_then(Session::read) {
            Ok(Some(listing)) => tracing::info!(
                sets = listing.sets.len(),
                chains = listing.chains.len(),
                "table inet netfence from a previous run stays in place until the watches sync"
            ),
            Ok(None) => {
                tracing::info!("no table inet netfence yet; traffic is unpoliced until the watches sync")
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the existing table"),
        }
    }

    fn program(&mut self) {
        if !self.cluster.is_synced() || self.cluster.is_listing() {
            // A due retry waits for the list to complete (its end is a change, which programs).
            self.retry = self.retry.map(|(_, backoff)| (Instant::now() + backoff, backoff));
            return;
        }
        if !self.metrics.synced.swap(true, Ordering::Relaxed) {
            tracing::info!(
                pods = self.cluster.count(crate::cluster::Kind::Pod),
                policies = self.cluster.count(crate::cluster::Kind::Policy),
                namespaces = self.cluster.count(crate::cluster::Kind::Namespace),
                nodes = self.cluster.count(crate::cluster::Kind::Node),
                "every watch has synced"
            );
        }
        let start = Instant::now();
        let mut table = build(self.cluster.ruleset());
        let full = self.applied.is_none();
        let result = match self.applied.take() {
            None => self
                .session()
                .and_then(|s| s.apply_full(&table).and_then(|r| s.verify(&table).map(|()| r))),
            Some(old) => self.session().and_then(|s| s.apply_diff(&old, &mut table)),
        };
        match result {
            Ok(report) => self.applied(table, full, &report, start),
            Err(e) => self.failed(&e),
        }
    }

    /// After a committed transaction: latencies, counters, readiness, and `table` as what the
    /// kernel now holds.
    fn applied(&mut self, table: Table, full: bool, report: &ApplyReport, start: Instant) {
        let now = Instant::now();
        self.metrics.apply_duration.observe(now - start);
        // The first apply enforces the initial lists: not events, so not latencies.
        let started = self.metrics.generation.load(Ordering::Relaxed) > 0;
        for received in self.waiting.drain(..) {
            if started {
                self.metrics.event_to_enforced.observe(now - received);
            }
        }
        if report.n_messages > 0 {
            let counter = if full {
                &self.metrics.applies_full
            } else {
                &self.metrics.applies_diff
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let generation = self.metrics.generation.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                generation,
                full,
                messages = report.n_messages,
                elements = report.n_elements,
                micros = report.elapsed.as_micros() as u64,
                "applied"
            );
        }
        self.metrics
            .elements
            .store(table.n_elements() as u64, Ordering::Relaxed);
        let rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
        self.metrics.rules.store(rules as u64, Ordering::Relaxed);
        if full {
            tracing::info!(
                elements = table.n_elements(),
                rules,
                "table replaced and verified"
            );
            self.metrics.ready.store(true, Ordering::Relaxed);
        } else if report.n_messages > 0 {
            self.unverified = true;
        }
        self.applied = Some(table);
        self.retry = None;
        self.dirty = false;
    }

    /// After a refused or failed transaction: the previous table stays; retry with backoff,
    /// as a full replace.
    fn failed(&mut self, e: &NetlinkError) {
        self.metrics.apply_failures.fetch_add(1, Ordering::Relaxed);
        self.metrics.ready.store(false, Ordering::Relaxed);
        let backoff = self.retry.map_or(RETRY_FIRST, |(_, b)| (b * 2).min(RETRY_MAX));
        tracing::error!(
            error = %e,
            retry_in_ms = backoff.as_millis() as u64,
            "transaction failed; the previous table stays in the kernel"
        );
        if !e.is_retryable() {
            // A fresh socket next time: the old one may be in any state.
            self.session = None;
        }
        self.retry = Some((Instant::now() + backoff, backoff));
    }

    fn verify(&mut self) {
        let Some(table) = self.applied.take() else {
            self.unverified = false;
            return;
        };
        let result = self.session().and_then(|s| s.verify(&table));
        self.unverified = false;
        match result {
            Ok(()) => {
                self.metrics.ready.store(true, Ordering::Relaxed);
                self.applied = Some(table);
            }
            Err(e) => {
                self.metrics.verify_failures.fetch_add(1, Ordering::Relaxed);
                self.metrics.ready.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "the table in the kernel differs from the last apply; replacing it");
                self.retry = Some((Instant::now(), RETRY_FIRST));
            }
        }
    }
}
