//! The choice of vendor for `--gpu-backend`: the [`Opener`] that opens a
//! [`Session`] of NVML or AMD SMI, and the flags' values. Only the sampler
//! thread and `devices` hold a session. Nothing above this file knows
//! which vendor answered, except by the name a session reports; a metric a
//! vendor lacks is absent with a reason, as on any GPU that lacks it.
//!
//! The seam points one way: this file imports the vendor sessions
//! (`nvidia`, `amd`) and the seam they implement (`session`); they never
//! import this file.

use std::fmt;
use std::path::PathBuf;

use crate::node::session::{Loader, Session};
use crate::node::{amd, nvidia};

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

/// Opens sessions; keeps each library loaded once found (a library is
/// never unloaded, as its initialisers may not be undone safely).
pub struct Opener {
    config: BackendConfig,
    nvml: nvidia::Loaded,
    amd: amd::Loaded,
}

impl Opener {
    pub fn new(config: BackendConfig) -> Self {
        Self {
            config,
            nvml: Loader::new(nvidia::NAMES),
            amd: Loader::new(amd::NAMES),
        }
    }

    /// A new session of the configured backend. With `auto`, NVML first,
    /// then AMD SMI; the error then says why each did not answer.
    pub fn open(&mut self) -> Result<Box<dyn Session>, String> {
        let nvml_path = self.config.nvml_library.as_deref();
        let amd_path = self.config.amd_smi_library.as_deref();
        match self.config.choice {
            BackendChoice::Nvidia => Ok(Box::new(nvidia::open(&mut self.nvml, nvml_path)?)),
            BackendChoice::Amd => Ok(Box::new(amd::open(&mut self.amd, amd_path)?)),
            BackendChoice::Auto => match nvidia::open(&mut self.nvml, nvml_path) {
                Ok(session) => Ok(Box::new(session)),
                Err(no_nvml) => match amd::open(&mut self.amd, amd_path) {
                    Ok(session) => Ok(Box::new(session)),
                    Err(no_amd) => Err(format!(
                        "no GPU library answered (--gpu-backend auto tries NVML, then AMD SMI): {no_nvml}; {no_amd}"
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
