//! The servers: starting and stopping everything (`server`), the
//! ExternalScaler service KEDA calls (`scaler`), push streams (`streams`),
//! health checks (`health`), how replies and errors are sent (`reply`),
//! and TLS (`tls`). Handlers read snapshots and views; they never block.

pub mod health;
pub mod reply;
pub mod scaler;
pub mod server;
pub mod streams;
pub mod tls;
