//! Metrics that are rates between two reads: SM, tensor and DRAM activity
//! from GPM samples (Hopper and newer), and PCIe and NVLink throughput from
//! NVML's byte counters. The previous sample of each GPU (and of each MIG
//! GPU instance) is kept here between passes (GPM's in two buffers
//! allocated once and swapped), and dropped when the GPU or the instance
//! is gone. A metric the GPU or driver cannot give (no GPM,
//! no NVLink, NOT_SUPPORTED) is *unreported*, with the reason. A rate this
//! pass cannot give (no second sample yet, as on the first pass and the
//! first after a GPU returns; a pass too soon for a GPM window; a counter
//! reset or not updated; a counter that may have wrapped unseen) is a
//! *failed read* for the pass, with the reason, unless the latest rate is
//! recent enough to stand in: never 0, and never a GPU silently left out
//! of a sum. Called only from the thread that owns the NVML session (the
//! sampler, or `devices`).

use std::collections::HashMap;
use std::os::raw::c_uint;
use std::time::{Duration, Instant};

use crate::node::gpu_metric::{Metric, Readings};
use crate::node::read_error::{Cause, Reads};
use crate::nvml::sys::{
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
    NVML_FI_DEV_PCIE_COUNT_RX_BYTES, NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
    NVML_GPM_METRIC_ANY_TENSOR_UTIL, NVML_GPM_METRIC_DRAM_BW_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY,
    NVML_GPM_METRIC_SM_UTIL, NVML_SCOPE_ALL_LINKS,
};
use crate::nvml::{Counter, Device, GpmSample, Nvml, NvmlError};

/// GPM needs its two samples at least this far apart.
pub const GPM_MIN_SPACING: Duration = Duration::from_millis(100);

/// The shortest `--sample-interval` (`commands::args::MIN_SAMPLE_INTERVAL`,
/// which this layer does not import), for advice in messages.
const SHORTEST_INTERVAL: Duration = Duration::from_millis(100);

/// How old the latest rate may be and still stand in for a pass that has
/// none of its own (three GPM spacings: it matters only at the shortest
/// sample intervals, where a pass can come a little early).
pub const LAST_RATE_MAX_AGE: Duration = Duration::from_millis(300);

const GPM_METRICS: [(c_uint, Metric); 4] = [
    (NVML_GPM_METRIC_SM_UTIL, Metric::SmActivity),
    (NVML_GPM_METRIC_SM_OCCUPANCY, Metric::SmOccupancy),
    (NVML_GPM_METRIC_ANY_TENSOR_UTIL, Metric::TensorActivity),
    (
        NVML_GPM_METRIC_DRAM_BW_UTIL,
        Metric::DramBandwidthUtilization,
    ),
];

/// Which link a counter counts, for the most it can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Pcie,
    Nvlink,
}

/// Field, scope, metric, bytes per counter unit, and link.
const COUNTERS: [(c_uint, c_uint, Metric, f64, Link); 4] = [
    (
        NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
        0,
        Metric::PcieTxMbps,
        1.0,
        Link::Pcie,
    ),
    (
        NVML_FI_DEV_PCIE_COUNT_RX_BYTES,
        0,
        Metric::PcieRxMbps,
        1.0,
        Link::Pcie,
    ),
    (
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
        NVML_SCOPE_ALL_LINKS,
        Metric::NvlinkTxMbps,
        1024.0,
        Link::Nvlink,
    ),
    (
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX,
        NVML_SCOPE_ALL_LINKS,
        Metric::NvlinkRxMbps,
        1024.0,
        Link::Nvlink,
    ),
];

/// The most bytes per second a link carries in one direction, and how
/// that is known, for telling whether a narrow counter can wrap unseen.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkMax {
    pub bytes_per_s: f64,
    /// E.g. `PCIe Gen4 x16`, or the assumption made.
    pub what: String,
}

/// PCIe transfer rate per lane, GT/s, by generation (1 to 6). Each
/// transfer carries one bit per lane, so GT/s ÷ 8 × lanes bounds the
/// bytes per second in each direction above what any encoding delivers.
const PCIE_GTS: [f64; 6] = [2.5, 5.0, 8.0, 16.0, 32.0, 64.0];

