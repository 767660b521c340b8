//! Property tests of the three parsers that take untrusted bytes: the
//! HTTP/1.1 response reader (`engine::http::get`, fed from a loopback
//! listener on 127.0.0.1), the Prometheus text parser (`engine::prom`) and
//! trigger metadata (`scaling::trigger::parse`); and what windowed
//! triggers make of pages (histograms read, counters kept over resets).
//! For every generated input:
//! no panic, no hang (each case has a deadline, enforced by a watchdog),
//! nothing kept beyond the caps, and every failure an `Err` with a message;
//! pages generated from a known model parse back to that model.
//!
//! No property-testing crate: none of proptest, quickcheck or arbitrary is
//! in this machine's offline cargo registry, and the build must work
//! offline, so a small seeded generator (SplitMix64) is written here.
//! Every case is reproducible from its seed, printed on failure.
//!
//! `cargo test --test properties` runs a bounded number of cases (a few
//! seconds in debug). A longer run (about 5 minutes in debug on 2 cores):
//!
//! ```sh
//! KEDA_GPU_SCALER_PROPERTY_CASES=100000 cargo test --test properties
//! ```
//!
//! `KEDA_GPU_SCALER_PROPERTY_SEED` (decimal or `0x…`) picks other cases;
//! with `KEDA_GPU_SCALER_PROPERTY_CASES=1` it replays the one case a
//! failure names.
// `*rng.pick(..)` picks a `&str` out of a slice of them: clippy's
// auto-deref suggestion does not compile there.
#![allow(clippy::explicit_auto_deref)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use keda_gpu_scaler::engine::http::{self, BodyBudget, HttpError, MAX_HEADER_BYTES};
use keda_gpu_scaler::engine::prom::{
    self, Family, Kind, ParseError, Want, MAX_DECLARED, MAX_LABELS, MAX_UNKEPT_EXAMPLES,
};
use keda_gpu_scaler::engine::scrape::ReadError;
use keda_gpu_scaler::engine::share::ENDPOINT_SHARE;
use keda_gpu_scaler::engine::signals::{Engine, Signal};
use keda_gpu_scaler::node::gpu_metric::Metric;
use keda_gpu_scaler::scaling::trigger::{self, Source, KEDA_KEYS, KEYS, PROFILES};
use keda_gpu_scaler::untrusted::MAX_ECHO;

// ---------------------------------------------------------------------
// Heap accounting: the bytes allocated and not yet freed by the current
// thread, and their peak, so a property can say "reading this answer
// allocated O(max_body), not O(bytes sent)".
// ---------------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    // `try_with`: allocations while a thread's locals are torn down are
    // not counted (and never panic).
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are plain thread-local cells that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            account(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            account(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator with `layout`.
        unsafe { System.dealloc(pointer, layout) };
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `pointer` came from this allocator with `layout`.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what it returned with the most heap bytes this
/// thread held at once while it ran, beyond what it held before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - start).unwrap_or(0))
}

// ---------------------------------------------------------------------
// The generator and the runner.
// ---------------------------------------------------------------------

/// SplitMix64: small, fast, and good enough to drive generators.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 0..n (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A size up to `max`, most often small: uniform over bit lengths.
    fn size(&mut self, max: usize) -> usize {
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        let top = if bits == 0 { 0 } else { (1usize << bits) - 1 };
        self.below(top.min(max) + 1)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Cases per property: `KEDA_GPU_SCALER_PROPERTY_CASES`, or `default`.
fn case_count(default: usize) -> usize {
    env_number("KEDA_GPU_SCALER_PROPERTY_CASES").map_or(default, |n| n as usize)
}

fn base_seed() -> u64 {
    env_number("KEDA_GPU_SCALER_PROPERTY_SEED").unwrap_or(0x6b65_6461_2d67_7075)
}

/// What the running case is: its seed, when it started, its input.
struct Progress {
    seed: u64,
    started: Instant,
    input: Vec<u8>,
}

/// One case: its generator, and where it leaves its input for messages.
struct Case {
    rng: Rng,
    progress: Arc<Mutex<Progress>>,
}

impl Case {
    /// Records the input, shown if the case fails.
    fn input(&self, bytes: &[u8]) {
        lock(&self.progress).input = bytes.to_vec();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn shown(bytes: &[u8]) -> String {
    let text = bytes.escape_ascii().to_string();
    if text.len() > 4000 {
        format!("{}… ({} bytes in all)", &text[..4000], bytes.len())
    } else {
        text
    }
}

/// Runs `property` on `count` cases in a worker thread; fails, naming the case's seed and
/// input, when one panics or runs past `per_case`.
fn check(name: &str, count: usize, per_case: Duration, property: fn(&mut Case)) {
    let base = base_seed();
    let progress = Arc::new(Mutex::new(Progress {
        seed: base,
        started: Instant::now(),
        input: Vec::new(),
    }));
    let (done, finished) = mpsc::channel::<()>();
    let shared = Arc::clone(&progress);
    let worker = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            for i in 0..count as u64 {
                let seed = base.wrapping_add(i);
                {
                    let mut now = lock(&shared);
                    now.seed = seed;
                    now.started = Instant::now();
                    now.input.clear();
                }
                let mut case = Case {
                    rng: Rng(seed),
                    progress: Arc::clone(&shared),
                };
                property(&mut case);
            }
            let _ = done.send(());
        })
        .expect("spawn the property's worker");
    let failure = |what: String| -> ! {
        let now = lock(&progress);
        panic!(
            "{name}: {what}\ncase seed {seed:#x}; replay with KEDA_GPU_SCALER_PROPERTY_SEED={seed:#x} \
             KEDA_GPU_SCALER_PROPERTY_CASES=1 cargo test --test properties {name}\ninput: {input}",
            seed = now.seed,
            input = shown(&now.input),
        )
    };
    loop {
        match finished.recv_timeout(Duration::from_millis(20)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return match worker.join() {
                    Ok(()) => {}
                    Err(panic) => failure(format!("panicked: {}", panic_text(&*panic))),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let elapsed = lock(&progress).started.elapsed();
                if elapsed > per_case {
                    failure(format!(
                        "one case ran {elapsed:?}, past its {per_case:?} deadline (a hang)"
                    ));
                }
            }
        }
    }
}

/// Text that reaches a log line or a gRPC message: no control characters
/// (a page cannot forge log lines) and bounded (it cannot flood events).
fn assert_shown_safely(what: &str, text: &str) {
    assert!(!text.is_empty(), "{what}: an empty message");
    assert!(
        !text.chars().any(char::is_control),
        "{what}: a raw control character in {text:?}"
    );
    // A message echoes at most a couple of outside strings, each cut
    // after MAX_ECHO characters, each escaped to at most 6 ("\u{9f}").
    let length = text.chars().count();
    let bound = 2 * 6 * MAX_ECHO + 512;
    assert!(
        length <= bound,
        "{what}: {length} characters, over {bound} (outside text echoed uncapped): {:?}…",
        text.chars().take(300).collect::<String>()
    );
}

// ---------------------------------------------------------------------
// HTTP: a loopback server answering each connection with a script.
// ---------------------------------------------------------------------

/// What the server does with one connection, after reading the request.
struct Script {
    /// Bytes to write, each after its pause.
    parts: Vec<(Vec<u8>, Duration)>,
    /// Hold the connection open until this sender is dropped, then close.
    hold: Option<mpsc::Receiver<()>>,
}

/// One loopback listener per property, answering connections in order.
struct Server {
    address: SocketAddr,
    scripts: mpsc::Sender<Script>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
        let address = listener.local_addr().unwrap();
        let (scripts, next) = mpsc::channel::<Script>();
        std::thread::spawn(move || {
            while let Ok(script) = next.recv() {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                // The whole request, so that closing sends FIN, not RST.
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                for (part, pause) in script.parts {
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                    if stream.write_all(&part).is_err() {
                        break;
                    }
                }
                if let Some(hold) = script.hold {
                    let _ = hold.recv();
                }
            }
        });
        Server { address, scripts }
    }

    /// GETs an answer made of `parts` (the connection then closes, or is
    /// held until the returned sender is dropped).
    fn answer(&self, parts: Vec<(Vec<u8>, Duration)>, hold: bool) -> Option<mpsc::Sender<()>> {
        let (release, held) = mpsc::channel();
        self.scripts
            .send(Script {
                parts,
                hold: hold.then_some(held),
            })
            .expect("the server thread is running");
        hold.then_some(release)
    }
}

/// What a generated answer must give.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// This body (or an error when it is not UTF-8).
    Body(Vec<u8>),
    /// A status error with this code.
    Status(u16),
    /// Some error other than a timeout: malformed, truncated, too large.
    Failure,
}

