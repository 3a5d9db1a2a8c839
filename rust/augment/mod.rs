//! Crop, resize and augmentation of RGB8 HWC images, written into caller-supplied buffers.
//!
//! `process` is the one entry point of the loader: crop region -> (train: random resized crop
//! -> rotation) -> resize -> (train: flip -> mask appearance -> colour jitter -> grayscale ->
//! noise -> erase). Every random draw comes from the `Rng` passed in, in a fixed order, so a
//! sample's result depends only on its RNG stream, never on the thread that made it. The
//! order of draws: crop, rotation, flip, mask appearance (chance, then its pattern), jitter
//! (chance, then b, c, s, h), grayscale, noise chance, erase chance, noise values, erase box.
//! A crop that is the output size on the pixel grid is copied instead of resampled. A turned
//! crop (a face with its eyes levelled) is drawn by one warp: random crop in its own frame,
//! then its angle plus the rotation jitter.
//!
//! One file per concern: `config` (knobs and presets), `geometry` (crop regions, resize,
//! rotation, flip), `mask` (the mask appearance), `pixel` (noise, erasing, normalisation);
//! this file orchestrates them. The colour stage is `crate::color`.

mod config;
mod geometry;
mod mask;
mod pixel;

pub use config::{AugmentConfig, PRESETS};
pub use geometry::{
    crop_region, hflip_in_place, random_resized_crop, resize_image, resize_into, rotate, working_image, Crop,
    CropBox, Rect, Region, MAX_TURNED_COORD, MAX_TURN_DEG,
};
pub use mask::{is_skin, mask_appearance, mask_band, MaskPattern, MASK_BAND};
pub use pixel::{add_noise, erase, normalize_into, random_erase_rect};

use crate::color::{self, ColorOps, Output, View};
use crate::decode::Image;
use crate::error::{Error, Result};
use crate::rng::Rng;
use geometry::{copy_offset, copy_region, fit_region, turn_about, warp};
use std::cell::RefCell;

/// Where `process` writes a sample: uint8 or normalised float32 pixels (`color::Output`) and
/// the size of the image they hold, checked to agree when made.
pub struct Target<'a> {
    output: Output<'a>,
    width: usize,
    height: usize,
}

impl<'a> Target<'a> {
    /// `output` must hold width * height * 3 values, both sides > 0.
    pub fn new(output: Output<'a>, width: usize, height: usize) -> Result<Self> {
        let want = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        let have = output.len();
        if width == 0 || height == 0 || want != Some(have) {
            return Err(Error::Invalid(format!(
                "output buffer has {have} values, expected {width}x{height}x3 (both sides > 0)"
            )));
        }
        Ok(Target {
            output,
            width,
            height,
        })
    }

    /// uint8 HWC pixels.
    pub fn u8(out: &'a mut [u8], width: usize, height: usize) -> Result<Self> {
        Target::new(Output::U8(out), width, height)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }
}

