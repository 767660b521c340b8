//! The cache of rounds and a round, through real replicas on loopback
//! (`fake-engine`): caps, budgets, single flight, DNS deadlines, shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cache::{forget_old, Entry, FORGET_AFTER};
use super::*;
use crate::engine::http::HttpError;
use crate::engine::policy::{parse_cidrs, EndpointPolicy, Refusal};
use crate::engine::resolve::Resolved;
use fake_engine::{Behaviour, Kind, Load, Replica};

fn scraper(config: impl FnOnce(&mut ScrapeConfig)) -> Arc<Scraper> {
    let mut settings = ScrapeConfig::new(Duration::from_secs(60));
    // Replicas on loopback, as a lab allows.
    settings.policy = EndpointPolicy {
        allowed: parse_cidrs("127.0.0.0/8").unwrap(),
        ..EndpointPolicy::default()
    };
    config(&mut settings);
    Scraper::new(settings)
}

fn endpoint(replica: &Replica) -> Endpoint {
    Endpoint {
        host: replica.address().ip().to_string(),
        port: replica.address().port(),
        path: String::from("/metrics"),
    }
}

fn busy() -> Behaviour {
    Behaviour::new(
        Kind::Vllm,
        Load {
            waiting: 4,
            ..Load::default()
        },
    )
}

fn wants(families: &[&str]) -> Vec<Want> {
    families.iter().map(|f| Want::all(f)).collect()
}

fn scrape(scraper: &Arc<Scraper>, endpoint: &Endpoint, families: &[&str]) -> Arc<Scrape> {
    futures_executor::block_on(scraper.scrape(endpoint, &wants(families), Duration::from_secs(5)))
}

#[test]
fn pages_are_capped_each_and_together() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let endpoint = endpoint(&replica);
    let size = fake_engine::page(Kind::Vllm, &busy().load).len();
    // A page exactly at the per-page cap is read; one byte less is not.
    let at_cap = scraper(|c| c.max_body = size);
    let page = &scrape(&at_cap, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
    assert!(page.is_ok(), "{page:?}");
    let below = scraper(|c| c.max_body = size - 1);
    let page = &scrape(&below, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
    assert!(
        matches!(page, Err(ReadError::Http(HttpError::TooLarge(_)))),
        "{page:?}"
    );
    // Pages read at once share the budget, an endpoint at most a quarter
    // of it: one over that is refused, and the budget is whole again
    // afterwards.
    let small = scraper(|c| c.body_budget_bytes = size * 2);
    let page = &scrape(&small, &endpoint, &["vllm:num_requests_waiting"]).replicas[0].page;
    assert!(
        matches!(page, Err(ReadError::Http(HttpError::TooLarge(m))) if m.contains("one endpoint may take")),
        "{page:?}"
    );
    assert_eq!(small.bodies.in_use(), 0);
    assert_eq!(at_cap.bodies.in_use(), 0);
}

#[test]
fn series_kept_across_rounds_are_capped() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let endpoint = endpoint(&replica);
    let wanted = ["vllm:num_requests_waiting"];
    let probe = scraper(|_| {});
    let one = scrape(&probe, &endpoint, &wanted);
    let bytes = one.series_bytes();
    assert!(bytes > 0 && probe.series.in_use() == bytes);
    drop(one);
    // The probe's cache still holds the round.
    assert_eq!(probe.series.in_use(), bytes);
    // Room for one page per endpoint and two per namespace: a tenant's
    // third endpoint is missing, saying why, while another tenant's is
    // kept. Every name here resolves to the replica.
    let address = replica.address();
    let tight = scraper(|c| {
        c.series_budget_bytes = bytes * 4;
        c.resolver = resolver(move |_, _| Resolved::Addresses(vec![address]));
    });
    let named = |host: &str| Endpoint {
        host: host.to_string(),
        ..endpoint.clone()
    };
    let rounds: Vec<Arc<Scrape>> = ["v1.a", "v2.a"]
        .iter()
        .map(|host| scrape(&tight, &named(host), &wanted))
        .collect();
    assert!(
        rounds.iter().all(|r| r.replicas[0].page.is_ok()),
        "{rounds:?}"
    );
    let page = &scrape(&tight, &named("v3.a"), &wanted).replicas[0].page;
    assert!(
        matches!(page, Err(ReadError::NotKept { budget }) if *budget == bytes * 4),
        "{page:?}"
    );
    let page = &scrape(&tight, &named("v1.b"), &wanted).replicas[0].page;
    assert!(page.is_ok(), "{page:?}");
}

