//! The `/metrics` listener: plain HTTP/1.1 over `std::net`, one request per
//! connection. Only `GET /metrics` is served (404 for other paths, 405 for
//! other methods); a request line and headers over 8 KiB, or slower than
//! 5 s, are refused; at most 4 requests are served at once and the rest
//! wait in the kernel's backlog. It runs on its own threads and reads only
//! what the rest of the scaler has published, so scraping never slows
//! the gRPC path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::observe::exposition::CONTENT_TYPE;

/// The most bytes of request line and headers read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Requests served at once.
pub const MAX_CONCURRENT: usize = 4;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Renders the page; called once per scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A running listener; stops when dropped.
pub struct MetricsListener {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Binds now (so a bad address fails the start) and serves on a thread.
    pub fn start(address: &str, render: Render) -> io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("metrics-listener".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &stop, &render)
            })?;
        Ok(Self {
            address,
            stop,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Counts requests in flight; waits for a free slot.
struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, render: &Render) {
    let slots = Arc::new(Slots {
        busy: Mutex::new(0),
        freed: Condvar::new(),
    });
    let served = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        {
            let mut busy = slots.busy.lock().unwrap_or_else(|e| e.into_inner());
            while *busy >= MAX_CONCURRENT {
                busy = slots.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
            }
            *busy += 1;
        }
        let (slots, render, served) = (Arc::clone(&slots), Arc::clone(render), Arc::clone(&served));
        let spawned = std::thread::Builder::new()
            .name("metrics-request".into())
            .spawn(move || {
                let _ = serve(stream, &render);
                served.fetch_add(1, Ordering::Relaxed);
                *slots.busy.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                slots.freed.notify_one();
            });
        if spawned.is_err() {
            log::warn!("cannot start a thread for a /metrics request");
        }
    }
}

fn serve(mut stream: TcpStream, render: &Render) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() > MAX_REQUEST_BYTES {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header fields too large\n",
            );
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    if request.len() > MAX_REQUEST_BYTES {
        return respond(
            &mut stream,
            431,
            "text/plain",
            "request header fields too large\n",
        );
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            respond(&mut stream, 200, CONTENT_TYPE, &render())
        }
        (Some("GET"), Some(_)) => {
            respond(&mut stream, 404, "text/plain", "only /metrics is served\n")
        }
        _ => respond(&mut stream, 405, "text/plain", "only GET is served\n"),
    }
}

fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &str) -> io::Result<()> {
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
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::http::{self, BodyBudget, HttpError};
    use std::time::Instant;

    fn listener() -> MetricsListener {
        MetricsListener::start(
            "127.0.0.1:0",
            Arc::new(|| String::from("# TYPE x gauge\nx 1\n")),
        )
        .unwrap()
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
        let mut stream = TcpStream::connect(listener.address()).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{answer}"
        );
    }
}