struct Answer {
    bytes: Vec<u8>,
    expect: Expect,
    max_body: usize,
    /// A chunked body's bytes on the wire, with its framing (each line end
    /// counted as a CRLF); 0 for other framings. A larger body than
    /// `max_body`, or more of these, may fail as too large; below both it
    /// must not.
    body_bytes_on_wire: usize,
}

const REASONS: [&str; 5] = ["OK", "", "Très bien", "OK OK", "\u{1}odd"];

/// A Prometheus page, or bytes that are not one, as a body.
fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => (0..rng.size(3000)).map(|_| rng.below(256) as u8).collect(),
        2 => "é€\u{1f680}".repeat(rng.size(200)).into_bytes(),
        _ => {
            let model = PageModel::generate(rng);
            model.page.into_bytes()
        }
    }
}

/// An extra header line (without its line end) and whether it makes the
/// head too large or not text.
fn extra_header(rng: &mut Rng) -> (Vec<u8>, Option<Expect>) {
    if rng.one_in(8) {
        return match rng.below(3) {
            0 => (
                format!("X-Huge: {}", "b".repeat(MAX_HEADER_BYTES + rng.below(2000))).into_bytes(),
                Some(Expect::Failure),
            ),
            1 => (b"X-Bytes: \xff\xfe".to_vec(), Some(Expect::Failure)),
            _ => (b"no colon here".to_vec(), Some(Expect::Failure)),
        };
    }
    match rng.below(9) {
        0 => (
            format!("X-Long: {}", "a".repeat(rng.range(100, 4000))).into_bytes(),
            None,
        ),
        1 => (b"X-Control: \x01\x1b[31mred\x7f\t".to_vec(), None),
        2 => (b" folded: continuation".to_vec(), None),
        3 => (
            b"Content-Type: text/plain; version=0.0.4; charset=utf-8".to_vec(),
            None,
        ),
        4 => (b"Date: Sat, 05 Dec 2026 19:00:00 GMT".to_vec(), None),
        5 => (b"Server:uvicorn".to_vec(), None),
        6 => (b"X-Empty:".to_vec(), None),
        7 => (b"Connection: close".to_vec(), None),
        _ => ("X-Unicode: ünïcødé \u{202e}".as_bytes().to_vec(), None),
    }
}

/// A chunked encoding of `body`: sizes (1-byte chunks often), hex case,
/// leading zeros, extensions, trailers; the bytes and the framing's size.
fn chunked(rng: &mut Rng, body: &[u8], end: &[u8]) -> (Vec<u8>, usize) {
    let mut ends = 0;
    let mut out = Vec::new();
    let mut at = 0;
    let one_byte = rng.one_in(3);
    while at < body.len() {
        let size = if one_byte {
            1
        } else {
            let most = (body.len() - at).min(1 + rng.size(4096));
            rng.range(1, most)
        }
        .min(body.len() - at);
        let mut line = match rng.below(4) {
            0 => format!("{size:X}"),
            1 => format!("{size:04x}"),
            _ => format!("{size:x}"),
        };
        match rng.below(6) {
            0 => line.push_str(";name=value"),
            1 => line.push_str(";q=\"quoted;value\""),
            2 => line.push_str(&format!(";ext={}", "e".repeat(rng.size(900)))),
            3 => line.push_str(" ; spaced"),
            _ => {}
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(end);
        ends += 1;
        out.extend_from_slice(&body[at..at + size]);
        out.extend_from_slice(end);
        ends += 1;
        at += size;
    }
    out.extend_from_slice(if rng.one_in(3) { b"0;last=1" } else { b"0" });
    out.extend_from_slice(end);
    ends += 1;
    for _ in 0..rng.below(3) {
        out.extend_from_slice(b"X-Trailer: t");
        out.extend_from_slice(end);
        ends += 1;
    }
    out.extend_from_slice(end);
    ends += 1;
    // Each line end counted as a CRLF, as the reader counts it.
    let counted = out.len() + ends * (2 - end.len());
    (out, counted)
}

/// An answer a real server (or a broken one) could send, and what it
/// must give.
fn answer(rng: &mut Rng) -> Answer {
    let end: &[u8] = if rng.one_in(5) { b"\n" } else { b"\r\n" };
    let body = body(rng);
    let mut head = Vec::new();
    let mut fails: Option<Expect> = None;
    let code = if rng.one_in(6) {
        *rng.pick(&[204u16, 301, 302, 404, 500, 503])
    } else {
        200
    };
    let version = if rng.one_in(4) {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    head.extend_from_slice(format!("{version} {code} {}", rng.pick(&REASONS)).as_bytes());
    head.extend_from_slice(end);
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for _ in 0..rng.below(4) {
        let (line, failure) = extra_header(rng);
        if failure.is_some() {
            fails = failure;
        }
        headers.push(line);
    }
    if (300..400).contains(&code) {
        let location = match rng.below(3) {
            0 => "http://elsewhere/metrics".to_string(),
            1 => format!("http://x/{}", "l".repeat(rng.range(150, 3000))),
            _ => "http://evil/\u{1b}[2J\u{7}\u{85}".to_string(),
        };
        headers.push(format!("Location: {location}").into_bytes());
    }
    // The framing, and the body bytes as sent.
    let framing = rng.below(7);
    let mut counted = 0;
    let (wire_body, mut expect) = match framing {
        // Content-Length, exact (sometimes twice, or shouting).
        0 | 1 => {
            let name = rng.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]);
            headers.push(format!("{name}: {}", body.len()).into_bytes());
            if rng.one_in(4) {
                headers.push(format!("Content-Length:  {}  ", body.len()).into_bytes());
            }
            (body.clone(), Expect::Body(body.clone()))
        }
        // Content-Length shorter than what is sent: the rest is ignored.
        2 => {
            let declared = rng.below(body.len() + 1);
            headers.push(format!("Content-Length: {declared}").into_bytes());
            (body.clone(), Expect::Body(body[..declared].to_vec()))
        }
        // Content-Length longer than what is sent before the close.
        3 => {
            headers
                .push(format!("Content-Length: {}", body.len() + rng.range(1, 100)).into_bytes());
            (body.clone(), Expect::Failure)
        }
        // Chunked (sometimes beside a Content-Length, which it wins over).
        4 | 5 => {
            let te = rng.pick(&["chunked", "Chunked", "gzip, chunked"]);
            headers.push(format!("Transfer-Encoding: {te}").into_bytes());
            if rng.one_in(5) {
                headers.push(b"Content-Length: 3".to_vec());
            }
            let (wire, framed) = chunked(rng, &body, end);
            counted = framed;
            (wire, Expect::Body(body.clone()))
        }
        // Until the close.
        _ => (body.clone(), Expect::Body(body.clone())),
    };
    rng.shuffle(&mut headers);
    for line in &headers {
        head.extend_from_slice(line);
        head.extend_from_slice(end);
    }
    head.extend_from_slice(end);
    if code != 200 {
        expect = Expect::Status(code);
    }
    if let Some(failure) = fails {
        // A broken head fails before the status is looked at.
        expect = failure;
    }
    let max_body = match rng.below(8) {
        0 => body.len(),
        1 => body.len().saturating_sub(1),
        2 => counted,
        3 => rng.below(64),
        4 | 5 => 3 * counted.max(body.len()) + rng.size(4096),
        _ => http::MAX_BODY_BYTES,
    };
    let mut bytes = head;
    bytes.extend_from_slice(&wire_body);
    Answer {
        bytes,
        expect,
        max_body,
        body_bytes_on_wire: counted,
    }
}

