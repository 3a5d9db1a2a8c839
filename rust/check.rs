//! Checks of image files before a run: a cheap header check (headers parsed, end marker
//! present) and a full check (every pixel decoded, content hashed), in parallel.
//!
//! A truncated file keeps its header, and some decoders fill a missing tail with grey, so
//! both checks also require the format's end marker (JPEG EOI, PNG IEND) at the end.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::decode::{self, DecodeOptions, Format};
use crate::error::{Error, Result};

/// What a check learnt about one file. `error` is None when the file is usable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCheck {
    pub bytes: u64,
    /// Stored size and EXIF orientation (1..=8) from the headers; 0 when unreadable.
    pub width: usize,
    pub height: usize,
    pub orientation: u8,
    /// 64-bit hash of the file's bytes (full check only, else 0): equal files, equal hashes.
    pub hash: u64,
    pub error: Option<String>,
}

/// Bytes that may follow the end marker without the file being damaged (padding).
fn trim_padding(bytes: &[u8]) -> &[u8] {
    let keep = bytes
        .iter()
        .rposition(|b| !matches!(b, 0x00 | b'\n' | b'\r' | b' '))
        .map_or(0, |i| i + 1);
    &bytes[..keep]
}

const PNG_IEND: &[u8] = b"IEND\xAE\x42\x60\x82";

/// Error when the file does not end with its format's end marker.
pub fn check_end_marker(bytes: &[u8], format: Format) -> Result<()> {
    let body = trim_padding(bytes);
    let ok = match format {
        Format::Jpeg => body.ends_with(&[0xFF, 0xD9]),
        Format::Png => body.ends_with(PNG_IEND),
    };
    if ok {
        Ok(())
    } else {
        let marker = match format {
            Format::Jpeg => "JPEG end-of-image marker (FF D9)",
            Format::Png => "PNG IEND chunk",
        };
        Err(Error::Image(format!(
            "truncated: no {marker} at the end of the file"
        )))
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    // SipHash with fixed keys: stable across runs and processes, fast enough for 19k files.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    h.write(bytes);
    h.finish()
}

/// Check one file: headers and end marker, and with `full` a complete decode and a hash.
pub fn check_file(path: &Path, full: bool, opts: &DecodeOptions) -> FileCheck {
    let mut out = FileCheck::default();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.bytes = bytes.len() as u64;
    let checked = decode::read_info(&bytes).and_then(|info| {
        out.width = info.width;
        out.height = info.height;
        out.orientation = info.orientation;
        check_end_marker(&bytes, info.format)?;
        if full {
            decode::decode_image(&bytes, opts)?;
            out.hash = content_hash(&bytes);
        }
        Ok(())
    });
    out.error = checked.err().map(|e| e.to_string());
    out
}

/// Check every file on a pool of `threads` workers (0: rayon's default); results in order.
pub fn check_files(
    paths: &[PathBuf],
    full: bool,
    opts: &DecodeOptions,
    threads: usize,
) -> Result<Vec<FileCheck>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastmask-check-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {threads} check threads: {e}")))?;
    Ok(pool.install(|| paths.par_iter().map(|p| check_file(p, full, opts)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    #[test]
    fn good_files_pass_both_checks_and_hash_by_content() {
        let opts = DecodeOptions::default();
        for name in ["exif_1.jpg", "exif_2.jpg"] {
            for full in [false, true] {
                let c = check_file(&fixture(name), full, &opts);
                assert_eq!(c.error, None, "{name}");
                assert!(c.width > 0 && c.height > 0);
                assert_eq!(c.hash != 0, full);
            }
        }
        let a = check_file(&fixture("exif_1.jpg"), true, &opts);
        let b = check_file(&fixture("exif_2.jpg"), true, &opts);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash, check_file(&fixture("exif_1.jpg"), true, &opts).hash);
    }

    #[test]
    fn damaged_files_are_reported_by_the_header_check() {
        let opts = DecodeOptions::default();
        for (name, words) in [
            ("bad_truncated.jpg", "truncated"),
            ("bad_truncated.png", "truncated"),
            ("bad_zero.jpg", "empty file"),
            ("bad_text.jpg", "not a JPEG or PNG"),
        ] {
            let c = check_file(&fixture(name), false, &opts);
            let err = c.error.unwrap_or_default();
            assert!(err.contains(words), "{name}: {err}");
        }
        let missing = check_file(&fixture("no_such_file.jpg"), false, &opts);
        assert!(missing.error.is_some());
    }

    #[test]
    fn padding_after_the_end_marker_is_accepted() {
        assert!(check_end_marker(&[0xFF, 0xD8, 0xFF, 0xD9, 0, 0, b'\n'], Format::Jpeg).is_ok());
        assert!(check_end_marker(&[0xFF, 0xD8, 0xFF, 0x00], Format::Jpeg).is_err());
    }

    #[test]
    fn many_files_keep_their_order() {
        let paths: Vec<PathBuf> = ["exif_1.jpg", "bad_zero.jpg", "exif_3.jpg"]
            .iter()
            .map(|n| fixture(n))
            .collect();
        let out = check_files(&paths, false, &DecodeOptions::default(), 2).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[0].error.is_none() && out[1].error.is_some() && out[2].error.is_none());
    }
}
