//! The `/metrics` listener: plain HTTP/1.1 over `std::net`, one request per
//! connection. Only `GET /metrics` is served (404 for other paths, 405 for
//! other methods). Each request has one deadline (5 s) for reading its line
//! and headers (at most 8 KiB) and writing the answer, however slowly the
//! client trickles bytes. At most 4 requests are served at once; a
//! connection beyond that is answered 503 at once by the accept loop, which
//! never waits on a slow client. Stopping shuts the listening socket and
//! cuts the connections being served, so it returns within about a second
//! whatever the clients do. It runs on its own threads and reads only what
//! the rest of the scaler has published, so scraping never slows the gRPC
//! path.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::observe::exposition::CONTENT_TYPE;

/// The most bytes of request line and headers read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Requests served at once.
pub const MAX_CONCURRENT: usize = 4;
/// Reading a request and writing its answer, all told.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long stopping waits for request threads after cutting their
/// connections.
pub const STOP_GRACE: Duration = Duration::from_secs(1);
/// The first pause after a failed `accept` (e.g. EMFILE), doubled on each
/// failure in a row up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many /metrics requests at once\n";

/// Renders the page; called once per scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Starts a thread for one request; a test swaps it for one that fails.
type Spawn = fn(Box<dyn FnOnce() + Send>) -> io::Result<()>;

fn spawn_thread(work: Box<dyn FnOnce() + Send>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("metrics-request".into())
        .spawn(work)
        .map(drop)
}

/// The listener's limits; `Default` is what the scaler uses, and tests
/// shorten them.
#[derive(Clone)]
pub struct ListenerConfig {
    /// Reading a request and writing its answer, all told.
    pub request_deadline: Duration,
    /// Requests served at once; a connection beyond is answered 503.
    pub max_concurrent: usize,
    /// How long stopping waits for request threads once their connections
    /// are cut.
    pub stop_grace: Duration,
    spawn: Spawn,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            request_deadline: REQUEST_DEADLINE,
            max_concurrent: MAX_CONCURRENT,
            stop_grace: STOP_GRACE,
            spawn: spawn_thread,
        }
    }
}

/// A running listener; stops when dropped.
pub struct MetricsListener {
    address: SocketAddr,
    /// Shared with the accept thread, so that its descriptor stays open
    /// until the shutdown below has woken that thread.
    listener: Arc<TcpListener>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Binds now (so a bad address fails the start) and serves on a thread.
    pub fn start(address: &str, render: Render) -> io::Result<Self> {
        Self::start_with(address, render, ListenerConfig::default())
    }

    /// [`start`](Self::start) with other limits.
    pub fn start_with(address: &str, render: Render, config: ListenerConfig) -> io::Result<Self> {
        let listener = Arc::new(TcpListener::bind(address)?);
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            render,
            active: Mutex::new(Active::default()),
            changed: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("metrics-listener".into())
            .spawn({
                let (listener, shared) = (Arc::clone(&listener), Arc::clone(&shared));
                move || accept_loop(&listener, &shared)
            })?;
        Ok(Self {
            address,
            listener,
            shared,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().streams.len()
    }
}

impl Drop for MetricsListener {
    /// Refuses new requests, cuts those being served, wakes and joins the
    /// accept thread, then waits at most `stop_grace` for request threads.
    fn drop(&mut self) {
        self.shared.begin_stop();
        // A listening socket that is shut down fails a blocked `accept`
        // at once (Linux); elsewhere, a connection wakes it.
        // SAFETY: the descriptor belongs to `self.listener`, which this
        // `Arc` keeps open for the whole call.
        let woken = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) } == 0;
        if !woken {
            let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.wait_idle(self.shared.config.stop_grace);
    }
}

/// The connections being served, and whether the listener is stopping.
#[derive(Default)]
struct Active {
    stopping: bool,
    next_id: u64,
    /// A second handle on each connection being served (`None` when it
    /// could not be duplicated), so that stopping can cut it.
    streams: HashMap<u64, Option<TcpStream>>,
}

/// What the accept thread and the request threads share.
struct Shared {
    config: ListenerConfig,
    render: Render,
    active: Mutex<Active>,
    /// Signalled when a request ends and when stopping begins.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Takes a slot for `stream`; `None` when every slot is taken or the
    /// listener is stopping.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let mut active = self.lock();
        if active.stopping || active.streams.len() >= self.config.max_concurrent {
            return None;
        }
        let id = active.next_id;
        active.next_id += 1;
        active.streams.insert(id, stream.try_clone().ok());
        Some(id)
    }

    /// Frees a slot; freeing one twice is harmless.
    fn release(&self, id: u64) {
        if self.lock().streams.remove(&id).is_some() {
            self.changed.notify_all();
        }
    }

    fn begin_stop(&self) {
        let mut active = self.lock();
        active.stopping = true;
        for stream in active.streams.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(active);
        self.changed.notify_all();
    }

    /// Waits up to `grace` for every request thread to end.
    fn wait_idle(&self, grace: Duration) {
        let active = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(active, grace, |a| !a.streams.is_empty());
    }

