//! A fake engine replica: an HTTP/1.1 server on one address that answers
//! the engine's metrics path with its page, and can be told to answer with
//! an error status, never answer (a hung process), or send garbage, and
//! whose counters and histograms can advance with the wall clock
//! ([`Moving`]). One thread accepts; each connection gets its own. Test
//! code only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pages::{self, Finished, Kind, Load};

/// How a replica answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Its page (200).
    Page,
    /// This status with a short body.
    Status(u16),
    /// Accepts the connection and never answers, like a stopped process.
    Stall,
    /// Bytes that are not HTTP.
    Garbage,
}

/// What a replica serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    pub kind: Kind,
    pub load: Load,
    pub answer: Answer,
    /// Send the page with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Serve this text instead of the generated page.
    pub page: Option<String>,
    /// Requests keep finishing while it serves: what has finished since
    /// the replica started is added to `load.finished`.
    pub moving: Option<Moving>,
}

/// A replica whose counters advance with the wall clock: `rate` requests finish per second, each with this TTFT (the demo raises it under load).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moving {
    pub rate: f64,
    pub ttft: f64,
}

impl Behaviour {
    pub fn new(kind: Kind, load: Load) -> Self {
        Self {
            kind,
            load,
            answer: Answer::Page,
            chunked: false,
            page: None,
            moving: None,
        }
    }

    /// Reads `key=value` words from a file: `engine`, `waiting`, `running`,
    /// `kv` (0-1), `model`, `dp`, `tp`, `answer` (`page`, `stall`,
    /// `garbage` or a status code), `chunked` (`true`); what has finished
    /// ([`Finished`]): `requests`, `prompt_tokens`, `generation_tokens`
    /// (counts) and `ttft`, `itl`, `e2e`, `queue` (observations as
    /// `SECONDS:COUNT,SECONDS:COUNT,...`); and `rate` (requests finishing
    /// per second) with `ttft_now` (their TTFT in seconds, 0.1 if not
    /// given), which make the replica [`Moving`].
    pub fn from_file(path: &PathBuf, kind: Kind) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut behaviour = Behaviour::new(kind, Load::default());
        let (mut rate, mut ttft_now) = (None, None);
        for word in text.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not key=value"))?;
            let bad = || format!("bad {key} {value:?}");
            let load = &mut behaviour.load;
            match key {
                "engine" => behaviour.kind = Kind::parse(value).ok_or_else(bad)?,
                "waiting" => load.waiting = value.parse().map_err(|_| bad())?,
                "running" => load.running = value.parse().map_err(|_| bad())?,
                "kv" => load.kv = value.parse().map_err(|_| bad())?,
                "model" => load.model = value.to_string(),
                "dp" => load.data_parallel = value.parse().map_err(|_| bad())?,
                "tp" => load.tp_copies = value.parse().map_err(|_| bad())?,
                "requests" => load.finished.requests = value.parse().map_err(|_| bad())?,
                "prompt_tokens" => {
                    load.finished.prompt_tokens = value.parse().map_err(|_| bad())?;
                }
                "generation_tokens" => {
                    load.finished.generation_tokens = value.parse().map_err(|_| bad())?;
                }
                "ttft" => load.finished.ttft = observations(value).ok_or_else(bad)?,
                "itl" => load.finished.itl = observations(value).ok_or_else(bad)?,
                "e2e" => load.finished.e2e = observations(value).ok_or_else(bad)?,
                "queue" => load.finished.queue = observations(value).ok_or_else(bad)?,
                "rate" => rate = Some(seconds(value).ok_or_else(bad)?),
                "ttft_now" => ttft_now = Some(seconds(value).ok_or_else(bad)?),
                "chunked" => behaviour.chunked = value == "true",
                "answer" => {
                    behaviour.answer = match value {
                        "page" => Answer::Page,
                        "stall" => Answer::Stall,
                        "garbage" => Answer::Garbage,
                        code => Answer::Status(code.parse().map_err(|_| bad())?),
                    }
                }
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        behaviour.moving = match (rate, ttft_now) {
            (Some(rate), ttft) => Some(Moving {
                rate,
                ttft: ttft.unwrap_or(0.1),
            }),
            (None, Some(_)) => return Err(String::from("ttft_now needs rate")),
            (None, None) => None,
        };
        Ok(behaviour)
    }
}

