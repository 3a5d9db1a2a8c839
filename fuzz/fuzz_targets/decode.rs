//! Arbitrary bytes through the decoders: `decode_image` at full size (EXIF applied and
//! not), a DCT-scaled decode whose `min_size` comes from the input, and the header-only
//! `read_info` / `read_dimensions`. Any input must give Ok or Err, never a panic, and an Ok
//! must keep the documented invariants:
//! - `data.len() == width * height * 3`, both sides > 0, at most MAX_PIXELS;
//! - a full decode has the size `read_dimensions` reports for the same `apply_exif`, and
//!   source size == size;
//! - a scaled decode keeps the full (oriented) size as its source size and is at least
//!   `min_size` on each axis (or the full size when that is smaller).
#![no_main]

use _native::decode::{
    decode_image, read_dimensions, read_info, sniff_format, DecodeOptions, Format, Image, MAX_PIXELS,
};
use libfuzzer_sys::fuzz_target;

mod common;

fn check(img: &Image, what: &str) {
    assert!(img.width > 0 && img.height > 0, "{what}: {img:?}");
    assert!(img.width * img.height <= MAX_PIXELS, "{what}: {img:?}");
    assert_eq!(img.data.len(), img.width * img.height * 3, "{what}: {img:?}");
}

fuzz_target!(init: common::init(), |data: &[u8]| {
    common::contract("decode", || {
        let info = read_info(data);
        let dims = [false, true].map(|exif| read_dimensions(data, exif));
        if let Ok(info) = &info {
            assert_eq!(Some(info.format), sniff_format(data));
            assert!((1..=8).contains(&info.orientation), "{info:?}");
            assert_eq!(dims[0].as_ref().ok(), Some(&(info.width, info.height)));
            assert_eq!(dims[1].as_ref().ok(), Some(&info.oriented_size()));
        } else {
            assert!(dims.iter().all(|d| d.is_err()));
        }

        // Full-size decode result per apply_exif (index 1 = true).
        let mut full_ok = [false; 2];
        for exif in [true, false] {
            let opts = DecodeOptions {
                apply_exif: exif,
                min_size: None,
                roi: None,
            };
            if let Ok(img) = decode_image(data, &opts) {
                check(&img, "full");
                let size = (img.width, img.height);
                assert_eq!((img.source_width, img.source_height), size);
                let want = dims[usize::from(exif)].as_ref();
                assert_eq!(want.ok(), Some(&size), "read_dimensions vs decode, exif={exif}");
                full_ok[usize::from(exif)] = true;
            }
            // PNGs are always decoded at full size; one decode of them is enough.
            if sniff_format(data) != Some(Format::Jpeg) {
                break;
            }
        }

        // DCT-scaled JPEG decode. The first JPEG bytes are fixed by the format and it ends
        // in FF D9, so the knob is the byte after EOI (ignored by the decoders; libFuzzer
        // appends it): bits 0-1 a shift of the stored size (1, 1/2, 1/4, 1/8), bit 2 one
        // extra pixel (just over a scale boundary), bit 7 apply_exif.
        if let (Some(Format::Jpeg), Ok(info)) = (sniff_format(data), &info) {
            let knob = data.last().copied().unwrap_or(0);
            let exif = knob & 0x80 != 0;
            let (fw, fh) = if exif {
                info.oriented_size()
            } else {
                (info.width, info.height)
            };
            let shift = knob & 3;
            let extra = usize::from(knob >> 2 & 1);
            let need = ((fw >> shift).max(1) + extra, (fh >> shift).max(1));
            let opts = DecodeOptions {
                apply_exif: exif,
                min_size: Some(need),
                roi: None,
            };
            let scaled = decode_image(data, &opts);
            // A failed scaled decode falls back to the full one, so it cannot fail alone.
            assert!(scaled.is_ok() || !full_ok[usize::from(exif)], "{scaled:?}");
            if let Ok(img) = scaled {
                check(&img, "scaled");
                assert_eq!((img.source_width, img.source_height), (fw, fh), "{need:?}");
                assert!(img.width <= fw && img.height <= fh, "{img:?} {need:?}");
                assert!(
                    img.width >= need.0.min(fw) && img.height >= need.1.min(fh),
                    "{img:?} smaller than min_size {need:?}"
                );
                // Rounding up by the same factor on both axes keeps their order.
                assert!(fw < fh || img.width >= img.height, "{img:?}");
                assert!(fh < fw || img.height >= img.width, "{img:?}");
            }
        }
    });
});