/// The answer cut into parts, a few with pauses, to split reads.
fn parts(rng: &mut Rng, bytes: &[u8]) -> Vec<(Vec<u8>, Duration)> {
    let mut cuts: Vec<usize> = (0..rng.below(5))
        .map(|_| rng.below(bytes.len() + 1))
        .collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let pause = rng.one_in(4);
    cuts.windows(2)
        .map(|w| {
            let wait = if pause && rng.one_in(2) {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            };
            (bytes[w[0]..w[1]].to_vec(), wait)
        })
        .collect()
}

/// Damages an answer the way a broken or hostile server might.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    const INTERESTING: [&[u8]; 16] = [
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b"\x1b[2J",
        b"\xff",
        b"\xc3",
        b":",
        b";",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b" ",
        b"\t",
        b"HTTP/1.1 200 OK\r\n",
    ];
    for _ in 0..rng.range(1, 4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 => {
                let insert = rng.pick(&INTERESTING);
                bytes.splice(at..at, insert.iter().copied());
            }
            1 if at < bytes.len() => bytes[at] = rng.below(256) as u8,
            2 => bytes.truncate(at),
            3 => {
                let to = (at + rng.size(64)).min(bytes.len());
                bytes.drain(at..to);
            }
            4 => {
                let to = (at + rng.size(64)).min(bytes.len());
                let copy = bytes[at..to].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let filler: Vec<u8> = vec![*rng.pick(b"a\x010;"); rng.size(20_000)];
                bytes.splice(at..at, filler);
            }
        }
    }
}

/// Reads one answer and checks what every answer must satisfy; returns
/// the result for the caller's own expectations.
fn read(
    server: &Server,
    case: &mut Case,
    bytes: Vec<u8>,
    max_body: usize,
    budget_cap: usize,
    hold: bool,
    deadline_in: Duration,
) -> (Result<String, HttpError>, Duration) {
    case.input(&bytes);
    let wire = bytes.len();
    let parts = parts(&mut case.rng, &bytes);
    let release = server.answer(parts, hold);
    let budget = BodyBudget::new(budget_cap);
    let started = Instant::now();
    let deadline = started + deadline_in;
    let (result, peak) = peak_heap(|| {
        let page = http::get(
            server.address,
            "vllm:8000",
            "/metrics",
            deadline,
            max_body,
            &budget,
        );
        match page {
            Ok(page) => {
                let held = budget.in_use();
                assert!(held <= budget.cap(), "{held} bytes held, over the budget");
                assert!(
                    held >= page.text.len(),
                    "the page's {} bytes are not all counted in the budget ({held})",
                    page.text.len()
                );
                // What a page holds of the shared budget is bounded by the
                // caps (body, head, one read past them), not by the bytes
                // sent: 1-byte chunks with long extensions hold no more.
                let most = max_body + MAX_HEADER_BYTES + 32 * 1024;
                assert!(
                    held <= most,
                    "a page of {} bytes holds {held} budget bytes, over {most}",
                    page.text.len()
                );
                Ok(page.text.clone())
            }
            Err(e) => Err(e),
        }
    });
    let elapsed = started.elapsed();
    drop(release);
    assert_eq!(budget.in_use(), 0, "the budget's bytes are given back");
    assert!(
        elapsed <= deadline_in + Duration::from_secs(2),
        "the read took {elapsed:?}, past its {deadline_in:?} deadline"
    );
    // The reader keeps O(max_body + header cap), never O(bytes sent).
    let bound = 4 * max_body.min(wire) + 8 * MAX_HEADER_BYTES + 64 * 1024;
    assert!(
        peak <= bound,
        "reading {wire} bytes (max_body {max_body}) held {peak} heap bytes at once, over {bound}"
    );
    match &result {
        Ok(text) => assert!(text.len() <= max_body, "a body over max_body"),
        Err(e) => {
            assert_shown_safely("an HTTP error", &e.to_string());
            assert_shown_safely(
                "a replica's HTTP error",
                &ReadError::Http(e.clone()).to_string(),
            );
        }
    }
    (result, elapsed)
}

/// Well-formed answers (and ones broken in known ways) read back to the
/// body sent, or fail as they must.
#[test]
fn http_answers_read_back_or_fail_as_they_must() {
    thread_local!(static SERVER: Server = Server::start());
    fn property(case: &mut Case) {
        let answer = answer(&mut case.rng);
        let cap = if case.rng.one_in(8) {
            case.rng.below(answer.bytes.len() * 2 + 1)
        } else {
            usize::MAX
        };
        let (max_body, wire) = (answer.max_body, answer.bytes.len());
        let (result, _) = SERVER.with(|server| {
            read(
                server,
                case,
                answer.bytes,
                max_body,
                cap,
                false,
                Duration::from_secs(10),
            )
        });
        // Larger than the caps: too large is allowed, nothing else changes.
        let body_len = match &answer.expect {
            Expect::Body(body) => body.len(),
            _ => 0,
        };
        let may_be_too_large = wire as f64 > cap as f64 * ENDPOINT_SHARE
            || body_len > max_body
            || answer.body_bytes_on_wire > max_body;
        if may_be_too_large && matches!(result, Err(HttpError::TooLarge(_))) {
            return;
        }
        match (&answer.expect, &result) {
            (Expect::Body(body), _) if body.len() > max_body => {
                panic!("a body over max_body must be too large, got {result:?}")
            }
            (Expect::Body(body), Ok(text)) => assert_eq!(text.as_bytes(), &body[..]),
            (Expect::Body(body), Err(HttpError::Malformed(m)))
                if std::str::from_utf8(body).is_err() =>
            {
                assert!(m.contains("UTF-8"), "{m}")
            }
            (Expect::Status(code), Err(HttpError::Status { code: got, .. })) => {
                assert_eq!(code, got)
            }
            (Expect::Failure, Err(e)) => {
                assert!(!matches!(e, HttpError::Timeout), "a timeout, not a failure")
            }
            (expect, result) => panic!("expected {expect:?}, got {result:?}"),
        }
    }
    check(
        "http_answers_read_back_or_fail_as_they_must",
        case_count(1000),
        Duration::from_secs(15),
        property,
    );
}

/// Answers damaged at random: no panic, no hang, nothing over the caps.
#[test]
fn http_damaged_answers_fail_cleanly() {
    thread_local!(static SERVER: Server = Server::start());
    fn property(case: &mut Case) {
        let answer = answer(&mut case.rng);
        let mut bytes = answer.bytes;
        mutate(&mut case.rng, &mut bytes);
        let cap = if case.rng.one_in(4) {
            case.rng.below(bytes.len() * 2 + 1)
        } else {
            usize::MAX
        };
        let max_body = answer.max_body;
        let (result, _) = SERVER.with(|server| {
            read(
                server,
                case,
                bytes,
                max_body,
                cap,
                false,
                Duration::from_secs(10),
            )
        });
        // The server always closes: only a deadline of 10 s could time out.
        assert!(!matches!(result, Err(HttpError::Timeout)), "{result:?}");
    }
    check(
        "http_damaged_answers_fail_cleanly",
        case_count(1000),
        Duration::from_secs(15),
        property,
    );
}

