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
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Read(e) => write!(f, "{e}"),
            Fault::Unread(e) => write!(f, "{e}"),
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