thread_local! {
    // Per-thread uint8 scratch for float targets, reused across samples.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Crop `crop` of `img` (see `crop_region`, or `working_image` for a cache), resize it and,
/// with `train`, augment it into `target`. Without `train` the result is deterministic and
/// draws nothing from `rng`. The spatial stage (crop, resize or rotation) and the colour stage
/// (flip, jitter, grayscale, and for float the normalisation) each make one pass; when the
/// crop is the output size on the pixel grid, the colour stage reads it straight from `img`.
/// A turned crop is always warped: the random resized crop is drawn in its own frame, and the
/// rotation jitter adds to its angle.
pub fn process(
    img: &Image,
    crop: Crop,
    cfg: &AugmentConfig,
    train: bool,
    rng: &mut Rng,
    target: Target<'_>,
) -> Result<()> {
    check_image(img)?;
    cfg.validate()?;
    let Target {
        output,
        width: out_w,
        height: out_h,
    } = target;
    // A turned crop keeps all of itself: beyond the image, the warp repeats the edge pixels.
    let mut region = match crop.angle {
        None => fit_region(crop.region, img.width as f32, img.height as f32),
        Some(_) => crop.region,
    };
    let mut angle = 0.0;
    if train {
        if rng.chance(cfg.rrc_p) {
            region = random_resized_crop(region, cfg.rrc_scale, cfg.rrc_ratio, rng);
        }
        if cfg.rotate_deg > 0.0 && rng.chance(cfg.rotate_p) {
            angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg);
        }
    }
    let turned = crop
        .angle
        .map(|turn| (turn_about(region, crop.region, turn), turn + angle));
    let copy_at = (angle == 0.0 && turned.is_none())
        .then(|| copy_offset(img, region, out_w, out_h))
        .flatten();
    let mut ops = ColorOps::IDENTITY;
    let (mut mask_aug, mut noise, mut erase_p) = (false, false, false);
    if train {
        ops.flip = rng.chance(cfg.hflip_p);
        // Guarded so configs without it keep their RNG streams (and results) unchanged.
        mask_aug = cfg.mask_aug_p > 0.0 && rng.chance(cfg.mask_aug_p);
    }
    // The mask-appearance pattern is drawn here, in stream order, and applied to pixels below.
    let mask = mask_aug.then(|| MaskPattern::draw(cfg.mask_aug_strength, rng));
    if train {
        if rng.chance(cfg.jitter_p) {
            let mut factor = |x: f32| {
                if x > 0.0 {
                    rng.uniform((1.0 - x).max(0.0), 1.0 + x)
                } else {
                    1.0
                }
            };
            ops.brightness = factor(cfg.brightness);
            ops.contrast = factor(cfg.contrast);
            ops.saturation = factor(cfg.saturation);
            ops.hue = if cfg.hue > 0.0 {
                rng.uniform(-cfg.hue, cfg.hue)
            } else {
                0.0
            };
        }
        ops.grayscale = rng.chance(cfg.grayscale_p);
        noise = rng.chance(cfg.noise_p);
        erase_p = rng.chance(cfg.erase_p);
    }
    let direct = mask.is_none() && !noise && !erase_p;
    if let (Some((x, y)), true) = (copy_at, direct) {
        let view = View::region(&img.data, img.width, x, y, out_w, out_h)?;
        return color::apply(view, &ops, output);
    }
    let mut scratch = Vec::new();
    let (buf, float) = match output {
        Output::U8(out) => (out, None),
        Output::F32 { out, mean, std } => {
            scratch = SCRATCH.with(|c| c.take());
            scratch.resize(out.len(), 0);
            (&mut scratch[..], Some((out, mean, std)))
        }
    };
    let result = (|| {
        match (copy_at, turned) {
            (Some((x, y)), _) => copy_region(img, x, y, buf, out_w, out_h),
            (None, Some((at, turn))) => warp(img, at, turn, buf, out_w, out_h)?,
            (None, None) if angle != 0.0 => rotate(img, region, angle, buf, out_w, out_h)?,
            (None, None) => resize_into(img, region, buf, out_w, out_h)?,
        }
        if let Some(pattern) = &mask {
            // The pattern is not symmetric: flip first, as the order of operations says.
            if ops.flip {
                hflip_in_place(buf, out_w, out_h)?;
                ops.flip = false;
            }
            pattern.apply(buf, out_w, out_h)?;
        }
        match float {
            Some((out, mean, std)) if !noise && !erase_p => {
                return color::apply(
                    View::whole(buf, out_w, out_h)?,
                    &ops,
                    Output::F32 { out, mean, std },
                );
            }
            _ => color::apply_in_place(buf, out_w, out_h, &ops)?,
        }
        if noise {
            add_noise(buf, cfg.noise_std, rng);
        }
        if erase_p {
            if let Some(rect) = random_erase_rect(out_w, out_h, cfg.erase_scale, cfg.erase_ratio, rng) {
                erase(buf, out_w, out_h, rect, rng)?;
            }
        }
        if let Some((out, mean, std)) = float {
            normalize_into(buf, out, mean, std)?;
        }
        Ok(())
    })();
    if !scratch.is_empty() {
        SCRATCH.with(|c| c.replace(scratch));
    }
    result
}