/// A server that stops part-way, or drips bytes, costs the deadline and
/// no more.
#[test]
fn http_a_stalled_or_dripping_server_costs_only_the_deadline() {
    thread_local!(static SERVER: Server = Server::start());
    fn property(case: &mut Case) {
        let answer = answer(&mut case.rng);
        let deadline = Duration::from_millis(case.rng.range(30, 120) as u64);
        let (result, elapsed) = if case.rng.one_in(2) {
            // Part of the answer, then silence with the connection open.
            let cut = case.rng.below(answer.bytes.len() + 1);
            let bytes = answer.bytes[..cut].to_vec();
            SERVER.with(|server| {
                read(
                    server,
                    case,
                    bytes,
                    answer.max_body,
                    usize::MAX,
                    true,
                    deadline,
                )
            })
        } else {
            // A header (or a chunked body) one byte at a time, forever.
            let prefix: &[u8] = if case.rng.one_in(2) {
                b"HTTP/1.1 200 OK\r\nX-Slow: "
            } else {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;"
            };
            case.input(prefix);
            let mut parts = vec![(prefix.to_vec(), Duration::ZERO)];
            parts.extend((0..200).map(|_| (b"a".to_vec(), Duration::from_millis(10))));
            SERVER.with(|server| {
                let release = server.answer(parts, false);
                let budget = BodyBudget::new(usize::MAX);
                let started = Instant::now();
                let result = http::get(
                    server.address,
                    "h",
                    "/metrics",
                    started + deadline,
                    1 << 20,
                    &budget,
                )
                .map(|page| page.text.clone());
                drop(release);
                assert_eq!(budget.in_use(), 0);
                (result, started.elapsed())
            })
        };
        assert!(
            elapsed <= deadline + Duration::from_millis(1500),
            "{elapsed:?} for a {deadline:?} deadline"
        );
        if let Err(e) = &result {
            assert_shown_safely("an HTTP error", &e.to_string());
        }
    }
    check(
        "http_a_stalled_or_dripping_server_costs_only_the_deadline",
        // Each costs up to its deadline (~0.1 s): a long run does 1 in 500.
        case_count(8).min(8).max(case_count(8) / 500),
        Duration::from_secs(10),
        property,
    );
}

// ---------------------------------------------------------------------
// Prometheus text: pages generated from a model.
// ---------------------------------------------------------------------

/// One series of the model.
#[derive(Debug, Clone)]
struct ModelSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

#[derive(Debug, Clone)]
struct ModelFamily {
    name: String,
    /// The `# TYPE` word, or none (untyped).
    kind: Option<&'static str>,
    samples: Vec<ModelSample>,
    wanted: bool,
}

/// A page line, before rendering.
#[derive(Debug, Clone)]
enum Line {
    Sample(usize, usize),
    Type(usize),
    Help(usize),
    Comment(String),
    Blank(String),
    /// A line of a family nobody asked for (possibly not Prometheus at all).
    Unwanted(String),
}

struct PageModel {
    families: Vec<ModelFamily>,
    lines: Vec<Line>,
    page: String,
    wants: Vec<Want>,
}

const KINDS: [&str; 8] = [
    "gauge",
    "counter",
    "histogram",
    "summary",
    "untyped",
    "info",
    "stateset",
    "gaugehistogram",
];

fn kind_of(word: Option<&str>) -> Kind {
    match word {
        Some("gauge") => Kind::Gauge,
        Some("counter") => Kind::Counter,
        Some("histogram") => Kind::Histogram,
        Some("summary") => Kind::Summary,
        _ => Kind::Untyped,
    }
}

/// The suffixes a family's samples may add to its name, by `# TYPE`.
fn suffixes(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Counter => &["_total", "_created"],
        // As the parser reads them: a summary's `_bucket` is its own too.
        Kind::Histogram | Kind::Summary => &["_bucket", "_sum", "_count", "_created"],
        Kind::Gauge | Kind::Untyped => &[],
    }
}

/// A label value: escapes, controls, separators, other scripts.
fn label_value(rng: &mut Rng) -> String {
    const PIECES: [&str; 24] = [
        "llama-3-8b",
        "0",
        "+Inf",
        "0.25",
        "\"",
        "\\",
        "\n",
        "\\n",
        "}",
        "{",
        ",",
        "=",
        "#",
        " ",
        "\t",
        "\r",
        "\u{1}",
        "\u{7f}",
        "é",
        "模型",
        "\u{1f680}",
        "\u{202e}",
        "a b",
        "",
    ];
    (0..rng.size(8)).map(|_| *rng.pick(&PIECES)).collect()
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_name(rng: &mut Rng, i: usize) -> String {
    let base = rng.pick(&["model_name", "engine", "le", "quantile", "_x", "a", "L"]);
    format!("{base}{i}")
}

fn value(rng: &mut Rng) -> f64 {
    match rng.below(10) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -0.0,
        5 => rng.below(1000) as f64,
        6 => f64::from_bits(rng.next()) % 1e6,
        7 => *rng.pick(&[1e-300, 1.7e308, 5e-324, 1.5e3, -2.5e-7, 123456789.0]),
        _ => (rng.next() as f64 / u64::MAX as f64) * 100.0,
    }
}

fn render_value(rng: &mut Rng, value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    match rng.below(5) {
        0 => format!("{value:e}"),
        1 => format!("{value:E}"),
        2 => format!("{value:?}"),
        3 if value.is_sign_positive() && value.fract() == 0.0 && value < 1e15 => {
            format!("+{value}")
        }
        _ => format!("{value}"),
    }
}

