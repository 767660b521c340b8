//! What an absent reading says about itself: which reading it is
//! ([`Reading`]) and why it is absent ([`Cause`]: a vendor call with its
//! typed code, or a reason in words), and the record a vendor session keeps
//! while reading one GPU ([`Reads`]). These stay typed through the
//! snapshot, the cluster view and the evaluation; they become text only
//! through `Display`, where people read them (`devices`, `--explain`, gRPC
//! messages, `/metrics` labels, a peer's report). Knows both vendors'
//! error types; calls neither library.

use std::borrow::Cow;
use std::fmt;

use crate::amdsmi::AmdSmiError;
use crate::node::gpu_metric::Metric;
use crate::nvml::NvmlError;

/// Which reading of a GPU (or MIG device) is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reading {
    /// A metric a trigger can scale on.
    Metric(Metric),
    /// The GPU's or MIG device's name.
    Name,
    /// The GPU's PCI address.
    PciBusId,
    /// Whether MIG mode is on.
    MigMode,
    /// The list of a GPU's MIG devices.
    MigDevices,
    /// The MIG device in this slot (its UUID could not be read).
    MigDevice(u32),
    /// A MIG device's GPU-instance id.
    GpuInstance,
    /// A MIG device's compute-instance id.
    ComputeInstance,
}

impl Reading {
    /// The readings that are not metrics nor a MIG slot.
    const NAMED: [Reading; 6] = [
        Reading::Name,
        Reading::PciBusId,
        Reading::MigMode,
        Reading::MigDevices,
        Reading::GpuInstance,
        Reading::ComputeInstance,
    ];

    /// The reading a name stands for, as [`Display`](fmt::Display) writes
    /// it (a peer's report carries names); `None` for a name this build
    /// does not know.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(metric) = Metric::from_name(name) {
            return Some(Self::Metric(metric));
        }
        if let Some(reading) = Self::NAMED.into_iter().find(|r| r.to_string() == name) {
            return Some(reading);
        }
        let slot = name.strip_prefix("mig_device_")?;
        // Only the spelling Display writes: no sign, no leading zero.
        if slot.starts_with('+') || (slot.starts_with('0') && slot != "0") {
            return None;
        }
        slot.parse().ok().map(Self::MigDevice)
    }
}

impl From<Metric> for Reading {
    fn from(metric: Metric) -> Self {
        Self::Metric(metric)
    }
}

impl PartialEq<Metric> for Reading {
    fn eq(&self, metric: &Metric) -> bool {
        *self == Reading::Metric(*metric)
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Metric(metric) => metric.name(),
            Self::Name => "name",
            Self::PciBusId => "pci_bus_id",
            Self::MigMode => "mig_mode",
            Self::MigDevices => "mig_devices",
            Self::MigDevice(slot) => return write!(f, "mig_device_{slot}"),
            Self::GpuInstance => "gpu_instance",
            Self::ComputeInstance => "compute_instance",
        })
    }
}

/// A failed call to a vendor library: the entry point, and the vendor's
/// own code, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Nvml(NvmlError),
    AmdSmi(AmdSmiError),
}

impl CallError {
    /// The call says the GPU or driver does not offer the reading
    /// (NOT_SUPPORTED, or an entry point this library lacks): no fault.
    pub fn is_not_supported(&self) -> bool {
        match self {
            Self::Nvml(e) => e.is_not_supported(),
            Self::AmdSmi(e) => e.is_not_supported(),
        }
    }
}

impl From<NvmlError> for CallError {
    fn from(error: NvmlError) -> Self {
        Self::Nvml(error)
    }
}

impl From<AmdSmiError> for CallError {
    fn from(error: AmdSmiError) -> Self {
        Self::AmdSmi(error)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nvml(e) => e.fmt(f),
            Self::AmdSmi(e) => e.fmt(f),
        }
    }
}

/// Why a reading is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A vendor call failed, or answered that it has no such reading.
    Call(CallError),
    /// The library has no such reading here: what that means, and the call
    /// that said so. Written `meaning (call)`.
    Unsupported {
        meaning: &'static str,
        call: CallError,
    },
    /// In words: a reading this backend never gives, a rate this pass
    /// cannot give, or what a peer's report said (peers send text).
    Reason(Cow<'static, str>),
}

impl Cause {
    /// A reason in words known when this was built.
    pub const fn said(reason: &'static str) -> Self {
        Self::Reason(Cow::Borrowed(reason))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call(call) => call.fmt(f),
            Self::Unsupported { meaning, call } => write!(f, "{meaning} ({call})"),
            Self::Reason(reason) => f.write_str(reason),
        }
    }
}

/// One reading the GPU library could not give for a GPU that still
/// answers, or one it does not offer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub what: Reading,
    pub cause: Cause,
}

impl ReadError {
    pub fn new(what: impl Into<Reading>, cause: Cause) -> Self {
        Self {
            what: what.into(),
            cause,
        }
    }
}

/// Why a reading is absent, for people (see [`Absent`]'s `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent<'a> {
    /// Reading it failed.
    Failed(&'a Cause),
    /// It is not offered.
    Unreported(&'a Cause),
}

impl fmt::Display for Absent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(cause) => write!(f, "reading it failed: {cause}"),
            Self::Unreported(cause) => cause.fmt(f),
        }
    }
}

