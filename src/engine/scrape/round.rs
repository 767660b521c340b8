//! One round over one endpoint: resolve its name within the deadline, read
//! every address (at most [`MAX_PARALLEL`] at once across all rounds, all
//! under one deadline), parse each page keeping only the families asked
//! for, carry each address's last read, and keep what fits the series
//! budget. Runs on the rounds' pool (`cache` submits it), its lookup and
//! reads on theirs (`pool`); never on a gRPC thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::engine::endpoint::Endpoint;
use crate::engine::http;
use crate::engine::policy::EndpointPolicy;
use crate::engine::prom::{self, prefix, Want};
use crate::engine::resolve::Resolved;
use crate::engine::share::Holder;

use super::budget::{MAX_PARALLEL, MAX_SERIES_KEPT, MAX_SIMILAR};
use super::cache::{lock, Plan, Scraper};
use super::last_read::{earlier_pages, Earlier};
use super::outcome::{ReadError, ReadOutcome, RoundFailure};
use super::{PageFamilies, Replica, Resolution, Scrape};

impl Scraper {
    /// Resolves the endpoint and reads every address before the deadline.
    pub(super) fn round(self: &Arc<Self>, plan: Plan) -> Scrape {
        let Plan {
            endpoint,
            wanted,
            timeout,
            predecessor_bytes,
            previous,
        } = plan;
        let deadline = Instant::now() + timeout;
        let (resolution, addresses) = match self.resolve(&endpoint, deadline) {
            Ok(Resolved::Addresses(addresses)) => (Resolution::Addresses, one_family(addresses)),
            Ok(Resolved::NoAddress(error)) => (Resolution::NoAddress(error), Vec::new()),
            Ok(Resolved::NoSuchName(error)) => (Resolution::NoSuchName(error), Vec::new()),
            Ok(Resolved::Failed(error)) => (
                Resolution::Failed(RoundFailure::DnsLookup(error)),
                Vec::new(),
            ),
            Err(failure) => (Resolution::Failed(failure), Vec::new()),
        };
        let wants: Vec<Want> = wanted.iter().cloned().collect();
        let limit = self.config.max_replicas;
        let read = addresses.len().min(limit);
        let mut pages = self.read_all(&endpoint, &addresses[..read], &wants, deadline, timeout);
        pages.extend((read..addresses.len()).map(|_| Err(ReadError::PastReplicaCap { limit })));
        let earlier = earlier_pages(previous.as_deref(), Instant::now());
        drop(previous);
        let mut replicas: Vec<Replica> = addresses
            .iter()
            .zip(pages)
            .map(|(address, page)| Replica {
                address: *address,
                page: page.map(Arc::new),
                earlier: earlier.get(address).cloned(),
            })
            .collect();
        let mut vanished: Vec<Replica> = Vec::new();
        if addresses.is_empty() {
            let mut known: Vec<(&SocketAddr, &Earlier)> = earlier.iter().collect();
            known.sort_by_key(|(address, _)| **address);
            vanished = known
                .into_iter()
                .map(|(address, earlier)| Replica {
                    address: *address,
                    page: Err(ReadError::NoLongerNamed),
                    earlier: Some(earlier.clone()),
                })
                .collect();
        }
        // Keep what fits the budget (this endpoint's previous round, which
        // this one replaces, counts as free); a page over it is missing,
        // and an earlier page over it is forgotten.
        let mut share = self
            .series
            .open_share(Holder::of(&endpoint), predecessor_bytes);
        for replica in replicas.iter_mut().chain(vanished.iter_mut()) {
            if let Ok(parsed) = &replica.page {
                if !share.take(parsed.bytes()) {
                    replica.page = Err(ReadError::NotKept {
                        budget: self.series.limit(),
                    });
                }
            }
            if let Some(earlier) = &replica.earlier {
                if !share.take(earlier.page.bytes()) {
                    replica.earlier = None;
                }
            }
        }
        Scrape {
            replicas,
            vanished,
            endpoint,
            completed_at: Instant::now(),
            kept_wants: wanted,
            resolution,
            share,
        }
    }