impl PageModel {
    fn generate(rng: &mut Rng) -> PageModel {
        let mut families = Vec::new();
        let wanted_count = rng.range(1, 5);
        let unwanted_count = rng.below(4);
        for f in 0..wanted_count + unwanted_count {
            let wanted = f < wanted_count;
            let prefix = rng.pick(&["vllm:", "sglang:", "nv_", "", "_", ":"]);
            // Wanted names end in "x" and unwanted in "y", so no name is
            // another's plus a suffix.
            let name = format!("{prefix}fam_{f}{}", if wanted { "x" } else { "y" });
            let kind = if rng.one_in(4) {
                None
            } else {
                Some(*rng.pick(&KINDS))
            };
            let parsed = kind_of(kind);
            let mut samples = Vec::new();
            for _ in 0..rng.size(12) {
                let own = suffixes(parsed);
                let sample_name = if own.is_empty() || rng.one_in(3) {
                    name.clone()
                } else {
                    format!("{name}{}", rng.pick(own))
                };
                let count = if rng.one_in(80) {
                    MAX_LABELS + usize::from(rng.one_in(3))
                } else {
                    rng.size(5)
                };
                let labels = (0..count)
                    .map(|i| (label_name(rng, i), label_value(rng)))
                    .collect();
                samples.push(ModelSample {
                    name: sample_name,
                    labels,
                    value: value(rng),
                });
            }
            families.push(ModelFamily {
                name,
                kind,
                samples,
                wanted,
            });
        }

        // Samples, families interleaved, each family's in order.
        let mut lines = Vec::new();
        let mut next: Vec<usize> = vec![0; families.len()];
        loop {
            let left: Vec<usize> = (0..families.len())
                .filter(|&f| next[f] < families[f].samples.len())
                .collect();
            if left.is_empty() {
                break;
            }
            let f = if rng.one_in(4) {
                *rng.pick(&left)
            } else {
                left[0]
            };
            lines.push(Line::Sample(f, next[f]));
            next[f] += 1;
        }
        // `# TYPE` before the family's first suffixed sample (which it
        // types), anywhere when it has none; sometimes twice.
        for (f, family) in families.iter().enumerate() {
            if family.kind.is_none() {
                continue;
            }
            let first_suffixed = lines
                .iter()
                .position(|l| matches!(l, Line::Sample(g, i) if *g == f && families[f].samples[*i].name != family.name))
                .unwrap_or(lines.len());
            let at = rng.below(first_suffixed + 1);
            lines.insert(at, Line::Type(f));
            if rng.one_in(8) {
                let at = rng.below(lines.len() + 1);
                lines.insert(at, Line::Type(f));
            }
        }
        // HELP, comments, blank lines and other families' lines anywhere.
        for _ in 0..rng.size(8) {
            let at = rng.below(lines.len() + 1);
            let line = match rng.below(5) {
                0 => Line::Help(rng.below(families.len())),
                1 => Line::Comment(
                    rng.pick(&[
                        "#",
                        "# ",
                        "#comment",
                        "# TYPE onlyname",
                        "# TYPE",
                        "# EOF",
                        "#\tHELP x TYPE y gauge",
                        "# HELP",
                        "## TYPE not declared",
                    ])
                    .to_string(),
                ),
                2 => Line::Blank(rng.pick(&["", " ", "\t", " \t  "]).to_string()),
                _ => Line::Unwanted(unwanted_line(rng, &families)),
            };
            lines.insert(at, line);
        }

        // Rendering.
        let ending = rng.below(3);
        let mut page = String::new();
        for (number, line) in lines.iter().enumerate() {
            match line {
                Line::Sample(f, i) => page.push_str(&render_sample(rng, &families[*f].samples[*i])),
                Line::Type(f) => {
                    let (name, kind) = (&families[*f].name, families[*f].kind.unwrap());
                    page.push_str(&match rng.below(4) {
                        0 => format!("#  TYPE  {name}\t{kind}  "),
                        1 => format!("# TYPE {name} {kind} and more words"),
                        _ => format!("# TYPE {name} {kind}"),
                    });
                }
                Line::Help(f) => {
                    let text: String = (0..rng.size(6))
                        .map(|_| {
                            *rng.pick(&[
                                "Requests",
                                "\\\\",
                                "\\n",
                                " ",
                                "{a=\"b\"}",
                                "# TYPE",
                                "é",
                                "\u{1}",
                            ])
                        })
                        .collect();
                    page.push_str(&format!("# HELP {} {text}", families[*f].name));
                }
                Line::Comment(text) | Line::Blank(text) | Line::Unwanted(text) => {
                    page.push_str(text)
                }
            }
            let last = number + 1 == lines.len();
            if last && rng.one_in(3) {
                break;
            }
            page.push_str(match ending {
                0 => "\n",
                1 => "\r\n",
                _ => *rng.pick(&["\n", "\r\n"]),
            });
        }

        // What is asked: every wanted family, some only for one label's
        // value (sometimes one no series has), some twice.
        let mut wants = Vec::new();
        for family in families.iter().filter(|f| f.wanted) {
            let mut want = Want::all(&family.name);
            if rng.one_in(4) {
                let labels: Vec<&(String, String)> = family
                    .samples
                    .iter()
                    .flat_map(|s| s.labels.iter())
                    .collect();
                want.only = Some(if labels.is_empty() || rng.one_in(4) {
                    ("model_name0".into(), "absent".into())
                } else {
                    (*rng.pick(&labels)).clone()
                });
            }
            if rng.one_in(6) {
                wants.push(Want::all(&family.name));
            }
            wants.push(want);
        }
        rng.shuffle(&mut wants);
        PageModel {
            families,
            lines,
            page,
            wants,
        }
    }
}

fn render_sample(rng: &mut Rng, sample: &ModelSample) -> String {
    let mut line = sample.name.clone();
    if !sample.labels.is_empty() || rng.one_in(4) {
        let pairs: Vec<String> = sample
            .labels
            .iter()
            .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
            .collect();
        line.push('{');
        line.push_str(&pairs.join(","));
        if !pairs.is_empty() && rng.one_in(4) {
            line.push(',');
        }
        line.push('}');
    }
    line.push(if rng.one_in(8) { '\t' } else { ' ' });
    line.push_str(&render_value(rng, sample.value));
    if rng.one_in(4) {
        let stamp = *rng.pick(&[1_700_000_000_000i64, 0, -5, i64::MAX]);
        line.push_str(&format!(" {stamp}"));
    }
    if rng.one_in(10) {
        line.push_str(" \t");
    }
    line
}

/// A line the parser must skip: another family's (a wanted name's
/// neighbour, a suffix its type does not have), or not Prometheus.
fn unwanted_line(rng: &mut Rng, families: &[ModelFamily]) -> String {
    match rng.below(3) {
        0 => {
            let family = rng.pick(families);
            let others: Vec<&&str> = [
                "_bucket", "_sum", "_count", "_total", "_created", "y", "_info",
            ]
            .iter()
            .filter(|s| !suffixes(kind_of(family.kind)).contains(s))
            .collect();
            format!("{}{} 1", family.name, rng.pick(&others))
        }
        1 => format!(
            "zz_junk{}",
            rng.pick(&[
                "{{{ \"unterminated \u{1} \u{ff}",
                " 1 2 3 4",
                "{a=\"\\q\"} 1",
                " not a number",
                "",
                "{a=b} NaN",
            ])
        ),
        _ => "zz_ok{a=\"b\"} 3".to_string(),
    }
}

/// The families and declared names a page gives, or the line and why not.
type ModelResult = Result<(Vec<Family>, Vec<String>), (usize, &'static str)>;

/// What the parser must give for the model: every wanted family present
/// (declared or with a series) in the order asked, its kind, the series
/// the wants keep in page order, and the rest counted; or the first error.
fn expected(model: &PageModel, max_series: usize) -> ModelResult {
    let wanted_names: Vec<&str> = model.wants.iter().map(|w| w.family.as_str()).collect();
    let mut found: Vec<Family> = Vec::new();
    let mut declared = Vec::new();
    let entry = |found: &mut Vec<Family>, family: &ModelFamily| -> usize {
        match found.iter().position(|f| f.name == family.name) {
            Some(i) => i,
            None => {
                found.push(Family {
                    name: family.name.clone(),
                    kind: kind_of(family.kind),
                    samples: Vec::new(),
                    unkept: 0,
                    unkept_examples: Vec::new(),
                });
                found.len() - 1
            }
        }
    };
    for (number, line) in model.lines.iter().enumerate() {
        match line {
            Line::Type(f) => {
                let family = &model.families[*f];
                if declared.len() < MAX_DECLARED {
                    declared.push(family.name.clone());
                }
                if family.wanted {
                    entry(&mut found, family);
                }
            }
            Line::Sample(f, i) if model.families[*f].wanted => {
                let family = &model.families[*f];
                let sample = &family.samples[*i];
                if sample.labels.len() > MAX_LABELS {
                    return Err((number + 1, "labels"));
                }
                // A `_created` timestamp of a family is never kept.
                if sample.name != family.name && sample.name.ends_with("_created") {
                    continue;
                }
                let kept = model
                    .wants
                    .iter()
                    .filter(|w| w.family == family.name)
                    .any(|w| match &w.only {
                        None => true,
                        Some((n, v)) => sample.labels.iter().any(|(a, b)| a == n && b == v),
                    });
                let e = entry(&mut found, family);
                let parsed = prom::Sample {
                    name: sample.name.clone(),
                    labels: sample.labels.clone(),
                    value: sample.value,
                };
                if !kept {
                    if sample.name == family.name {
                        found[e].unkept += 1;
                        if found[e].unkept_examples.len() < MAX_UNKEPT_EXAMPLES {
                            found[e].unkept_examples.push(parsed);
                        }
                    }
                    continue;
                }
                if found[e].samples.len() >= max_series {
                    return Err((number + 1, "series"));
                }
                found[e].samples.push(parsed);
            }
            _ => {}
        }
    }
    found.sort_by_key(|f| wanted_names.iter().position(|w| *w == f.name));
    Ok((found, declared))
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn same_samples(a: &[prom::Sample], b: &[prom::Sample]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.labels == y.labels && same_value(x.value, y.value))
}

/// What every parse must satisfy, whatever the page: caps kept, errors
/// that name a line of the page.
fn check_parse(
    page: &str,
    wants: &[Want],
    max_series: usize,
) -> Result<(Vec<Family>, Vec<String>), ParseError> {
    let (result, peak) = peak_heap(|| prom::families_wanted(page, wants, max_series));
    // Linear in the page: nothing is amplified.
    let bound = 64 * page.len() + 64 * 1024;
    assert!(
        peak <= bound,
        "parsing {} bytes held {peak} heap bytes at once",
        page.len()
    );
    match &result {
        Ok((found, declared)) => {
            assert!(declared.len() <= MAX_DECLARED);
            for family in found {
                assert!(
                    wants.iter().any(|w| w.family == family.name),
                    "{} was not asked for",
                    family.name
                );
                assert!(
                    family.samples.len() <= max_series,
                    "{} series kept, over {max_series}",
                    family.samples.len()
                );
                assert!(family.unkept_examples.len() <= MAX_UNKEPT_EXAMPLES);
                assert!(family.unkept_examples.len() <= family.unkept);
                for sample in family.samples.iter().chain(&family.unkept_examples) {
                    assert!(
                        sample.labels.len() <= MAX_LABELS,
                        "{} labels",
                        sample.labels.len()
                    );
                }
            }
            let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "a family twice: {names:?}");
        }
        Err(e) => {
            let lines = page.lines().count().max(1);
            assert!(
                (1..=lines).contains(&e.line),
                "error on line {} of {lines}",
                e.line
            );
            assert!(!e.message.is_empty());
        }
    }
    result
}