/// f32 clamp that never panics (`f32::clamp` does on NaN or reversed bounds).
#[inline]
fn clampf(v: f32, lo: f32, hi: f32) -> f32 {
    v.max(lo).min(hi)
}

fn check_image(img: &Image) -> Result<()> {
    let want = img.width.checked_mul(img.height).and_then(|n| n.checked_mul(3));
    if img.width == 0 || img.height == 0 || want != Some(img.data.len()) {
        return Err(Error::Invalid(format!(
            "image of {}x{} has {} bytes, expected width*height*3 > 0",
            img.width,
            img.height,
            img.data.len()
        )));
    }
    Ok(())
}

fn check_out(out: &[u8], w: usize, h: usize) -> Result<()> {
    let want = w.checked_mul(h).and_then(|n| n.checked_mul(3));
    if w == 0 || h == 0 || want != Some(out.len()) {
        return Err(Error::Invalid(format!(
            "output buffer has {} bytes, expected {w}x{h}x3 (both sides > 0)",
            out.len()
        )));
    }
    Ok(())
}

/// Images for the tests of every part of augment.
#[cfg(test)]
pub(crate) mod testing {
    use crate::decode::Image;
    use crate::rng::Rng;

    /// A w x h image whose pixel (x, y) is (x, y, 7) mod 256: positions are readable back.
    pub fn coords(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect();
        Image::from_rgb(w, h, data).unwrap()
    }

