//! What an evaluation hands on: a trigger's value or why there is none
//! (mapped to a gRPC status at the edge), and, for `query --explain`, each
//! GPU's and each engine replica's part in it, as types. Text is rendered
//! by `Display` where shown. Pure data.

use std::fmt;
use std::time::Duration;

use crate::engine::scrape::{ReadError, RoundFailure};
use crate::engine::signals::Unread;

/// Why a trigger has no value; maps to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The request asks for something this node (or cluster) does not have.
    InvalidArgument(String),
    /// The data is missing, stale or faulty right now.
    Unavailable(String),
}

impl EvalError {
    pub fn message(&self) -> &str {
        match self {
            EvalError::InvalidArgument(m) | EvalError::Unavailable(m) => m,
        }
    }
}

/// One GPU's part in a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub node: String,
    pub index: u32,
    pub uuid: String,
    /// `namespace/pod` of each container holding it.
    pub pods: Vec<String>,
    pub value: Option<f64>,
    pub counted: bool,
    pub reason: String,
}

/// A trigger's value (or why there is none) and, when asked for, how it
/// came about.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub value: Result<f64, EvalError>,
    pub explained: Vec<Explained>,
    /// GPUs the trigger selected (by index and pods), counted or not. 0
    /// with a selector means no pod of it was found.
    pub selected: usize,
    /// Peers left out of the value, and why.
    pub notes: Vec<Note>,
    /// Engine triggers: each replica's part in the value.
    pub replicas: Vec<ReplicaLine>,
}

/// One engine replica's part in a value (or an endpoint with none).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLine {
    /// The endpoint as configured (`http://host:port/path`).
    pub endpoint: String,
    /// The address read; empty when the endpoint had none.
    pub address: String,
    pub value: Option<f64>,
    pub counted: bool,
    pub status: ReplicaStatus,
}

/// Why a replica gave no value now.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Its page could not be read, or not kept.
    Read(ReadError),
    /// Its page has no usable value for this trigger.
    Unread(Unread),
    /// Its reads for a windowed trigger would go over the window budget.
    WindowFull { budget: usize },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Read(e) => write!(f, "{e}"),
            Fault::Unread(e) => write!(f, "{e}"),
            Fault::WindowFull { budget } => write!(
                f,
                "not kept: its reads would go over the {} MiB windowed triggers may hold (or its endpoint's or namespace's share of it)",
                budget >> 20
            ),
        }
    }
}

/// What became of one replica (or an endpoint with none) in a value.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaStatus {
    /// Read now, and counted.
    Counted,
    /// Not read now; its last read, `age` old, counts.
    LastRead {
        fault: Fault,
        value: f64,
        age: Duration,
    },
    /// Not read now, with no recent last read: counted by the HPA's rule
    /// for pods without metrics, as `stand_in` (once known).
    Missing { fault: Fault, stand_in: Option<f64> },
    /// DNS no longer names it; its last read, `age` old, counts.
    Vanished { value: f64, age: Duration },
    /// The endpoint's name has no address (the resolver's words).
    NoAddress(String),
    /// DNS does not know the endpoint's name (the resolver's words).
    UnknownToDns(String),
    /// The round could not learn the endpoint's replicas.
    Unresolved(RoundFailure),
    /// A windowed trigger's replica: its reads in the window.
    Window(WindowLine),
}

/// A replica's reads inside a windowed trigger's window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowLine {
    pub reads: usize,
    /// How long ago its first and last reads in the window were taken.
    pub from_age: Duration,
    pub to_age: Duration,
    /// Between them: requests, tokens or observations.
    pub increase: f64,
    pub unit: &'static str,
    /// Counter resets (restarts) between them.
    pub resets: u32,
    pub now: WindowNow,
}