/// A finite, non-negative number.
fn seconds(value: &str) -> Option<f64> {
    value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
}

/// `0.1:7,0.5:2` → `[(0.1, 7), (0.5, 2)]`; empty → none.
fn observations(value: &str) -> Option<Vec<(f64, u64)>> {
    value
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (value, times) = pair.split_once(':')?;
            Some((seconds(value)?, times.parse().ok()?))
        })
        .collect()
}

/// What a moving replica has finished so far, added to its load's.
#[derive(Debug)]
struct Progress {
    /// The last advance (or the start).
    last: Instant,
    /// Requests due but not yet whole.
    remainder: f64,
    finished: Finished,
}

impl Progress {
    /// Each request that finishes adds 512 prompt tokens, 128 generated,
    /// one TTFT (one in ten at twice the TTFT), 127 inter-token gaps of
    /// 20 ms, an end-to-end latency and a queue time.
    const PROMPT: u64 = 512;
    const GENERATED: u64 = 128;
    const GAP: f64 = 0.02;

    /// `seconds` more at `moving`.
    fn advance(&mut self, moving: Moving, seconds: f64) {
        let due = moving.rate * seconds + self.remainder;
        if !due.is_finite() || due < 1.0 {
            self.remainder = if due.is_finite() { due.max(0.0) } else { 0.0 };
            return;
        }
        let whole = due.floor();
        self.remainder = due - whole;
        let n = whole as u64;
        let f = &mut self.finished;
        let before = f.requests;
        f.requests += n;
        // One in ten so far, counted over all requests, so none is lost
        // however few finish at a time.
        let slow = f.requests / 10 - before / 10;
        f.prompt_tokens += Self::PROMPT * n;
        f.generation_tokens += Self::GENERATED * n;
        let gaps = Self::GENERATED - 1;
        add(&mut f.ttft, moving.ttft, n - slow);
        add(&mut f.ttft, 2.0 * moving.ttft, slow);
        add(&mut f.itl, Self::GAP, gaps * n);
        add(&mut f.e2e, moving.ttft + gaps as f64 * Self::GAP, n);
        add(&mut f.queue, (moving.ttft - 0.05).max(0.0), n);
    }
}

/// `times` more observations of `value`.
fn add(observations: &mut Vec<(f64, u64)>, value: f64, times: u64) {
    if times == 0 {
        return;
    }
    match observations.iter_mut().find(|(v, _)| *v == value) {
        Some((_, count)) => *count += times,
        None => observations.push((value, times)),
    }
}

/// `more` added to `finished`.
fn add_finished(finished: &mut Finished, more: &Finished) {
    finished.requests += more.requests;
    finished.prompt_tokens += more.prompt_tokens;
    finished.generation_tokens += more.generation_tokens;
    for (all, extra) in [
        (&mut finished.ttft, &more.ttft),
        (&mut finished.itl, &more.itl),
        (&mut finished.e2e, &more.e2e),
        (&mut finished.queue, &more.queue),
    ] {
        for &(value, times) in extra {
            add(all, value, times);
        }
    }
}

/// Where a replica's behaviour comes from.
enum Source {
    /// Boxed: a behaviour is far bigger than a path.
    Fixed(Box<Mutex<Behaviour>>),
    /// Re-read on every request (the demo changes load by rewriting it).
    File(PathBuf, Kind),
}

struct Shared {
    source: Source,
    /// The replica's, whatever its source says from one request to the next.
    progress: Mutex<Progress>,
    hits: AtomicU64,
    stop: AtomicBool,
}

