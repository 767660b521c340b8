//! Just enough HTTP/1.1 to GET an engine's `/metrics` page over `std::net`:
//! one request per connection (`Connection: close`), a body framed by
//! `Content-Length`, `chunked` transfer coding, or the connection's close.
//! Plain HTTP only; redirects are not followed. Everything a server sends
//! is capped (headers, body) and the whole exchange has one deadline, so a
//! slow or lying replica costs bounded time and memory. Blocking: callers
//! run it off the gRPC threads.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::engine::share::{Fit, Holder, Ledger};
use crate::untrusted::{plain, quoted};

/// The most bytes of status line and headers read.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most bytes of body read by default (a vLLM page is ~200 KB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Bytes that GETs running at once may read, together. Each connection
/// holds what it has read off the wire until its page is dropped, so many
/// replicas answering at once cannot outgrow the process's memory limit.
/// Each endpoint, and each namespace, may hold only its share
/// ([`crate::engine::share`]), so one replica or tenant cannot starve the
/// others. A reader that finds no room waits for it until its deadline; one
/// that would go over its own share fails at once.
pub struct BodyBudget {
    cap: usize,
    used: Mutex<Ledger>,
    freed: Condvar,
    #[cfg(test)]
    waiting: Mutex<usize>,
}

impl BodyBudget {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            used: Mutex::new(Ledger::default()),
            freed: Condvar::new(),
            #[cfg(test)]
            waiting: Mutex::new(0),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.lock().total()
    }

    /// Takes `bytes` for `holder`, who holds `held` already, waiting for
    /// room until `deadline`.
    fn take(&self, holder: &Holder, held: usize, bytes: usize, deadline: Instant) -> Fit {
        let mut used = self.lock();
        loop {
            match used.fits(holder, held, bytes, self.cap) {
                Fit::Now => {
                    used.add(holder, bytes);
                    return Fit::Now;
                }
                Fit::Never => return Fit::Never,
                Fit::Later => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Fit::Later;
            }
            #[cfg(test)]
            {
                *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            #[cfg(test)]
            {
                *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
            }
        }
    }

    /// Readers waiting for room now (for tests).
    #[cfg(test)]
    fn freed_waiters(&self) -> usize {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give(&self, holder: &Holder, bytes: usize) {
        let mut used = self.lock();
        used.remove(holder, bytes);
        self.freed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A page's text, holding its share of the [`BodyBudget`] until dropped.
pub struct Page<'a> {
    pub text: String,
    budget: &'a BodyBudget,
    holder: Holder,
    held: usize,
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        self.budget.give(&self.holder, self.held);
    }
}

/// Why a GET gave no page.
#[derive(Debug)]
pub enum HttpError {
    /// The deadline passed (connecting, sending or reading).
    Timeout,
    /// Connecting, sending or reading failed.
    Io(io::Error),
    /// The server answered with another status (a 3xx carries its `Location`).
    Status { code: u16, detail: String },
    /// The answer is not HTTP as this client reads it.
    Malformed(String),
    /// The answer is larger than allowed.
    TooLarge(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Timeout => f.write_str("no answer before the deadline"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Status { code, detail } => write!(f, "HTTP status {code}{detail}"),
            HttpError::Malformed(m) => write!(f, "malformed HTTP answer: {m}"),
            HttpError::TooLarge(m) => write!(f, "answer too large: {m}"),
        }
    }
}

/// A copy keeps an I/O error's kind and words (an `io::Error` is not
/// `Clone`), so that a replica's error can travel with its line.
impl Clone for HttpError {
    fn clone(&self) -> Self {
        match self {
            HttpError::Timeout => HttpError::Timeout,
            HttpError::Io(e) => HttpError::Io(io::Error::new(e.kind(), e.to_string())),
            HttpError::Status { code, detail } => HttpError::Status {
                code: *code,
                detail: detail.clone(),
            },
            HttpError::Malformed(m) => HttpError::Malformed(m.clone()),
            HttpError::TooLarge(m) => HttpError::TooLarge(m.clone()),
        }
    }
}

/// Equal when of the same kind and words (I/O errors by kind and text).
impl PartialEq for HttpError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HttpError::Io(a), HttpError::Io(b)) => {
                a.kind() == b.kind() && a.to_string() == b.to_string()
            }
            (HttpError::Timeout, HttpError::Timeout) => true,
            (
                HttpError::Status { code, detail },
                HttpError::Status {
                    code: other_code,
                    detail: other_detail,
                },
            ) => code == other_code && detail == other_detail,
            (HttpError::Malformed(a), HttpError::Malformed(b))
            | (HttpError::TooLarge(a), HttpError::TooLarge(b)) => a == b,
            _ => false,
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// GETs `path` from `address` (sending `host` as the Host header) and
/// returns the body of a 200 answer, all before `deadline`, reading at
/// most `max_body` body bytes and no more than `budget` has left.
pub fn get<'b>(
    address: SocketAddr,
    host: &str,
    path: &str,
    deadline: Instant,
    max_body: usize,
    budget: &'b BodyBudget,
) -> Result<Page<'b>, HttpError> {
    get_as(
        address,
        host,
        path,
        deadline,
        max_body,
        budget,
        Holder::default(),
    )
}

