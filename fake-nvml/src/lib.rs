//! A stand-in for `libnvidia-ml.so.1`: exports the NVML C entry points the
//! scaler uses, with nvml.h's struct layouts, and answers from a scenario
//! file that is re-read on every call, so a test or demo can change GPUs
//! while the scaler runs. Built with `--features v1-only`, it exports no
//! `_v2` symbols, like drivers before the versioned API.
//!
//! The scenario file is `$FAKE_NVML_SCENARIO`, or `fake-nvml.scenario`
//! beside this library. It is read at nvmlInit and at every
//! nvmlDeviceGetCount, which starts each pass over the GPUs, so one pass
//! sees one scenario. One directive a line, `#` starts a comment:
//!
//! ```text
//! driver 550.54.15
//! gpu 0 uuid=GPU-0a name="NVIDIA H100" util=37 mem_util=12 mem_total_mib=81559 mem_used_mib=2048 mem_reserved_mib=512 temp=41 power_mw=71000 mig=0
//! gpu 1 uuid=GPU-1b mig=1 mig_uuids=MIG-aa,MIG-bb   # MIG on, with two MIG devices (slots 0, 1)
//! mig 1 3 uuid=MIG-cc profile=3g.40gb gi=2 ci=0 mem_total_mib=40192 mem_used_mib=1024 sm=30 occupancy=20 tensor=10 dram=40
//!                                    # MIG device in slot 3 of GPU 1 (slot 2 stays empty)
//! fail 0 utilization NOT_SUPPORTED   # that call on GPU 0 returns the code; `*` is every call
//! hang 0 power 30000                 # that call blocks up to 30000 ms, less if the line goes away
//! init_error DRIVER_NOT_LOADED       # nvmlInit fails
//! count_error UNKNOWN                # nvmlDeviceGetCount fails
//! generation 2                       # a change ends the session (calls return UNINITIALIZED until nvmlInit)
//! ```
//!
//! GPM and byte counters (not in the `v1-only` build, like drivers before
//! R520): `gpm=1 sm=45 occupancy=30 tensor=20 dram=50` makes the GPU
//! support GPM and report those percentages between two samples at least
//! 100 ms apart; `pcie_tx_mbps=… pcie_rx_mbps=…` drive its PCIe byte
//! counters (`pcie=0`: none), and `nvlink_tx_mbps=… nvlink_rx_mbps=…` its
//! NVLink KiB counters (none unless given); each counter grows at its rate
//! from when the library loaded, and `nvlink_epoch=N` restarts the NVLink
//! counters from 0 whenever N changes (a driver reload). `pcie_bits=32`
//! makes the PCIe counters 32-bit, so that they wrap. `pcie_gen=4
//! pcie_width=8` is the link's maximum (nvmlDeviceGetMaxPcieLinkGeneration
//! and `…Width`; Gen5 x16 unless given, 0 answers NOT_SUPPORTED).
//! `gpm_untouched=dram` (any of sm, occupancy, tensor, dram, comma-separated)
//! makes nvmlGpmMetricsGet leave those metrics' slots unwritten, as a
//! misbehaving driver might. `fakeNvmlGpmSampleCounts` (not NVML) tells a
//! test how many GPM buffers were allocated, are still allocated, and were
//! freed after the last nvmlShutdown.
//!
//! Calls are `handle uuid name memory utilization temperature power mig
//! gpm fields pcie_link`, and `gpu_instance` on a GPU's MIG devices.
//! A missing scenario file makes nvmlInit fail with DRIVER_NOT_LOADED.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Return = c_uint;
type Device = *mut c_void;

const SUCCESS: Return = 0;
const UNINITIALIZED: Return = 1;
const INVALID_ARGUMENT: Return = 2;
const NOT_SUPPORTED: Return = 3;
const NOT_FOUND: Return = 6;
const INSUFFICIENT_SIZE: Return = 7;
const DRIVER_NOT_LOADED: Return = 9;
const GPU_IS_LOST: Return = 15;
const ARGUMENT_VERSION_MISMATCH: Return = 25;
const UNKNOWN: Return = 999;

