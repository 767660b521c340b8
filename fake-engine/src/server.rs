//! A fake engine replica: an HTTP/1.1 server on one address that answers
//! the engine's metrics path with its page, and can be told to answer with
//! an error status, never answer (a hung process), or send garbage. One
//! thread accepts; each connection gets its own. Test code only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::pages::{self, Kind, Load};

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
}

impl Behaviour {
    pub fn new(kind: Kind, load: Load) -> Self {
        Self {
            kind,
            load,
            answer: Answer::Page,
            chunked: false,
            page: None,
        }
    }

    /// Reads `key=value` words from a file: `engine`, `waiting`, `running`,
    /// `kv` (0-1), `model`, `dp`, `tp`, `answer` (`page`, `stall`,
    /// `garbage` or a status code), `chunked` (`true`).
    pub fn from_file(path: &PathBuf, kind: Kind) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut behaviour = Behaviour::new(kind, Load::default());
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
        Ok(behaviour)
    }
}

/// Where a replica's behaviour comes from.
enum Source {
    Fixed(Mutex<Behaviour>),
    /// Re-read on every request (the demo changes load by rewriting it).
    File(PathBuf, Kind),
}

struct Shared {
    source: Source,
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
        Self::with_source(address, Source::Fixed(Mutex::new(behaviour)))
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
    let behaviour = match &shared.source {
        Source::Fixed(behaviour) => behaviour.lock().unwrap().clone(),
        Source::File(path, kind) => match Behaviour::from_file(path, *kind) {
            Ok(behaviour) => behaviour,
            Err(e) => return respond(&mut stream, 500, "text/plain", &e, false),
        },
    };
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
