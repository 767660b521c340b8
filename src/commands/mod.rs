//! The command line: argument parsing (`args`), one file per subcommand
//! (`serve`, `devices`, `query`), and their helpers (`json`,
//! `signals`).

pub mod args;
pub mod devices;
pub mod json;
pub mod query;
pub mod serve;
pub mod signals;