const CODE_NAMES: &[(&str, Return)] = &[
    ("UNINITIALIZED", UNINITIALIZED),
    ("INVALID_ARGUMENT", INVALID_ARGUMENT),
    ("NOT_SUPPORTED", NOT_SUPPORTED),
    ("NO_PERMISSION", 4),
    ("NOT_FOUND", NOT_FOUND),
    ("INSUFFICIENT_SIZE", INSUFFICIENT_SIZE),
    ("DRIVER_NOT_LOADED", DRIVER_NOT_LOADED),
    ("TIMEOUT", 10),
    ("LIBRARY_NOT_FOUND", 12),
    ("GPU_IS_LOST", GPU_IS_LOST),
    ("RESET_REQUIRED", 16),
    ("ARGUMENT_VERSION_MISMATCH", ARGUMENT_VERSION_MISMATCH),
    ("UNKNOWN", UNKNOWN),
];

/// Handles are small tagged integers; the scaler never dereferences them.
const HANDLE_BASE: usize = 0x1000;
/// MIG device handles: `MIG_HANDLE_BASE + gpu * 0x100 + slot`.
const MIG_HANDLE_BASE: usize = 0x10_0000;
const MIB: u64 = 1024 * 1024;
#[cfg(not(feature = "v1-only"))]
const MEMORY_V2_VERSION: c_uint = 40 | (2 << 24);

#[repr(C)]
pub struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

#[repr(C)]
pub struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: c_ulonglong,
    reserved: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

#[derive(Clone, Default)]
struct Gpu {
    uuid: String,
    name: String,
    util: u32,
    mem_util: u32,
    mem_total_mib: u64,
    mem_used_mib: u64,
    mem_reserved_mib: u64,
    temp: u32,
    power_mw: u32,
    mig: bool,
    /// MIG devices by slot; `None` is an empty slot.
    migs: Vec<Option<Mig>>,
    gpm: bool,
    /// sm, occupancy, tensor, dram.
    gpm_values: [f64; 4],
    /// GPM metric ids whose slots nvmlGpmMetricsGet leaves unwritten.
    gpm_untouched: Vec<u32>,
    pcie: bool,
    pcie_bits: u32,
    /// The link's maximum generation and width; 0 is NOT_SUPPORTED.
    pcie_gen: u32,
    pcie_width: u32,
    pcie_mbps: [f64; 2],
    nvlink: bool,
    nvlink_mbps: [f64; 2],
    nvlink_epoch: u64,
}

/// A MIG device (a compute instance in a GPU instance).
#[derive(Clone, Default)]
struct Mig {
    uuid: String,
    profile: String,
    gpu_instance: u32,
    compute_instance: u32,
    mem_total_mib: u64,
    mem_used_mib: u64,
    /// sm, occupancy, tensor, dram.
    gpm_values: [f64; 4],
}

fn mig(slot: usize, fields: &[&str]) -> Mig {
    let mut mig = Mig {
        uuid: format!("MIG-00000000-0000-0000-0000-{slot:012}"),
        profile: String::from("1g.10gb"),
        gpu_instance: slot as u32 + 1,
        mem_total_mib: 10240,
        ..Default::default()
    };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        let float = || value.parse::<f64>().unwrap_or(0.0);
        match key {
            "uuid" => mig.uuid = value.to_string(),
            "profile" => mig.profile = value.to_string(),
            "gi" => mig.gpu_instance = number() as u32,
            "ci" => mig.compute_instance = number() as u32,
            "mem_total_mib" => mig.mem_total_mib = number(),
            "mem_used_mib" => mig.mem_used_mib = number(),
            "sm" => mig.gpm_values[0] = float(),
            "occupancy" => mig.gpm_values[1] = float(),
            "tensor" => mig.gpm_values[2] = float(),
            "dram" => mig.gpm_values[3] = float(),
            _ => {}
        }
    }
    mig
}

#[derive(Default)]
struct Scenario {
    driver: String,
    init_error: Option<Return>,
    count_error: Option<Return>,
    generation: u64,
    gpus: Vec<Gpu>,
    fails: Vec<(u32, String, Return)>,
    hangs: Vec<(u32, String, u64)>,
}

/// The scenario read at the last nvmlInit or nvmlDeviceGetCount.
static CURRENT: Mutex<Option<Arc<Scenario>>> = Mutex::new(None);

/// 0 when not initialised, else 1 + the scenario generation at nvmlInit.
static SESSION: AtomicU64 = AtomicU64::new(0);
static INIT_COUNT: Mutex<u32> = Mutex::new(0);

fn scenario_path() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_NVML_SCENARIO") {
        return PathBuf::from(path);
    }
    own_directory().join("fake-nvml.scenario")
}

#[repr(C)]
struct DlInfo {
    fname: *const c_char,
    fbase: *mut c_void,
    sname: *const c_char,
    saddr: *mut c_void,
}

extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