/// A running replica; stops when dropped.
pub struct Replica {
    address: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Replica {
    /// Serves `behaviour` on `address` (port 0 picks one).
    pub fn start(address: impl ToSocketAddrs, behaviour: Behaviour) -> io::Result<Replica> {
        Self::with_source(address, Source::Fixed(Box::new(Mutex::new(behaviour))))
    }

    /// Serves what `file` says on each request (see [`Behaviour::from_file`]).
    pub fn from_file(
        address: impl ToSocketAddrs,
        file: PathBuf,
        kind: Kind,
    ) -> io::Result<Replica> {
        Self::with_source(address, Source::File(file, kind))
    }

    fn with_source(address: impl ToSocketAddrs, source: Source) -> io::Result<Replica> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            source,
            progress: Mutex::new(Progress {
                last: Instant::now(),
                remainder: 0.0,
                finished: Finished::default(),
            }),
            hits: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("fake-engine".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(&listener, &shared)
            })?;
        Ok(Replica {
            address,
            shared,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Requests answered (or stalled) so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Changes a fixed replica's behaviour.
    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        match &self.shared.source {
            Source::Fixed(behaviour) => change(&mut behaviour.lock().unwrap()),
            Source::File(..) => panic!("this replica reads its behaviour from a file"),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        let _ = std::thread::Builder::new()
            .name("fake-engine-conn".into())
            .spawn(move || {
                let _ = answer(stream, &shared);
            });
    }
}

fn answer(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut chunk)?;
        if read == 0 || request.len() > 8192 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let path = String::from_utf8_lossy(&request)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let mut behaviour = match &shared.source {
        Source::Fixed(behaviour) => behaviour.lock().unwrap().clone(),
        Source::File(path, kind) => match Behaviour::from_file(path, *kind) {
            Ok(behaviour) => behaviour,
            Err(e) => return respond(&mut stream, 500, "text/plain", &e, false),
        },
    };
    {
        let mut progress = shared.progress.lock().unwrap();
        let now = Instant::now();
        if let Some(moving) = behaviour.moving {
            let seconds = now.duration_since(progress.last).as_secs_f64();
            progress.advance(moving, seconds);
        }
        // While it stands still, no backlog builds up for when it moves.
        progress.last = now;
        add_finished(&mut behaviour.load.finished, &progress.finished);
    }
    match behaviour.answer {
        Answer::Stall => {
            while !shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            Ok(())
        }
        Answer::Garbage => stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n"),
        Answer::Status(code) => respond(&mut stream, code, "text/plain", "error\n", false),
        Answer::Page if path == behaviour.kind.metrics_path() => {
            let body = behaviour
                .page
                .clone()
                .unwrap_or_else(|| pages::page(behaviour.kind, &behaviour.load));
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                behaviour.chunked,
            )
        }
        Answer::Page if behaviour.kind == Kind::Trtllm && path == "/metrics" => respond(
            &mut stream,
            200,
            "application/json",
            &pages::trtllm_json(&behaviour.load),
            false,
        ),
        Answer::Page => respond(&mut stream, 404, "text/plain", "Not Found\n", false),
    }
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &str,
    chunked: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {code} X\r\ncontent-type: {content_type}\r\n").into_bytes();
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        for piece in body.as_bytes().chunks(4096) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The body `path` answers with.
    fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nhost: fake\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        body.to_string()
    }

    /// The sum of `name`'s samples on `page`.
    fn total(page: &str, name: &str) -> f64 {
        page.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .map(|line| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    }

    /// A state file of its own, removed when dropped.
    struct StateFile(PathBuf);

    impl StateFile {
        fn new(name: &str, text: &str) -> StateFile {
            let path =
                std::env::temp_dir().join(format!("fake-engine-{}-{name}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            StateFile(path)
        }
    }

    impl Drop for StateFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Reads `address` until `requests_total` exceeds `above`, or fails
    /// after a while; the page that did.
    fn read_past(address: SocketAddr, above: f64) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = get(address, "/metrics");
            if total(&page, "vllm:request_success_total") > above {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "still {above} requests after 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn progress_keeps_every_fraction_and_one_in_ten_slow() {
        let mut progress = Progress {
            last: Instant::now(),
            remainder: 0.0,
            finished: Finished::default(),
        };
        let moving = Moving {
            rate: 10.0,
            ttft: 0.25,
        };
        // 0.25 s at a time: 2.5 requests each, the halves carried over.
        for _ in 0..4 {
            progress.advance(moving, 0.25);
        }
        let f = &progress.finished;
        assert_eq!(f.requests, 10);
        assert_eq!(f.prompt_tokens, 5120);
        assert_eq!(f.generation_tokens, 1280);
        assert_eq!(f.ttft, vec![(0.25, 9), (0.5, 1)]);
        assert_eq!(f.itl, vec![(0.02, 1270)]);
        assert_eq!(f.e2e, vec![(0.25 + 127.0 * 0.02, 10)]);
        assert_eq!(f.queue, vec![(0.2, 10)]);
        // One at a time, the slow ones still come.
        for _ in 0..25 {
            progress.advance(moving, 0.1);
        }
        let f = &progress.finished;
        assert_eq!(f.requests, 35);
        assert_eq!(f.ttft, vec![(0.25, 32), (0.5, 3)]);
        // A lower TTFT adds to what is there; no queue time below zero.
        progress.advance(
            Moving {
                rate: 10.0,
                ttft: 0.01,
            },
            0.5,
        );
        let f = &progress.finished;
        assert_eq!(f.requests, 40);
        assert_eq!(f.ttft, vec![(0.25, 32), (0.5, 3), (0.01, 4), (0.02, 1)]);
        assert_eq!(f.queue, vec![(0.2, 35), (0.0, 5)]);
    }

    #[test]
    fn a_moving_replica_counts_up_and_never_back() {
        let load = Load {
            model: String::from("m"),
            finished: Finished {
                requests: 5,
                ..Finished::default()
            },
            ..Load::default()
        };
        let replica = Replica::start(
            "127.0.0.1:0",
            Behaviour {
                moving: Some(Moving {
                    rate: 1000.0,
                    ttft: 0.2,
                }),
                ..Behaviour::new(Kind::Vllm, load)
            },
        )
        .unwrap();
        let first = total(
            &get(replica.address(), "/metrics"),
            "vllm:request_success_total",
        );
        assert!(first >= 5.0, "{first}");
        // Some tens of milliseconds later, more have finished.
        std::thread::sleep(Duration::from_millis(30));
        let mut last = total(
            &read_past(replica.address(), first),
            "vllm:request_success_total",
        );
        for _ in 0..5 {
            let page = get(replica.address(), "/metrics");
            let requests = total(&page, "vllm:request_success_total");
            assert!(requests >= last, "{requests} after {last}");
            last = requests;
            // Every request finished here came with its tokens and latencies.
            let moved = requests - 5.0;
            assert_eq!(total(&page, "vllm:prompt_tokens_total"), 512.0 * moved);
            assert_eq!(total(&page, "vllm:generation_tokens_total"), 128.0 * moved);
            assert_eq!(
                total(&page, "vllm:time_to_first_token_seconds_count"),
                moved
            );
            assert_eq!(
                total(&page, "vllm:inter_token_latency_seconds_count"),
                127.0 * moved
            );
            // 0.2 s is under le="0.25"; the slow tenth at 0.4 s is not.
            let fast = page
                .lines()
                .find(|l| {
                    l.starts_with(
                        "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.25\",",
                    )
                })
                .unwrap();
            let fast: f64 = fast.rsplit_once(' ').unwrap().1.parse().unwrap();
            assert_eq!(fast, moved - (moved as u64 / 10) as f64);
        }
    }

    #[test]
    fn a_state_file_moves_a_replica_and_keeps_what_finished() {
        let file = StateFile::new("moving", "model=m rate=1000");
        let replica = Replica::from_file("127.0.0.1:0", file.0.clone(), Kind::Vllm).unwrap();
        let before = total(
            &read_past(replica.address(), 0.0),
            "vllm:request_success_total",
        );
        // A new rate and TTFT: what finished stays, and more come.
        std::fs::write(&file.0, "model=m rate=500 ttft_now=3").unwrap();
        let page = read_past(replica.address(), before);
        // The 3 s first tokens pass le="2.5" and land under le="5.0".
        let bucket = |le: &str| -> f64 {
            let start =
                format!("vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"{le}\",");
            let line = page.lines().find(|l| l.starts_with(&start)).unwrap();
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        let count = total(&page, "vllm:time_to_first_token_seconds_count");
        assert!(bucket("2.5") >= before && bucket("2.5") < count);
        assert_eq!(bucket("10.0"), count);
        // Standing still, nothing is lost and nothing added.
        std::fs::write(&file.0, "model=m requests=1000").unwrap();
        let still = total(
            &get(replica.address(), "/metrics"),
            "vllm:request_success_total",
        );
        let moved = total(&page, "vllm:request_success_total");
        assert!(still >= 1000.0 + moved, "{still} < 1000 + {moved}");
        let again = total(
            &get(replica.address(), "/metrics"),
            "vllm:request_success_total",
        );
        assert_eq!(again, still);
    }

    #[test]
    fn state_files_say_what_finished() {
        let file = StateFile::new(
            "finished",
            "requests=10 prompt_tokens=5120 generation_tokens=1280 \
             ttft=0.05:3,0.2:4 itl=0.02:1270 e2e=2.6:10 queue=0:9,0.3:1 rate=2.5 ttft_now=0.4",
        );
        let behaviour = Behaviour::from_file(&file.0, Kind::Vllm).unwrap();
        assert_eq!(
            behaviour.load.finished,
            Finished {
                requests: 10,
                prompt_tokens: 5120,
                generation_tokens: 1280,
                ttft: vec![(0.05, 3), (0.2, 4)],
                itl: vec![(0.02, 1270)],
                e2e: vec![(2.6, 10)],
                queue: vec![(0.0, 9), (0.3, 1)],
            }
        );
        assert_eq!(
            behaviour.moving,
            Some(Moving {
                rate: 2.5,
                ttft: 0.4
            })
        );
        std::fs::write(&file.0, "rate=7").unwrap();
        let behaviour = Behaviour::from_file(&file.0, Kind::Vllm).unwrap();
        assert_eq!(
            behaviour.moving,
            Some(Moving {
                rate: 7.0,
                ttft: 0.1
            })
        );
        std::fs::write(&file.0, "waiting=1").unwrap();
        let behaviour = Behaviour::from_file(&file.0, Kind::Vllm).unwrap();
        assert_eq!(behaviour.moving, None);
        assert_eq!(behaviour.load.finished, Finished::default());
        for (text, key) in [
            ("ttft=0.1:3,0.2", "ttft"),
            ("ttft=fast:3", "ttft"),
            ("itl=0.1:-1", "itl"),
            ("e2e=-1:1", "e2e"),
            ("queue=0.1;2", "queue"),
            ("requests=many", "requests"),
            ("prompt_tokens=1.5", "prompt_tokens"),
            ("generation_tokens=-3", "generation_tokens"),
            ("rate=-1", "rate"),
            ("rate=1 ttft_now=NaN", "ttft_now"),
            ("ttft_now=0.3", "ttft_now"),
        ] {
            std::fs::write(&file.0, text).unwrap();
            let error = Behaviour::from_file(&file.0, Kind::Vllm).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