/// As [`get`], the bytes read counted against `holder`'s shares of the
/// budget.
pub fn get_as<'b>(
    address: SocketAddr,
    host: &str,
    path: &str,
    deadline: Instant,
    max_body: usize,
    budget: &'b BodyBudget,
    holder: Holder,
) -> Result<Page<'b>, HttpError> {
    let stream = TcpStream::connect_timeout(&address, remaining(deadline)?).map_err(io_error)?;
    let mut conn = Connection {
        stream,
        buffer: Vec::new(),
        start: 0,
        deadline,
        eof: false,
        budget,
        holder,
        held: 0,
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nUser-Agent: keda-gpu-scaler\r\nConnection: close\r\n\r\n"
    );
    conn.stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(io_error)?;
    conn.stream
        .write_all(request.as_bytes())
        .map_err(io_error)?;
    let head = conn.head()?;
    let body = match head.framing {
        Framing::Length(length) if length > max_body => {
            return Err(HttpError::TooLarge(format!(
                "Content-Length {length} is over the {max_body}-byte limit"
            )))
        }
        Framing::Length(length) => conn.exactly(length)?,
        Framing::Chunked => conn.chunked(max_body)?,
        Framing::Close => conn.until_close(max_body)?,
    };
    let text = String::from_utf8(body)
        .map_err(|_| HttpError::Malformed("the body is not UTF-8".into()))?;
    let held = std::mem::take(&mut conn.held);
    let holder = std::mem::take(&mut conn.holder);
    Ok(Page {
        text,
        budget,
        holder,
        held,
    })
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HttpError::Timeout)
    } else {
        Ok(left)
    }
}

fn io_error(e: io::Error) -> HttpError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::Timeout,
        _ => HttpError::Io(e),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

struct Head {
    framing: Framing,
}

/// A connection with the bytes read but not yet used.
struct Connection<'b> {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Where the unused bytes in `buffer` start.
    start: usize,
    deadline: Instant,
    eof: bool,
    budget: &'b BodyBudget,
    /// Whose share of `budget` the bytes count against.
    holder: Holder,
    /// Bytes read so far, taken from `budget`.
    held: usize,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.budget.give(&self.holder, self.held);
    }
}