/// A page generated from a model parses back to the model.
#[test]
fn prom_pages_parse_back_to_their_model() {
    fn property(case: &mut Case) {
        let model = PageModel::generate(&mut case.rng);
        case.input(model.page.as_bytes());
        let max_series = match case.rng.below(3) {
            0 => case.rng.below(6),
            _ => prom::DEFAULT_MAX_SERIES,
        };
        let result = check_parse(&model.page, &model.wants, max_series);
        match (expected(&model, max_series), result) {
            (Ok((families, declared)), Ok((found, found_declared))) => {
                assert_eq!(found_declared, declared);
                let names = |f: &[Family]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
                assert_eq!(
                    names(&found),
                    names(&families),
                    "families, in the order asked"
                );
                for (got, want) in found.iter().zip(&families) {
                    assert_eq!(got.kind, want.kind, "{}'s kind", want.name);
                    assert!(
                        same_samples(&got.samples, &want.samples),
                        "{}'s series: got {:?}, expected {:?}",
                        want.name,
                        got.samples,
                        want.samples
                    );
                    assert_eq!(got.unkept, want.unkept, "{}'s unkept count", want.name);
                    assert!(same_samples(&got.unkept_examples, &want.unkept_examples));
                }
            }
            (Err((line, what)), Err(e)) => {
                assert_eq!(e.line, line, "the error's line: {e}");
                assert!(
                    e.message.contains("more than") && e.message.contains(what),
                    "{e}"
                );
            }
            (expected, got) => panic!(
                "expected {:?}, got {:?}",
                expected.map(|(f, _)| f.len()),
                got.map(|(f, _)| f.len())
            ),
        }
    }
    check(
        "prom_pages_parse_back_to_their_model",
        case_count(2000),
        Duration::from_secs(10),
        property,
    );
}

/// Characters a damaged page gets.
const PAGE_NOISE: [&str; 26] = [
    "{", "}", "\"", "\\", "=", ",", " ", "\t", "\n", "\r", "\r\n", "#", "# TYPE ", "0", "1e", "+",
    "-", "NaN", "Inf", "\u{fffd}", "\u{1}", "é", "x", "_count", "_bucket", "\\q",
];

/// Pages damaged at random, and token soup: no panic, nothing over the
/// caps, every error naming a line.
#[test]
fn prom_damaged_pages_fail_cleanly() {
    fn property(case: &mut Case) {
        let rng = &mut case.rng;
        let model = PageModel::generate(rng);
        let mut page = model.page.clone();
        if rng.one_in(4) {
            page = (0..rng.size(400)).map(|_| *rng.pick(&PAGE_NOISE)).collect();
            page.insert_str(0, &model.families[0].name);
        }
        for _ in 0..rng.range(1, 6) {
            let at = (0..=page.len())
                .filter(|i| page.is_char_boundary(*i))
                .nth(rng.below(page.len() + 1));
            let Some(at) = at else { continue };
            match rng.below(3) {
                0 => {
                    let noise = *rng.pick(&PAGE_NOISE);
                    page.insert_str(at, noise)
                }
                1 => {
                    let mut to = (at + rng.size(40)).min(page.len());
                    while !page.is_char_boundary(to) {
                        to -= 1;
                    }
                    page.replace_range(at..to, "");
                }
                _ => {
                    let bytes: Vec<u8> = (0..rng.size(16)).map(|_| rng.below(256) as u8).collect();
                    page.insert_str(at, &String::from_utf8_lossy(&bytes));
                }
            }
        }
        if rng.one_in(20) {
            // Many labels, many series, many declared families.
            let labels: Vec<String> = (0..MAX_LABELS + rng.range(0, 2))
                .map(|i| format!("l{i}=\"v\""))
                .collect();
            page.push_str(&format!(
                "\n{}{{{}}} 1\n",
                model.families[0].name,
                labels.join(",")
            ));
            for i in 0..MAX_DECLARED + 3 {
                page.push_str(&format!("# TYPE d{i} gauge\n"));
            }
        }
        let mut wants = model.wants.clone();
        if rng.one_in(3) {
            wants.push(Want::all(*rng.pick(&[
                "x",
                "x_count",
                "{",
                "",
                "fam_0x_bucket",
            ])));
        }
        let max_series = rng.below(8);
        case.input(page.as_bytes());
        let result = check_parse(&page, &wants, max_series);
        // Parsing is a function of its input.
        let again = prom::families_wanted(&page, &wants, max_series);
        assert_eq!(result.is_ok(), again.is_ok());
    }
    check(
        "prom_damaged_pages_fail_cleanly",
        case_count(4000),
        Duration::from_secs(10),
        property,
    );
}

/// A page's text in an error reaches KEDA's events and the log: escaped
/// and capped, like every other network text.
#[test]
fn prom_errors_show_page_text_escaped_and_capped() {
    fn property(case: &mut Case) {
        let rng = &mut case.rng;
        let token: String = (0..rng.size(8000))
            .map(|_| *rng.pick(&["a", "\u{1b}", "\u{7}", "é", "\r", "\u{85}", "1"]))
            .collect();
        let page = match rng.below(4) {
            0 => format!("g {token}\n"),
            1 => format!("g 1 {token}\n"),
            2 => format!("g{{{token}}} 1\n"),
            _ => format!("g{{{token}=x}} 1\n"),
        };
        case.input(page.as_bytes());
        if let Err(e) = prom::families_wanted(&page, &[Want::all("g")], 10) {
            assert_shown_safely(
                "a page's parse error",
                &ReadError::NotPrometheus(e).to_string(),
            );
        }
    }
    check(
        "prom_errors_show_page_text_escaped_and_capped",
        case_count(1000),
        Duration::from_secs(10),
        property,
    );
}