/// When the link cannot be asked: PCIe Gen5 x16 (64 GB/s per direction).
const ASSUMED_PCIE: (u32, u32) = (5, 16);

/// NVLink's most per direction, over every link, assumed: 2 TB/s, above
/// any NVLink to date (NVLink 5: 900 GB/s). It matters only for an NVLink
/// counter narrower than 64 bits, which no driver is known to give.
const NVLINK_MAX_BYTES_PER_S: f64 = 2e12;

impl LinkMax {
    /// A PCIe link of `generation` and `width` lanes; where either is not
    /// known (`None` or 0), the fastest this scaler assumes (Gen5, x16).
    pub fn pcie(generation: Option<u32>, width: Option<u32>) -> Self {
        let known = |v: Option<u32>| v.filter(|&v| v > 0);
        let (generation_known, width_known) = (known(generation), known(width));
        let generation = generation_known.unwrap_or(ASSUMED_PCIE.0);
        let width = width_known.unwrap_or(ASSUMED_PCIE.1);
        // Beyond Gen6, each generation has doubled the rate.
        let gts = match PCIE_GTS.get(generation as usize - 1) {
            Some(gts) => *gts,
            None => PCIE_GTS[5] * 2f64.powi(generation.saturating_sub(6).min(16) as i32),
        };
        let what = match (generation_known, width_known) {
            (Some(_), Some(_)) => format!("PCIe Gen{generation} x{width}"),
            _ => format!(
                "PCIe Gen{generation} x{width} (assumed: NVML did not give the link's maximum)"
            ),
        };
        Self {
            bytes_per_s: gts * 1e9 / 8.0 * f64::from(width),
            what,
        }
    }

    fn nvlink() -> Self {
        Self {
            bytes_per_s: NVLINK_MAX_BYTES_PER_S,
            what: String::from("NVLink (assumed at most 2 TB/s)"),
        }
    }
}

/// Which rates state: a whole GPU, or one GPU instance (MIG) of a GPU, by
/// its UUID and GPU-instance id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Gpu(String),
    GpuInstance(String, u32),
}

/// A GPU that answered this pass, by UUID, and the GPU instances (MIG)
/// seen on it; the rates of everything else are dropped (see
/// [`Rates::retain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Present<'a> {
    pub uuid: &'a str,
    pub gpu_instances: Vec<u32>,
}

/// What the previous passes left for the next one, per GPU and per MIG
/// GPU instance. Its GPM buffers hold the NVML session they came from (see
/// [`GpmSample`]), so it may drop before or after the session.
#[derive(Default)]
pub struct Rates {
    gpus: HashMap<Key, GpuRates>,
}

#[derive(Default)]
struct GpuRates {
    /// Asked once per session, once answered.
    gpm_support: Option<bool>,
    /// This GPU's (or GPU instance's) two GPM buffers, once allocated.
    gpm: Option<GpmBuffers>,
    /// The latest complete window's result and when it ended, for a pass
    /// that comes too soon for a window of its own.
    gpm_last: Option<(GpmResult, Instant)>,
    /// This pass's GPM result, for the other compute instances of the same
    /// GPU instance (GPM measures GPU instances, not compute instances).
    gpm_pass: Option<(Instant, GpmResult)>,
    counters: HashMap<c_uint, CounterState>,
    /// The PCIe link's maximum, once NVML has answered for it.
    pcie_link: Option<LinkMax>,
}

/// One byte counter between passes.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct CounterState {
    /// The previous reading: the baseline for the next rate.
    latest: Option<Counter>,
    /// The latest rate and when it was computed.
    last_rate: Option<(f64, Instant)>,
}

/// Two GPM buffers, allocated once and swapped between passes: `later`
/// is filled every pass, and becomes `earlier` (the baseline a window
/// starts from) when a window ends or when there is no baseline yet.
struct GpmBuffers {
    earlier: GpmSample,
    /// When `earlier` was filled; `None` until it is.
    taken: Option<Instant>,
    later: GpmSample,
}

