//! A small image, an output size, a crop box and every AugmentConfig knob, all read from
//! the input, through `augment::crop_region` and `augment::process` with train = true.
//! Configs that `validate()` rejects are skipped (process must reject them too). For a valid
//! config, image and output buffer, process must succeed and be deterministic for a given
//! RNG seed.
//!
//! Input layout (missing bytes read as 0): w, h, out_w, out_h (1..=64 each), source-size
//! mode, crop box (kind: bit 0 a box, bit 1 turned; 4 coordinates, then a turned box's
//! angle), 21 knobs, an 8-byte RNG seed, then the pixels (repeated to fill w*h*3).
#![no_main]

use _native::augment::{crop_region, process, AugmentConfig, CropBox, Target};
use _native::color::Output;
use _native::decode::Image;
use _native::rng::Rng;
use libfuzzer_sys::fuzz_target;

mod common;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn side(&mut self) -> usize {
        1 + usize::from(self.u8() % 64)
    }
    /// Mostly a value spread over [lo, hi]; a few codes give the exact ends, zero, and
    /// raw f32 bits (NaN, infinities, negatives, huge) so validate's edges are hit too.
    fn knob(&mut self, lo: f32, hi: f32) -> f32 {
        match self.u8() {
            255 => f32::from_bits(self.u32()),
            254 => hi,
            253 => lo,
            252 => 0.0,
            b => lo + (hi - lo) * f32::from(b) / 251.0,
        }
    }
    /// (lo, hi) with lo <= hi most of the time.
    fn range(&mut self, max: f32) -> (f32, f32) {
        let lo = self.knob(0.0, max);
        let hi = lo + self.knob(0.0, max - lo);
        (lo, hi)
    }
    fn coord(&mut self) -> f32 {
        match self.u8() {
            255 => f32::from_bits(self.u32()),
            b => (f32::from(b) - 64.0) * 0.75,
        }
    }
}

fuzz_target!(init: common::init(), |data: &[u8]| {
    let mut r = Reader(data);
    let (w, h, out_w, out_h) = (r.side(), r.side(), r.side(), r.side());
    // The source (full-scale, oriented) size: the decoded size, or what a 1/4 or 1/8 DCT
    // decode was made from (source.div_ceil(d) == decoded size).
    let mode = r.u8();
    let (sw, sh) = match mode % 3 {
        0 => (w, h),
        k => {
            let d = if k == 1 { 4 } else { 8 };
            let cut = usize::from(mode >> 2) % d;
            (w * d - cut, h * d - cut)
        }
    };
    // Bit 0: a crop box; bit 1: turned, by an angle read like a coordinate (raw bits too).
    let kind = r.u8();
    let crop = (kind & 1 == 1).then(|| {
        let b = CropBox::plain(r.coord(), r.coord(), r.coord(), r.coord());
        if kind & 2 == 2 {
            CropBox {
                angle: Some(r.coord() * 3.0),
                ..b
            }
        } else {
            b
        }
    });
    let cfg = AugmentConfig {
        center_crop: (r.knob(0.0, 1.0), r.knob(0.0, 1.0)),
        center_offset_y: r.knob(-1.0, 1.0),
        rrc_scale: r.range(1.0),
        rrc_ratio: r.range(100.0),
        rrc_p: r.knob(0.0, 1.0),
        hflip_p: r.knob(0.0, 1.0),
        rotate_deg: r.knob(0.0, 180.0),
        rotate_p: r.knob(0.0, 1.0),
        brightness: r.knob(0.0, 10.0),
        contrast: r.knob(0.0, 10.0),
        saturation: r.knob(0.0, 10.0),
        hue: r.knob(0.0, 0.5),
        jitter_p: r.knob(0.0, 1.0),
        grayscale_p: r.knob(0.0, 1.0),
        noise_std: r.knob(0.0, 255.0),
        noise_p: r.knob(0.0, 1.0),
        erase_p: r.knob(0.0, 1.0),
        erase_scale: r.range(1.0),
        erase_ratio: r.range(100.0),
        mask_aug_p: r.knob(0.0, 1.0),
        mask_aug_strength: r.knob(0.0, 1.0),
    };
    let seed = u64::from(r.u32()) | u64::from(r.u32()) << 32;
    let pixels = r.0;
    let data: Vec<u8> = if pixels.is_empty() {
        vec![128; w * h * 3]
    } else {
        pixels.iter().copied().cycle().take(w * h * 3).collect()
    };
    let mut img = Image::from_rgb(w, h, data).expect("valid by construction");
    img.source_width = sw;
    img.source_height = sh;

    common::contract("augment", || {
        let region = crop_region(&img, crop, &cfg);
        let run = |output: Output<'_>| {
            let target = Target::new(output, out_w, out_h).expect("sizes 1..=64 are valid");
            process(&img, region, &cfg, true, &mut Rng::new(seed), target)
        };
        let mut out = vec![0u8; out_w * out_h * 3];
        let res = run(Output::U8(&mut out));
        if cfg.validate().is_err() {
            assert!(res.is_err(), "process accepted a config that validate rejects");
            return;
        }
        if let Err(e) = res {
            panic!("valid input rejected: {e}\n{img:?} out {out_w}x{out_h} {crop:?} {cfg:?}");
        }
        let mut again = vec![0u8; out.len()];
        run(Output::U8(&mut again)).expect("second run");
        assert!(out == again, "same seed, different output");
        // The float target is the uint8 result, normalised, value for value.
        let (mean, std) = ([120.0, 110.0, 100.0], [60.0, 55.0, 50.0]);
        let mut floats = vec![0f32; out.len()];
        run(Output::F32 {
            out: &mut floats,
            mean,
            std,
        })
        .expect("float run");
        for (i, (&f, &u)) in floats.iter().zip(&out).enumerate() {
            let want = f32::from(u) * (1.0 / std[i % 3]) + -mean[i % 3] / std[i % 3];
            assert!(f == want, "float value {i}: {f} vs {want} from {u}");
        }
    });
});
