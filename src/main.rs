//! Entry point: parse the command line, set up logging, run one command.

use std::process::ExitCode;

use keda_gpu_scaler::commands;
use keda_gpu_scaler::commands::args::{self, Command, UsageError};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("keda-gpu-scaler: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("keda-gpu-scaler: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(UsageError),
    Run(String),
}

fn run() -> Result<(), Failure> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command = args::parse(&argv, &|key| std::env::var(key).ok()).map_err(Failure::Usage)?;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match command {
        Command::Help => {
            print!("{}", args::USAGE);
            Ok(())
        }
        Command::Version => {
            println!("keda-gpu-scaler {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(args) => commands::serve::run(&args),
        Command::Devices(args) => commands::devices::run(&args),
        Command::Query(args) => commands::query::run(&args),
    }
    .map_err(Failure::Run)
}
