//! What the vendor FFI rooms (`nvml`, `amdsmi`) share: opening the first
//! of a list of library paths that loads, reading a C string from a fixed
//! buffer, and counting failed calls by entry point and code for the
//! `/metrics` page. Knows no vendor and calls
//! no entry point.

use std::collections::BTreeMap;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::Library;

/// Opens the first of `paths` that loads, returning it with its path; else
/// every path tried, each with why it failed.
///
/// # Safety
///
/// Loading a library runs its initialisers with this process's rights. The
/// caller must be sure that every path is the vendor's library (its own
/// install locations, or one the operator named).
pub unsafe fn open_first(
    paths: impl IntoIterator<Item = PathBuf>,
) -> Result<(Library, String), Vec<(String, String)>> {
    let mut tried = Vec::new();
    for path in paths {
        // SAFETY: the caller vouches for every path (see above).
        match unsafe { open(&path) } {
            Ok(library) => return Ok((library, path.display().to_string())),
            Err(failure) => tried.push(failure),
        }
    }
    Err(tried)
}

/// Opens one library; the failure is `(path, why)`.
///
/// # Safety
///
/// As [`open_first`], for this one path.
pub unsafe fn open(path: &Path) -> Result<Library, (String, String)> {
    // SAFETY: the caller vouches for the library (see above).
    unsafe { Library::new(path) }.map_err(|e| (path.display().to_string(), e.to_string()))
}

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
            open_first([
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
}
