//! A stand-in for `libamd_smi.so`: exports the AMD SMI C entry points the
//! scaler uses, with `amdsmi.h`'s struct layouts, and answers from a
//! scenario file re-read on every `amdsmi_get_socket_handles` (which starts
//! each pass), so a test or demo can change GPUs while the scaler runs.
//! Built with `--features minimal`, it lacks the optional
//! `amdsmi_get_gpu_asic_info` and `amdsmi_get_gpu_driver_info`.
//!
//! The scenario file is `$FAKE_AMDSMI_SCENARIO`, or `fake-amdsmi.scenario`
//! beside this library. One directive a line, `#` starts a comment:
//!
//! ```text
//! version 26.1.0          # the library version: from 26 the ROCm 7 layouts
//!                         # (no `year`, 192-byte power info); 25.x the ROCm 6.4
//!                         # power info (40 bytes); below, year first and 68 bytes
//! driver 6.10.5
//! gpu 0 uuid=a1-… bdf=0000:19:00.0 name="AMD Instinct MI300X" gfx=37 umc=12 vram_total_mib=196592 vram_used_mib=2048 hotspot=41 edge=NA current_w=550 average_w=NA socket_w=550
//! fail 0 activity BUSY    # that call on GPU 0 returns the status; `*` is every call
//! hang 0 power 30000      # that call blocks up to 30000 ms, less if the line goes away
//! init_error DRIVER_NOT_LOADED
//! list_error NOT_INIT     # amdsmi_get_socket_handles fails
//! ```
//!
//! `NA` writes the library's "not available" (0xFFFF); a sensor given as
//! `NA` for temperature answers NOT_SUPPORTED. Calls: `uuid bdf name driver
//! activity memory temperature power`. Each GPU is its own socket. A
//! missing scenario file makes amdsmi_init fail with DRIVER_NOT_LOADED.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_uint, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Status = u32;
type Handle = *mut c_void;

const SUCCESS: Status = 0;
const INVAL: Status = 1;
const NOT_SUPPORTED: Status = 2;
const INSUFFICIENT_SIZE: Status = 41;
const NOT_INIT: Status = 32;
const DRIVER_NOT_LOADED: Status = 34;
const UNKNOWN_ERROR: Status = 0xFFFF_FFFF;
const NOT_AVAILABLE: u32 = 0xFFFF;

const STATUS_NAMES: &[(&str, Status)] = &[
    ("INVAL", INVAL),
    ("NOT_SUPPORTED", NOT_SUPPORTED),
    ("TIMEOUT", 8),
    ("NO_PERM", 10),
    ("IO", 12),
    ("FILE_ERROR", 14),
    ("INIT_ERROR", 18),
    ("BUSY", 30),
    ("NOT_FOUND", 31),
    ("NOT_INIT", NOT_INIT),
    ("DRIVER_NOT_LOADED", DRIVER_NOT_LOADED),
    ("NO_DATA", 40),
    ("UNEXPECTED_DATA", 43),
    ("UNKNOWN_ERROR", UNKNOWN_ERROR),
];

/// Socket handles are `SOCKET_BASE + gpu`, processors `GPU_BASE + gpu`.
const SOCKET_BASE: usize = 0x2000;
const GPU_BASE: usize = 0x3000;
const MIB: u64 = 1024 * 1024;

#[derive(Clone, Default)]
struct Gpu {
    uuid: String,
    bdf: u64,
    name: String,
    /// `None`: NA.
    gfx: Option<u32>,
    umc: Option<u32>,
    vram_total_mib: u64,
    vram_used_mib: u64,
    hotspot: Option<i64>,
    edge: Option<i64>,
    current_w: Option<u32>,
    average_w: Option<u32>,
    /// `socket_power` (25.x and later layouts only).
    socket_w: Option<u32>,
}

struct Scenario {
    version: [u32; 4],
    driver: String,
    init_error: Option<Status>,
    list_error: Option<Status>,
    gpus: Vec<Gpu>,
    fails: Vec<(u32, String, Status)>,
    hangs: Vec<(u32, String, u64)>,
}

static CURRENT: Mutex<Option<Arc<Scenario>>> = Mutex::new(None);
static INITIALISED: AtomicBool = AtomicBool::new(false);

fn scenario_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_AMDSMI_SCENARIO") {
        return PathBuf::from(path);
    }
    own_directory().join("fake-amdsmi.scenario")
}