impl Connection<'_> {
    /// Reads more bytes; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, HttpError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.stream
            .set_read_timeout(Some(remaining(self.deadline)?))
            .map_err(io_error)?;
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk).map_err(io_error)?;
        if read == 0 {
            self.eof = true;
            return Ok(false);
        }
        match self
            .budget
            .take(&self.holder, self.held, read, self.deadline)
        {
            Fit::Now => {}
            Fit::Later => {
                return Err(HttpError::TooLarge(format!(
                    "the {} bytes that scrapes running at once may hold stayed in use by other pages until the deadline",
                    self.budget.cap()
                )))
            }
            Fit::Never => {
                return Err(HttpError::TooLarge(format!(
                    "over the {:.0}% of the {} bytes that scrapes running at once may hold one endpoint may take",
                    crate::engine::share::ENDPOINT_SHARE * 100.0,
                    self.budget.cap()
                )))
            }
        }
        self.held += read;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(true)
    }

    fn unused(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// One line ending in CRLF (or LF), without it; at most `limit` bytes.
    fn line(&mut self, limit: usize, what: &str) -> Result<String, HttpError> {
        loop {
            if let Some(end) = self.unused().iter().position(|&b| b == b'\n') {
                if end > limit {
                    break;
                }
                let line = &self.unused()[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let line = String::from_utf8(line.to_vec())
                    .map_err(|_| HttpError::Malformed(format!("{what} is not text")))?;
                self.start += end + 1;
                return Ok(line);
            }
            if self.unused().len() > limit {
                break;
            }
            if !self.fill()? {
                return Err(HttpError::Malformed(format!(
                    "the connection closed inside {what}"
                )));
            }
        }
        Err(HttpError::TooLarge(format!("{what} is over {limit} bytes")))
    }

    /// The status line and headers.
    fn head(&mut self) -> Result<Head, HttpError> {
        let mut budget = MAX_HEADER_BYTES;
        let status = self.line(budget, "the status line")?;
        budget = budget.saturating_sub(status.len() + 2);
        let mut parts = status.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !version.starts_with("HTTP/1.") {
            return Err(HttpError::Malformed(format!(
                "status line {}",
                quoted(&status)
            )));
        }
        let code: u16 = code
            .parse()
            .map_err(|_| HttpError::Malformed(format!("status line {}", quoted(&status))))?;
        let mut length = None;
        let mut chunked = false;
        let mut location = None;
        loop {
            let line = self.line(budget, "the headers")?;
            budget = budget.saturating_sub(line.len() + 2);
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(HttpError::Malformed(format!(
                    "header line {}",
                    quoted(&line)
                )));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let parsed: usize = value.parse().map_err(|_| {
                    HttpError::Malformed(format!("Content-Length {}", quoted(value)))
                })?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(HttpError::Malformed("two different Content-Lengths".into()));
                }
                length = Some(parsed);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                if !chunked {
                    return Err(HttpError::Malformed(format!(
                        "Transfer-Encoding {} is not supported",
                        quoted(value)
                    )));
                }
            } else if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_string());
            }
        }
        if code != 200 {
            let detail = match (code, location) {
                (300..=399, Some(location)) => {
                    format!(" (a redirect to {}, not followed)", plain(&location))
                }
                _ => String::new(),
            };
            return Err(HttpError::Status { code, detail });
        }
        // Chunked wins over a Content-Length sent beside it (RFC 9112 6.3).
        let framing = match (chunked, length) {
            (true, _) => Framing::Chunked,
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::Close,
        };
        Ok(Head { framing })
    }

    /// Exactly `length` body bytes.
    fn exactly(&mut self, length: usize) -> Result<Vec<u8>, HttpError> {
        while self.unused().len() < length {
            if !self.fill()? {
                return Err(HttpError::Malformed(format!(
                    "the body ended after {} of {length} bytes",
                    self.unused().len()
                )));
            }
        }
        // Moves the body out rather than copying it; what follows stays.
        let rest = self.buffer.split_off(self.start + length);
        let mut body = std::mem::replace(&mut self.buffer, rest);
        body.drain(..self.start);
        self.start = 0;
        Ok(body)
    }

    /// A `chunked` body, its chunks joined, trailers read and dropped.
    fn chunked(&mut self, max_body: usize) -> Result<Vec<u8>, HttpError> {
        // Size lines, extensions and CRLFs count too: 1-byte chunks with
        // long extensions cannot hold more than a page's worth.
        let mut wire: usize = 0;
        let over = |wire: usize| {
            (wire > max_body).then(|| {
                HttpError::TooLarge(format!(
                    "the chunked body with its framing is over the {max_body}-byte limit"
                ))
            })
        };
        let mut body = Vec::new();
        loop {
            let line = self.line(1024, "a chunk size")?;
            wire = wire.saturating_add(line.len() + 2);
            if let Some(error) = over(wire) {
                return Err(error);
            }
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {}", quoted(&line))))?;
            if size == 0 {
                // Trailers, up to the empty line.
                let mut budget = MAX_HEADER_BYTES;
                loop {
                    let trailer = self.line(budget, "the trailers")?;
                    budget = budget.saturating_sub(trailer.len() + 2);
                    wire = wire.saturating_add(trailer.len() + 2);
                    if let Some(error) = over(wire) {
                        return Err(error);
                    }
                    if trailer.is_empty() {
                        return Ok(body);
                    }
                }
            }
            if body
                .len()
                .checked_add(size)
                .is_none_or(|total| total > max_body)
            {
                return Err(HttpError::TooLarge(format!(
                    "the chunked body is over the {max_body}-byte limit"
                )));
            }
            wire = wire.saturating_add(size + 2);
            if let Some(error) = over(wire) {
                return Err(error);
            }
            body.extend(self.exactly(size)?);
            let end = self.line(2, "a chunk's end")?;
            if !end.is_empty() {
                return Err(HttpError::Malformed("a chunk longer than its size".into()));
            }
        }
    }

    /// The body up to the connection's close.
    fn until_close(&mut self, max_body: usize) -> Result<Vec<u8>, HttpError> {
        while self.fill()? {
            if self.unused().len() > max_body {
                return Err(HttpError::TooLarge(format!(
                    "the body is over the {max_body}-byte limit"
                )));
            }
        }
        if self.unused().len() > max_body {
            return Err(HttpError::TooLarge(format!(
                "the body is over the {max_body}-byte limit"
            )));
        }
        let mut body = std::mem::take(&mut self.buffer);
        body.drain(..self.start);
        self.start = 0;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A server that answers one connection with `parts`, written one at a
    /// time, then holds the connection until the test ends (when
    /// `hold_open`) or closes it.
    fn serve(parts: Vec<Vec<u8>>, hold_open: bool) -> (SocketAddr, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (done, finished) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            for part in parts {
                if stream.write_all(&part).is_err() {
                    return;
                }
                let _ = stream.flush();
            }
            if hold_open {
                let _ = finished.recv();
            }
        });
        (address, done)
    }

    static UNLIMITED: std::sync::LazyLock<BodyBudget> =
        std::sync::LazyLock::new(|| BodyBudget::new(usize::MAX));

    fn fetch(parts: Vec<&[u8]>, max_body: usize) -> Result<String, HttpError> {
        let (address, _done) = serve(parts.into_iter().map(<[u8]>::to_vec).collect(), false);
        let deadline = Instant::now() + Duration::from_secs(10);
        get(
            address,
            "vllm:8000",
            "/metrics",
            deadline,
            max_body,
            &UNLIMITED,
        )
        .map(|page| page.text.clone())
    }

    #[test]
    fn content_length_chunked_and_close_delimited_bodies() {
        let length = fetch(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"lo"],
            MAX_BODY_BYTES,
        );
        assert_eq!(length.unwrap(), "hello");
        let chunked = fetch(
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nvllm\r\n",
                b"1\r\n:\r\n",
                b"0\r\nX-Trailer: yes\r\n\r\n",
            ],
            MAX_BODY_BYTES,
        );
        assert_eq!(chunked.unwrap(), "vllm:");
        let close = fetch(
            vec![b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close"],
            MAX_BODY_BYTES,
        );
        assert_eq!(close.unwrap(), "until close");
    }

    #[test]
    fn a_chunked_body_is_capped_with_its_framing() {
        // Four 1-byte chunks, each with a 60-byte extension: 4 bytes of
        // body, over 250 on the wire.
        let extension = format!(";{}", "e".repeat(59));
        let chunks: Vec<Vec<u8>> =
            std::iter::once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec())
                .chain((0..4).map(|_| format!("1{extension}\r\nx\r\n").into_bytes()))
                .chain(std::iter::once(b"0\r\n\r\n".to_vec()))
                .collect();
        let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let capped = fetch(parts.clone(), 100).unwrap_err();
        assert_eq!(
            capped.to_string(),
            "answer too large: the chunked body with its framing is over the 100-byte limit"
        );
        assert_eq!(fetch(parts, 1000).unwrap(), "xxxx");
    }

    #[test]
    fn other_statuses_are_errors_and_redirects_are_not_followed() {
        let error = fetch(
            vec![b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
            100,
        )
        .unwrap_err();
        assert!(
            matches!(error, HttpError::Status { code: 404, .. }),
            "{error}"
        );
        let error = fetch(
            vec![b"HTTP/1.1 301 Moved\r\nLocation: http://elsewhere/metrics\r\n\r\n"],
            100,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "HTTP status 301 (a redirect to http://elsewhere/metrics, not followed)"
        );
    }

    #[test]
    fn bodies_and_headers_are_capped() {
        let at_cap = fetch(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n1234"], 4);
        assert_eq!(at_cap.unwrap(), "1234");
        let declared = fetch(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"],
            4,
        );
        assert!(matches!(declared, Err(HttpError::TooLarge(_))));
        let chunked = fetch(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n123\r\n2\r\n45\r\n0\r\n\r\n"],
            4,
        );
        assert!(matches!(chunked, Err(HttpError::TooLarge(_))));
        let close = fetch(vec![b"HTTP/1.1 200 OK\r\n\r\n12345"], 4);
        assert!(matches!(close, Err(HttpError::TooLarge(_))));
        // A chunk size that would overflow the count is too large, not a panic.
        let huge = fetch(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n"],
            4,
        );
        assert!(matches!(huge, Err(HttpError::TooLarge(_))), "{huge:?}");
        let header = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let error = fetch(vec![header.as_bytes()], 4).unwrap_err();
        assert!(matches!(error, HttpError::TooLarge(_)), "{error}");
    }

    #[test]
    fn malformed_answers_say_why() {
        for (answer, needle) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "status line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "ended after 5 of 10",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "not supported",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                "longer than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe",
                "not UTF-8",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Le",
                "closed inside the headers",
            ),
        ] {
            let error = fetch(vec![answer], 1024).unwrap_err();
            assert!(error.to_string().contains(needle), "{needle}: {error}");
        }
    }

    #[test]
    fn a_server_that_stops_talking_runs_into_the_deadline() {
        let (address, done) = serve(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12".to_vec()],
            true,
        );
        let deadline = Instant::now() + Duration::from_millis(200);
        let error = get(address, "h", "/metrics", deadline, 1024, &UNLIMITED)
            .err()
            .unwrap();
        assert!(matches!(error, HttpError::Timeout), "{error}");
        drop(done);
    }

    #[test]
    fn a_refused_connection_is_an_io_error() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let error = get(address, "h", "/metrics", deadline, 1024, &UNLIMITED)
            .err()
            .unwrap();
        assert!(matches!(error, HttpError::Io(_)), "{error}");
    }

    #[test]
    fn pages_read_at_once_share_one_budget_fairly() {
        // 600 bytes: 150 an endpoint, 300 a namespace.
        let budget = BodyBudget::new(600);
        let answer = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let holder = |namespace: &str, endpoint: &str| Holder {
            namespace: namespace.into(),
            endpoint: endpoint.into(),
        };
        let read = |holder: Holder, body: &str, deadline: Instant| {
            let (address, done) = serve(vec![answer(body)], false);
            let page = get_as(address, "h", "/metrics", deadline, 1024, &budget, holder);
            drop(done);
            page
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = "a".repeat(100);
        // Tenant a's two endpoints hold most of its half.
        let first = read(holder("a", "a1"), &body, deadline).unwrap();
        let second = read(holder("a", "a2"), &body, deadline).unwrap();
        let held = budget.in_use();
        assert!((200..=300).contains(&held), "{held}");
        // A third of a's endpoints waits for room, and is refused at its
        // deadline when none comes, giving back what it took ...
        let soon = Instant::now() + Duration::from_millis(200);
        let error = read(holder("a", "a3"), &body, soon).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("stayed in use by other pages until the deadline"),
            "{error}"
        );
        assert_eq!(budget.in_use(), held);
        // ... while tenant b reads at once: a cannot starve it.
        let other = read(holder("b", "b1"), &body, deadline).unwrap();
        assert_eq!(other.text, body);
        drop(other);
        // One that waits is read as soon as room is given back.
        let waiting = std::thread::scope(|scope| {
            let reader =
                scope.spawn(|| read(holder("a", "a3"), &body, deadline).map(|p| p.text.clone()));
            // Dropped only once the reader is waiting for room.
            let until = Instant::now() + Duration::from_secs(10);
            while budget.freed_waiters() == 0 {
                assert!(Instant::now() < until, "the reader never waited for room");
                std::thread::yield_now();
            }
            drop(first);
            reader.join().unwrap()
        });
        assert_eq!(waiting.unwrap(), body);
        drop(second);
        assert_eq!(budget.in_use(), 0);
        // A page over an endpoint's share is refused without waiting.
        let error = read(holder("c", "c1"), &"d".repeat(200), deadline)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("over the 25% of the 600 bytes"),
            "{error}"
        );
        assert_eq!(budget.in_use(), 0);
    }
}
