//! `fake-engine --engine KIND --state FILE --listen ADDR [--listen ADDR...]`:
//! replicas of a fake inference engine, each serving what FILE says on
//! every request (see `Behaviour::from_file`). Prints `listening on ADDR`
//! per replica, then serves until killed. For tests and the demo.

use std::path::PathBuf;

use fake_engine::{Kind, Replica};

fn main() {
    if let Err(e) = run() {
        eprintln!("fake-engine: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut kind, mut state, mut listen) = (Kind::Vllm, None, Vec::new());
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--engine" => {
                let name = value()?;
                kind = Kind::parse(&name).ok_or_else(|| format!("unknown engine {name:?}"))?;
            }
            "--state" => state = Some(PathBuf::from(value()?)),
            "--listen" => listen.push(value()?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let state = state.ok_or("--state FILE is required")?;
    if listen.is_empty() {
        listen.push(String::from("127.0.0.1:0"));
    }
    let mut replicas = Vec::new();
    for address in &listen {
        let replica = Replica::from_file(address.as_str(), state.clone(), kind)
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        println!("listening on {}", replica.address());
        replicas.push(replica);
    }
    loop {
        std::thread::park();
    }
}