// ---------------------------------------------------------------------
// Trigger metadata.
// ---------------------------------------------------------------------

fn junk(rng: &mut Rng) -> String {
    const PIECES: [&str; 20] = [
        "a",
        "Z",
        "0",
        "-",
        ".",
        ":",
        "/",
        " ",
        "\t",
        "\n",
        "\u{0}",
        "\u{1b}",
        "é",
        "\u{1f680}",
        "\"",
        "\\",
        "{",
        "}",
        ",",
        "=",
    ];
    (0..rng.size(40)).map(|_| *rng.pick(&PIECES)).collect()
}

fn number_text(rng: &mut Rng) -> String {
    rng.pick(&[
        "80",
        "0",
        "-1",
        "1e3",
        "1E-3",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "+5",
        "5.",
        ".5",
        "1e309",
        "0x10",
        " 42 ",
        "1_000",
        "\u{663}",
        "3600",
        "3600.0001",
        "1e-300",
        "4294967295",
        "4294967296",
        "99999999999999999999999",
        "-0",
        "7",
        "2.5",
        "",
        " ",
    ])
    .to_string()
}

fn endpoints(rng: &mut Rng) -> String {
    const ENTRIES: [&str; 24] = [
        "vllm",
        "vllm:8000",
        "vllm.ml",
        "vllm.ml.svc.cluster.local:8000",
        "http://vllm:8000/metrics",
        "https://vllm:8000",
        "ftp://x",
        "10.0.0.1:80",
        "[::1]:80",
        "[fe80::1%eth0]:80",
        "::1",
        "[::1",
        "vllm:0",
        "vllm:65536",
        "vllm:-1",
        ":80",
        "-bad-:80",
        "a..b:80",
        "vllm:8000/m#x",
        "vllm:8000/\u{1}",
        "é:80",
        "169.254.169.254:80",
        "localhost:80",
        "",
    ];
    let count = if rng.one_in(20) {
        rng.range(30, 40)
    } else {
        rng.range(1, 3)
    };
    let list: Vec<String> = (0..count)
        .map(|i| {
            if count > 3 {
                format!("r{i}:80")
            } else if rng.one_in(6) {
                format!("h{}:80", "a".repeat(rng.size(300)))
            } else {
                rng.pick(&ENTRIES).to_string()
            }
        })
        .collect();
    list.join(*rng.pick(&[",", ", ", " ,"]))
}

fn engine_metric(rng: &mut Rng) -> String {
    let name = rng.pick(&[
        "vllm:num_requests_waiting",
        "x",
        "_",
        ":",
        "9bad",
        "",
        "a-b",
        "é",
    ]);
    match rng.below(4) {
        0 => name.to_string(),
        1 => {
            let labels: Vec<String> = (0..rng.size(4))
                .map(|i| {
                    format!(
                        "{}=\"{}\"",
                        label_name(rng, i),
                        escape_label(&label_value(rng))
                    )
                })
                .collect();
            format!("{name}{{{}}}", labels.join(","))
        }
        2 => format!("{name}{{{}", junk(rng)),
        _ => format!("{name}{{a=\"b\"}}{}", junk(rng)),
    }
}

fn metadata_value(rng: &mut Rng, key: &str) -> String {
    if rng.one_in(8) {
        return junk(rng);
    }
    let base = key.strip_suffix("FromEnv").unwrap_or(key);
    match base {
        "profile" => rng.pick(&PROFILES).name.to_string(),
        "metricType" => match rng.below(3) {
            0 => rng.pick(&Metric::ALL).name().to_string(),
            1 => rng.pick(&Signal::ALL).name().to_string(),
            _ => "gpu_util".to_string(),
        },
        "engine" => rng.pick(&Engine::ALL).name().to_string(),
        "aggregation" => rng
            .pick(&["max", "min", "avg", "sum", "Max", "mean"])
            .to_string(),
        "engineEndpoints" => endpoints(rng),
        "engineMetric" => engine_metric(rng),
        "engineModel" => label_value(rng),
        "engineTimeout" => rng
            .pick(&[
                "500ms", "1s", "30s", "30.0001s", "0", "0s", "1e-10", "2m", "1h", "-1s", ".5s",
                "1..5s", "NaN", "1e400ms", "31",
            ])
            .to_string(),
        "workload" | "podNamespace" => rng
            .pick(&["vllm", "ml", "a-b.c", "-x", "X", "a_b", "", "é"])
            .to_string()
            .repeat(if rng.one_in(10) { 100 } else { 1 }),
        "podNamePattern" => rng.pick(&["vllm-*", "v?llm", "*", "A*", "[a]"]).to_string(),
        _ => number_text(rng),
    }
}

fn metadata_key(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => format!("{}FromEnv", rng.pick(&KEYS)),
        1 => rng.pick(&KEDA_KEYS).to_string(),
        2 => {
            let key = rng.pick(&KEYS);
            rng.pick(&[
                key.to_ascii_lowercase(),
                key.to_ascii_uppercase(),
                format!("{key}fromEnv"),
                format!("{key} "),
            ])
            .clone()
        }
        3 if rng.one_in(2) => junk(rng),
        _ => rng.pick(&KEYS).to_string(),
    }
}

/// Metadata of a trigger that parses: engine triggers by signal, by
/// profile and by custom metric, and GPU triggers.
fn template(rng: &mut Rng) -> Vec<(String, String)> {
    let pairs: Vec<(&str, String)> = match rng.below(5) {
        0 => vec![
            ("engine", rng.pick(&Engine::ALL).name().to_string()),
            ("metricType", rng.pick(&Signal::ALL).name().to_string()),
            ("engineEndpoints", "vllm.ml.svc:8000".to_string()),
            ("targetValue", "5".to_string()),
        ],
        1 => vec![
            (
                "profile",
                rng.pick(&[
                    "vllm-queue",
                    "vllm-kv-cache",
                    "sglang-queue",
                    "sglang-kv-cache",
                ])
                .to_string(),
            ),
            ("engineEndpoints", endpoints(rng)),
            ("engineModel", "llama-3-8b".to_string()),
        ],
        2 => vec![
            ("engineMetric", engine_metric(rng)),
            (
                "engineEndpoints",
                "vllm:8000,10.0.0.7:9000/metrics".to_string(),
            ),
            ("targetValue", "3".to_string()),
            ("aggregation", "max".to_string()),
        ],
        3 => vec![
            ("engine", "vllm".to_string()),
            ("metricType", "queue_length".to_string()),
            ("engineEndpoints", "vllm".to_string()),
            ("targetValue", "5".to_string()),
            ("engineTimeout", "500ms".to_string()),
            ("workload", "vllm".to_string()),
        ],
        _ => vec![
            ("profile", rng.pick(&PROFILES).name.to_string()),
            ("gpuIndex", "0".to_string()),
            ("podNamePattern", "vllm-*".to_string()),
        ],
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let key = if rng.one_in(10) {
                format!("{k}FromEnv")
            } else {
                k.to_string()
            };
            (key, v)
        })
        .collect()
}

/// Whether `message` names `key` as a word (not inside a longer name).
fn names_word(message: &str, key: &str) -> bool {
    message.match_indices(key).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + key.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        edge(before) && edge(after)
    })
}

