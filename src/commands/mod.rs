//! The command line: argument parsing (`args`), one file per subcommand
//! (`serve`, `devices`, `query`), and their helpers (`json`, `duration`,
//! `signals`).

pub mod args;
pub mod devices;
pub mod duration;
pub mod json;
pub mod query;
pub mod serve;
pub mod signals;