    pub fn noise_image(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..w * h * 3).map(|_| rng.next_u64() as u8).collect()
    }

    /// Mean absolute difference of two buffers of the same length.
    pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        let total: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum();
        total / a.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{coords, mean_abs_diff, noise_image};

    /// `process` of the crop box `crop` of `img` into a new w x h uint8 image.
    fn processed(
        img: &Image,
        crop: Option<CropBox>,
        cfg: &AugmentConfig,
        train: bool,
        rng: &mut Rng,
        (w, h): (usize, usize),
    ) -> Result<Vec<u8>> {
        let mut out = vec![0u8; w * h * 3];
        let region = crop_region(img, crop, cfg);
        process(img, region, cfg, train, rng, Target::u8(&mut out, w, h)?)?;
        Ok(out)
    }

    #[test]
    fn eval_is_deterministic_and_equals_crop_then_resize() {
        let img = coords(120, 160);
        let cfg = AugmentConfig::preset("mask").unwrap();
        let mut rng = Rng::new(1);
        let a = processed(&img, None, &cfg, false, &mut rng, (32, 24)).unwrap();
        // Eval draws nothing from the RNG.
        assert_eq!(rng.next_u64(), Rng::new(1).next_u64());
        let b = processed(&img, None, &cfg, false, &mut Rng::new(99), (32, 24)).unwrap();
        assert_eq!(a, b);
        let mut c = vec![0u8; 32 * 24 * 3];
        resize_into(&img, crop_region(&img, None, &cfg).region, &mut c, 32, 24).unwrap();
        assert_eq!(a, c);
        // Centre crop (1.0, 0.75) shifted up by 5% of the height: rows 12..132 of 160.
        let r = crop_region(&img, None, &AugmentConfig::eval()).region;
        assert_eq!(
            r,
            Region {
                x: 0.0,
                y: 12.0,
                w: 120.0,
                h: 120.0
            }
        );
    }

    #[test]
    fn crop_box_bounds_are_respected() {
        let img = coords(100, 100);
        let inside = CropBox::plain(20.0, 30.0, 60.0, 50.0);
        let mut out = vec![0u8; 16 * 8 * 3];
        out = processed(
            &img,
            Some(inside),
            &AugmentConfig::eval(),
            false,
            &mut Rng::new(0),
            (16, 8),
        )
        .unwrap();
        for px in out.chunks_exact(3) {
            assert!((20..60).contains(&px[0]) && (30..50).contains(&px[1]), "{px:?}");
        }
        // Partly outside: clamped to the image.
        let cfg = AugmentConfig::eval();
        let r = crop_region(&img, Some(CropBox::plain(-10.0, 90.0, 30.0, 130.0)), &cfg).region;
        assert_eq!(
            r,
            Region {
                x: 0.0,
                y: 90.0,
                w: 30.0,
                h: 10.0
            }
        );
        // Degenerate (outside, reversed, NaN): the centre crop.
        let centre = crop_region(&img, None, &cfg);
        for b in [
            CropBox::plain(200.0, 0.0, 300.0, 10.0),
            CropBox::plain(50.0, 50.0, 40.0, 60.0),
            CropBox::plain(f32::NAN, 0.0, 10.0, 10.0),
        ] {
            assert_eq!(crop_region(&img, Some(b), &cfg), centre, "{b:?}");
        }
        // A DCT-scaled image maps source coordinates onto its own.
        let small = Image {
            source_width: 400,
            source_height: 400,
            ..img.clone()
        };
        let r = crop_region(&small, Some(CropBox::plain(40.0, 80.0, 240.0, 400.0)), &cfg).region;
        assert_eq!(
            r,
            Region {
                x: 10.0,
                y: 20.0,
                w: 50.0,
                h: 80.0
            }
        );
    }

    /// The mask preset with only its random resized crop (always) and flip left on.
    fn random_crops_only() -> AugmentConfig {
        AugmentConfig {
            rotate_p: 0.0,
            jitter_p: 0.0,
            noise_p: 0.0,
            erase_p: 0.0,
            grayscale_p: 0.0,
            mask_aug_p: 0.0,
            rrc_p: 1.0,
            ..AugmentConfig::preset("mask").unwrap()
        }
    }

    #[test]
    fn train_crops_stay_inside_the_box() {
        let img = coords(200, 200);
        let cfg = random_crops_only();
        let b = CropBox::plain(40.0, 60.0, 160.0, 180.0);
        for seed in 0..50 {
            let out = processed(&img, Some(b), &cfg, true, &mut Rng::new(seed), (24, 24)).unwrap();
            for px in out.chunks_exact(3) {
                assert!((40..160).contains(&px[0]) && (60..180).contains(&px[1]), "{px:?}");
            }
        }
    }

    #[test]
    fn brightness_factors_stay_in_range() {
        let img = Image::from_rgb(8, 8, vec![100; 8 * 8 * 3]).unwrap();
        let cfg = AugmentConfig {
            jitter_p: 1.0,
            brightness: 0.4,
            ..AugmentConfig::eval()
        };
        let (mut lo, mut hi) = (255u8, 0u8);
        for seed in 0..300 {
            let out = processed(&img, None, &cfg, true, &mut Rng::new(seed), (8, 8)).unwrap();
            assert!(out.iter().all(|&v| v == out[0]));
            lo = lo.min(out[0]);
            hi = hi.max(out[0]);
        }
        // factor in [0.6, 1.4]: 100 -> [60, 140], and the draws reach near both ends.
        assert!((60..=65).contains(&lo) && (135..=140).contains(&hi), "{lo}..{hi}");
    }

    #[test]
    fn same_seed_same_output_and_seeds_differ() {
        let img = Image::from_rgb(64, 80, noise_image(64, 80, 9)).unwrap();
        let cfg = AugmentConfig {
            rotate_p: 0.5,
            noise_p: 0.5,
            erase_p: 0.5,
            ..AugmentConfig::preset("mask").unwrap()
        };
        let run =
            |seed: u64| processed(&img, None, &cfg, true, &mut Rng::derive(&[seed, 1, 2]), (32, 32)).unwrap();
        assert_eq!(run(7), run(7));
        // Other threads give the same result for the same stream.
        let other = std::thread::scope(|s| s.spawn(|| run(7)).join().unwrap());
        assert_eq!(other, run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn output_size_is_checked() {
        let img = coords(10, 10);
        let cfg = AugmentConfig::eval();
        let mut rng = Rng::new(0);
        let mut out = vec![0u8; 5 * 5 * 3 - 1];
        assert!(matches!(Target::u8(&mut out, 5, 5), Err(Error::Invalid(_))));
        assert!(Target::u8(&mut [], 0, 5).is_err());
        assert!(processed(&img, None, &cfg, true, &mut rng, (0, 5)).is_err());
        let bad = Image {
            data: vec![0; 10],
            ..coords(10, 10)
        };
        let mut out = [0u8; 5 * 5 * 3];
        assert!(processed(&bad, None, &cfg, false, &mut rng, (5, 5)).is_err());
        assert!(rotate(
            &img,
            crop_region(&img, None, &cfg).region,
            5.0,
            &mut out[1..],
            5,
            5
        )
        .is_err());
    }

    #[test]
    fn mask_aug_off_is_identity_and_on_is_seeded() {
        let img = Image::from_rgb(64, 80, noise_image(64, 80, 11)).unwrap();
        let run = |cfg: &AugmentConfig, seed: u64| {
            processed(&img, None, cfg, true, &mut Rng::new(seed), (32, 32)).unwrap()
        };
        let base = AugmentConfig::preset("light").unwrap();
        // p = 0 leaves the output, RNG stream included, exactly as before the knob existed.
        let off = AugmentConfig {
            mask_aug_strength: 1.0,
            ..base.clone()
        };
        assert_eq!(run(&off, 5), run(&base, 5));
        let on = AugmentConfig {
            mask_aug_p: 1.0,
            ..base.clone()
        };
        assert_eq!(run(&on, 5), run(&on, 5));
        assert_ne!(run(&on, 5), run(&base, 5));
        assert_eq!(AugmentConfig::eval().mask_aug_p, 0.0);
        assert!(AugmentConfig::preset("mask").unwrap().mask_aug_p > 0.0);
        let bad = AugmentConfig {
            mask_aug_strength: 1.5,
            ..base
        };
        assert!(bad.validate().is_err());
    }

    /// The source point `fastmask.faces.crop_matrix` gives for output pixel (u, v) of the
    /// turned box `b` drawn at w x h: the reference the turned crop must follow.
    fn reference_point(b: CropBox, (u, v): (f32, f32), (w, h): (usize, usize)) -> (f32, f32) {
        let (sin, cos) = b.angle.unwrap_or(0.0).to_radians().sin_cos();
        let (cx, cy) = ((b.x0 + b.x1) * 0.5, (b.y0 + b.y1) * 0.5);
        let (kx, ky) = ((b.x1 - b.x0) / w as f32, (b.y1 - b.y0) / h as f32);
        let (px, py) = (
            (u + 0.5) * kx - (b.x1 - b.x0) * 0.5,
            (v + 0.5) * ky - (b.y1 - b.y0) * 0.5,
        );
        (cx - 0.5 + cos * px - sin * py, cy - 0.5 + sin * px + cos * py)
    }

    #[test]
    fn turned_crop_follows_the_reference_map_and_repeats_the_edges() {
        // Pixel (x, y) holds (x, y): each output pixel says where it was sampled.
        let img = coords(200, 160);
        let cfg = AugmentConfig::eval();
        for (angle, b) in [
            (20.0, (60.0, 40.0, 140.0, 120.0)),
            (-35.0, (50.0, 30.0, 130.0, 90.0)),
            (90.0, (70.0, 50.0, 130.0, 110.0)),
            // Reaching past the left and top edges.
            (10.0, (-30.0, -20.0, 50.0, 60.0)),
        ] {
            let b = CropBox::turned(b.0, b.1, b.2, b.3, angle);
            let (w, h) = (24, 20);
            let out = processed(&img, Some(b), &cfg, false, &mut Rng::new(0), (w, h)).unwrap();
            for (i, px) in out.chunks_exact(3).enumerate() {
                let (x, y) = reference_point(b, ((i % w) as f32, (i / w) as f32), (w, h));
                // Outside the image, the edge pixel's value.
                let (x, y) = (x.clamp(0.0, 199.0), y.clamp(0.0, 159.0));
                assert!(
                    (f32::from(px[0]) - x).abs() <= 1.0 && (f32::from(px[1]) - y).abs() <= 1.0,
                    "{b:?} pixel {i}: {px:?} vs ({x}, {y})"
                );
            }
        }
        // At angle 0, inside the image: the plain box's pixels, up to the resampling.
        let turned = CropBox::turned(40.0, 30.0, 120.0, 110.0, 0.0);
        let plain = CropBox::plain(40.0, 30.0, 120.0, 110.0);
        let a = processed(&img, Some(turned), &cfg, false, &mut Rng::new(0), (80, 80)).unwrap();
        let b = processed(&img, Some(plain), &cfg, false, &mut Rng::new(0), (80, 80)).unwrap();
        let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max();
        assert!(worst <= Some(1), "{worst:?}");
    }

    #[test]
    fn turned_train_crops_stay_inside_the_turned_box() {
        let img = coords(240, 240);
        let cfg = random_crops_only();
        let b = CropBox::turned(70.0, 60.0, 170.0, 180.0, 30.0);
        let (sin, cos) = 30f32.to_radians().sin_cos();
        let mut changed = 0;
        for seed in 0..50 {
            let out = processed(&img, Some(b), &cfg, true, &mut Rng::new(seed), (24, 24)).unwrap();
            let eval = processed(&img, Some(b), &cfg, false, &mut Rng::new(seed), (24, 24)).unwrap();
            changed += usize::from(out != eval);
            for px in out.chunks_exact(3) {
                // Back into the box's own frame: within its half sizes, up to a pixel.
                let (dx, dy) = (f32::from(px[0]) + 0.5 - 120.0, f32::from(px[1]) + 0.5 - 120.0);
                let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
                assert!(
                    u.abs() <= 51.5 && v.abs() <= 61.5,
                    "seed {seed}: {px:?} -> ({u}, {v})"
                );
            }
        }
        assert!(
            changed > 40,
            "{changed} of 50 random crops differ from the whole box"
        );
        // The same seed gives the same crop, whatever the thread.
        let run = || processed(&img, Some(b), &cfg, true, &mut Rng::new(3), (24, 24)).unwrap();
        let other = std::thread::scope(|s| s.spawn(run).join().unwrap());
        assert_eq!(other, run());
    }

    #[test]
    fn bad_turned_boxes_are_refused_and_crop_to_the_centre() {
        let img = coords(100, 100);
        let cfg = AugmentConfig::eval();
        let centre = crop_region(&img, None, &cfg);
        for b in [
            CropBox::turned(f32::NAN, 0.0, 10.0, 10.0, 5.0),
            CropBox::turned(0.0, 0.0, 10.0, 10.0, f32::NAN),
            CropBox::turned(0.0, 0.0, 10.0, 10.0, f32::INFINITY),
            CropBox::turned(0.0, 0.0, 10.0, 10.0, 1e30),
            CropBox::turned(0.0, 0.0, 10.0, 10.0, 361.0),
            CropBox::turned(0.0, 0.0, 2e6, 10.0, 5.0),
            CropBox::turned(10.0, 0.0, 10.0, 10.0, 5.0),
            CropBox::turned(0.0, 10.0, 10.0, 0.0, 5.0),
        ] {
            assert!(matches!(b.check(), Err(Error::Invalid(_))), "{b:?}");
            assert_eq!(crop_region(&img, Some(b), &cfg), centre, "{b:?}");
            processed(&img, Some(b), &cfg, true, &mut Rng::new(0), (8, 8)).unwrap();
        }
        assert!(CropBox::turned(-50.0, -50.0, 150.0, 150.0, -360.0)
            .check()
            .is_ok());
        assert!(CropBox::plain(f32::NAN, 0.0, 1.0, 1.0).check().is_ok());
    }

    /// A caching loader warps a turned crop from its working image (the whole image at the
    /// output's scale): close to warping it from the full image.
    #[test]
    fn turned_crop_from_the_working_image_is_close_to_the_direct_one() {
        let img = Image::from_rgb(301, 411, noise_image(301, 411, 6)).unwrap();
        // Smooth the noise so both scales see the same picture.
        let img = resize_image(&resize_image(&img, 30, 41).unwrap(), 301, 411).unwrap();
        let cfg = AugmentConfig::eval();
        let b = CropBox::turned(60.0, 80.0, 260.0, 330.0, 12.0);
        let crop = crop_region(&img, Some(b), &cfg);
        let (w, h) = (64, 80);
        let direct = processed(&img, Some(b), &cfg, false, &mut Rng::new(0), (w, h)).unwrap();
        let s = (w as f64 / 200.0).max(h as f64 / 250.0);
        let (work, at) = working_image(img.clone(), crop, (s, s)).unwrap();
        assert!(
            work.width < img.width && at.angle == Some(12.0),
            "{work:?} {at:?}"
        );
        let mut cached = vec![0u8; direct.len()];
        process(
            &work,
            at,
            &cfg,
            false,
            &mut Rng::new(0),
            Target::u8(&mut cached, w, h).unwrap(),
        )
        .unwrap();
        let mad = mean_abs_diff(&direct, &cached);
        assert!(mad < 2.0, "{mad}");
    }

    /// Found by cargo fuzz: f32 clamping let y + h exceed the image height by a rounding step,
    /// which fast_image_resize refuses; 195 heights in 10..700 failed this way.
    #[test]
    fn centre_crop_at_the_bottom_edge_never_overshoots() {
        let cfg = AugmentConfig {
            center_crop: (1.0, 0.3),
            center_offset_y: 1.0,
            ..AugmentConfig::eval()
        };
        for h in 10..700 {
            let img = Image::from_rgb(64, h, vec![7; 64 * h * 3]).unwrap();
            let mut rng = Rng::new(0);
            processed(&img, None, &cfg, false, &mut rng, (32, 32))
                .unwrap_or_else(|e| panic!("height {h}: {e}"));
        }
    }

    /// The cache's working image at the output's scale holds the crop on the pixel grid, so
    /// `process` copies exactly what a direct resize of the crop gives.
    #[test]
    fn working_image_at_the_output_scale_copies_the_direct_resize() {
        let img = Image::from_rgb(301, 411, noise_image(301, 411, 4)).unwrap();
        let cfg = AugmentConfig::eval();
        for (out_w, out_h) in [(64, 48), (100, 100), (224, 224), (37, 91)] {
            let region = crop_region(&img, None, &cfg).region;
            let mut direct = vec![0u8; out_w * out_h * 3];
            resize_into(&img, region, &mut direct, out_w, out_h).unwrap();
            let scale = (
                out_w as f64 / f64::from(region.w),
                out_h as f64 / f64::from(region.h),
            );
            let (work, at) = working_image(img.clone(), region.into(), scale).unwrap();
            assert!(
                copy_offset(&work, at.region, out_w, out_h).is_some(),
                "{at:?} in {work:?}"
            );
            let mut copied = vec![0u8; direct.len()];
            let target = Target::u8(&mut copied, out_w, out_h).unwrap();
            process(&work, at, &cfg, false, &mut Rng::new(0), target).unwrap();
            let worst = direct.iter().zip(&copied).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst <= Some(1), "{out_w}x{out_h}: off by {worst:?}");
        }
    }
}
