//! What a trigger asks and how it is answered: metadata parsing, profiles
//! and selectors (`trigger`, cached per ScaledObject in `trigger_cache`),
//! evaluation and aggregation over a list of nodes (`evaluate`) or over an
//! engine's replicas (`replicas`) or over a window of their reads
//! (`windows`: rates and latencies), what either hands on (`outcome`), the
//! HPA's arithmetic (`hpa`), and
//! durations as users type them (`duration`). No I/O, no threads.

pub mod duration;
pub mod evaluate;
pub mod hpa;
pub mod outcome;
pub mod replicas;
pub mod trigger;
pub mod trigger_cache;
pub mod windows;
