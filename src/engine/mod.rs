//! Inference engines' own signals (queue length, requests running, KV cache
//! use), read from every replica's Prometheus `/metrics` page without a
//! Prometheus server. So far the two readers they need: a small HTTP/1.1
//! GET client (`http`) and a Prometheus text parser that reads only the
//! families asked for (`prom`). Engine triggers are not wired up yet (#9).

pub mod http;
pub mod prom;
