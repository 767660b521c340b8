//! How a replica read, and a round, end: as types, from the read up to
//! the evaluation (`scaling/replicas.rs`), so that a timeout, a refused
//! connection, a bad status, an unparseable page and a cap are told apart
//! by what they are. Text is rendered only where shown (`--explain`, the
//! gRPC message, the log), by `Display`; the `/metrics` page counts reads
//! by [`ReadOutcome`]. Pure: no I/O.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::engine::http::HttpError;
use crate::engine::policy::Refusal;
use crate::engine::prom::ParseError;

use super::budget::size;

/// Why a replica has no page this round.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    /// The HTTP exchange failed: no answer in time, refused or reset, a
    /// status other than 200, not HTTP, or larger than allowed.
    Http(HttpError),
    /// HTTP 200 with a body that is not Prometheus text.
    NotPrometheus(ParseError),
    /// The round's deadline (the trigger's `engineTimeout`) passed before
    /// this replica's turn.
    NotRead { timeout: Duration },
    /// The name has more addresses than a round reads.
    PastReplicaCap { limit: usize },
    /// Its series would go over the series budget of all cached rounds.
    NotKept { budget: usize },
    /// DNS no longer names it (it stands only on an earlier page).
    NoLongerNamed,
    /// The endpoint policy forbids the address: never connected to.
    Refused(Refusal),
}

impl ReadError {
    /// No answer before the deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ReadError::Http(HttpError::Timeout))
    }

    /// Nothing listens at the address.
    pub fn is_refused(&self) -> bool {
        matches!(self, ReadError::Http(HttpError::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// How the read ended, for the `/metrics` page.
    pub fn outcome(&self) -> ReadOutcome {
        match self {
            ReadError::Http(HttpError::Timeout) => ReadOutcome::Timeout,
            ReadError::Http(HttpError::Io(_)) => ReadOutcome::ConnectionError,
            ReadError::Http(HttpError::Status { .. }) => ReadOutcome::HttpStatus,
            ReadError::Http(HttpError::Malformed(_) | HttpError::TooLarge(_)) => {
                ReadOutcome::BadAnswer
            }
            ReadError::NotPrometheus(_) => ReadOutcome::NotPrometheus,
            ReadError::Refused(_) => ReadOutcome::Refused,
            ReadError::NotRead { .. }
            | ReadError::PastReplicaCap { .. }
            | ReadError::NotKept { .. }
            | ReadError::NoLongerNamed => ReadOutcome::NotRead,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Http(e) => write!(f, "{e}"),
            ReadError::NotPrometheus(e) => write!(f, "the page is not Prometheus text: {e}"),
            ReadError::NotRead { timeout } => write!(
                f,
                "not read: the {}ms engineTimeout passed while other replicas were read",
                timeout.as_millis()
            ),
            ReadError::PastReplicaCap { limit } => {
                write!(f, "not read: the name has more than {limit} addresses")
            }
            ReadError::NotKept { budget } => write!(
                f,
                "not kept: its series would go over the {} all engine scrapes may hold",
                size(*budget)
            ),
            ReadError::NoLongerNamed => f.write_str("no longer named by DNS"),
            ReadError::Refused(refusal) => write!(f, "{refusal}"),
        }
    }
}

/// How one replica read ended, for the `/metrics` page's `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A page of Prometheus text.
    Ok,
    /// No answer before the deadline.
    Timeout,
    /// Connecting, sending or reading failed (refused, reset).
    ConnectionError,
    /// An HTTP status other than 200.
    HttpStatus,
    /// Not HTTP as the client reads it, or larger than allowed.
    BadAnswer,
    /// HTTP 200 with a body that is not Prometheus text.
    NotPrometheus,
    /// The round's deadline passed before this replica's turn.
    NotRead,
    /// The endpoint policy forbids the address; nothing was sent.
    Refused,
}

impl ReadOutcome {
    pub const ALL: [ReadOutcome; 8] = [
        Self::Ok,
        Self::Timeout,
        Self::ConnectionError,
        Self::HttpStatus,
        Self::BadAnswer,
        Self::NotPrometheus,
        Self::NotRead,
        Self::Refused,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
            Self::HttpStatus => "http_status",
            Self::BadAnswer => "bad_answer",
            Self::NotPrometheus => "not_prometheus",
            Self::NotRead => "not_read",
            Self::Refused => "refused",
        }
    }
}

/// Why a round could not learn the endpoint's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundFailure {
    /// The resolver said so (its words).
    DnsLookup(String),
    /// The resolver did not answer before the deadline.
    DnsTimeout { left: Duration },
    /// No thread for the lookup (its pool's words).
    DnsThread(String),
    /// The lookup's thread ended without an answer (a panic).
    DnsPanicked,
    /// The scaler is stopping: nothing more is read.
    ShuttingDown,
    /// The round panicked.
    Panicked,
    /// No thread for the round (its pool's words).
    NoThread(String),
}

impl fmt::Display for RoundFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundFailure::DnsLookup(e) => write!(f, "DNS lookup failed: {e}"),
            RoundFailure::DnsTimeout { left } => write!(
                f,
                "DNS lookup failed: no answer within the engineTimeout ({}ms left of it)",
                left.as_millis()
            ),
            RoundFailure::DnsThread(e) => {
                write!(f, "DNS lookup failed: cannot start a DNS thread: {e}")
            }
            RoundFailure::DnsPanicked => {
                f.write_str("DNS lookup failed: the lookup failed unexpectedly (see the log)")
            }
            RoundFailure::ShuttingDown => f.write_str("keda-gpu-scaler is shutting down"),
            RoundFailure::Panicked => {
                f.write_str("the scrape failed unexpectedly (a panic; see the log)")
            }
            RoundFailure::NoThread(e) => write!(f, "cannot start a scrape round: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_counts_under_its_outcome_and_says_what_it_is() {
        let refused = ReadError::Http(HttpError::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert!(refused.is_refused() && !refused.is_timeout());
        assert_eq!(refused.outcome(), ReadOutcome::ConnectionError);
        let timeout = ReadError::Http(HttpError::Timeout);
        assert!(timeout.is_timeout() && !timeout.is_refused());
        assert_eq!(timeout.to_string(), "no answer before the deadline");
        let late = ReadError::NotRead {
            timeout: Duration::from_millis(250),
        };
        assert_eq!(late.outcome(), ReadOutcome::NotRead);
        assert_eq!(
            late.to_string(),
            "not read: the 250ms engineTimeout passed while other replicas were read"
        );
        assert_eq!(
            ReadError::NotKept { budget: 8 << 20 }.to_string(),
            "not kept: its series would go over the 8 MiB all engine scrapes may hold"
        );
        assert_eq!(
            RoundFailure::DnsTimeout {
                left: Duration::from_millis(90)
            }
            .to_string(),
            "DNS lookup failed: no answer within the engineTimeout (90ms left of it)"
        );
    }
}
