//! What the vendor FFI rooms (`nvml`, `amdsmi`) share: a vendor library
//! opened from the first of its places that loads (or the one the operator
//! named), with its entry points resolved beside it ([`Loaded`]: a room
//! says only where to look and what to resolve, as a [`Vendor`]); the
//! shape of their `LoadError`; reading a C string from a fixed buffer;
//! counting failed calls by entry point and code for the `/metrics` page;
//! and (for tests) pinning a struct's layout. Knows no vendor and calls no
//! entry point.

use std::collections::BTreeMap;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::Library;

/// What an FFI room tells [`Loaded`]: where its library is installed, and
/// the entry points it resolves from it.
///
/// # Safety
///
/// Implementing it promises that every path [`Vendor::candidates`] gives
/// is the vendor's own library (its install locations, or the dynamic
/// loader's search for its names): [`Loaded::open`], a safe function,
/// runs the initialisers of the first that loads.
pub unsafe trait Vendor: Sized {
    /// The room's `LoadError` (see [`load_error`]).
    type Error: From<NotFound> + From<MissingSymbol> + std::fmt::Display;
    /// The standard places, in the order they are tried.
    fn candidates() -> Vec<PathBuf>;
    /// The entry points, resolved from `opened`, which is kept beside them.
    fn resolve(opened: &Opened) -> Result<Self, Self::Error>;
}

/// A vendor's library, opened, with its entry points (`V`) resolved and
/// kept beside it, so no pointer can outlive the code it points into.
pub struct Loaded<V> {
    entries: V,
    opened: Opened,
}

impl<V: Vendor> Loaded<V> {
    /// Opens the first of the standard places (see [`Vendor::candidates`])
    /// that loads. The error lists every path tried and why it failed.
    pub fn open() -> Result<Self, V::Error> {
        // SAFETY: `V`'s implementation of `Vendor` promises that its
        // candidates are the vendor's own library.
        Self::resolve(unsafe { Opened::first(V::candidates()) })
    }

    /// Opens the library at `path` (one the operator named) instead of
    /// searching.
    ///
    /// # Safety
    ///
    /// Loading a library runs its initialisers with this process's rights.
    /// The caller must be sure that `path` is the vendor's library, or one
    /// whose initialisers are sound to run on any thread (the test fakes
    /// are).
    pub unsafe fn open_path(path: &Path) -> Result<Self, V::Error> {
        // SAFETY: the caller vouches for the library (see above).
        Self::resolve(unsafe { Opened::first([path.to_path_buf()]) })
    }

    fn resolve(opened: Result<Opened, Vec<(String, String)>>) -> Result<Self, V::Error> {
        let opened = opened.map_err(|tried| NotFound { tried })?;
        let entries = V::resolve(&opened)?;
        Ok(Self { entries, opened })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        self.opened.path()
    }

    /// The entry points resolved when it loaded.
    pub fn entries(&self) -> &V {
        &self.entries
    }

    /// The library itself, for entry points resolved later (kept beside
    /// it in `entries`).
    pub fn opened(&self) -> &Opened {
        &self.opened
    }
}

/// No candidate path loaded: each one tried, as `(path, why)`. A vendor's
/// `LoadError::LibraryNotFound` (see [`load_error`]).
#[derive(Debug)]
pub struct NotFound {
    pub tried: Vec<(String, String)>,
}

/// A loaded library and where it was found.
pub struct Opened {
    library: Library,
    path: String,
}

impl Opened {
    /// Opens the first of `paths` that loads; else every path tried, each
    /// as `(path, why)`.
    ///
    /// # Safety
    ///
    /// Loading a library runs its initialisers with this process's rights.
    /// The caller must be sure that every path is the vendor's library (its
    /// own install locations, or one the operator named).
    pub unsafe fn first(
        paths: impl IntoIterator<Item = PathBuf>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut tried = Vec::new();
        for path in paths {
            let shown = path.display().to_string();
            // SAFETY: the caller vouches for every path (see above).
            match unsafe { Library::new(&path) } {
                Ok(library) => {
                    return Ok(Self {
                        library,
                        path: shown,
                    })
                }
                Err(e) => tried.push((shown, e.to_string())),
            }
        }
        Err(tried)
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The entry point `symbol`, or `None` where the library lacks it.
    ///
    /// # Safety
    ///
    /// `T` must be the `extern "C"` function pointer type the vendor's
    /// header declares for `symbol`, and the pointer must be kept only
    /// beside this `Opened` (it is valid while the library is loaded).
    pub unsafe fn optional<T: Copy>(&self, symbol: &'static str) -> Option<T> {
        // SAFETY: the caller's promise on `T` (see above).
        unsafe { self.library.get::<T>(symbol.as_bytes()) }
            .ok()
            .map(|f| *f)
    }

    /// The entry point `symbol`; its absence is a load error.
    ///
    /// # Safety
    ///
    /// As [`Opened::optional`].
    pub unsafe fn required<T: Copy>(&self, symbol: &'static str) -> Result<T, MissingSymbol> {
        // SAFETY: the caller's promise on `T` (see `optional`).
        unsafe { self.library.get::<T>(symbol.as_bytes()) }
            .map(|f| *f)
            .map_err(|source| MissingSymbol {
                library: self.path.clone(),
                symbol,
                source,
            })
    }
}

/// A required entry point the library does not export: a vendor's
/// `LoadError::MissingEntryPoint` (see [`load_error`]).
#[derive(Debug)]
pub struct MissingSymbol {
    pub library: String,
    pub symbol: &'static str,
    pub source: libloading::Error,
}

/// Declares a vendor room's `LoadError`: its library could not be opened,
/// or lacks a required entry point. Both rooms' errors have the same
/// variants, words and `source()`; only the words for "not found" differ,
/// written by `$not_found` (`fn(&mut fmt::Formatter, &[(String, String)])
/// -> fmt::Result`, over every `(path, why)` tried).
macro_rules! load_error {
    ($(#[$doc:meta])* $not_found:path) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum LoadError {
            /// No candidate path could be opened; each attempt and its error.
            LibraryNotFound { tried: Vec<(String, String)> },
            /// The library opened but a required symbol is missing.
            MissingEntryPoint {
                library: String,
                symbol: &'static str,
                source: libloading::Error,
            },
        }

        impl ::std::fmt::Display for LoadError {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self {
                    Self::LibraryNotFound { tried } => $not_found(f, tried),
                    Self::MissingEntryPoint {
                        library, symbol, ..
                    } => write!(f, "{library} does not export the required symbol {symbol}"),
                }
            }
        }

        impl ::std::error::Error for LoadError {
            fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                match self {
                    Self::LibraryNotFound { .. } => None,
                    Self::MissingEntryPoint { source, .. } => Some(source),
                }
            }
        }