impl GpmBuffers {
    fn alloc(nvml: &Nvml) -> Result<Self, NvmlError> {
        Ok(Self {
            earlier: nvml.gpm_sample_alloc()?,
            taken: None,
            later: nvml.gpm_sample_alloc()?,
        })
    }

    /// `later`, filled at `at`, is the new baseline.
    fn swap(&mut self, at: Instant) {
        std::mem::swap(&mut self.earlier, &mut self.later);
        self.taken = Some(at);
    }
}

/// What one GPM read gave.
#[derive(Clone, Default)]
struct GpmResult {
    values: Vec<(Metric, f64)>,
    reads: Reads,
}

impl GpmResult {
    fn emit(&self, out: &mut RateOut<'_>) {
        for (metric, value) in &self.values {
            out.readings.set(*metric, *value);
        }
        out.reads.extend_from(&self.reads);
    }
}

/// The largest GPM percentage taken as real; above it the samples did
/// not belong together (an instance recreated, a GPU reset).
const GPM_MAX_PERCENT: f64 = 100.5;

/// Where one GPU's rates go.
pub struct RateOut<'a> {
    pub readings: &'a mut Readings,
    /// Reads that failed this pass, and metrics the GPU does not report,
    /// with why.
    pub reads: &'a mut Reads,
}

impl RateOut<'_> {
    fn unreported(&mut self, metrics: impl IntoIterator<Item = Metric>, cause: Cause) {
        self.reads.unreported(metrics, cause);
    }

    /// A read that failed, or a rate this pass cannot give: a failure for
    /// this pass, so a trigger selecting the GPU is UNAVAILABLE rather
    /// than a sum without it.
    fn error(&mut self, metrics: impl IntoIterator<Item = Metric>, cause: Cause) {
        self.reads.failed(metrics, cause);
    }

    /// NOT_SUPPORTED or a missing symbol is "not reported", with what that
    /// means here; anything else a failed read. GPU_IS_LOST is passed up.
    fn failed(
        &mut self,
        metrics: &[Metric],
        error: NvmlError,
        meaning: &'static str,
    ) -> Result<(), NvmlError> {
        if error.is_gpu_lost() {
            return Err(error);
        }
        let metrics = metrics.iter().copied();
        if error.is_not_supported() {
            let call = error.into();
            self.unreported(metrics, Cause::Unsupported { meaning, call });
        } else {
            self.error(metrics, Cause::Call(error.into()));
        }
        Ok(())
    }
}

/// Whether a rate computed at `at` may still stand in at `now`.
fn recent(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < LAST_RATE_MAX_AGE
}