/// A windowed trigger's replica now.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowNow {
    /// Read now, with at least two reads in the window: counted.
    Read,
    /// Read now for the first time in the window: counted from its next
    /// read on.
    FirstRead,
    /// Not read now; its reads up to its last, under the trust window
    /// old, count.
    LastRead(Fault),
    /// Not read now, and its last read is older than the trust window (or
    /// there is none): the HPA's rule, as `stand_in` (once known); its
    /// reads in the window still count.
    Missing { fault: Fault, stand_in: Option<f64> },
    /// No longer named by DNS: its reads in the window still count.
    Gone,
}

impl fmt::Display for ReplicaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last_read = |value: &f64, age: &Duration| {
            format!(
                "counted as its last read, {value}, from {:.1}s ago",
                age.as_secs_f64()
            )
        };
        match self {
            ReplicaStatus::Counted => f.write_str("counted"),
            ReplicaStatus::LastRead { fault, value, age } => {
                write!(f, "missing ({fault}); {}", last_read(value, age))
            }
            ReplicaStatus::Missing {
                fault,
                stand_in: Some(stand_in),
            } => write!(f, "missing, counted as {stand_in}: {fault}"),
            ReplicaStatus::Missing {
                fault,
                stand_in: None,
            } => write!(f, "{fault}"),
            ReplicaStatus::Vanished { value, age } => {
                write!(f, "no longer named by DNS; {}", last_read(value, age))
            }
            ReplicaStatus::NoAddress(e) => write!(f, "no address: {e}"),
            ReplicaStatus::UnknownToDns(e) => write!(f, "unknown to DNS: {e}"),
            ReplicaStatus::Unresolved(failure) => write!(f, "{failure}"),
            ReplicaStatus::Window(line) => write!(f, "{line}"),
        }
    }
}

impl fmt::Display for WindowLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reads {
            0 => f.write_str("no read in the window")?,
            1 => write!(
                f,
                "1 read in the window, {:.1}s ago",
                self.to_age.as_secs_f64()
            )?,
            reads => {
                write!(
                    f,
                    "{reads} reads from {:.1}s to {:.1}s ago: +{} {}",
                    self.from_age.as_secs_f64(),
                    self.to_age.as_secs_f64(),
                    self.increase,
                    self.unit
                )?;
                match self.resets {
                    0 => {}
                    1 => f.write_str(" (1 reset: it restarted; counted from 0 after it)")?,
                    n => write!(f, " ({n} resets: counted from 0 after each)")?,
                }
            }
        }
        match &self.now {
            WindowNow::Read => Ok(()),
            WindowNow::FirstRead => f.write_str("; first read: counts from its next read"),
            WindowNow::LastRead(fault) => {
                write!(
                    f,
                    "; not read now ({fault}): its reads up to the last count"
                )
            }
            WindowNow::Missing {
                fault,
                stand_in: Some(stand_in),
            } => write!(f, "; missing ({fault}), counted as {stand_in}"),
            WindowNow::Missing {
                fault,
                stand_in: None,
            } => write!(f, "; missing ({fault})"),
            WindowNow::Gone => {
                f.write_str("; no longer named by DNS: its reads in the window count")
            }
        }
    }
}

/// A peer left out of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The peer's address.
    pub peer: String,
    pub kind: NoteKind,
    /// For `query --explain` and the log.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A node-wide trigger's value left out a peer that did not answer.
    Missing,
    /// A silent peer whose last report held none of the selector's pods.
    Skipped,
    /// A silent peer with no trusted report; the value came from pods elsewhere.
    Unknown,
    /// How a windowed trigger's value came about (no peer).
    Window,
}

impl Outcome {
    /// No value, for a reason that precedes any GPU (NVML down, no peers).
    pub fn unavailable(reason: String) -> Self {
        Self {
            value: Err(EvalError::Unavailable(reason)),
            explained: Vec::new(),
            selected: 0,
            notes: Vec::new(),
            replicas: Vec::new(),
        }
    }
}

/// Whether to build the per-GPU explanation (only `query --explain` reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    ValueOnly,
    Explained,
}