        impl From<$crate::dynlib::NotFound> for LoadError {
            fn from(not_found: $crate::dynlib::NotFound) -> Self {
                Self::LibraryNotFound {
                    tried: not_found.tried,
                }
            }
        }

        impl From<$crate::dynlib::MissingSymbol> for LoadError {
            fn from(missing: $crate::dynlib::MissingSymbol) -> Self {
                Self::MissingEntryPoint {
                    library: missing.library,
                    symbol: missing.symbol,
                    source: missing.source,
                }
            }
        }
    };
}
pub(crate) use load_error;

/// Reads a NUL-terminated string from a fixed buffer, tolerating a missing NUL.
pub fn string_from_buffer(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Failed calls since the process started, by entry point and code name.
/// Both are static strings from fixed sets, so the map stays small.
pub struct CallErrors(Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl CallErrors {
    pub const fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    pub fn count(&self, function: &'static str, code: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((function, code))
            .or_default() += 1;
    }

    /// `(function, code, count)`, in order.
    pub fn all(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&(function, code), &count)| (function, code, count))
            .collect()
    }
}

impl Default for CallErrors {
    fn default() -> Self {
        Self::new()
    }
}

/// Asserts a `#[repr(C)]` struct's size and the offset of each field
/// named, as the vendor's header lays it out: one line per struct, for the
/// layout tests of every room.
///
/// `assert_layout!(nvmlUtilization_t, 8, { gpu: 0, memory: 4 });`
#[cfg(test)]
macro_rules! assert_layout {
    ($struct:ty, $size:expr, { $($field:ident: $offset:expr),* $(,)? }) => {{
        assert_eq!(
            std::mem::size_of::<$struct>(),
            $size,
            "size of {}",
            stringify!($struct)
        );
        $(assert_eq!(
            std::mem::offset_of!($struct, $field),
            $offset,
            "offset of {}.{}",
            stringify!($struct),
            stringify!($field)
        );)*
    }};
}
#[cfg(test)]
pub(crate) use assert_layout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_strings_stop_at_nul_or_end() {
        let mut buf = [0 as c_char; 8];
        for (slot, byte) in buf.iter_mut().zip(b"GPU-ab\0x") {
            *slot = *byte as c_char;
        }
        assert_eq!(string_from_buffer(&buf), "GPU-ab");
        let full = [b'a' as c_char; 4];
        assert_eq!(string_from_buffer(&full), "aaaa");
    }

    #[test]
    fn counts_by_function_and_code_in_order() {
        let errors = CallErrors::new();
        errors.count("b_call", "TIMEOUT");
        errors.count("a_call", "BUSY");
        errors.count("b_call", "TIMEOUT");
        assert_eq!(
            errors.all(),
            [("a_call", "BUSY", 1), ("b_call", "TIMEOUT", 2)]
        );
    }

    #[test]
    fn every_path_tried_is_named_with_why() {
        // SAFETY: none of these exists; nothing is loaded.
        let tried = unsafe {
            Opened::first([
                PathBuf::from("/nonexistent/a.so"),
                PathBuf::from("/nonexistent/b.so"),
            ])
        }
        .err()
        .unwrap();
        assert_eq!(tried.len(), 2);
        assert_eq!(tried[0].0, "/nonexistent/a.so");
        assert!(tried[1].1.contains("No such file"), "{tried:?}");
    }

    // Only its layout is read.
    #[allow(dead_code)]
    #[repr(C)]
    struct Pinned {
        a: u32,
        b: u64,
    }

    #[test]
    fn a_layout_is_pinned_by_size_and_offsets() {
        assert_layout!(Pinned, 16, { a: 0, b: 8 });
        let wrong = std::panic::catch_unwind(|| assert_layout!(Pinned, 16, { b: 4 }));
        assert!(wrong.is_err());
    }
}