impl Rates {
    /// Keeps the rates of what is in `present` only: a GPU that is gone,
    /// lost or failing, and a GPU instance no longer on its GPU (destroyed;
    /// one recreated with the same id later starts afresh), are forgotten.
    pub fn retain(&mut self, present: &[Present<'_>]) {
        self.gpus.retain(|key, _| match key {
            Key::Gpu(uuid) => present.iter().any(|p| p.uuid == uuid),
            Key::GpuInstance(uuid, gi) => present
                .iter()
                .any(|p| p.uuid == uuid && p.gpu_instances.contains(gi)),
        });
    }

    /// This GPU's rates since its previous read, into `out`.
    pub fn read(
        &mut self,
        nvml: &Nvml,
        device: &Device<'_>,
        uuid: &str,
        out: &mut RateOut<'_>,
    ) -> Result<(), NvmlError> {
        let state = self.gpus.entry(Key::Gpu(uuid.to_string())).or_default();
        read_gpm(nvml, device, None, state, out)?;
        read_counters(device, state, out)
    }

    /// GPM activity of one GPU instance (MIG) of `parent` since its
    /// previous read, computed once per pass (`now`) and shared by the
    /// compute instances of that GPU instance. PCIe and NVLink belong to
    /// the whole GPU.
    pub fn read_mig(
        &mut self,
        nvml: &Nvml,
        parent: &Device<'_>,
        parent_uuid: &str,
        gpu_instance: u32,
        now: Instant,
        out: &mut RateOut<'_>,
    ) -> Result<(), NvmlError> {
        let key = Key::GpuInstance(parent_uuid.to_string(), gpu_instance);
        let state = self.gpus.entry(key).or_default();
        if let Some((pass, result)) = &state.gpm_pass {
            if *pass == now {
                // Another compute instance of this GPU instance, this pass.
                result.emit(out);
                return Ok(());
            }
        }
        let mut readings = Readings::default();
        let mut result = GpmResult::default();
        let mut own = RateOut {
            readings: &mut readings,
            reads: &mut result.reads,
        };
        read_gpm(nvml, parent, Some(gpu_instance), state, &mut own)?;
        result.values = GPM_METRICS
            .iter()
            .filter_map(|(_, metric)| readings.get(*metric).map(|v| (*metric, v)))
            .collect();
        result.emit(out);
        state.gpm_pass = Some((now, result));
        Ok(())
    }
}

/// A pass without a GPM window of its own: the latest window's result
/// stands if recent (a pass a little early at a 100 ms interval must not
/// make the rates flicker absent), else every metric failed this pass.
fn gpm_for_now(state: &GpuRates, now: Instant, out: &mut RateOut<'_>, why: &'static str) {
    match &state.gpm_last {
        Some((last, ended)) if recent(*ended, now) => last.emit(out),
        _ => out.error(GPM_METRICS.map(|(_, metric)| metric), Cause::said(why)),
    }
}

fn read_gpm(
    nvml: &Nvml,
    device: &Device<'_>,
    gpu_instance: Option<u32>,
    state: &mut GpuRates,
    out: &mut RateOut<'_>,
) -> Result<(), NvmlError> {
    let metrics = GPM_METRICS.map(|(_, metric)| metric);
    let supported = match state.gpm_support {
        Some(supported) => supported,
        // Only an answer is kept; a failure is asked again next pass.
        None => match device.gpm_supported() {
            Ok(supported) => *state.gpm_support.insert(supported),
            Err(e) => return out.failed(&metrics, e, "GPM is not available"),
        },
    };
    if !supported {
        let no_gpm = Cause::said("this GPU has no GPM (Hopper or newer has it)");
        out.unreported(metrics, no_gpm);
        return Ok(());
    }
    if state.gpm.is_none() {
        match GpmBuffers::alloc(nvml) {
            Ok(buffers) => state.gpm = Some(buffers),
            Err(e) => return out.failed(&metrics, e, "GPM sampling is not supported"),
        }
    }
    let Some(buffers) = &mut state.gpm else {
        return Ok(());
    };
    let taken = match gpu_instance {
        None => device.gpm_sample(&buffers.later),
        Some(gi) => device.gpm_mig_sample(gi, &buffers.later),
    };
    if let Err(e) = taken {
        return out.failed(&metrics, e, "GPM sampling is not supported");
    }
    // Spacing is measured between the samples themselves, not passes.
    let now = Instant::now();
    let Some(at) = buffers.taken else {
        buffers.swap(now);
        gpm_for_now(
            state,
            now,
            out,
            "a rate: it needs a second sample, one pass from now",
        );
        return Ok(());
    };
    if now.duration_since(at) < GPM_MIN_SPACING {
        // The baseline is kept, so the next pass has a full window.
        gpm_for_now(
            state,
            now,
            out,
            "GPM samples must be 100 ms apart; the pass came sooner",
        );
        return Ok(());
    }
    let ids = GPM_METRICS.map(|(id, _)| id);
    let values = nvml.gpm_metrics(&buffers.earlier, &buffers.later, &ids);
    buffers.swap(now);
    state.gpm_last = None;
    let values = match values {
        Ok(values) => values,
        Err(e) => return out.failed(&metrics, e, "GPM metrics are not supported"),
    };
    let mut window = GpmResult::default();
    let mut own = RateOut {
        readings: &mut *out.readings,
        reads: &mut window.reads,
    };
    for ((_, metric), value) in GPM_METRICS.iter().zip(values) {
        match value {
            Ok(value) if value.is_finite() && (0.0..=GPM_MAX_PERCENT).contains(&value) => {
                own.readings.set(*metric, value.min(100.0));
                window.values.push((*metric, value.min(100.0)));
            }
            // Samples that do not belong together (an instance recreated,
            // a reset): no rate this pass, not 100%. The previous window
            // does not stand in: it may be of another instance.
            Ok(value) => own.error([*metric], Cause::Reason(format!(
                "GPM gave {value}, not a percentage: the previous sample was of another instance or before a reset; the rate resumes next pass"
            ).into())),
            Err(e) => own.failed(&[*metric], e, "GPM does not measure it on this GPU")?,
        }
    }
    out.reads.extend_from(&window.reads);
    state.gpm_last = Some((window, now));
    Ok(())
}

fn read_counters(
    device: &Device<'_>,
    state: &mut GpuRates,
    out: &mut RateOut<'_>,
) -> Result<(), NvmlError> {
    let requests = COUNTERS.map(|(field, scope, _, _, _)| (field, scope));
    let values = match device.field_values(&requests) {
        Ok(values) => values,
        Err(e) => {
            let metrics = COUNTERS.map(|(_, _, metric, _, _)| metric);
            return out.failed(&metrics, e, "NVML has no field values here");
        }
    };
    let now = Instant::now();
    for ((field, _, metric, unit, link), value) in COUNTERS.iter().zip(values) {
        let counter = match value.result {
            Ok(counter) => counter,
            Err(e) => {
                if let Some(counter) = state.counters.get_mut(field) {
                    counter.latest = None;
                }
                let why = match link {
                    Link::Pcie => "no PCIe byte counters on this GPU or driver",
                    Link::Nvlink => {
                        "no NVLink on this GPU, or no throughput counters in this driver"
                    }
                };
                out.failed(&[*metric], e, why)?;
                continue;
            }
        };
        // The link's maximum matters only to a counter that can wrap.
        let max = match (counter.bits < 64, link) {
            (false, _) => None,
            (true, Link::Pcie) => Some(pcie_link(device, &mut state.pcie_link)?),
            (true, Link::Nvlink) => Some(LinkMax::nvlink()),
        };
        let entry = state.counters.entry(*field).or_default();
        match entry.next(counter, *unit, max.as_ref(), now) {
            Ok(mbps) => out.readings.set(*metric, mbps),
            Err(why) => out.error([*metric], Cause::Reason(why.into())),
        }
    }
    Ok(())
}

/// The PCIe link's maximum, asked once NVML answers; until then (or when
/// it cannot say) the fastest link is assumed. GPU_IS_LOST is passed up.
fn pcie_link(device: &Device<'_>, known: &mut Option<LinkMax>) -> Result<LinkMax, NvmlError> {
    if let Some(link) = known {
        return Ok(link.clone());
    }
    let mut answered = true;
    let mut ask = |result: Result<u32, NvmlError>| match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_gpu_lost() => Err(e),
        Err(e) => {
            // NOT_SUPPORTED (or no such symbol) is an answer; anything else
            // is asked again next pass.
            answered &= e.is_not_supported();
            Ok(None)
        }
    };
    let generation = ask(device.max_pcie_link_generation())?;
    let width = ask(device.max_pcie_link_width())?;
    let link = LinkMax::pcie(generation, width);
    if answered {
        *known = Some(link.clone());
    }
    Ok(link)
}

