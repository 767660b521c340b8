//! One file per subcommand.

pub mod devices;
pub mod query;
pub mod serve;