#[test]
fn a_family_not_read_yet_starts_one_more_round_then_both_are_cached() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let endpoint = endpoint(&replica);
    let scraper = scraper(|_| {});
    let waiting = scrape(&scraper, &endpoint, &["vllm:num_requests_waiting"]);
    assert_eq!(waiting.replicas[0].page.as_ref().unwrap().families.len(), 1);
    let running = scrape(&scraper, &endpoint, &["vllm:num_requests_running"]);
    assert_eq!(scraper.rounds(), 2);
    assert_eq!(running.kept_wants.len(), 2, "the second round reads both");
    for families in [
        &["vllm:num_requests_waiting"][..],
        &["vllm:num_requests_running"],
    ] {
        scrape(&scraper, &endpoint, families);
    }
    assert_eq!(scraper.rounds(), 2);
    assert_eq!(replica.hits(), 2);
}

#[test]
fn endpoints_are_forgotten_when_idle_or_past_the_cap() {
    // A "now" in the future, so that the ages below never reach back
    // before this machine's boot (where Instant cannot go).
    let now = Instant::now() + 2 * FORGET_AFTER;
    let endpoint = |i: usize| Endpoint {
        host: format!("h{i}"),
        port: 1,
        path: String::from("/metrics"),
    };
    let mut entries: HashMap<Endpoint, Entry> = HashMap::new();
    for i in 0..MAX_CACHED_ENDPOINTS {
        let mut entry = Entry::new(now);
        // Endpoint i was last asked for i + 1 ms ago.
        entry.last_asked = now - Duration::from_millis(1 + i as u64);
        entries.insert(endpoint(i), entry);
    }
    // At the cap, a new endpoint makes room by dropping the least
    // recently asked one.
    forget_old(&mut entries, &endpoint(MAX_CACHED_ENDPOINTS), now);
    assert_eq!(entries.len(), MAX_CACHED_ENDPOINTS - 1);
    assert!(!entries.contains_key(&endpoint(MAX_CACHED_ENDPOINTS - 1)));
    // An endpoint nobody asked for in FORGET_AFTER goes; a running one stays.
    entries.get_mut(&endpoint(1)).unwrap().last_asked = now - FORGET_AFTER;
    let running = entries.get_mut(&endpoint(2)).unwrap();
    running.last_asked = now - FORGET_AFTER;
    running.running = true;
    forget_old(&mut entries, &endpoint(3), now);
    assert!(!entries.contains_key(&endpoint(1)));
    assert!(entries.contains_key(&endpoint(2)));
}

fn resolver(answer: impl Fn(&str, u16) -> Resolved + Send + Sync + 'static) -> Resolver {
    Resolver(Arc::new(answer))
}

#[test]
fn dns_is_bounded_by_the_deadline_and_its_failures_are_failures() {
    let endpoint = Endpoint {
        host: String::from("slow.dns"),
        port: 8000,
        path: String::from("/metrics"),
    };
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let blocked = Mutex::new(blocked);
    let slow = scraper(|c| {
        c.resolver = resolver(move |_, _| {
            let _ = blocked.lock().unwrap().recv();
            Resolved::NoAddress(String::from("late"))
        })
    });
    let round = futures_executor::block_on(slow.scrape(
        &endpoint,
        &wants(&["x"]),
        Duration::from_millis(100),
    ));
    assert!(
        matches!(
            &round.resolution,
            Resolution::Failed(RoundFailure::DnsTimeout { .. })
        ),
        "{:?}",
        round.resolution
    );
    drop(release);
    let panicking = scraper(|c| c.resolver = resolver(|_, _| panic!("resolver bug")));
    let round = scrape(&panicking, &endpoint, &["x"]);
    assert!(
        matches!(
            &round.resolution,
            Resolution::Failed(RoundFailure::DnsPanicked)
        ),
        "{:?}",
        round.resolution
    );
}

#[test]
fn shutdown_waits_for_a_round_in_flight_and_answers_it() {
    let stalled = Replica::start(
        "127.0.0.1:0",
        Behaviour {
            answer: fake_engine::Answer::Stall,
            ..busy()
        },
    )
    .unwrap();
    let scraper = scraper(|_| {});
    let pending = scraper.scrape(
        &endpoint(&stalled),
        &wants(&["vllm:num_requests_waiting"]),
        Duration::from_millis(300),
    );
    // The round is counted before `scrape` returns, so shutdown waits for it.
    assert_eq!(scraper.running.load(Ordering::SeqCst), 1);
    scraper.shutdown();
    assert_eq!(scraper.running.load(Ordering::SeqCst), 0);
    let round = futures_executor::block_on(pending);
    assert!(
        matches!(&round.replicas[0].page, Err(e) if e.is_timeout()),
        "{round:?}"
    );
}