/// The directory this library was loaded from.
fn own_directory() -> PathBuf {
    let mut info: libc_dl::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr with the address of a function in this library.
    let found = unsafe { libc_dl::dladdr(own_directory as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return PathBuf::from(".");
    }
    // SAFETY: dladdr gives a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(info.dli_fname) };
    PathBuf::from(path.to_string_lossy().into_owned())
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

mod libc_dl {
    use std::os::raw::{c_char, c_int, c_void};

    #[repr(C)]
    pub struct Dl_info {
        pub dli_fname: *const c_char,
        pub dli_fbase: *mut c_void,
        pub dli_sname: *const c_char,
        pub dli_saddr: *mut c_void,
    }

    extern "C" {
        pub fn dladdr(addr: *const c_void, info: *mut Dl_info) -> c_int;
    }
}

fn status_code(text: &str) -> Status {
    text.parse().unwrap_or_else(|_| {
        STATUS_NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map_or(UNKNOWN_ERROR, |(_, code)| *code)
    })
}

/// Splits a line into words, keeping `key="a b"` together (quotes dropped).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn parse_bdf(text: &str) -> u64 {
    let parts: Vec<&str> = text.split([':', '.']).collect();
    let hex = |i: usize| {
        parts
            .get(i)
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .unwrap_or(0)
    };
    (hex(0) << 16) | (hex(1) << 8) | ((hex(2) & 0x1f) << 3) | (hex(3) & 0x7)
}

fn gpu(index: usize, fields: &[String]) -> Gpu {
    let mut gpu = Gpu {
        uuid: format!("{index:02x}ff74a1-0000-1000-80f8-3d5f2c4e9a{index:02x}"),
        bdf: ((0x19 + index as u64) << 8),
        name: String::from("AMD Instinct MI300X"),
        gfx: Some(0),
        umc: Some(0),
        vram_total_mib: 196_592,
        vram_used_mib: 0,
        hotspot: Some(40),
        edge: None,
        current_w: Some(150),
        average_w: None,
        socket_w: None,
    };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let na = value == "NA";
        let u32v = || (!na).then(|| value.parse::<u32>().unwrap_or(0));
        let i64v = || (!na).then(|| value.parse::<i64>().unwrap_or(0));
        match key {
            "uuid" => gpu.uuid = value.to_string(),
            "bdf" => gpu.bdf = parse_bdf(value),
            "name" => gpu.name = value.to_string(),
            "gfx" => gpu.gfx = u32v(),
            "umc" => gpu.umc = u32v(),
            "vram_total_mib" => gpu.vram_total_mib = value.parse().unwrap_or(0),
            "vram_used_mib" => gpu.vram_used_mib = value.parse().unwrap_or(0),
            "hotspot" => gpu.hotspot = i64v(),
            "edge" => gpu.edge = i64v(),
            "current_w" => gpu.current_w = u32v(),
            "average_w" => gpu.average_w = u32v(),
            "socket_w" => gpu.socket_w = u32v(),
            _ => {}
        }
    }
    gpu
}

fn parse(text: &str) -> Scenario {
    let mut scenario = Scenario {
        version: [26, 1, 0, 0],
        driver: String::from("6.10.5"),
        init_error: None,
        list_error: None,
        gpus: Vec::new(),
        fails: Vec::new(),
        hangs: Vec::new(),
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words = words(line);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        match refs.as_slice() {
            ["version", v] => {
                let mut parts = [0u32; 4];
                for (slot, part) in parts.iter_mut().zip(v.split('.')) {
                    *slot = part.parse().unwrap_or(0);
                }
                scenario.version = parts;
            }
            ["driver", v] => scenario.driver = v.to_string(),
            ["init_error", code] => scenario.init_error = Some(status_code(code)),
            ["list_error", code] => scenario.list_error = Some(status_code(code)),
            ["gpu", index, ..] => {
                let index: usize = index.parse().unwrap_or(scenario.gpus.len());
                if scenario.gpus.len() <= index {
                    scenario.gpus.resize(index + 1, Gpu::default());
                }
                scenario.gpus[index] = gpu(index, &words[2..]);
            }
            ["fail", index, call, code] => scenario.fails.push((
                index.parse().unwrap_or(0),
                call.to_string(),
                status_code(code),
            )),
            ["hang", index, call, ms] => scenario.hangs.push((
                index.parse().unwrap_or(0),
                call.to_string(),
                ms.parse().unwrap_or(0),
            )),
            _ => {}
        }
    }
    scenario
}

fn load() -> Option<Arc<Scenario>> {
    let text = std::fs::read_to_string(scenario_path()).ok()?;
    let scenario = Arc::new(parse(&text));
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&scenario));
    Some(scenario)
}

fn current() -> Result<Arc<Scenario>, Status> {
    if !INITIALISED.load(Ordering::SeqCst) {
        return Err(NOT_INIT);
    }
    CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(NOT_INIT)
}

fn matches(entry_index: u32, entry_call: &str, index: u32, call: &str) -> bool {
    entry_index == index && (entry_call == call || entry_call == "*")
}

