//! Arbitrary bytes as an EXIF TIFF block (the APP1 payload after "Exif\0\0") through
//! `exif_orientation`, and wrapped into a minimal JPEG header through `read_info`:
//! never a panic, the result is None or 1..=8, and both paths agree.
#![no_main]

use _native::decode::{exif_orientation, read_info};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(init: common::init(), |data: &[u8]| {
    common::contract("exif", || {
        let o = exif_orientation(data);
        if let Some(v) = o {
            assert!((1..=8).contains(&v), "orientation {v}");
        }
        // SOI, APP1 "Exif\0\0" + data, SOF0 1x1 grey. APP1 length is 16 bits.
        if data.len() + 8 <= usize::from(u16::MAX) {
            let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
            jpeg.extend_from_slice(&((data.len() + 8) as u16).to_be_bytes());
            jpeg.extend_from_slice(b"Exif\0\0");
            jpeg.extend_from_slice(data);
            jpeg.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
            let info = read_info(&jpeg).expect("a well-formed header must parse");
            assert_eq!(info.orientation, o.unwrap_or(1));
        }
    });
});