impl CounterState {
    /// Takes this pass's reading (`at` is the pass) and gives the rate in
    /// MB/s since the previous one, or why this pass has none. A pass
    /// without a rate of its own (no baseline yet, a counter not updated
    /// or reset) gets the latest rate if it is recent (see
    /// [`LAST_RATE_MAX_AGE`]); a counter that may have wrapped unseen
    /// never does.
    pub fn next(
        &mut self,
        counter: Counter,
        unit: f64,
        link: Option<&LinkMax>,
        at: Instant,
    ) -> Result<f64, String> {
        let Some(previous) = self.latest.replace(counter) else {
            return self.stand_in(at, "a rate: it needs a second sample, one pass from now");
        };
        let assumed = LinkMax::pcie(None, None);
        match rate(previous, counter, unit, link.unwrap_or(&assumed)) {
            Ok(mbps) => {
                self.last_rate = Some((mbps, at));
                Ok(mbps)
            }
            Err(NoRate::ForNow(why)) => self.stand_in(at, &why),
            Err(NoRate::Unmeasurable(why)) => {
                self.last_rate = None;
                Err(why)
            }
        }
    }

    fn stand_in(&self, at: Instant, why: &str) -> Result<f64, String> {
        match self.last_rate {
            Some((mbps, computed)) if recent(computed, at) => Ok(mbps),
            _ => Err(why.to_string()),
        }
    }
}