/// The directory this shared object was loaded from.
fn own_directory() -> PathBuf {
    let mut info = DlInfo {
        fname: std::ptr::null(),
        fbase: std::ptr::null_mut(),
        sname: std::ptr::null(),
        saddr: std::ptr::null_mut(),
    };
    // SAFETY: any address inside this object works; `info` is writable.
    let found = unsafe { dladdr(own_directory as *const c_void, &mut info) };
    if found == 0 || info.fname.is_null() {
        return PathBuf::from(".");
    }
    // SAFETY: dladdr returns a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.fname) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(path)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads the scenario file and makes it current.
fn load() -> Option<Arc<Scenario>> {
    let text = std::fs::read_to_string(scenario_path()).ok()?;
    let scenario = Arc::new(parse(&text));
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&scenario));
    Some(scenario)
}

fn current() -> Option<Arc<Scenario>> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn parse(text: &str) -> Scenario {
    let mut scenario = Scenario {
        driver: "550.54.15".into(),
        ..Default::default()
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words = split_words(line);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["driver", version] => scenario.driver = version.to_string(),
            ["init_error", code] => scenario.init_error = Some(code_from(code)),
            ["count_error", code] => scenario.count_error = Some(code_from(code)),
            ["generation", n] => scenario.generation = n.parse().unwrap_or(0),
            ["gpu", index, fields @ ..] => {
                let index: usize = index.parse().unwrap_or(0);
                if scenario.gpus.len() <= index {
                    scenario.gpus.resize_with(index + 1, Gpu::default);
                }
                scenario.gpus[index] = gpu(index, fields);
            }
            ["mig", gpu, slot, fields @ ..] => {
                let (gpu, slot): (usize, usize) =
                    (gpu.parse().unwrap_or(0), slot.parse().unwrap_or(0));
                if let Some(gpu) = scenario.gpus.get_mut(gpu) {
                    if gpu.migs.len() <= slot {
                        gpu.migs.resize(slot + 1, None);
                    }
                    gpu.migs[slot] = Some(mig(slot, fields));
                }
            }
            ["fail", index, call, code] => scenario.fails.push((
                index.parse().unwrap_or(0),
                call.to_string(),
                code_from(code),
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

fn gpu(index: usize, fields: &[&str]) -> Gpu {
    let mut gpu = Gpu {
        uuid: format!("GPU-00000000-0000-0000-0000-{index:012}"),
        name: "Fake NVIDIA GPU".into(),
        mem_total_mib: 81920,
        pcie: true,
        pcie_bits: 64,
        pcie_gen: 5,
        pcie_width: 16,
        ..Default::default()
    };
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        match key {
            "uuid" => gpu.uuid = value.to_string(),
            "name" => gpu.name = value.to_string(),
            "util" => gpu.util = number() as u32,
            "mem_util" => gpu.mem_util = number() as u32,
            "mem_total_mib" => gpu.mem_total_mib = number(),
            "mem_used_mib" => gpu.mem_used_mib = number(),
            "mem_reserved_mib" => gpu.mem_reserved_mib = number(),
            "temp" => gpu.temp = number() as u32,
            "power_mw" => gpu.power_mw = number() as u32,
            "mig" => gpu.mig = number() != 0,
            "mig_uuids" => {
                gpu.migs = value
                    .split(',')
                    .enumerate()
                    .map(|(slot, uuid)| {
                        Some(Mig {
                            uuid: uuid.to_string(),
                            ..mig(slot, &[])
                        })
                    })
                    .collect()
            }
            "gpm" => gpu.gpm = number() != 0,
            "sm" => gpu.gpm_values[0] = value.parse().unwrap_or(0.0),
            "occupancy" => gpu.gpm_values[1] = value.parse().unwrap_or(0.0),
            "tensor" => gpu.gpm_values[2] = value.parse().unwrap_or(0.0),
            "dram" => gpu.gpm_values[3] = value.parse().unwrap_or(0.0),
            "pcie" => gpu.pcie = number() != 0,
            "pcie_bits" => gpu.pcie_bits = number() as u32,
            "pcie_gen" => gpu.pcie_gen = number() as u32,
            "pcie_width" => gpu.pcie_width = number() as u32,
            "gpm_untouched" => {
                gpu.gpm_untouched = value
                    .split(',')
                    .filter_map(|name| match name {
                        "sm" => Some(2),
                        "occupancy" => Some(3),
                        "tensor" => Some(5),
                        "dram" => Some(10),
                        _ => None,
                    })
                    .collect()
            }
            "pcie_tx_mbps" => gpu.pcie_mbps[0] = value.parse().unwrap_or(0.0),
            "pcie_rx_mbps" => gpu.pcie_mbps[1] = value.parse().unwrap_or(0.0),
            "nvlink" => gpu.nvlink = number() != 0,
            "nvlink_tx_mbps" => {
                gpu.nvlink = true;
                gpu.nvlink_mbps[0] = value.parse().unwrap_or(0.0)
            }
            "nvlink_rx_mbps" => {
                gpu.nvlink = true;
                gpu.nvlink_mbps[1] = value.parse().unwrap_or(0.0)
            }
            "nvlink_epoch" => gpu.nvlink_epoch = number(),
            _ => {}
        }
    }
    gpu
}

/// Whitespace-separated words; `key="a b"` keeps its spaces.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn code_from(text: &str) -> Return {
    text.parse().unwrap_or_else(|_| {
        CODE_NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map_or(UNKNOWN, |(_, code)| *code)
    })
}

/// The scenario for a device call on `device`, after any hang and failure
/// injected for `call`.
fn device_call(device: Device, call: &str) -> Result<(Arc<Scenario>, usize), Return> {
    let index = (device as usize).wrapping_sub(HANDLE_BASE);
    let scenario = session_scenario(current())?;
    if index >= scenario.gpus.len() {
        return Err(INVALID_ARGUMENT);
    }
    let scenario = hang(scenario, index as u32, call)?;
    injected(&scenario, index as u32, call)?;
    Ok((scenario, index))
}

fn session_scenario(scenario: Option<Arc<Scenario>>) -> Result<Arc<Scenario>, Return> {
    let scenario = scenario.ok_or(UNINITIALIZED)?;
    if SESSION.load(Ordering::SeqCst) != scenario.generation + 1 {
        return Err(UNINITIALIZED);
    }
    Ok(scenario)
}

fn matches(entry_index: u32, entry_call: &str, index: u32, call: &str) -> bool {
    entry_index == index && (entry_call == call || entry_call == "*")
}

fn injected(scenario: &Scenario, index: u32, call: &str) -> Result<(), Return> {
    match scenario
        .fails
        .iter()
        .find(|(i, c, _)| matches(*i, c, index, call))
    {
        Some((_, _, code)) => Err(*code),
        None => Ok(()),
    }
}

/// Blocks while a matching `hang` line is present, up to its duration.
fn hang(mut scenario: Arc<Scenario>, index: u32, call: &str) -> Result<Arc<Scenario>, Return> {
    let started = Instant::now();
    while let Some(ms) = scenario
        .hangs
        .iter()
        .find(|(i, c, _)| matches(*i, c, index, call))
        .map(|(_, _, ms)| *ms)
    {
        if started.elapsed() >= Duration::from_millis(ms) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        scenario = load().ok_or(UNINITIALIZED)?;
    }
    Ok(scenario)
}

fn code(result: Result<(), Return>) -> Return {
    result.err().unwrap_or(SUCCESS)
}

/// Copies `text` into a C buffer of `length` bytes, NUL-terminated.
unsafe fn write_string(text: &str, buffer: *mut c_char, length: c_uint) -> Result<(), Return> {
    if buffer.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > length as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer as *mut u8, bytes.len());
    *buffer.add(bytes.len()) = 0;
    Ok(())
}

fn init() -> Return {
    let Some(scenario) = load() else {
        return DRIVER_NOT_LOADED;
    };
    if let Some(code) = scenario.init_error {
        return code;
    }
    *INIT_COUNT.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    SESSION.store(scenario.generation + 1, Ordering::SeqCst);
    SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlInit() -> Return {
    init()
}

#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> Return {
    init()
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> Return {
    let mut count = INIT_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    if *count == 0 {
        return UNINITIALIZED;
    }
    *count -= 1;
    if *count == 0 {
        SESSION.store(0, Ordering::SeqCst);
    }
    SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: Return) -> *const c_char {
    let text: &'static CStr = match result {
        SUCCESS => c"Success",
        UNINITIALIZED => c"Uninitialized",
        INVALID_ARGUMENT => c"Invalid Argument",
        NOT_SUPPORTED => c"Not Supported",
        INSUFFICIENT_SIZE => c"Insufficient Size",
        DRIVER_NOT_LOADED => c"Driver Not Loaded",
        GPU_IS_LOST => c"GPU is lost",
        ARGUMENT_VERSION_MISMATCH => c"Argument version mismatch",
        _ => c"Unknown Error",
    };
    text.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> Return {
    code(session_scenario(current()).and_then(|s| write_string(&s.driver, version, length)))
}

unsafe fn get_count(count: *mut c_uint) -> Return {
    code(session_scenario(load()).and_then(|scenario| {
        if let Some(code) = scenario.count_error {
            return Err(code);
        }
        if count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *count = scenario.gpus.len() as c_uint;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> Return {
    get_count(count)
}

#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Return {
    get_count(count)
}

unsafe fn get_handle(index: c_uint, device: *mut Device) -> Return {
    code(
        device_call((HANDLE_BASE + index as usize) as Device, "handle").and_then(|_| {
            if device.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            *device = (HANDLE_BASE + index as usize) as Device;
            Ok(())
        }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut Device) -> Return {
    get_handle(index, device)
}

#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut Device,
) -> Return {
    get_handle(index, device)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: Device,
    uuid: *mut c_char,
    length: c_uint,
) -> Return {
    if let Some(offset) = (device as usize).checked_sub(MIG_HANDLE_BASE) {
        let (gpu, slot) = (offset / 0x100, offset % 0x100);
        return code(session_scenario(current()).and_then(|s| {
            let mig = mig_of(&s, gpu, slot)?;
            write_string(&mig.uuid, uuid, length)
        }));
    }
    code(device_call(device, "uuid").and_then(|(s, i)| write_string(&s.gpus[i].uuid, uuid, length)))
}

/// MIG slots: as many as the GPU has MIG devices, plus one empty slot.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: Device,
    count: *mut c_uint,
) -> Return {
    code(device_call(device, "mig").and_then(|(s, i)| {
        if count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *count = s.gpus[i].migs.len() as c_uint + 1;
        Ok(())
    }))
}

/// NOT_FOUND for the empty slot, as the driver answers for an unused one.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: Device,
    index: c_uint,
    mig: *mut Device,
) -> Return {
    code(device_call(device, "mig").and_then(|(s, i)| {
        if mig.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        if s.gpus[i]
            .migs
            .get(index as usize)
            .is_none_or(Option::is_none)
        {
            return Err(NOT_FOUND);
        }
        *mig = (MIG_HANDLE_BASE + i * 0x100 + index as usize) as Device;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: Device,
    name: *mut c_char,
    length: c_uint,
) -> Return {
    if let Some((s, gpu, slot)) = mig_handle(device) {
        return code(mig_of(&s, gpu, slot).and_then(|m| {
            let text = format!("{} MIG {}", s.gpus[gpu].name, m.profile);
            write_string(&text, name, length)
        }));
    }
    code(device_call(device, "name").and_then(|(s, i)| write_string(&s.gpus[i].name, name, length)))
}

/// `(scenario, gpu, slot)` when `device` is a MIG device handle.
fn mig_handle(device: Device) -> Option<(Arc<Scenario>, usize, usize)> {
    let offset = (device as usize).checked_sub(MIG_HANDLE_BASE)?;
    let scenario = session_scenario(current()).ok()?;
    Some((scenario, offset / 0x100, offset % 0x100))
}

fn mig_of(scenario: &Scenario, gpu: usize, slot: usize) -> Result<&Mig, Return> {
    scenario
        .gpus
        .get(gpu)
        .and_then(|g| g.migs.get(slot))
        .and_then(Option::as_ref)
        .ok_or(INVALID_ARGUMENT)
}

/// On a MIG device handle: its GPU-instance id (`fail N gpu_instance …`
/// fails it on every MIG device of GPU N).
#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(device: Device, id: *mut c_uint) -> Return {
    code(match mig_handle(device) {
        Some((s, gpu, slot)) if !id.is_null() => injected(&s, gpu as u32, "gpu_instance")
            .and_then(|()| mig_of(&s, gpu, slot))
            .map(|m| *id = m.gpu_instance),
        _ => Err(INVALID_ARGUMENT),
    })
}

/// On a MIG device handle: its compute-instance id.
#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(device: Device, id: *mut c_uint) -> Return {
    code(match mig_handle(device) {
        Some((s, gpu, slot)) if !id.is_null() => {
            mig_of(&s, gpu, slot).map(|m| *id = m.compute_instance)
        }
        _ => Err(INVALID_ARGUMENT),
    })
}

/// v1 counts reserved memory as used.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: Device, memory: *mut Memory) -> Return {
    if let Some((s, gpu, slot)) = mig_handle(device) {
        return code(mig_of(&s, gpu, slot).and_then(|m| {
            if memory.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            let (total, used) = (m.mem_total_mib * MIB, m.mem_used_mib * MIB);
            *memory = Memory {
                total,
                free: total.saturating_sub(used),
                used,
            };
            Ok(())
        }));
    }
    code(device_call(device, "memory").and_then(|(s, i)| {
        let gpu = &s.gpus[i];
        if memory.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let total = gpu.mem_total_mib * MIB;
        let used = (gpu.mem_used_mib + gpu.mem_reserved_mib) * MIB;
        *memory = Memory {
            total,
            free: total.saturating_sub(used),
            used,
        };
        Ok(())
    }))
}

#[cfg(not(feature = "v1-only"))]
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: Device,
    memory: *mut MemoryV2,
) -> Return {
    if let Some((s, gpu, slot)) = mig_handle(device) {
        return code(mig_of(&s, gpu, slot).and_then(|m| {
            if memory.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            if (*memory).version != MEMORY_V2_VERSION {
                return Err(ARGUMENT_VERSION_MISMATCH);
            }
            let (total, used) = (m.mem_total_mib * MIB, m.mem_used_mib * MIB);
            *memory = MemoryV2 {
                version: MEMORY_V2_VERSION,
                total,
                reserved: 0,
                free: total.saturating_sub(used),
                used,
            };
            Ok(())
        }));
    }
    code(device_call(device, "memory").and_then(|(s, i)| {
        let gpu = &s.gpus[i];
        if memory.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        if (*memory).version != MEMORY_V2_VERSION {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        let total = gpu.mem_total_mib * MIB;
        let used = gpu.mem_used_mib * MIB;
        let reserved = gpu.mem_reserved_mib * MIB;
        *memory = MemoryV2 {
            version: MEMORY_V2_VERSION,
            total,
            reserved,
            free: total.saturating_sub(used + reserved),
            used,
        };
        Ok(())
    }))
}

/// NOT_SUPPORTED on MIG-enabled GPUs, as the real driver answers.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: Device,
    rates: *mut Utilization,
) -> Return {
    code(device_call(device, "utilization").and_then(|(s, i)| {
        let gpu = &s.gpus[i];
        if gpu.mig {
            return Err(NOT_SUPPORTED);
        }
        if rates.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *rates = Utilization {
            gpu: gpu.util,
            memory: gpu.mem_util,
        };
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: Device,
    sensor: c_uint,
    temp: *mut c_uint,
) -> Return {
    code(device_call(device, "temperature").and_then(|(s, i)| {
        if sensor != 0 || temp.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *temp = s.gpus[i].temp;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: Device, power: *mut c_uint) -> Return {
    code(device_call(device, "power").and_then(|(s, i)| {
        if power.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *power = s.gpus[i].power_mw;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: Device,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Return {
    code(device_call(device, "mig").and_then(|(s, i)| {
        if current.is_null() || pending.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        *current = s.gpus[i].mig as c_uint;
        *pending = s.gpus[i].mig as c_uint;
        Ok(())
    }))
}

/// The link's maximum generation (`pcie_gen`); NOT_SUPPORTED for 0.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkGeneration(
    device: Device,
    generation: *mut c_uint,
) -> Return {
    code(
        device_call(device, "pcie_link")
            .and_then(|(s, i)| write_link_max(s.gpus[i].pcie_gen, generation)),
    )
}

/// The link's maximum width (`pcie_width`); NOT_SUPPORTED for 0.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkWidth(
    device: Device,
    width: *mut c_uint,
) -> Return {
    code(
        device_call(device, "pcie_link")
            .and_then(|(s, i)| write_link_max(s.gpus[i].pcie_width, width)),
    )
}

unsafe fn write_link_max(value: u32, out: *mut c_uint) -> Result<(), Return> {
    if out.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    if value == 0 {
        return Err(NOT_SUPPORTED);
    }
    *out = value;
    Ok(())
}

#[cfg(not(feature = "v1-only"))]
mod gpm {
    //! GPM and field values, as drivers from R520 export them.
    use super::*;

    /// When this library loaded: counters grow from here.
    static LOADED: Mutex<Option<Instant>> = Mutex::new(None);
    /// (gpu, epoch) → when that NVLink epoch was first seen.
    static NVLINK_EPOCHS: Mutex<Vec<(usize, u64, Instant)>> = Mutex::new(Vec::new());
    /// GPM sample buffers ever allocated, still allocated, and freed while
    /// NVML was not initialised (a use after nvmlShutdown).
    static GPM_ALLOCATED: AtomicU64 = AtomicU64::new(0);
    static GPM_LIVE: AtomicU64 = AtomicU64::new(0);
    static GPM_FREED_AFTER_SHUTDOWN: AtomicU64 = AtomicU64::new(0);

    /// Not NVML: for tests, how GPM buffers were used (see the statics
    /// above). Any pointer may be null.
    #[no_mangle]
    pub unsafe extern "C" fn fakeNvmlGpmSampleCounts(
        allocated: *mut u64,
        live: *mut u64,
        freed_after_shutdown: *mut u64,
    ) {
        for (out, count) in [
            (allocated, &GPM_ALLOCATED),
            (live, &GPM_LIVE),
            (freed_after_shutdown, &GPM_FREED_AFTER_SHUTDOWN),
        ] {
            if !out.is_null() {
                *out = count.load(Ordering::SeqCst);
            }
        }
    }

    fn since(start: Instant) -> f64 {
        start.elapsed().as_micros() as f64
    }

    fn loaded() -> Instant {
        *LOADED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(Instant::now)
    }

    fn nvlink_epoch_start(gpu: usize, epoch: u64) -> Instant {
        let mut epochs = NVLINK_EPOCHS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, at)) = epochs.iter().find(|(g, e, _)| *g == gpu && *e == epoch) {
            return *at;
        }
        epochs.retain(|(g, _, _)| *g != gpu);
        let now = Instant::now();
        epochs.push((gpu, epoch, now));
        now
    }

    #[repr(C)]
    pub struct GpmSupport {
        version: c_uint,
        is_supported_device: c_uint,
    }

    /// One `nvmlGpmMetric_t` (40 bytes).
    #[repr(C)]
    pub struct GpmMetric {
        metric_id: c_uint,
        nvml_return: Return,
        value: f64,
        info: [*mut c_char; 3],
    }

    /// The fixed head of `nvmlGpmMetricsGet_t`; the metrics array follows
    /// at offset 24 and is touched only up to `num_metrics`, as a driver
    /// built with a smaller NVML_GPM_METRIC_MAX would.
    #[repr(C)]
    pub struct GpmMetricsGetHead {
        version: c_uint,
        num_metrics: c_uint,
        sample1: *mut Sample,
        sample2: *mut Sample,
    }

    /// What the fake keeps in a GPM sample buffer.
    pub struct Sample {
        gpu: Option<usize>,
        /// The GPU instance, for a MIG sample.
        gpu_instance: Option<u32>,
        at: Option<Instant>,
    }

    /// Metric slots as old drivers laid them out: fewer than the header's.
    const OLDEST_METRIC_MAX: c_uint = 98;

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
        device: Device,
        support: *mut GpmSupport,
    ) -> Return {
        code(device_call(device, "gpm").and_then(|(s, i)| {
            if support.is_null() || (*support).version != 1 {
                return Err(ARGUMENT_VERSION_MISMATCH);
            }
            (*support).is_supported_device = s.gpus[i].gpm as c_uint;
            Ok(())
        }))
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmSampleAlloc(sample: *mut *mut Sample) -> Return {
        if sample.is_null() {
            return INVALID_ARGUMENT;
        }
        *sample = Box::into_raw(Box::new(Sample {
            gpu: None,
            gpu_instance: None,
            at: None,
        }));
        GPM_ALLOCATED.fetch_add(1, Ordering::SeqCst);
        GPM_LIVE.fetch_add(1, Ordering::SeqCst);
        SUCCESS
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmSampleFree(sample: *mut Sample) -> Return {
        if sample.is_null() {
            return INVALID_ARGUMENT;
        }
        if *INIT_COUNT.lock().unwrap_or_else(|e| e.into_inner()) == 0 {
            GPM_FREED_AFTER_SHUTDOWN.fetch_add(1, Ordering::SeqCst);
        }
        GPM_LIVE.fetch_sub(1, Ordering::SeqCst);
        drop(Box::from_raw(sample));
        SUCCESS
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmSampleGet(device: Device, sample: *mut Sample) -> Return {
        code(device_call(device, "gpm").and_then(|(s, i)| {
            if sample.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            if !s.gpus[i].gpm {
                return Err(NOT_SUPPORTED);
            }
            (*sample).gpu = Some(i);
            (*sample).gpu_instance = None;
            (*sample).at = Some(Instant::now());
            Ok(())
        }))
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmMigSampleGet(
        device: Device,
        gpu_instance: c_uint,
        sample: *mut Sample,
    ) -> Return {
        code(device_call(device, "gpm").and_then(|(s, i)| {
            if sample.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            if !s.gpus[i].gpm {
                return Err(NOT_SUPPORTED);
            }
            let exists = s.gpus[i]
                .migs
                .iter()
                .flatten()
                .any(|m| m.gpu_instance == gpu_instance);
            if !exists {
                return Err(NOT_FOUND);
            }
            (*sample).gpu = Some(i);
            (*sample).gpu_instance = Some(gpu_instance);
            (*sample).at = Some(Instant::now());
            Ok(())
        }))
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut GpmMetricsGetHead) -> Return {
        code((|| {
            let scenario = session_scenario(current())?;
            if request.is_null() {
                return Err(INVALID_ARGUMENT);
            }
            let head = &*request;
            if head.version != 1 {
                return Err(ARGUMENT_VERSION_MISMATCH);
            }
            if head.num_metrics > OLDEST_METRIC_MAX
                || head.sample1.is_null()
                || head.sample2.is_null()
            {
                return Err(INVALID_ARGUMENT);
            }
            let (first, second) = (&*head.sample1, &*head.sample2);
            let (Some(gpu), Some(a), Some(b)) = (first.gpu, first.at, second.at) else {
                return Err(INVALID_ARGUMENT);
            };
            if second.gpu != Some(gpu)
                || second.gpu_instance != first.gpu_instance
                || b.duration_since(a) < Duration::from_millis(100)
            {
                return Err(INVALID_ARGUMENT);
            }
            let parent = scenario.gpus.get(gpu).ok_or(INVALID_ARGUMENT)?;
            let values = match first.gpu_instance {
                None => parent.gpm_values,
                Some(gi) => {
                    parent
                        .migs
                        .iter()
                        .flatten()
                        .find(|m| m.gpu_instance == gi)
                        .ok_or(NOT_FOUND)?
                        .gpm_values
                }
            };
            let metrics = (request as *mut u8).add(24) as *mut GpmMetric;
            for slot in 0..head.num_metrics as usize {
                let metric = &mut *metrics.add(slot);
                if parent.gpm_untouched.contains(&metric.metric_id) {
                    // A misbehaving driver: the slot is left as it was.
                    continue;
                }
                let value = match metric.metric_id {
                    2 => Some(values[0]),
                    3 => Some(values[1]),
                    5 => Some(values[2]),
                    10 => Some(values[3]),
                    _ => None,
                };
                match value {
                    Some(value) => {
                        metric.nvml_return = SUCCESS;
                        metric.value = value;
                    }
                    None => metric.nvml_return = NOT_SUPPORTED,
                }
            }
            Ok(())
        })())
    }

    /// `nvmlFieldValue_t` (40 bytes).
    #[repr(C)]
    pub struct FieldValue {
        field_id: c_uint,
        scope_id: c_uint,
        timestamp: i64,
        latency_usec: i64,
        value_type: c_uint,
        nvml_return: Return,
        value: u64,
    }

    #[no_mangle]
    pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
        device: Device,
        count: c_int,
        values: *mut FieldValue,
    ) -> Return {
        code(device_call(device, "fields").and_then(|(s, i)| {
            if values.is_null() || count < 0 {
                return Err(INVALID_ARGUMENT);
            }
            let gpu = &s.gpus[i];
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            for slot in 0..count as usize {
                let field = &mut *values.add(slot);
                field.timestamp = now_us;
                field.value_type = 3;
                let counter = match (field.field_id, field.scope_id) {
                    (197 | 198, _) if gpu.pcie => {
                        let rate = gpu.pcie_mbps[(field.field_id - 197) as usize];
                        let bytes = (rate * since(loaded())) as u64;
                        if gpu.pcie_bits == 32 {
                            field.value_type = 1;
                            // Starts near the top, so that it wraps soon.
                            Some(bytes.wrapping_add(0xFFFF_0000) & 0xFFFF_FFFF)
                        } else {
                            Some(bytes)
                        }
                    }
                    (138 | 139, u32::MAX) if gpu.nvlink => {
                        let rate = gpu.nvlink_mbps[(field.field_id - 138) as usize];
                        let start = nvlink_epoch_start(i, gpu.nvlink_epoch);
                        Some((rate * since(start) / 1024.0) as u64)
                    }
                    _ => None,
                };
                match counter {
                    Some(value) => {
                        field.nvml_return = SUCCESS;
                        field.value = value;
                    }
                    None => field.nvml_return = NOT_SUPPORTED,
                }
            }
            Ok(())
        }))
    }
}
