//! The seam every vendor backend implements: a [`Session`] (an initialised
//! vendor library that reads this node's GPUs), what it states about
//! itself ([`About`]), and the [`Loader`] that loads a vendor library once
//! (through its FFI room's `dynlib::Vendor`) and opens sessions of it the
//! same way for every vendor.
//!
//! The seam points one way: `nvidia` and `amd` import this file and
//! implement it; `backend` (which chooses a vendor for `--gpu-backend`)
//! imports them and this file. Nothing here names a vendor, and no vendor
//! file imports `backend`.

use std::fmt::Display;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::dynlib::{Loaded, Vendor};
use crate::node::snapshot::GpuSample;

/// An initialised vendor library, reading this node's GPUs.
pub trait Session: Send {
    /// Which library answered, from where, and the driver's version.
    fn about(&self) -> &About;
    /// Reads every GPU. Only a failure of the library as a whole is an
    /// error; it ends the session, and the next pass opens a new one.
    fn read_node(&mut self) -> Result<Vec<GpuSample>, String>;
    /// For `devices`: how long to wait between two reads so that rate
    /// metrics have their second sample; `None` when it has no rates.
    fn rate_spacing(&self) -> Option<Duration>;

    /// The library's short name (`nvml`, `amdsmi`), for `/metrics` labels.
    fn backend(&self) -> &'static str {
        self.about().backend
    }
    /// The library's name for people (`NVML`, `AMD SMI`).
    fn display_name(&self) -> &'static str {
        self.about().display_name
    }
    /// The file the library was loaded from.
    fn library_path(&self) -> &str {
        &self.about().library_path
    }
    /// The driver's version as the library states it.
    fn driver_version(&self) -> &str {
        &self.about().driver_version
    }
}

/// What a session states about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    /// `nvml`, `amdsmi`.
    pub backend: &'static str,
    /// `NVML`, `AMD SMI`.
    pub display_name: &'static str,
    pub library_path: String,
    pub driver_version: String,
}

/// A vendor's names: `nvml` and `NVML`, `amdsmi` and `AMD SMI`.
pub struct Names {
    pub backend: &'static str,
    pub display_name: &'static str,
}

/// A vendor library (its room's `Loaded<V>`), loaded the first time a
/// session needs it and kept (a library is never unloaded, as its
/// initialisers may not be undone safely); sessions of it are opened by
/// [`Loader::open`].
pub struct Loader<V> {
    names: Names,
    library: Option<Arc<Loaded<V>>>,
}

impl<V: Vendor> Loader<V> {
    /// Nothing loaded yet.
    pub const fn new(names: Names) -> Self {
        Self {
            names,
            library: None,
        }
    }

    /// Opens a session, the same steps for every vendor: the library
    /// (loaded the first time from `path`, else the standard places), then
    /// `init`, then the driver's version read by `driver_version`. Each
    /// failure reads `<vendor> is not available: …`.
    pub fn open<S, F: Display, G: Display>(
        &mut self,
        path: Option<&Path>,
        init: impl FnOnce(Arc<Loaded<V>>) -> Result<S, F>,
        driver_version: impl FnOnce(&S) -> Result<String, G>,
    ) -> Result<(S, About), String> {
        let name = self.names.display_name;
        let unavailable = |e: &dyn Display| format!("{name} is not available: {e}");
        let library = match &self.library {
            Some(library) => Arc::clone(library),
            None => {
                let loaded = match path {
                    // SAFETY: the operator named this library as the
                    // vendor's (its `--…-library` flag or environment
                    // variable); running its initialisers is their explicit
                    // choice.
                    Some(path) => unsafe { Loaded::open_path(path) },
                    None => Loaded::open(),
                };
                let loaded = loaded.map_err(|e| unavailable(&e))?;
                Arc::clone(self.library.insert(Arc::new(loaded)))
            }
        };
        let library_path = library.path().to_string();
        let session = init(Arc::clone(&library))
            .map_err(|e| format!("{} (library {library_path})", unavailable(&e)))?;
        let driver_version = driver_version(&session).map_err(|e| unavailable(&e))?;
        let about = About {
            backend: self.names.backend,
            display_name: name,
            library_path,
            driver_version,
        };
        Ok((session, about))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynlib::Opened;
    use std::fmt;
    use std::path::PathBuf;

    crate::dynlib::load_error!(not_found);

    fn not_found(f: &mut fmt::Formatter<'_>, tried: &[(String, String)]) -> fmt::Result {
        write!(f, "no fake among {} paths", tried.len())
    }

    /// A vendor whose library is any (libc, in these tests).
    struct Fake;

    // SAFETY: its only candidate does not exist: nothing is loaded.
    unsafe impl Vendor for Fake {
        type Error = LoadError;

        fn candidates() -> Vec<PathBuf> {
            vec![PathBuf::from("/nonexistent/libfake.so")]
        }

        fn resolve(_: &Opened) -> Result<Self, LoadError> {
            Ok(Fake)
        }
    }

    const NAMES: Names = Names {
        backend: "fake",
        display_name: "Fake",
    };

    #[test]
    fn every_step_of_opening_says_which_vendor_is_not_available() {
        let libc = Some(Path::new("libc.so.6"));
        let init = |_: Arc<Loaded<Fake>>| Ok::<_, String>(7);
        let version = |n: &u32| Ok::<_, String>(format!("v{n}"));
        let mut loader = Loader::new(NAMES);
        let searched = loader.open(None, init, version).err();
        assert_eq!(
            searched.as_deref(),
            Some("Fake is not available: no fake among 1 paths")
        );
        // libc is loaded in every process: loading it runs nothing new.
        let (session, about) = loader.open(libc, init, version).unwrap();
        assert_eq!(session, 7);
        assert_eq!(
            about,
            About {
                backend: "fake",
                display_name: "Fake",
                library_path: "libc.so.6".into(),
                driver_version: "v7".into(),
            }
        );
        // Loaded once: the search (which finds nothing) is not tried again.
        assert!(loader.open(None, init, version).is_ok());
        let failing = |_: Arc<Loaded<Fake>>| Err::<u32, _>("init failed");
        assert_eq!(
            loader.open(None, failing, version).err().as_deref(),
            Some("Fake is not available: init failed (library libc.so.6)")
        );
        let no_version = |_: &u32| Err::<String, _>("no version");
        assert_eq!(
            loader.open(None, init, no_version).err().as_deref(),
            Some("Fake is not available: no version")
        );
    }
}