#[test]
fn a_steady_round_replaces_its_predecessor_within_the_cap() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let endpoint = endpoint(&replica);
    let wanted = ["vllm:num_requests_waiting"];
    let bytes = scrape(&scraper(|_| {}), &endpoint, &wanted).series_bytes();
    // Room for exactly one round, and every call a new round.
    let tight = scraper(|c| {
        // An endpoint's share: exactly one round.
        c.series_budget_bytes = bytes * 4;
        c.interval = Duration::ZERO;
    });
    for _ in 0..5 {
        let round = scrape(&tight, &endpoint, &wanted);
        let page = round.replicas[0].page.as_ref();
        let waiting = page.ok().map(|p| p.families[0].samples[0].value);
        assert_eq!(waiting, Some(4.0), "{round:?}");
    }
    // Five rounds, each a fresh read of the replica (one more sized it).
    assert_eq!(tight.rounds(), 5);
    assert_eq!(replica.hits(), 6);
}

#[test]
fn chunked_pages_are_read() {
    let replica = Replica::start(
        "127.0.0.1:0",
        Behaviour {
            chunked: true,
            ..busy()
        },
    )
    .unwrap();
    let round = scrape(
        &scraper(|_| {}),
        &endpoint(&replica),
        &["vllm:num_requests_waiting"],
    );
    let page = round.replicas[0].page.as_ref().unwrap();
    assert_eq!(page.families[0].samples[0].value, 4.0);
}

#[test]
fn addresses_past_the_replica_cap_are_missing_not_dropped() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let address = replica.address();
    let capped = scraper(|c| {
        c.max_replicas = 1;
        c.resolver = resolver(move |_, _| {
            Resolved::Addresses(vec![
                address,
                SocketAddr::new("127.0.0.9".parse().unwrap(), 1),
            ])
        });
    });
    let endpoint = Endpoint {
        host: String::from("two.dns"),
        ..endpoint(&replica)
    };
    let round = scrape(&capped, &endpoint, &["vllm:num_requests_waiting"]);
    assert_eq!(round.replicas.len(), 2);
    assert!(round.replicas[0].page.is_ok());
    assert!(
        matches!(
            &round.replicas[1].page,
            Err(ReadError::PastReplicaCap { limit: 1 })
        ),
        "{round:?}"
    );
}

#[test]
fn after_shutdown_nothing_is_read() {
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let scraper = scraper(|_| {});
    scraper.shutdown();
    let scrape = scrape(
        &scraper,
        &endpoint(&replica),
        &["vllm:num_requests_waiting"],
    );
    assert_eq!(
        scrape.resolution,
        Resolution::Failed(RoundFailure::ShuttingDown)
    );
    assert_eq!(replica.hits(), 0);
}

#[test]
fn a_refused_address_is_never_connected_to() {
    // Under the default policy a replica on loopback is refused: no
    // request reaches it, and the round says why.
    let replica = Replica::start("127.0.0.1:0", busy()).unwrap();
    let strict = scraper(|c| c.policy = EndpointPolicy::default());
    let round = scrape(&strict, &endpoint(&replica), &["vllm:num_requests_waiting"]);
    assert!(
        matches!(
            &round.replicas[0].page,
            Err(ReadError::Refused(Refusal::Always { class: "loopback" }))
        ),
        "{round:?}"
    );
    assert_eq!(replica.hits(), 0);
    // This scaler's own listener is refused even where loopback is allowed.
    let lab = scraper(|_| {});
    lab.listening_on(vec![replica.address().port()], Vec::new());
    let round = scrape(&lab, &endpoint(&replica), &["vllm:num_requests_waiting"]);
    assert!(
        matches!(
            &round.replicas[0].page,
            Err(ReadError::Refused(Refusal::OwnPort))
        ),
        "{round:?}"
    );
    assert_eq!(replica.hits(), 0);
    let counted: u64 = lab
        .reads()
        .iter()
        .filter(|(o, _)| *o == ReadOutcome::Refused)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(counted, 1);
}

#[test]
fn lookups_that_outlive_their_deadline_never_add_threads_past_the_pool() {
    // A resolver stuck like getaddrinfo under a dead DNS server, for 20
    // endpoints at once: each round says unresolved at its deadline, and
    // the lookups' pool never grows past its size.
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let scraper = scraper(|c| {
        c.resolver = resolver(move |_, _| {
            let _ = stuck.lock().unwrap().recv();
            Resolved::NoAddress(String::from("late"))
        })
    });
    let pending: Vec<_> = (0..20)
        .map(|i| {
            let endpoint = Endpoint {
                host: format!("stuck{i}.dns"),
                port: 8000,
                path: String::from("/metrics"),
            };
            scraper.scrape(&endpoint, &wants(&["x"]), Duration::from_millis(200))
        })
        .collect();
    for round in pending {
        let round = futures_executor::block_on(round);
        assert!(
            matches!(
                round.resolution,
                Resolution::Failed(RoundFailure::DnsTimeout { .. })
            ),
            "{:?}",
            round.resolution
        );
    }
    assert!(scraper.lookups.threads() <= MAX_LOOKUPS);
    assert!(scraper.rounds_pool.threads() <= MAX_ROUNDS);
    drop(release);
}
