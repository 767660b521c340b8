//! Build script: generates the gRPC code from `proto/` without a `protoc`
//! binary, and makes the binary link the C++ runtime statically so that its
//! only run-time dependency is glibc (the distroless `cc` base image).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use protobuf::Message as _;

const PROTOS: &[&str] = &[
    "externalscaler.proto",
    "health.proto",
    "podresources.proto",
    "node.proto",
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    generate_protos(&out_dir);
    link_cpp_runtime_statically(&out_dir);
}

/// protobuf-codegen-pure 2.x drops `service` blocks, so parse with
/// protobuf-parse 3 (pure Rust), re-read the descriptors with protobuf 2's
/// types (same wire format) and run the 2.x message and grpcio generators.
fn generate_protos(out_dir: &Path) {
    println!("cargo:rerun-if-changed=proto");
    let inputs: Vec<PathBuf> = PROTOS.iter().map(|p| Path::new("proto").join(p)).collect();
    let set = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .inputs(&inputs)
        .file_descriptor_set()
        .unwrap_or_else(|e| panic!("cannot parse proto/: {e:#}"));
    let bytes = protobuf3_to_bytes(&set);
    let set = protobuf::descriptor::FileDescriptorSet::parse_from_bytes(&bytes)
        .expect("protobuf 2 reads a protobuf 3 descriptor set");
    let files = set.get_file();
    let to_generate: Vec<String> = PROTOS.iter().map(|p| p.to_string()).collect();

    let customize = protobuf_codegen::Customize {
        gen_mod_rs: Some(false),
        ..Default::default()
    };
    let mut generated = protobuf_codegen::gen(files, &to_generate, &customize);
    generated.extend(grpcio_compiler::codegen::gen(files, &to_generate));
    for file in generated {
        let content = strip_inner_attributes(&String::from_utf8_lossy(&file.content));
        fs::write(out_dir.join(&file.name), content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.name));
    }
}

/// `include!` rejects inner attributes and inner doc comments; the
/// including module carries the allows instead.
fn strip_inner_attributes(code: &str) -> String {
    code.lines()
        .filter(|line| {
            let line = line.trim_start();
            !line.starts_with("#![") && !line.starts_with("//!")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

fn protobuf3_to_bytes(set: &protobuf3::descriptor::FileDescriptorSet) -> Vec<u8> {
    protobuf3::Message::write_to_bytes(set).expect("descriptor set serialises")
}

/// grpcio-sys asks for `-lstdc++`, and rustc for `-lgcc_s`. A search
/// directory holding only static archives under those names makes the linker
/// take them statically, before the system's shared copies.
fn link_cpp_runtime_statically(out_dir: &Path) {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu")
    {
        return;
    }
    let dir = out_dir.join("static-runtime");
    fs::create_dir_all(&dir).expect("create static-runtime dir");
    for (archive, link_as) in [
        ("libstdc++.a", "libstdc++.a"),
        ("libgcc_eh.a", "libgcc_s.a"),
    ] {
        let source = compiler_file(archive);
        fs::copy(&source, dir.join(link_as))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", source.display()));
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}

/// Asks the C++ compiler where one of its runtime archives lives.
fn compiler_file(name: &str) -> PathBuf {
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let output = Command::new(&cxx)
        .arg(format!("-print-file-name={name}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cxx} to find {name}: {e}"));
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !path.is_absolute() || !path.exists() {
        panic!("{cxx} does not ship {name}; install the static C++ runtime (g++)");
    }
    path
}