/// The failed and the unoffered reads of one GPU (or MIG device) so far,
/// in the order they happened: every vendor session records them alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Reads that failed: the metric is absent this pass, a fault.
    pub errors: Vec<ReadError>,
    /// Readings not offered (NOT_SUPPORTED, no such entry point, never on
    /// this backend): absent, no fault.
    pub unreported: Vec<ReadError>,
}

impl Reads {
    /// The value, or `None` with the failed call kept against each of
    /// `what` (the readings the call feeds): unreported when the call says
    /// it is not offered, else a failed read.
    pub fn take<T, R: Into<Reading>>(
        &mut self,
        what: impl IntoIterator<Item = R>,
        result: Result<T, impl Into<CallError>>,
    ) -> Option<T> {
        result.map_err(|e| self.call_failed(what, e.into())).ok()
    }

    /// A failed call against each of `what`, as [`Reads::take`] keeps it.
    pub fn call_failed<R: Into<Reading>>(
        &mut self,
        what: impl IntoIterator<Item = R>,
        error: CallError,
    ) {
        if error.is_not_supported() {
            self.unreported(what, Cause::Call(error));
        } else {
            self.failed(what, Cause::Call(error));
        }
    }

    /// Each of `what` is not offered, for `cause`.
    pub fn unreported<R: Into<Reading>>(
        &mut self,
        what: impl IntoIterator<Item = R>,
        cause: Cause,
    ) {
        push(&mut self.unreported, what, cause);
    }

    /// Each of `what` failed this pass, for `cause`.
    pub fn failed<R: Into<Reading>>(&mut self, what: impl IntoIterator<Item = R>, cause: Cause) {
        push(&mut self.errors, what, cause);
    }

    /// Adds a copy of `other`'s records after these.
    pub fn extend_from(&mut self, other: &Reads) {
        self.errors.extend(other.errors.iter().cloned());
        self.unreported.extend(other.unreported.iter().cloned());
    }
}

fn push<R: Into<Reading>>(
    list: &mut Vec<ReadError>,
    what: impl IntoIterator<Item = R>,
    cause: Cause,
) {
    list.extend(
        what.into_iter()
            .map(|what| ReadError::new(what, cause.clone())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvml::ReturnCode;

    #[test]
    fn every_reading_is_written_and_parsed_alike() {
        let mut readings: Vec<Reading> = Metric::ALL.map(Reading::Metric).into();
        readings.extend(Reading::NAMED);
        readings.extend([Reading::MigDevice(0), Reading::MigDevice(12)]);
        for reading in readings {
            assert_eq!(Reading::parse(&reading.to_string()), Some(reading));
        }
        assert_eq!(Reading::MigDevice(3).to_string(), "mig_device_3");
        assert_eq!(Reading::Name.to_string(), "name");
        assert_eq!(Reading::Metric(Metric::PowerDraw), Metric::PowerDraw);
        for unknown in [
            "GPU_UTILIZATION",
            "mig_device_",
            "mig_device_07",
            "mig_device_+1",
            "x",
        ] {
            assert_eq!(Reading::parse(unknown), None, "{unknown}");
        }
    }

    fn nvml(code: ReturnCode) -> CallError {
        CallError::Nvml(NvmlError::Call {
            function: "nvmlDeviceGetTemperature",
            code,
            description: String::from("Not Supported"),
        })
    }

    #[test]
    fn a_cause_is_written_as_the_vendor_and_the_reason_say() {
        let call = nvml(ReturnCode::NotSupported);
        let words = "nvmlDeviceGetTemperature failed: NVML_ERROR_NOT_SUPPORTED (3): Not Supported";
        assert_eq!(Cause::Call(call.clone()).to_string(), words);
        let unsupported = Cause::Unsupported {
            meaning: "GPM is not available",
            call,
        };
        assert_eq!(
            unsupported.to_string(),
            format!("GPM is not available ({words})")
        );
        assert_eq!(Cause::said("no NVLink").to_string(), "no NVLink");
        let cause = Cause::said("no GPM");
        assert_eq!(Absent::Unreported(&cause).to_string(), "no GPM");
        assert_eq!(
            Absent::Failed(&cause).to_string(),
            "reading it failed: no GPM"
        );
    }

    #[test]
    fn a_call_not_offered_is_unreported_and_any_other_failed() {
        let mut reads = Reads::default();
        let temperature = [Metric::Temperature];
        assert_eq!(reads.take(temperature, Ok::<_, NvmlError>(41)), Some(41));
        let unsupported = Err::<u32, _>(nvml(ReturnCode::NotSupported));
        assert_eq!(reads.take(temperature, unsupported), None);
        let missing = Err::<u32, _>(NvmlError::MissingSymbol("nvmlDeviceGetMigMode"));
        assert_eq!(reads.take([Reading::MigMode], missing), None);
        let failed = Err::<u32, _>(nvml(ReturnCode::Unknown(999)));
        assert_eq!(
            reads.take([Metric::PowerDraw, Metric::Temperature], failed),
            None
        );
        let unreported: Vec<Reading> = reads.unreported.iter().map(|e| e.what).collect();
        assert_eq!(
            unreported,
            [Reading::Metric(Metric::Temperature), Reading::MigMode]
        );
        let errors: Vec<Reading> = reads.errors.iter().map(|e| e.what).collect();
        assert_eq!(
            errors,
            [
                Reading::Metric(Metric::PowerDraw),
                Reading::Metric(Metric::Temperature)
            ]
        );
        assert_eq!(
            reads.errors[0].cause,
            Cause::Call(nvml(ReturnCode::Unknown(999)))
        );
    }
}