    /// Sleeps `pause`, or less when stopping begins; true when stopping.
    fn pause(&self, pause: Duration) -> bool {
        let active = self.lock();
        let (active, _) = self
            .changed
            .wait_timeout_while(active, pause, |a| !a.stopping)
            .unwrap_or_else(|e| e.into_inner());
        active.stopping
    }
}

/// A request's slot, freed when its thread ends (or never starts).
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.release(self.id);
    }
}

/// The pause after a failed `accept`, given the previous one.
fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_ACCEPT_BACKOFF, |p| (p * 2).min(MAX_ACCEPT_BACKOFF))
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut backoff = None;
    loop {
        let accepted = listener.accept();
        if shared.stopping() {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = None;
                stream
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(e) => {
                // EMFILE and the like: failing again at once would spin.
                if backoff.is_none() {
                    log::warn!("cannot accept a /metrics connection: {e}; backing off");
                }
                let pause = next_backoff(backoff);
                backoff = Some(pause);
                if shared.pause(pause) {
                    return;
                }
                continue;
            }
        };
        let deadline = Instant::now() + shared.config.request_deadline;
        let Some(id) = shared.admit(&stream) else {
            refuse(stream);
            continue;
        };
        let slot = Slot {
            shared: Arc::clone(shared),
            id,
        };
        let spawned = (shared.config.spawn)(Box::new(move || {
            let _ = serve(stream, deadline, &slot.shared.render);
            drop(slot);
        }));
        if let Err(e) = spawned {
            // The work (and its slot) is usually dropped with the error;
            // free the slot here whatever the spawner did.
            shared.release(id);
            log::warn!("cannot start a thread for a /metrics request: {e}");
        }
    }
}

/// Answers 503 without waiting on the client: the write goes to an empty
/// send buffer, and nothing is read beyond what has already arrived (read
/// so that closing sends FIN rather than a reset).
fn refuse(stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = (&stream).write(BUSY);
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    for _ in 0..(MAX_REQUEST_BYTES / sink.len()) {
        if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// The time left before `deadline`; an error once it has passed.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the request deadline passed",
        ));
    }
    Ok(left)
}

/// One `read`, waiting no later than `deadline`.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    stream.set_read_timeout(Some(time_left(deadline)?))?;
    stream.read(buf)
}