/// The scenario and GPU index for a call on `handle`, after any hang and
/// failure injected for `call`.
fn gpu_call(handle: Handle, call: &str) -> Result<(Arc<Scenario>, usize), Status> {
    let index = (handle as usize).wrapping_sub(GPU_BASE);
    let mut scenario = current()?;
    if index >= scenario.gpus.len() {
        return Err(INVAL);
    }
    let started = Instant::now();
    while let Some(ms) = scenario
        .hangs
        .iter()
        .find(|(i, c, _)| matches(*i, c, index as u32, call))
        .map(|(_, _, ms)| *ms)
    {
        if started.elapsed() >= Duration::from_millis(ms) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        scenario = load().ok_or(NOT_INIT)?;
    }
    if let Some((_, _, code)) = scenario
        .fails
        .iter()
        .find(|(i, c, _)| matches(*i, c, index as u32, call))
    {
        return Err(*code);
    }
    Ok((scenario, index))
}

fn code(result: Result<(), Status>) -> Status {
    result.err().unwrap_or(SUCCESS)
}

/// Copies `text` into a C buffer of `length` bytes, NUL-terminated.
unsafe fn write_string(text: &str, buffer: *mut c_char, length: usize) -> Result<(), Status> {
    if buffer.is_null() {
        return Err(INVAL);
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > length {
        return Err(INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer as *mut u8, bytes.len());
    *buffer.add(bytes.len()) = 0;
    Ok(())
}

#[no_mangle]
pub extern "C" fn amdsmi_init(flags: u64) -> Status {
    if flags & 2 == 0 {
        return INVAL;
    }
    let Some(scenario) = load() else {
        return DRIVER_NOT_LOADED;
    };
    if let Some(code) = scenario.init_error {
        return code;
    }
    INITIALISED.store(true, Ordering::SeqCst);
    SUCCESS
}

#[no_mangle]
pub extern "C" fn amdsmi_shut_down() -> Status {
    INITIALISED.store(false, Ordering::SeqCst);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_status_code_to_string(
    status: Status,
    string: *mut *const c_char,
) -> Status {
    if string.is_null() {
        return INVAL;
    }
    let text: &'static CStr = match status {
        SUCCESS => c"Success",
        NOT_SUPPORTED => c"Feature not supported",
        NOT_INIT => c"Device not initialized",
        DRIVER_NOT_LOADED => c"Driver not loaded",
        30 => c"Device busy",
        _ => c"An unknown error occurred",
    };
    *string = text.as_ptr();
    SUCCESS
}

/// Writes the version in the layout of the library version it claims.
#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_lib_version(version: *mut c_void) -> Status {
    let scenario = match current() {
        Ok(s) => s,
        Err(e) => return e,
    };
    if version.is_null() {
        return INVAL;
    }
    let [a, b, c, d] = scenario.version;
    let words = version as *mut u32;
    if a >= 26 {
        // major, minor, release, padding, build.
        *words = a;
        *words.add(1) = b;
        *words.add(2) = c;
    } else {
        // year, major, minor, release, build.
        *words = a;
        *words.add(1) = b;
        *words.add(2) = c;
        *words.add(3) = d;
    }
    *(version as *mut u8).add(16).cast::<*const c_char>() = c"fake".as_ptr();
    SUCCESS
}

/// The two-call idiom: a null array asks for the count.
unsafe fn list(count: *mut u32, handles: *mut Handle, base: usize, total: usize) -> Status {
    if count.is_null() {
        return INVAL;
    }
    if handles.is_null() {
        *count = total as u32;
        return SUCCESS;
    }
    let n = (*count as usize).min(total);
    for i in 0..n {
        *handles.add(i) = (base + i) as Handle;
    }
    *count = n as u32;
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_socket_handles(
    count: *mut u32,
    handles: *mut Handle,
) -> Status {
    if !INITIALISED.load(Ordering::SeqCst) {
        return NOT_INIT;
    }
    let Some(scenario) = load() else {
        return NOT_INIT;
    };
    if let Some(code) = scenario.list_error {
        return code;
    }
    list(count, handles, SOCKET_BASE, scenario.gpus.len())
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_processor_handles(
    socket: Handle,
    count: *mut u32,
    handles: *mut Handle,
) -> Status {
    let scenario = match current() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let index = (socket as usize).wrapping_sub(SOCKET_BASE);
    if index >= scenario.gpus.len() {
        return INVAL;
    }
    list(count, handles, GPU_BASE + index, 1)
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_processor_type(handle: Handle, kind: *mut u32) -> Status {
    code(current().and_then(|s| {
        let index = (handle as usize).wrapping_sub(GPU_BASE);
        if index >= s.gpus.len() || kind.is_null() {
            return Err(INVAL);
        }
        *kind = 1;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_device_uuid(
    handle: Handle,
    length: *mut c_uint,
    uuid: *mut c_char,
) -> Status {
    code(gpu_call(handle, "uuid").and_then(|(s, i)| {
        if length.is_null() {
            return Err(INVAL);
        }
        // Like the real library: the length is read, never written back.
        write_string(&s.gpus[i].uuid, uuid, *length as usize)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_device_bdf(handle: Handle, bdf: *mut u64) -> Status {
    code(gpu_call(handle, "bdf").map(|(s, i)| *bdf = s.gpus[i].bdf))
}

/// `amdsmi_asic_info_t`: `market_name` first, in the claimed version's size.
#[cfg(not(feature = "minimal"))]
#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_asic_info(handle: Handle, info: *mut c_void) -> Status {
    code(gpu_call(handle, "name").and_then(|(s, i)| {
        let size = if s.version[0] >= 26 { 896 } else { 456 };
        std::ptr::write_bytes(info as *mut u8, 0, size);
        write_string(&s.gpus[i].name, info as *mut c_char, 256)
    }))
}

/// `amdsmi_driver_info_t`: `driver_version` first.
#[cfg(not(feature = "minimal"))]
#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_driver_info(handle: Handle, info: *mut c_void) -> Status {
    code(gpu_call(handle, "driver").and_then(|(s, _)| {
        std::ptr::write_bytes(info as *mut u8, 0, 3 * 256);
        write_string(&s.driver, info as *mut c_char, 256)
    }))
}

/// `amdsmi_engine_usage_t`: three u32 and 13 reserved.
#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_activity(handle: Handle, usage: *mut u32) -> Status {
    code(gpu_call(handle, "activity").map(|(s, i)| {
        std::ptr::write_bytes(usage, 0, 16);
        let gpu = &s.gpus[i];
        *usage = gpu.gfx.unwrap_or(NOT_AVAILABLE);
        *usage.add(1) = gpu.umc.unwrap_or(NOT_AVAILABLE);
        *usage.add(2) = NOT_AVAILABLE;
    }))
}

unsafe fn memory(handle: Handle, kind: u32, bytes: *mut u64, used: bool) -> Status {
    code(gpu_call(handle, "memory").and_then(|(s, i)| {
        if kind != 0 || bytes.is_null() {
            return Err(INVAL);
        }
        let gpu = &s.gpus[i];
        *bytes = if used {
            gpu.vram_used_mib
        } else {
            gpu.vram_total_mib
        } * MIB;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_memory_usage(
    handle: Handle,
    kind: u32,
    bytes: *mut u64,
) -> Status {
    memory(handle, kind, bytes, true)
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_gpu_memory_total(
    handle: Handle,
    kind: u32,
    bytes: *mut u64,
) -> Status {
    memory(handle, kind, bytes, false)
}

#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_temp_metric(
    handle: Handle,
    sensor: u32,
    metric: u32,
    value: *mut i64,
) -> Status {
    code(gpu_call(handle, "temperature").and_then(|(s, i)| {
        if metric != 0 || value.is_null() {
            return Err(INVAL);
        }
        let reading = match sensor {
            0 => s.gpus[i].edge,
            1 => s.gpus[i].hotspot,
            _ => None,
        };
        *value = reading.ok_or(NOT_SUPPORTED)?;
        Ok(())
    }))
}

/// `amdsmi_power_info_t` in the layout of the claimed library version,
/// writing exactly that layout's size.
#[no_mangle]
pub unsafe extern "C" fn amdsmi_get_power_info(handle: Handle, info: *mut c_void) -> Status {
    code(gpu_call(handle, "power").map(|(s, i)| {
        let gpu = &s.gpus[i];
        let current = gpu.current_w.unwrap_or(NOT_AVAILABLE);
        let average = gpu.average_w.unwrap_or(NOT_AVAILABLE);
        let bytes = info as *mut u8;
        let put = |offset: usize, value: u32| {
            std::ptr::copy_nonoverlapping(value.to_ne_bytes().as_ptr(), bytes.add(offset), 4)
        };
        match s.version[0] {
            v if v >= 25 => {
                let size = if v >= 26 { 192 } else { 40 };
                std::ptr::write_bytes(bytes, 0, size);
                // `socket_w=` when given; else, where current or average is
                // available, a value no test expects (so that reading this
                // layout as the 68-byte one fails), else "not available".
                let socket = match (gpu.socket_w, gpu.current_w.or(gpu.average_w)) {
                    (Some(w), _) => u64::from(w),
                    (None, Some(_)) => 0xDEAD,
                    (None, None) => u64::from(NOT_AVAILABLE),
                };
                std::ptr::copy_nonoverlapping(socket.to_ne_bytes().as_ptr(), bytes, 8);
                put(8, current);
                put(12, average);
            }
            _ => {
                std::ptr::write_bytes(bytes, 0, 68);
                put(0, current);
                put(4, average);
            }
        }
    }))
}