/// Why two reads of a counter give no rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRate {
    /// Nothing to go on this pass (not updated, reset); the next pass has
    /// a rate again.
    ForNow(String),
    /// The counter may have wrapped more than once between the reads:
    /// any rate could be too small.
    Unmeasurable(String),
}

impl NoRate {
    pub fn why(&self) -> &str {
        match self {
            Self::ForNow(why) | Self::Unmeasurable(why) => why,
        }
    }
}

/// MB/s (10^6 bytes) between two reads of a cumulative counter of `unit`
/// bytes, on a link that carries at most `link` bytes per second in its
/// direction. A 64-bit counter that went down was reset (driver reload,
/// GPU reset): no rate that pass. A narrower counter wraps: if the link
/// can move its whole range between the reads, a wrap could go unseen, so
/// there is no rate, with the reason; otherwise any decrease is one wrap.
pub fn rate(earlier: Counter, later: Counter, unit: f64, link: &LinkMax) -> Result<f64, NoRate> {
    let micros = later.timestamp_us - earlier.timestamp_us;
    if micros <= 0 {
        return Err(NoRate::ForNow(String::from(
            "the counter was not updated since the last pass",
        )));
    }
    let bits = earlier.bits.min(later.bits);
    let delta = if bits < 64 {
        let range = 1u64 << bits;
        if earlier.value >= range || later.value >= range {
            return Err(NoRate::ForNow(format!(
                "the counter read beyond its {bits} bits; the rate resumes next pass"
            )));
        }
        let range_bytes = range as f64 * unit;
        let seconds = micros as f64 / 1e6;
        let most = link.bytes_per_s * seconds;
        if most >= range_bytes {
            let limit = Duration::try_from_secs_f64(range_bytes / link.bytes_per_s)
                .unwrap_or(Duration::ZERO);
            let remedy = if limit > SHORTEST_INTERVAL {
                format!(
                    "a --sample-interval under {} ms gives the rate",
                    limit.as_millis()
                )
            } else {
                format!(
                    "that needs reads under {} ms apart, shorter than any --sample-interval",
                    limit.as_millis()
                )
            };
            return Err(NoRate::Unmeasurable(format!(
                "a {bits}-bit counter: in the {:.0} ms between reads, {} can move {:.1} GB, more than the {:.1} GB the counter holds before it wraps, so a wrap could go unseen; {remedy}",
                seconds * 1e3,
                link.what,
                most / 1e9,
                range_bytes / 1e9,
            )));
        }
        if later.value >= earlier.value {
            later.value - earlier.value
        } else {
            // Wrapped once, wherever it was: the link cannot have moved more.
            range - earlier.value + later.value
        }
    } else if later.value >= earlier.value {
        later.value - earlier.value
    } else {
        return Err(NoRate::ForNow(String::from(
            "the counter was reset; the rate resumes next pass",
        )));
    };
    Ok(delta as f64 * unit / micros as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: u64, bits: u32, timestamp_us: i64) -> Counter {
        Counter {
            value,
            bits,
            timestamp_us,
        }
    }

    /// PCIe Gen4 x16: 32 GB/s per direction on the wire.
    fn gen4_x16() -> LinkMax {
        LinkMax::pcie(Some(4), Some(16))
    }

    #[test]
    fn rates_from_counters() {
        let link = gen4_x16();
        // 5,000,000 bytes in 0.5 s: 10 MB/s.
        assert_eq!(
            rate(
                counter(1_000, 64, 0),
                counter(5_001_000, 64, 500_000),
                1.0,
                &link
            ),
            Ok(10.0)
        );
        // KiB counters: 1,000 KiB in 1 s is 1.024 MB/s.
        assert_eq!(
            rate(
                counter(0, 64, 0),
                counter(1_000, 64, 1_000_000),
                1024.0,
                &link
            ),
            Ok(1.024)
        );
        // A 32-bit counter that wrapped from its top half, over 100 ms.
        let wrapped = rate(
            counter(u32::MAX as u64 - 99, 32, 0),
            counter(900, 32, 100_000),
            1.0,
            &link,
        );
        assert_eq!(wrapped, Ok(1000.0 / 1e5));
        // A 64-bit counter that went down was reset: no rate that pass.
        let reset = rate(
            counter(5_000, 64, 0),
            counter(10, 64, 1_000_000),
            1.0,
            &link,
        );
        assert!(
            matches!(&reset, Err(NoRate::ForNow(why)) if why.contains("reset")),
            "{reset:?}"
        );
        // The same timestamp twice: nothing new.
        assert!(matches!(
            rate(counter(1, 64, 7), counter(2, 64, 7), 1.0, &link),
            Err(NoRate::ForNow(_))
        ));
    }

    #[test]
    fn a_32_bit_counter_that_went_down_from_its_lower_half_wrapped() {
        // 1.5e9 is below 2^31: once taken for a reset and thrown away. In
        // 100 ms a Gen4 x16 link moves at most 3.2 GB, under the 4.29 GB
        // range, so the decrease is one wrap: 2.795 GB, 27.95 GB/s.
        let earlier = counter(1_500_000_000, 32, 0);
        let later = counter(100, 32, 100_000);
        let mbps = rate(earlier, later, 1.0, &gen4_x16()).expect("a wrap, not a reset");
        let bytes = (1u64 << 32) - 1_500_000_000 + 100;
        assert_eq!(mbps, bytes as f64 / 1e5);
    }

    #[test]
    fn a_32_bit_counter_that_can_wrap_unseen_has_no_rate_and_says_why() {
        // At the default 1 s interval a Gen4 x16 link can move 32 GB, the
        // counter's whole 4.29 GB range several times: an increase of 400
        // could be 400 bytes or 4 GB more. No rate, never an aliased one.
        let result = rate(
            counter(100, 32, 0),
            counter(500, 32, 1_000_000),
            1.0,
            &gen4_x16(),
        );
        let Err(NoRate::Unmeasurable(why)) = &result else {
            panic!("{result:?}");
        };
        assert!(why.contains("a 32-bit counter"), "{why}");
        assert!(why.contains("PCIe Gen4 x16"), "{why}");
        assert!(why.contains("a --sample-interval under 134 ms"), "{why}");
        // Where no allowed interval is short enough, it says so.
        let fastest = rate(
            counter(100, 32, 0),
            counter(500, 32, 100_000),
            1.0,
            &LinkMax::pcie(None, None),
        );
        let Err(NoRate::Unmeasurable(why)) = &fastest else {
            panic!("{fastest:?}");
        };
        assert!(
            why.contains("under 67 ms apart, shorter than any --sample-interval"),
            "{why}"
        );
        // A 64-bit counter on the same link has its rate.
        assert_eq!(
            rate(
                counter(100, 64, 0),
                counter(500, 64, 1_000_000),
                1.0,
                &gen4_x16()
            ),
            Ok(400.0 / 1e6)
        );
        // A slow link over a short interval cannot wrap it unseen.
        let slow = LinkMax::pcie(Some(1), Some(4));
        assert!(rate(counter(100, 32, 0), counter(500, 32, 400_000), 1.0, &slow).is_ok());
    }

    #[test]
    fn a_link_nvml_cannot_describe_is_taken_as_the_fastest() {
        assert_eq!(gen4_x16().bytes_per_s, 32e9);
        assert_eq!(LinkMax::pcie(Some(5), Some(16)).bytes_per_s, 64e9);
        assert_eq!(LinkMax::pcie(Some(1), Some(4)).bytes_per_s, 1.25e9);
        // Past Gen6, each generation doubles.
        assert_eq!(LinkMax::pcie(Some(7), Some(16)).bytes_per_s, 256e9);
        for unknown in [
            LinkMax::pcie(None, None),
            LinkMax::pcie(Some(0), None),
            LinkMax::pcie(None, Some(0)),
        ] {
            assert_eq!(unknown.bytes_per_s, 64e9);
            assert!(unknown.what.contains("assumed"), "{}", unknown.what);
        }
        // The width unknown: as wide as a GPU's link gets.
        assert_eq!(LinkMax::pcie(Some(3), None).bytes_per_s, 16e9);
    }

    #[test]
    fn a_pass_without_a_counter_rate_fails_unless_a_recent_rate_stands_in() {
        let link = gen4_x16();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut state = CounterState::default();
        // The first reading has no rate: a failure for this pass.
        let first = state.next(counter(0, 64, 0), 1.0, Some(&link), at(0));
        assert!(first.unwrap_err().contains("needs a second sample"));
        assert_eq!(
            state.next(counter(1_000_000, 64, 100_000), 1.0, Some(&link), at(100)),
            Ok(10.0)
        );
        // Not updated since: the rate of 100 ms ago stands in.
        assert_eq!(
            state.next(counter(1_000_000, 64, 100_000), 1.0, Some(&link), at(200)),
            Ok(10.0)
        );
        // A reset 200 ms after it: still recent.
        assert_eq!(
            state.next(counter(5, 64, 300_000), 1.0, Some(&link), at(300)),
            Ok(10.0)
        );
        // Not updated, and the last rate is 400 ms old: no rate.
        let stale = state.next(counter(5, 64, 300_000), 1.0, Some(&link), at(500));
        assert!(stale.unwrap_err().contains("not updated"));
        // A counter that may have wrapped unseen never borrows a rate, and
        // leaves none to borrow.
        let mut state = CounterState::default();
        let _ = state.next(counter(0, 32, 0), 1.0, Some(&link), at(0));
        assert_eq!(
            state.next(counter(1_000, 32, 1_000), 1.0, Some(&link), at(1)),
            Ok(1.0)
        );
        let unmeasurable = state.next(counter(2_000, 32, 1_001_000), 1.0, Some(&link), at(2));
        assert!(unmeasurable.unwrap_err().contains("32-bit"));
        assert_eq!(state.last_rate, None);
    }

    #[test]
    fn retain_drops_gpus_and_gpu_instances_that_are_gone() {
        let mut rates = Rates::default();
        for key in [
            Key::Gpu("GPU-a".into()),
            Key::GpuInstance("GPU-a".into(), 1),
            Key::GpuInstance("GPU-a".into(), 2),
            Key::Gpu("GPU-b".into()),
            Key::GpuInstance("GPU-b".into(), 1),
        ] {
            rates.gpus.insert(key, GpuRates::default());
        }
        // GPU instance 1 of GPU-a was destroyed; GPU-b is lost.
        rates.retain(&[Present {
            uuid: "GPU-a",
            gpu_instances: vec![2],
        }]);
        let mut kept: Vec<Key> = rates.gpus.keys().cloned().collect();
        kept.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(
            kept,
            [
                Key::Gpu("GPU-a".into()),
                Key::GpuInstance("GPU-a".into(), 2)
            ]
        );
    }

    #[test]
    fn the_last_rate_stands_in_for_three_gpm_spacings() {
        assert_eq!(LAST_RATE_MAX_AGE, GPM_MIN_SPACING * 3);
        assert_eq!(
            SHORTEST_INTERVAL,
            crate::commands::args::MIN_SAMPLE_INTERVAL
        );
    }
}