    /// The resolver's answer, or why none came before the deadline. The
    /// lookup runs on the lookups' pool; `getaddrinfo` cannot be
    /// interrupted, so one that outlives the deadline finishes there and
    /// its answer is dropped, and one still queued then is skipped.
    fn resolve(&self, endpoint: &Endpoint, deadline: Instant) -> Result<Resolved, RoundFailure> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let resolver = self.config.resolver.clone();
        let (host, port) = (endpoint.host.clone(), endpoint.port);
        let given_up = Arc::new(AtomicBool::new(false));
        let skip = Arc::clone(&given_up);
        self.lookups
            .submit(Box::new(move || {
                if !skip.load(Ordering::SeqCst) {
                    let _ = sender.send((resolver.0)(&host, port));
                }
            }))
            .map_err(|refused| RoundFailure::DnsThread(refused.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = receiver.recv_timeout(left);
        given_up.store(true, Ordering::SeqCst);
        match answer {
            Ok(resolved) => Ok(resolved),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(RoundFailure::DnsTimeout { left })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(RoundFailure::DnsPanicked),
        }
    }

    /// Every address, in address order: this thread and up to
    /// `MAX_PARALLEL - 1` jobs on the readers' pool (shared with every
    /// other round) take addresses in turn; one not taken before the
    /// deadline is not read.
    fn read_all(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        addresses: &[SocketAddr],
        wants: &[Want],
        deadline: Instant,
        timeout: Duration,
    ) -> Vec<Result<PageFamilies, ReadError>> {
        let reads = Arc::new(Reads {
            scraper: Arc::clone(self),
            endpoint: endpoint.clone(),
            host: endpoint.host_header(),
            addresses: addresses.to_vec(),
            wants: wants.to_vec(),
            deadline,
            timeout,
            policy: self
                .policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            next: AtomicUsize::new(0),
            results: Mutex::new((0..addresses.len()).map(|_| None).collect()),
            finished: Condvar::new(),
        });
        let helpers = addresses.len().min(MAX_PARALLEL).saturating_sub(1);
        for _ in 0..helpers {
            let reads = Arc::clone(&reads);
            if self.readers.submit(Box::new(move || reads.work())).is_err() {
                break;
            }
        }
        log::trace!("engine scrape of {endpoint}: {helpers} helpers asked for");
        // This thread works too, so a round always makes progress.
        reads.work();
        // Every address is taken now; wait for those still being read
        // (each ends by the deadline).
        let mut results = lock(&reads.results);
        while results.iter().any(Option::is_none) {
            results = reads
                .finished
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
        results
            .iter_mut()
            .map(|r| r.take().unwrap_or(Err(ReadError::NotRead { timeout })))
            .collect()
    }

    fn read_one(
        &self,
        address: SocketAddr,
        host: &str,
        endpoint: &Endpoint,
        wants: &[Want],
        deadline: Instant,
    ) -> Result<PageFamilies, ReadError> {
        let page = http::get_as(
            address,
            host,
            &endpoint.path,
            deadline,
            self.config.max_body,
            &self.bodies,
            Holder::of(endpoint),
        )
        .map_err(ReadError::Http)?;
        let (found, declared) = prom::families_wanted(&page.text, wants, MAX_SERIES_KEPT)
            .map_err(ReadError::NotPrometheus)?;
        let prefixes: Vec<&str> = wants.iter().map(|w| prefix(&w.family)).collect();
        let declared = declared
            .into_iter()
            .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
            .take(MAX_SIMILAR)
            .collect();
        Ok(PageFamilies {
            families: found,
            declared,
        })
    }
}

/// One round's reads, shared by the threads that do them.
struct Reads {
    scraper: Arc<Scraper>,
    endpoint: Endpoint,
    host: String,
    addresses: Vec<SocketAddr>,
    wants: Vec<Want>,
    deadline: Instant,
    timeout: Duration,
    policy: EndpointPolicy,
    /// The next address to take.
    next: AtomicUsize,
    results: Mutex<Vec<Option<Result<PageFamilies, ReadError>>>>,
    finished: Condvar,
}

impl Reads {
    /// Takes addresses until none is left.
    fn work(&self) {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(address) = self.addresses.get(index) else {
                return;
            };
            let read = if let Err(refusal) = self.policy.check_address(*address) {
                Err(ReadError::Refused(refusal))
            } else if Instant::now() >= self.deadline {
                Err(ReadError::NotRead {
                    timeout: self.timeout,
                })
            } else {
                self.scraper.read_one(
                    *address,
                    &self.host,
                    &self.endpoint,
                    &self.wants,
                    self.deadline,
                )
            };
            self.scraper.count(match &read {
                Ok(_) => ReadOutcome::Ok,
                Err(error) => error.outcome(),
            });
            lock(&self.results)[index] = Some(read);
            self.finished.notify_all();
        }
    }
}

/// One address per pod: a dual-stack headless Service answers with an
/// IPv4 and an IPv6 address for each, which would count every replica
/// twice. IPv4 when there is any, else IPv6.
fn one_family(addresses: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if addresses.iter().any(SocketAddr::is_ipv4) {
        addresses.into_iter().filter(SocketAddr::is_ipv4).collect()
    } else {
        addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dual_stack_name_counts_each_pod_once() {
        let v4: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:8000".parse().unwrap();
        assert_eq!(one_family(vec![v6, v4]), vec![v4]);
        assert_eq!(one_family(vec![v6]), vec![v6]);
    }
}
