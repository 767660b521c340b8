//! The seam between "read this node's GPUs" and everything above it
//! (snapshot, attribution, cluster, triggers): a [`Session`] per vendor
//! library, and the [`Opener`] that picks one for `--gpu-backend`. Only the
//! sampler thread and `devices` hold a session. Nothing above this file
//! knows which vendor answered, except by the name a session reports; a
//! metric a vendor lacks is absent with a reason, as on any GPU that
//! lacks it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::node::snapshot::GpuSample;

/// `--gpu-backend`: which vendor library reads the GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// NVML, then AMD SMI: the first that initialises.
    #[default]
    Auto,
    Nvidia,
    Amd,
}

impl BackendChoice {
    pub const ALLOWED: &'static str = "auto, nvidia, amd";

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "auto" => Some(Self::Auto),
            "nvidia" => Some(Self::Nvidia),
            "amd" => Some(Self::Amd),
            _ => None,
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Nvidia => "nvidia",
            Self::Amd => "amd",
        })
    }
}

/// Which backend to use and where its libraries are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendConfig {
    pub choice: BackendChoice,
    /// `--nvml-library`; `None` searches the usual places.
    pub nvml_library: Option<PathBuf>,
    /// `--amd-smi-library`; `None` searches the usual places.
    pub amd_smi_library: Option<PathBuf>,
}

/// An initialised vendor library, reading this node's GPUs.
pub trait Session: Send {
    /// The library's short name (`nvml`, `amdsmi`), for `/metrics` labels.
    fn backend(&self) -> &'static str;
    /// The library's name for people (`NVML`, `AMD SMI`).
    fn display_name(&self) -> &'static str;
    /// The file the library was loaded from.
    fn library_path(&self) -> &str;
    /// The driver's version as the library states it.
    fn driver_version(&self) -> &str;
    /// Reads every GPU. Only a failure of the library as a whole is an
    /// error; it ends the session, and the next pass opens a new one.
    fn read_node(&mut self) -> Result<Vec<GpuSample>, String>;
    /// For `devices`: how long to wait between two reads so that rate
    /// metrics have their second sample; `None` when it has no rates.
    fn rate_spacing(&self) -> Option<Duration>;
}

/// A vendor library, loaded the first time a session needs it and kept
/// (a library is never unloaded, as its initialisers may not be undone
/// safely). Each backend adds its own `open` for sessions.
pub struct Loader<L>(Option<Arc<L>>);

impl<L> Default for Loader<L> {
    fn default() -> Self {
        Self(None)
    }
}

impl<L> Loader<L> {
    /// The library, loading it with `load` the first time.
    pub fn load(&mut self, load: impl FnOnce() -> Result<L, String>) -> Result<Arc<L>, String> {
        if let Some(library) = &self.0 {
            return Ok(Arc::clone(library));
        }
        Ok(Arc::clone(self.0.insert(Arc::new(load()?))))
    }
}

/// Opens sessions; keeps each library loaded once found (a library is
/// never unloaded, as its initialisers may not be undone safely).
pub struct Opener {
    config: BackendConfig,
    nvml: crate::node::nvidia::Loaded,
    amd: crate::node::amd::Loaded,
}

impl Opener {
    pub fn new(config: BackendConfig) -> Self {
        Self {
            config,
            nvml: Default::default(),
            amd: Default::default(),
        }
    }

    /// A new session of the configured backend. With `auto`, NVML first,
    /// then AMD SMI; the error then says why each did not answer.
    pub fn open(&mut self) -> Result<Box<dyn Session>, String> {
        let nvml = self.config.nvml_library.as_deref();
        let amd = self.config.amd_smi_library.as_deref();
        match self.config.choice {
            BackendChoice::Nvidia => Ok(Box::new(self.nvml.open(nvml)?)),
            BackendChoice::Amd => Ok(Box::new(self.amd.open(amd)?)),
            BackendChoice::Auto => match self.nvml.open(nvml) {
                Ok(session) => Ok(Box::new(session)),
                Err(nvidia) => match self.amd.open(amd) {
                    Ok(session) => Ok(Box::new(session)),
                    Err(amd) => Err(format!(
                        "no GPU library answered (--gpu-backend auto tries NVML, then AMD SMI): {nvidia}; {amd}"
                    )),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_alike() {
        for choice in [
            BackendChoice::Auto,
            BackendChoice::Nvidia,
            BackendChoice::Amd,
        ] {
            assert_eq!(BackendChoice::parse(&choice.to_string()), Some(choice));
            assert!(BackendChoice::ALLOWED.contains(&choice.to_string()));
        }
        assert_eq!(BackendChoice::parse("rocm"), None);
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
    }
}