/// `write_all`, finishing by `deadline` however slowly the client reads.
fn write_all_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.set_write_timeout(Some(time_left(deadline)?))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream, deadline: Instant, render: &Render) -> io::Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if request.len() > MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                deadline,
                431,
                "text/plain",
                "request header fields too large\n",
            );
        }
        let read = read_by(&mut stream, &mut chunk, deadline)?;
        if read == 0 {
            return Ok(());
        }
        // Search only where the end can newly be, so a byte-at-a-time
        // client costs linear work.
        let from = request.len().saturating_sub(3);
        request.extend_from_slice(&chunk[..read]);
        if request[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if request.len() > MAX_REQUEST_BYTES {
        return respond(
            &mut stream,
            deadline,
            431,
            "text/plain",
            "request header fields too large\n",
        );
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            respond(&mut stream, deadline, 200, CONTENT_TYPE, &render())
        }
        (Some("GET"), Some(_)) => respond(
            &mut stream,
            deadline,
            404,
            "text/plain",
            "only /metrics is served\n",
        ),
        _ => respond(
            &mut stream,
            deadline,
            405,
            "text/plain",
            "only GET is served\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    deadline: Instant,
    code: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write_all_by(stream, head.as_bytes(), deadline)?;
    write_all_by(stream, body.as_bytes(), deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::http::{self, BodyBudget, HttpError};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    fn page() -> Render {
        Arc::new(|| String::from("# TYPE x gauge\nx 1\n"))
    }

    fn listener() -> MetricsListener {
        MetricsListener::start("127.0.0.1:0", page()).unwrap()
    }

    fn listener_with(config: ListenerConfig) -> MetricsListener {
        MetricsListener::start_with("127.0.0.1:0", page(), config).unwrap()
    }

    /// Polls `condition` until it holds or `limit` passes.
    fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if condition() {
                return true;
            }
            std::thread::yield_now();
            std::thread::park_timeout(Duration::from_millis(10));
        }
        condition()
    }

    /// A client that has sent part of a request line and stops there.
    fn slow_client(address: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nX-").unwrap();
        stream
    }

    /// Sends one header byte every `every` until the server closes the
    /// connection; how long that took from `since`, or `None` if it is
    /// still open after `limit`.
    fn trickle_until_closed(
        stream: &mut TcpStream,
        every: Duration,
        since: Instant,
        limit: Duration,
    ) -> Option<Duration> {
        let mut buf = [0u8; 256];
        while since.elapsed() < limit {
            if stream.write_all(b"a").is_err() {
                return Some(since.elapsed());
            }
            stream.set_read_timeout(Some(every)).unwrap();
            match stream.read(&mut buf) {
                Ok(0) => return Some(since.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(since.elapsed()),
            }
        }
        None
    }

    /// Whether the server closes `stream` within `limit`, without writing.
    fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }

    /// Sends a whole request and reads the answer until the server closes.
    fn ask(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        // A reset after the answer still leaves the answer read.
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn only_get_metrics_is_served() {
        let listener = listener();
        let budget = BodyBudget::new(1 << 20);
        let deadline = Instant::now() + Duration::from_secs(5);
        let page = http::get(
            listener.address(),
            "h",
            "/metrics",
            deadline,
            1 << 20,
            &budget,
        )
        .unwrap();
        assert_eq!(page.text, "# TYPE x gauge\nx 1\n");
        drop(page);
        let error = http::get(listener.address(), "h", "/", deadline, 1 << 20, &budget)
            .err()
            .unwrap();
        assert!(
            matches!(error, HttpError::Status { code: 404, .. }),
            "{error}"
        );
        // Other methods, and oversized requests.
        let mut stream = TcpStream::connect(listener.address()).unwrap();
        stream.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        let mut stream = TcpStream::connect(listener.address()).unwrap();
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES + 1)
        );
        let _ = stream.write_all(big.as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[test]
    fn the_content_type_is_the_one_prometheus_requires() {
        let listener = listener();
        let answer = ask(listener.address());
        assert!(
            answer.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{answer}"
        );
    }

    #[test]
    fn a_slow_loris_is_cut_off_at_the_request_deadline() {
        // Each byte comes well within the deadline, so only a deadline for
        // the whole request can end it.
        let deadline = Duration::from_secs(2);
        let listener = listener_with(ListenerConfig {
            request_deadline: deadline,
            ..ListenerConfig::default()
        });
        let connected = Instant::now();
        let mut stream = slow_client(listener.address());
        let closed = trickle_until_closed(
            &mut stream,
            Duration::from_millis(500),
            connected,
            deadline * 3,
        );
        let closed = closed.expect("a client trickling bytes was never cut off");
        assert!(
            closed >= deadline && closed < deadline + Duration::from_millis(1500),
            "cut off after {closed:?}, the deadline is {deadline:?}"
        );
        assert!(wait_until(Duration::from_secs(2), || listener.in_flight() == 0));
    }

    #[test]
    fn over_the_cap_a_client_gets_503_at_once() {
        let listener = listener_with(ListenerConfig {
            request_deadline: Duration::from_secs(30),
            max_concurrent: 2,
            ..ListenerConfig::default()
        });
        let _slow: Vec<TcpStream> = (0..2).map(|_| slow_client(listener.address())).collect();
        assert!(wait_until(Duration::from_secs(5), || listener.in_flight() == 2));
        let asked = Instant::now();
        let answer = ask(listener.address());
        let took = asked.elapsed();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(
            answer.ends_with("too many /metrics requests at once\n"),
            "{answer:?}"
        );
        assert!(took < Duration::from_secs(1), "the 503 took {took:?}");
        // The slow ones still hold their slots; nobody queued behind them.
        assert_eq!(listener.in_flight(), 2);
    }

    #[test]
    fn stopping_returns_promptly_with_slow_clients_connected() {
        let listener = listener_with(ListenerConfig {
            request_deadline: Duration::from_secs(30),
            ..ListenerConfig::default()
        });
        let address = listener.address();
        let mut slow: Vec<TcpStream> = (0..MAX_CONCURRENT).map(|_| slow_client(address)).collect();
        assert!(wait_until(Duration::from_secs(5), || listener.in_flight()
            == MAX_CONCURRENT));
        // One more, over the cap, before stopping.
        slow.push(slow_client(address));
        let (done, stopped) = mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            drop(listener);
            let _ = done.send(());
        });
        assert!(
            stopped.recv_timeout(Duration::from_secs(3)).is_ok(),
            "stopping did not return within 3 s"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // Their connections are cut, not left to their 30 s deadline.
        for stream in &mut slow {
            assert!(closed_within(stream, Duration::from_secs(2)));
        }
        assert!(TcpStream::connect(address).is_err());
    }

    static SPAWN_TRIES: AtomicUsize = AtomicUsize::new(0);

    /// Fails, and keeps the work (as a spawner might), so only the accept
    /// loop can free its slot.
    fn failing_spawn(work: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        std::mem::forget(work);
        SPAWN_TRIES.fetch_add(1, Ordering::SeqCst);
        Err(io::Error::other("no threads left"))
    }

    #[test]
    fn a_failed_spawn_frees_its_slot() {
        let listener = listener_with(ListenerConfig {
            max_concurrent: 2,
            spawn: failing_spawn,
            ..ListenerConfig::default()
        });
        let mut clients = Vec::new();
        for tries in 1..=4 {
            clients.push(TcpStream::connect(listener.address()).unwrap());
            assert!(wait_until(Duration::from_secs(5), || {
                SPAWN_TRIES.load(Ordering::SeqCst) >= tries
            }));
            assert!(
                wait_until(Duration::from_secs(2), || listener.in_flight() == 0),
                "{} slots still taken after {tries} failed spawns",
                listener.in_flight()
            );
        }
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        let mut pauses = Vec::new();
        let mut previous = None;
        for _ in 0..6 {
            let pause = next_backoff(previous);
            pauses.push(pause.as_millis());
            previous = Some(pause);
        }
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
    }
}
