//! ROI decode against the full decode. The first 4 bytes choose the region (fractions of the
//! oriented size, possibly past the edge), the rest is the file. Any input gives Ok or Err,
//! never a panic; when both decodes succeed, the ROI decode has the full size and the
//! region's pixels of the full decode (rust/roi.rs: the cut keeps edge-replicated rows out).
#![no_main]

use _native::decode::{decode_image, DecodeOptions};
use _native::roi::Roi;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(init: common::init(), |data: &[u8]| {
    common::contract("roi", || {
        let Some((knobs, file)) = data.split_first_chunk::<4>() else {
            return;
        };
        let full = decode_image(file, &DecodeOptions::default());
        let Ok(full) = full else {
            return;
        };
        // 0..=255 maps to 0..~1.25 of the side, so some regions run past the edge.
        let at = |k: u8, side: usize| side * usize::from(k) / 204;
        let (w, h) = (full.width, full.height);
        let (xa, xb) = (at(knobs[0], w), at(knobs[1], w));
        let (ya, yb) = (at(knobs[2], h), at(knobs[3], h));
        let roi = Roi {
            x0: xa.min(xb),
            y0: ya.min(yb),
            x1: xa.max(xb),
            y1: ya.max(yb),
        };
        let opts = DecodeOptions {
            roi: Some(roi),
            ..Default::default()
        };
        let Ok(part) = decode_image(file, &opts) else {
            panic!("the ROI decode failed where the full decode succeeded: {roi:?}");
        };
        assert_eq!((part.width, part.height), (w, h), "{roi:?}");
        let (x0, x1) = (roi.x0.min(w), roi.x1.min(w));
        for y in roi.y0.min(h)..roi.y1.min(h) {
            let span = (y * w + x0) * 3..(y * w + x1) * 3;
            assert_eq!(part.data[span.clone()], full.data[span], "row {y} of {roi:?}");
        }
    });
});