/// Any metadata: a valid trigger, or a configuration error naming a key.
#[test]
fn trigger_metadata_gives_a_trigger_or_an_error_naming_a_key() {
    fn property(case: &mut Case) {
        let rng = &mut case.rng;
        // Half start from a working trigger (most often an engine's),
        // then change a few entries; half are random maps.
        let mut pairs: Vec<(String, String)> = if rng.one_in(2) {
            template(rng)
        } else {
            Vec::new()
        };
        for _ in 0..rng.size(if pairs.is_empty() { 7 } else { 2 }) {
            if !pairs.is_empty() && rng.one_in(2) {
                let at = rng.below(pairs.len());
                let value = metadata_value(rng, &pairs[at].0);
                pairs[at].1 = value;
                continue;
            }
            let key = metadata_key(rng);
            let value = metadata_value(rng, &key);
            pairs.push((key, value));
        }
        let namespace = rng
            .pick(&["ml", "default", "", "é\u{1}", "a-very-long-namespace-name"])
            .to_string();
        let metadata: HashMap<String, String> = pairs.iter().cloned().collect();
        case.input(format!("{metadata:?} in {namespace:?}").as_bytes());
        let result = trigger::parse(&metadata, &namespace);
        // The same metadata (another map, another iteration order) gives
        // the same answer.
        let again: HashMap<String, String> = pairs.iter().rev().cloned().collect::<HashMap<_, _>>();
        if again == metadata {
            assert_eq!(trigger::parse(&again, &namespace), result);
        }
        match result {
            Ok(trigger) => {
                assert!(
                    trigger.target.is_finite() && trigger.target > 0.0,
                    "{trigger}"
                );
                assert!(
                    trigger.activation_threshold.is_finite() && trigger.activation_threshold >= 0.0,
                    "{trigger}"
                );
                assert!(
                    trigger.poll_interval <= Duration::from_secs(3600),
                    "{trigger}"
                );
                let name = trigger.metric_name();
                assert!(
                    !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "metric name {name:?}"
                );
                let _ = trigger.to_string();
                if let Source::Engine(engine) = &trigger.source {
                    assert!((1..=32).contains(&engine.endpoints.len()));
                    for endpoint in &engine.endpoints {
                        assert!(
                            endpoint.port > 0 && endpoint.path.starts_with('/'),
                            "{endpoint:?}"
                        );
                    }
                    if let Some(timeout) = engine.timeout {
                        assert!(!timeout.is_zero() && timeout <= trigger::MAX_ENGINE_TIMEOUT);
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                assert!(!message.is_empty());
                let named = metadata
                    .keys()
                    .any(|k| names_word(&message, k) || message.contains(&format!("{k:?}")))
                    || KEYS.iter().any(|k| names_word(&message, k));
                assert!(named, "the error names no key: {message}");
            }
        }
    }
    check(
        "trigger_metadata_gives_a_trigger_or_an_error_naming_a_key",
        case_count(10000),
        Duration::from_secs(5),
        property,
    );
}

/// Histogram pages as an engine might send them, damaged or not, read by
/// a latency trigger, and counters that reset at random, kept over many
/// reads: no panic; a reading is an `Err` naming its reason or a
/// histogram with sorted bounds, non-decreasing counts and at most
/// `MAX_BUCKETS` bounds; a history never holds more than `MAX_POINTS`
/// reads and its increase is exactly what Prometheus' `increase()`
/// counts; a quantile lies within the histogram's bounds.
#[test]
fn window_reads_and_increases_hold_their_invariants() {
    use keda_gpu_scaler::engine::prom::families_and_names;
    use keda_gpu_scaler::engine::signals::{self, Query};
    use keda_gpu_scaler::engine::window::{
        self, Busy, History, PageRead, Percentile, Reading, WindowQuery, MAX_BUCKETS, MAX_POINTS,
    };
    fn property(case: &mut Case) {
        let family = "vllm:time_to_first_token_seconds";
        let mut page = format!("# TYPE {family} histogram\n");
        let rng = &mut case.rng;
        // One page in three is damaged somewhere; the others must read.
        let damaged = rng.one_in(3);
        let mut clean = true;
        let mut damage = |rng: &mut Rng, odds: usize| {
            let hit = damaged && rng.one_in(odds);
            clean &= !hit;
            hit
        };
        for engine in 0..rng.range(1, 4) {
            let bounds = rng.range(0, MAX_BUCKETS + 3);
            let mut count = 0.0;
            for b in 0..bounds {
                count += rng.below(5) as f64;
                let le = if damage(rng, 40) {
                    String::from(*rng.pick(&["NaN", "x", ""]))
                } else {
                    format!("{}", (b + 1) as f64 * 0.05)
                };
                let value = if damage(rng, 50) {
                    String::from(*rng.pick(&["NaN", "-3", "+Inf"]))
                } else {
                    format!("{count}")
                };
                page.push_str(&format!(
                    "{family}_bucket{{engine=\"{engine}\",le=\"{le}\"}} {value}\n"
                ));
            }
            if !damage(rng, 4) {
                page.push_str(&format!(
                    "{family}_bucket{{engine=\"{engine}\",le=\"+Inf\"}} {}\n",
                    count + rng.below(3) as f64
                ));
            }
            if !damage(rng, 4) {
                page.push_str(&format!(
                    "{family}_sum{{engine=\"{engine}\"}} {}\n",
                    count * 0.3
                ));
            }
        }
        let too_many = page.matches("_bucket").count() > 0 && {
            let mut les: Vec<&str> = page
                .split("le=\"")
                .skip(1)
                .filter_map(|r| r.split('"').next())
                .filter(|le| *le != "+Inf")
                .collect();
            les.sort();
            les.dedup();
            les.len() > MAX_BUCKETS
        };
        case.input(page.as_bytes());
        let query = WindowQuery {
            source: signals::window_source(Engine::Vllm, Signal::TtftSeconds).unwrap(),
            model: None,
            breakdown: None,
            percentile: Percentile::DEFAULT,
            percentile_given: false,
            window: window::DEFAULT_WINDOW,
            waiting: None::<Query>,
            running: None,
        };
        let (found, declared) = families_and_names(&page, &[family], 100_000).unwrap();
        match query.read(&found, &declared) {
            Err(unread) => {
                assert_shown_safely("a window read", &unread.to_string());
                assert!(!clean || too_many, "a clean page was refused: {unread}");
            }
            Ok(PageRead::Gauge) => panic!("a histogram read as a gauge"),
            Ok(PageRead::Reading(Reading::Counter(_))) => panic!("a histogram read as a counter"),
            Ok(PageRead::Reading(Reading::Histogram(h))) => {
                assert!(h.bounds.len() <= MAX_BUCKETS);
                assert_eq!(h.counts.len(), h.bounds.len() + 1);
                assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "{:?}", h.bounds);
                assert!(h.counts.windows(2).all(|w| w[0] <= w[1]), "{:?}", h.counts);
                if let Some(answer) = window::quantile(0.9, &h) {
                    let (low, high) = (h.bounds[0].min(0.0), h.bounds[h.bounds.len() - 1]);
                    assert!(
                        answer.value >= low && answer.value <= high,
                        "{answer:?} outside {low}..{high}"
                    );
                }
            }
        }

        // A counter that climbs and resets at random, read many times.
        let rng = &mut case.rng;
        let start = Instant::now();
        let mut raw = rng.below(1000) as f64;
        let mut history = History::new(start, Reading::Counter(raw), Busy::default());
        let mut expected = 0.0;
        for i in 1..rng.range(1, 200) {
            let next = if rng.one_in(10) {
                rng.below(50) as f64
            } else {
                raw + rng.below(20) as f64
            };
            expected += if next < raw { next } else { next - raw };
            raw = next;
            history.push(
                start + Duration::from_millis(i as u64),
                Reading::Counter(raw),
                Busy::default(),
            );
            assert!(history.points().len() <= MAX_POINTS);
        }
        let span = history.span(start).expect("reads in the window");
        assert_eq!(span.increase.events(), expected);
    }
    check(
        "window_reads_and_increases_hold_their_invariants",
        case_count(2000),
        Duration::from_secs(10),
        property,
    );
}
