//! Crop, resize and augmentation of RGB8 HWC images, written into caller-supplied buffers.
//!
//! `process` is the one entry point of the loader: crop region -> (train: random resized crop
//! -> rotation) -> resize -> (train: flip -> mask appearance -> colour jitter -> grayscale ->
//! noise -> erase). Every random draw comes from the `Rng` passed in, in a fixed order, so a
//! sample's result depends only on its RNG stream, never on the thread that made it. The
//! order of draws: crop, rotation, flip, mask appearance (chance, then its pattern), jitter
//! (chance, then b, c, s, h), grayscale, noise chance, erase chance, noise values, erase box.
//! A crop within half a pixel of the output size is copied from the nearest whole offset
//! instead of resampled.

use crate::color::{self, hue_matrix, ColorOps, Output, View, LUMA};
use crate::decode::Image;
use crate::error::{Error, Result};
use crate::rng::Rng;
use fast_image_resize as fr;
use std::cell::RefCell;

/// A crop box in SOURCE pixel coordinates (`Image::source_width/height`, i.e. full scale
/// after EXIF orientation). Parts outside the image are clamped away; a box with less than
/// one source pixel of width or height left (including reversed or NaN boxes) is
/// degenerate and falls back to the centre crop of the config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// A region of the decoded image, in its own pixel coordinates (floats: the resizer and
/// the warp sample sub-pixel regions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// A rectangle of an output buffer, in whole pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Every knob of the augmentation; probabilities are in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Fraction of (width, height) kept, centred, when no crop box is given.
    pub center_crop: (f32, f32),
    /// Vertical shift of that region as a fraction of the height (negative = up), clamped so
    /// the region stays inside the image.
    pub center_offset_y: f32,
    /// Random resized crop (torchvision semantics): area fraction and aspect-ratio range,
    /// 10 tries, then the whole region.
    pub rrc_scale: (f32, f32),
    pub rrc_ratio: (f32, f32),
    pub rrc_p: f32,
    pub hflip_p: f32,
    /// Rotation angle uniform in [-rotate_deg, rotate_deg], positive = counter-clockwise.
    pub rotate_deg: f32,
    pub rotate_p: f32,
    /// ColorJitter (torchvision semantics, fixed order b, c, s, h): factors uniform in
    /// [max(0, 1 - x), 1 + x]; hue shift uniform in [-hue, hue] turns (hue <= 0.5).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub jitter_p: f32,
    pub grayscale_p: f32,
    /// Gaussian noise, standard deviation in pixel units (0-255).
    pub noise_std: f32,
    pub noise_p: f32,
    /// Random erasing (torchvision semantics: area fraction, aspect ratio, 10 tries); the
    /// rectangle is filled with uniform random noise, like torchvision's value="random".
    pub erase_p: f32,
    pub erase_scale: (f32, f32),
    pub erase_ratio: (f32, f32),
    /// Mask-appearance augmentation (see `mask_appearance`): probability and strength in
    /// [0, 1] (how far hue turns and how opaque the pattern is).
    pub mask_aug_p: f32,
    pub mask_aug_strength: f32,
}

impl AugmentConfig {
    /// Deterministic crop + resize only: every probability is 0.
    pub fn eval() -> Self {
        AugmentConfig {
            center_crop: (1.0, 0.75),
            center_offset_y: -0.05,
            rrc_scale: (0.08, 1.0),
            rrc_ratio: (3.0 / 4.0, 4.0 / 3.0),
            rrc_p: 0.0,
            hflip_p: 0.0,
            rotate_deg: 0.0,
            rotate_p: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            jitter_p: 0.0,
            grayscale_p: 0.0,
            noise_std: 0.0,
            noise_p: 0.0,
            erase_p: 0.0,
            erase_scale: (0.02, 0.33),
            erase_ratio: (0.3, 3.3),
            mask_aug_p: 0.0,
            mask_aug_strength: 0.5,
        }
    }

    /// Per-task presets. "mask" jitters colour hard (mask colours vary and carry no label);
    /// "gender" and "age" keep colour mild (skin and hair colour carry age cues) and keep
    /// crops large (wrinkles and hairline are small details). All flip with p = 0.5.
    pub fn preset(name: &str) -> Result<Self> {
        let base = AugmentConfig {
            hflip_p: 0.5,
            ..AugmentConfig::eval()
        };
        let cfg = match name {
            "none" => AugmentConfig::eval(),
            "light" => AugmentConfig {
                rrc_scale: (0.8, 1.0),
                rrc_p: 0.5,
                rotate_deg: 5.0,
                rotate_p: 0.2,
                brightness: 0.1,
                contrast: 0.1,
                saturation: 0.1,
                jitter_p: 0.5,
                ..base
            },
            "mask" => AugmentConfig {
                rrc_scale: (0.6, 1.0),
                rrc_p: 0.8,
                rotate_deg: 10.0,
                rotate_p: 0.3,
                brightness: 0.3,
                contrast: 0.3,
                saturation: 0.4,
                hue: 0.1,
                jitter_p: 0.8,
                grayscale_p: 0.1,
                noise_std: 6.0,
                noise_p: 0.2,
                erase_p: 0.2,
                erase_scale: (0.02, 0.1),
                mask_aug_p: 0.3,
                mask_aug_strength: 0.6,
                ..base
            },
            "gender" => AugmentConfig {
                rrc_scale: (0.7, 1.0),
                rrc_p: 0.7,
                rotate_deg: 8.0,
                rotate_p: 0.3,
                brightness: 0.15,
                contrast: 0.15,
                saturation: 0.1,
                jitter_p: 0.5,
                grayscale_p: 0.05,
                noise_std: 3.0,
                noise_p: 0.1,
                erase_p: 0.2,
                erase_scale: (0.02, 0.1),
                ..base
            },
            "age" => AugmentConfig {
                rrc_scale: (0.8, 1.0),
                rrc_p: 0.5,
                rotate_deg: 5.0,
                rotate_p: 0.3,
                brightness: 0.1,
                contrast: 0.1,
                saturation: 0.05,
                jitter_p: 0.5,
                noise_std: 2.0,
                noise_p: 0.1,
                erase_p: 0.1,
                erase_scale: (0.02, 0.08),
                ..base
            },
            other => {
                return Err(Error::Invalid(format!(
                    "unknown augmentation preset {other:?} (expected none, light, mask, gender \
                     or age)"
                )))
            }
        };
        Ok(cfg)
    }

    /// Check every knob; `process` calls this, so a bad config fails before any pixel work.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: &dyn std::fmt::Debug| {
            Err(Error::Invalid(format!("augment {what} = {v:?} is out of range")))
        };
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        let range = |(lo, hi): (f32, f32), max: f32| lo > 0.0 && lo <= hi && hi <= max;
        for (name, p) in [
            ("rrc_p", self.rrc_p),
            ("hflip_p", self.hflip_p),
            ("rotate_p", self.rotate_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("noise_p", self.noise_p),
            ("erase_p", self.erase_p),
            ("mask_aug_p", self.mask_aug_p),
            ("mask_aug_strength", self.mask_aug_strength),
        ] {
            if !unit(p) {
                return bad(name, &p);
            }
        }
        let (cw, ch) = self.center_crop;
        if !(cw > 0.0 && cw <= 1.0 && ch > 0.0 && ch <= 1.0) {
            return bad("center_crop", &self.center_crop);
        }
        if !(-1.0..=1.0).contains(&self.center_offset_y) {
            return bad("center_offset_y", &self.center_offset_y);
        }
        if !range(self.rrc_scale, 1.0) {
            return bad("rrc_scale", &self.rrc_scale);
        }
        if !range(self.rrc_ratio, 100.0) {
            return bad("rrc_ratio", &self.rrc_ratio);
        }
        if !(0.0..=180.0).contains(&self.rotate_deg) {
            return bad("rotate_deg", &self.rotate_deg);
        }
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(0.0..=10.0).contains(&v) {
                return bad(name, &v);
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return bad("hue", &self.hue);
        }
        if !(0.0..=255.0).contains(&self.noise_std) {
            return bad("noise_std", &self.noise_std);
        }
        if !range(self.erase_scale, 1.0) {
            return bad("erase_scale", &self.erase_scale);
        }
        if !range(self.erase_ratio, 100.0) {
            return bad("erase_ratio", &self.erase_ratio);
        }
        Ok(())
    }
}

/// Where `process` writes a sample.
pub enum Target<'a> {
    /// uint8 HWC, out_h * out_w * 3 bytes.
    U8(&'a mut [u8]),
    /// float32 HWC `(x - mean[c]) / std[c]` (0..255 units): the uint8 result, normalised.
    F32 {
        out: &'a mut [f32],
        mean: [f32; 3],
        std: [f32; 3],
    },
}

thread_local! {
    // Per-thread uint8 scratch for float targets, reused across samples.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Crop, resize and, with `train`, augment `img` into `out` (out_h * out_w * 3 bytes).
/// Without `train` the result is deterministic and draws nothing from `rng`.
#[allow(clippy::too_many_arguments)]
pub fn process(
    img: &Image,
    crop: Option<CropBox>,
    cfg: &AugmentConfig,
    train: bool,
    rng: &mut Rng,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    process_into(img, crop, cfg, train, rng, Target::U8(out), out_w, out_h)
}

/// `process` into either target. The spatial stage (crop, resize or rotation) and the
/// colour stage (flip, jitter, grayscale, and for float the normalisation) each make one
/// pass; when the crop already has the output size (a cached image at its working scale)
/// the colour stage reads it straight from the image.
#[allow(clippy::too_many_arguments)]
pub fn process_into(
    img: &Image,
    crop: Option<CropBox>,
    cfg: &AugmentConfig,
    train: bool,
    rng: &mut Rng,
    target: Target<'_>,
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    check_image(img)?;
    process_region(
        img,
        crop_region(img, crop, cfg),
        cfg,
        train,
        rng,
        target,
        out_w,
        out_h,
    )
}

/// `process_into` from a crop region already in `img`'s pixel coordinates (see
/// `working_image`, which the pipeline's cache uses).
#[allow(clippy::too_many_arguments)]
pub fn process_region(
    img: &Image,
    region: Region,
    cfg: &AugmentConfig,
    train: bool,
    rng: &mut Rng,
    target: Target<'_>,
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    check_image(img)?;
    let want = out_w.checked_mul(out_h).and_then(|n| n.checked_mul(3));
    let have = match &target {
        Target::U8(out) => out.len(),
        Target::F32 { out, .. } => out.len(),
    };
    if out_w == 0 || out_h == 0 || want != Some(have) {
        return Err(Error::Invalid(format!(
            "output buffer has {have} values, expected {out_w}x{out_h}x3 (both sides > 0)"
        )));
    }
    cfg.validate()?;
    let mut region = fit_region(region, img.width as f32, img.height as f32);
    let mut angle = 0.0;
    if train {
        if rng.chance(cfg.rrc_p) {
            region = random_resized_crop(region, cfg.rrc_scale, cfg.rrc_ratio, rng);
        }
        if cfg.rotate_deg > 0.0 && rng.chance(cfg.rotate_p) {
            angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg);
        }
    }
    let copy_at = (angle == 0.0)
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
        return color::apply(view, &ops, target.output());
    }
    let mut scratch = Vec::new();
    let (buf, float) = match target {
        Target::U8(out) => (out, None),
        Target::F32 { out, mean, std } => {
            scratch = SCRATCH.with(|c| c.take());
            scratch.resize(out.len(), 0);
            (&mut scratch[..], Some((out, mean, std)))
        }
    };
    let result = (|| {
        match copy_at {
            Some((x, y)) => copy_region(img, x, y, buf, out_w, out_h),
            None if angle != 0.0 => rotate(img, region, angle, buf, out_w, out_h)?,
            None => resize_into(img, region, buf, out_w, out_h)?,
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

impl<'a> Target<'a> {
    fn output(self) -> Output<'a> {
        match self {
            Target::U8(out) => Output::U8(out),
            Target::F32 { out, mean, std } => Output::F32 { out, mean, std },
        }
    }
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

/// The deterministic crop region of `img`, in its decoded pixel coordinates: the crop box
/// (clamped) or, without one or when it is degenerate, the centre crop of `cfg`.
pub fn crop_region(img: &Image, crop: Option<CropBox>, cfg: &AugmentConfig) -> Region {
    let (iw, ih) = (img.width as f32, img.height as f32);
    // Crop boxes are in full-scale coordinates; a DCT-scaled decode is smaller.
    let sw = if img.source_width > 0 {
        img.source_width as f32
    } else {
        iw
    };
    let sh = if img.source_height > 0 {
        img.source_height as f32
    } else {
        ih
    };
    let boxed = crop
        .filter(|b| ![b.x0, b.y0, b.x1, b.y1].iter().any(|v| v.is_nan()))
        .and_then(|b| {
            let (x0, x1) = (clampf(b.x0, 0.0, sw), clampf(b.x1, 0.0, sw));
            let (y0, y1) = (clampf(b.y0, 0.0, sh), clampf(b.y1, 0.0, sh));
            (x1 - x0 >= 1.0 && y1 - y0 >= 1.0).then_some(Region {
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
            })
        });
    let r = boxed.unwrap_or_else(|| {
        let w = sw * clampf(cfg.center_crop.0, 0.0, 1.0);
        let h = sh * clampf(cfg.center_crop.1, 0.0, 1.0);
        let y = clampf((sh - h) * 0.5 + cfg.center_offset_y * sh, 0.0, sh - h);
        Region {
            x: (sw - w) * 0.5,
            y,
            w,
            h,
        }
    });
    fit_region(
        Region {
            x: r.x * iw / sw,
            y: r.y * ih / sh,
            w: r.w * iw / sw,
            h: r.h * ih / sh,
        },
        iw,
        ih,
    )
}

/// Keep a region inside a w x h image and at least one pixel on each side.
fn fit_region(r: Region, w: f32, h: f32) -> Region {
    let fit = |start: f32, len: f32, max: f32| {
        let len = if len.is_finite() {
            clampf(len, 1.0_f32.min(max), max)
        } else {
            max
        };
        let start = if start.is_finite() {
            clampf(start, 0.0, max - len)
        } else {
            0.0
        };
        (start, len)
    };
    let (x, rw) = fit(r.x, r.w, w);
    let (y, rh) = fit(r.y, r.h, h);
    Region { x, y, w: rw, h: rh }
}

/// torchvision's RandomResizedCrop parameters inside `region` (floats, not rounded): 10
/// tries at an area fraction in `scale` and log-uniform aspect ratio in `ratio`, then the
/// whole region.
pub fn random_resized_crop(region: Region, scale: (f32, f32), ratio: (f32, f32), rng: &mut Rng) -> Region {
    let area = region.w * region.h;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = (target * aspect).sqrt();
        let h = (target / aspect).sqrt();
        if w > 0.0 && h > 0.0 && w <= region.w && h <= region.h {
            let x = region.x + rng.uniform(0.0, region.w - w);
            let y = region.y + rng.uniform(0.0, region.h - h);
            return Region { x, y, w, h };
        }
    }
    region
}

thread_local! {
    // A Resizer keeps its scratch buffers between calls; one per thread avoids locking.
    static RESIZER: RefCell<fr::Resizer> = RefCell::new(fr::Resizer::new());
}

/// Resize `region` of `img` into `out` (out_h * out_w * 3) with fast_image_resize's
/// bilinear convolution, which widens its support when downscaling (antialiased, as PIL).
pub fn resize_into(img: &Image, region: Region, out: &mut [u8], out_w: usize, out_h: usize) -> Result<()> {
    check_image(img)?;
    check_out(out, out_w, out_h)?;
    let region = fit_region(region, img.width as f32, img.height as f32);
    if let Some((x, y)) = copy_offset(img, region, out_w, out_h) {
        copy_region(img, x, y, out, out_w, out_h);
        return Ok(());
    }
    let window = [region.x, region.y, region.w, region.h].map(f64::from);
    resize_window(img, window, out, out_w, out_h)
}

/// Resize the window [x, y, w, h] (f64 pixels) of `img` into `out`. Output pixel i samples
/// around x + (i + 0.5) * w / out_w; the filter reads past the window, up to the image edge.
fn resize_window(
    img: &Image,
    [x, y, w, h]: [f64; 4],
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    let dim = |v: usize| u32::try_from(v).map_err(|_| Error::Invalid(format!("size {v} too large")));
    let src = fr::images::ImageRef::new(dim(img.width)?, dim(img.height)?, &img.data, fr::PixelType::U8x3)
        .map_err(|e| Error::Invalid(format!("resize source: {e}")))?;
    let mut dst = fr::images::Image::from_slice_u8(dim(out_w)?, dim(out_h)?, out, fr::PixelType::U8x3)
        .map_err(|e| Error::Invalid(format!("resize destination: {e}")))?;
    // fast_image_resize checks start + len <= size exactly in f64; f32 clamping can overshoot
    // by a rounding step (found by cargo fuzz), so clamp once more in f64.
    let fit64 = |start: f64, len: f64, max: usize| {
        let max = max as f64;
        let len = len.min(max);
        (start.clamp(0.0, (max - len).max(0.0)), len)
    };
    let (x, w) = fit64(x, w, img.width);
    let (y, h) = fit64(y, h, img.height);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(x, y, w, h);
    let result = RESIZER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut resizer) => resizer.resize(&src, &mut dst, &options),
        Err(_) => fr::Resizer::new().resize(&src, &mut dst, &options),
    });
    result.map_err(|e| Error::Invalid(format!("resize: {e}")))
}

/// How far (in pixels) a region may be from whole-pixel bounds and still be copied: f32
/// rounding of an aligned region, far below a visible shift.
const COPY_TOLERANCE: f32 = 0.01;

/// Where to copy from when `region` is the output size at a whole-pixel offset (a cached
/// image at its working scale, see `working_image`): resampling would change nothing. None
/// when a resize is needed; copying a region off the pixel grid would shift the image.
fn copy_offset(img: &Image, region: Region, out_w: usize, out_h: usize) -> Option<(usize, usize)> {
    let region = fit_region(region, img.width as f32, img.height as f32);
    let near = |a: f32, b: f32| (a - b).abs() <= COPY_TOLERANCE;
    let aligned = near(region.w, out_w as f32)
        && near(region.h, out_h as f32)
        && near(region.x, region.x.round())
        && near(region.y, region.y.round());
    let x = region.x.round().max(0.0) as usize;
    let y = region.y.round().max(0.0) as usize;
    (aligned && x + out_w <= img.width && y + out_h <= img.height).then_some((x, y))
}

/// Copy the out_w x out_h block at (x, y) of `img` into `out` (bounds from `copy_offset`).
fn copy_region(img: &Image, x: usize, y: usize, out: &mut [u8], out_w: usize, out_h: usize) {
    let row = out_w * 3;
    for (k, dst) in out.chunks_exact_mut(row).take(out_h).enumerate() {
        let at = ((y + k) * img.width + x) * 3;
        dst.copy_from_slice(&img.data[at..at + row]);
    }
}

/// The whole of `img` resized to width x height. The source size is kept, so crop boxes in
/// source coordinates still apply to the result.
pub fn resize_image(img: &Image, width: usize, height: usize) -> Result<Image> {
    check_image(img)?;
    let mut data = vec![0u8; width.saturating_mul(height).saturating_mul(3)];
    let whole = Region {
        x: 0.0,
        y: 0.0,
        w: img.width as f32,
        h: img.height as f32,
    };
    resize_into(img, whole, &mut data, width, height)?;
    Ok(Image {
        width,
        height,
        data,
        source_width: img.source_width,
        source_height: img.source_height,
    })
}

/// A cache's working image: `img` resampled by `scale` (x, y) so that `region` starts on a
/// whole pixel, and `region` in the result's coordinates. With the output's scale, the region
/// is then the output size on the pixel grid, so `process_region` copies it, and the copy is
/// the block a direct resize of `region` would give (the resizer reads past a crop window, so
/// a block of a larger resize is the same resize). An axis with scale >= 1 is kept as it is.
pub fn working_image(img: Image, region: Region, scale: (f64, f64)) -> Result<(Image, Region)> {
    check_image(&img)?;
    let region = fit_region(region, img.width as f32, img.height as f32);
    let x = WorkingAxis::new(region.x, region.w, img.width, scale.0);
    let y = WorkingAxis::new(region.y, region.h, img.height, scale.1);
    let work = Region {
        x: x.region_start,
        y: y.region_start,
        w: x.region_len,
        h: y.region_len,
    };
    if x.len == img.width && y.len == img.height && x.origin == 0.0 && y.origin == 0.0 {
        return Ok((img, work));
    }
    let mut data = vec![0u8; x.len * y.len * 3];
    resize_window(
        &img,
        [x.origin, y.origin, x.window, y.window],
        &mut data,
        x.len,
        y.len,
    )?;
    let img = Image {
        width: x.len,
        height: y.len,
        data,
        source_width: img.source_width,
        source_height: img.source_height,
    };
    Ok((img, work))
}

/// One axis of `working_image`: the source window [origin, origin + window] becomes `len`
/// pixels, and the region starts at `region_start` (a whole pixel when it fits the grid).
struct WorkingAxis {
    origin: f64,
    window: f64,
    len: usize,
    region_start: f32,
    region_len: f32,
}

impl WorkingAxis {
    fn new(start: f32, len: f32, size: usize, scale: f64) -> Self {
        let (start64, len64, size64) = (f64::from(start), f64::from(len), size as f64);
        let whole = |origin: f64, n: usize| {
            // The rest of the image onto whole pixels: the region keeps all of itself.
            let k = n as f64 / (size64 - origin);
            WorkingAxis {
                origin,
                window: size64 - origin,
                len: n,
                region_start: ((start64 - origin) * k) as f32,
                region_len: (len64 * k) as f32,
            }
        };
        if !(scale.is_finite() && scale > 0.0 && scale < 1.0) {
            return whole(0.0, size);
        }
        let skip = (start64 * scale).floor();
        let origin = (start64 - skip / scale).clamp(0.0, size64);
        // Whole pixels between the origin and the image edge; the epsilon keeps a pixel that
        // f64 rounding would lose.
        let fit = ((size64 - origin) * scale + 1e-6).floor();
        if skip + len64 * scale > fit + 1e-6 {
            // The region ends in the last, partial pixel: stretch the grid a little instead of
            // cutting the region, whose size the random crops depend on.
            let n = ((size64 - origin) * scale - 1e-6).ceil().max(1.0) as usize;
            return whole(origin, n);
        }
        WorkingAxis {
            origin,
            window: (fit / scale).min(size64 - origin),
            len: (fit as usize).max(1),
            region_start: skip as f32,
            region_len: (len64 * scale) as f32,
        }
    }
}

/// Crop `region`, rotate it by `angle_deg` about its centre (positive = counter-clockwise)
/// and resize it into `out`, as one inverse-affine bilinear warp. Samples outside the image
/// repeat the edge pixel. Not antialiased: meant for small training rotations.
pub fn rotate(
    img: &Image,
    region: Region,
    angle_deg: f32,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    check_image(img)?;
    check_out(out, out_w, out_h)?;
    let (w, h) = (img.width, img.height);
    let region = fit_region(region, w as f32, h as f32);
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    let (kx, ky) = (region.w / out_w as f32, region.h / out_h as f32);
    let (cx, cy) = (region.x + region.w * 0.5, region.y + region.h * 0.5);
    // Source point of output pixel centre (u, v) from the region centre: R(-angle) * (u, v).
    // Source coordinates step in 16.16 fixed point along each output row.
    let fixed = |v: f32| (f64::from(v) * 65536.0).round() as i64;
    let (max_x, max_y) = (((w - 1) as i64) << 16, ((h - 1) as i64) << 16);
    let (dx, dy) = (fixed(kx * cos), fixed(kx * sin));
    let src = &img.data;
    for (oy, row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let v = (oy as f32 + 0.5 - out_h as f32 * 0.5) * ky;
        let u0 = (0.5 - out_w as f32 * 0.5) * kx;
        // -0.5 moves from continuous coordinates to pixel-centre indices.
        let mut sx = fixed(cx + u0 * cos - v * sin - 0.5);
        let mut sy = fixed(cy + u0 * sin + v * cos - 0.5);
        for px in row.chunks_exact_mut(3) {
            let (fx, fy) = (sx.clamp(0, max_x), sy.clamp(0, max_y));
            let (x0, y0) = ((fx >> 16) as usize, (fy >> 16) as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (ax, ay) = (((fx >> 8) & 0xFF) as u32, ((fy >> 8) & 0xFF) as u32);
            let (i00, i01) = ((y0 * w + x0) * 3, (y0 * w + x1) * 3);
            let (i10, i11) = ((y1 * w + x0) * 3, (y1 * w + x1) * 3);
            for c in 0..3 {
                let top = u32::from(src[i00 + c]) * (256 - ax) + u32::from(src[i01 + c]) * ax;
                let bot = u32::from(src[i10 + c]) * (256 - ax) + u32::from(src[i11 + c]) * ax;
                px[c] = ((top * (256 - ay) + bot * ay + (1 << 15)) >> 16) as u8;
            }
            sx += dx;
            sy += dy;
        }
    }
    Ok(())
}

/// Mirror an RGB8 w x h buffer left-right.
pub fn hflip_in_place(buf: &mut [u8], w: usize, h: usize) -> Result<()> {
    check_out(buf, w, h)?;
    for row in buf.chunks_exact_mut(w * 3) {
        // Reversing the bytes reverses the pixels and turns RGB into BGR; swap back.
        row.reverse();
        for px in row.chunks_exact_mut(3) {
            px.swap(0, 2);
        }
    }
    Ok(())
}

/// Apply colour operations to a buffer of RGB8 pixels, taken as one row (a trailing partial
/// pixel is left as it is).
fn recolor(buf: &mut [u8], ops: ColorOps) -> Result<()> {
    let n = buf.len() / 3;
    color::apply_in_place(&mut buf[..n * 3], n, 1, &ops)
}

/// dst = (src - mean[c]) / std[c] per channel of RGB8 HWC `src`, into float32 HWC `dst`.
pub fn normalize_into(src: &[u8], dst: &mut [f32], mean: [f32; 3], std: [f32; 3]) -> Result<()> {
    if src.len() != dst.len() || src.len() % 3 != 0 {
        return Err(Error::Invalid(format!(
            "normalize: {} bytes into {} floats, expected equal lengths of whole pixels",
            src.len(),
            dst.len()
        )));
    }
    let n = src.len() / 3;
    color::apply(
        View::whole(src, n, 1)?,
        &ColorOps::IDENTITY,
        Output::F32 { out: dst, mean, std },
    )
}

/// Multiply every value by `factor` (torchvision adjust_brightness).
pub fn adjust_brightness(buf: &mut [u8], factor: f32) -> Result<()> {
    recolor(
        buf,
        ColorOps {
            brightness: factor,
            ..ColorOps::IDENTITY
        },
    )
}

/// Blend with the mean grey of the image (torchvision adjust_contrast).
pub fn adjust_contrast(buf: &mut [u8], factor: f32) -> Result<()> {
    recolor(
        buf,
        ColorOps {
            contrast: factor,
            ..ColorOps::IDENTITY
        },
    )
}

/// Blend each pixel with its own grey (torchvision adjust_saturation).
pub fn adjust_saturation(buf: &mut [u8], factor: f32) -> Result<()> {
    recolor(
        buf,
        ColorOps {
            saturation: factor,
            ..ColorOps::IDENTITY
        },
    )
}

/// Shift hue by `shift` turns (in [-0.5, 0.5]) as a rotation of the chroma plane in YIQ
/// space: close to (not exactly) torchvision's HSV hue shift.
pub fn adjust_hue(buf: &mut [u8], shift: f32) -> Result<()> {
    recolor(
        buf,
        ColorOps {
            hue: shift,
            ..ColorOps::IDENTITY
        },
    )
}

/// Where a mask sits in a face-framed output, as fractions (x0, y0, x1, y1): with a face crop
/// it is the lower part of the face box, with the default centre crop the lower middle.
pub const MASK_BAND: (f32, f32, f32, f32) = (0.15, 0.4, 0.85, 0.92);
/// The core of the band, just below the nose, whose non-skin colour is taken for the mask's.
const MASK_CORE: (f32, f32, f32, f32) = (0.4, 0.5, 0.6, 0.62);

/// A fractional (x0, y0, x1, y1) rectangle in whole pixels of a w x h output (never empty
/// when w, h > 0).
fn frac_rect(w: usize, h: usize, (fx0, fy0, fx1, fy1): (f32, f32, f32, f32)) -> Rect {
    let x0 = ((w as f32 * fx0) as usize).min(w - 1);
    let y0 = ((h as f32 * fy0) as usize).min(h - 1);
    let x1 = ((w as f32 * fx1).ceil() as usize).clamp(x0 + 1, w);
    let y1 = ((h as f32 * fy1).ceil() as usize).clamp(y0 + 1, h);
    Rect {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    }
}

/// `MASK_BAND` in whole pixels of a w x h output.
pub fn mask_band(w: usize, h: usize) -> Rect {
    frac_rect(w, h, MASK_BAND)
}

/// Skin by the RGB rule of Kovac et al. (2003, daylight); crude, but masks are rarely
/// skin-coloured and a miss only weakens the change.
#[inline]
pub fn is_skin(r: u8, g: u8, b: u8) -> bool {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let spread = r.max(g).max(b) - r.min(g).min(b);
    r > 95 && g > 40 && b > 20 && spread > 15 && (r - g).abs() > 15 && r > g && r > b
}

/// Recolour and pattern the mask so a model cannot key on one mask colour. The mask colour
/// is the per-channel median of the non-skin pixels of `MASK_CORE`; a pixel of `MASK_BAND`
/// counts as mask by how close it is to that colour (full weight within RGB distance 25,
/// none past 50), not at all when skin-like, and only when connected to the core. Mask
/// pixels turn hue by up to `strength` / 2 turns, then blend in, with opacity up to
/// `strength`, a random colour shaded by the pixel's own luma (folds stay visible) through one
/// random pattern: solid, stripes (any angle), dots, checks or blocky noise. Nothing outside
/// the band changes; an image with no non-skin core changes nowhere. Draws a fixed number of
/// values from `rng`.
pub fn mask_appearance(buf: &mut [u8], w: usize, h: usize, strength: f32, rng: &mut Rng) -> Result<()> {
    check_out(buf, w, h)?; // before drawing: a refused buffer leaves the stream alone
    MaskPattern::draw(strength, rng).apply(buf, w, h)
}

/// The random draws of `mask_appearance`, taken from the stream before any pixel is read.
#[derive(Clone, Copy, Debug)]
pub struct MaskPattern {
    hue: [[f32; 3]; 3],
    kind: u64,
    period_frac: f32,
    sin: f32,
    cos: f32,
    colour: [f32; 3],
    alpha: f32,
    noise_seed: u64,
}

impl MaskPattern {
    pub fn draw(strength: f32, rng: &mut Rng) -> Self {
        let hue = hue_matrix(rng.uniform(-0.5, 0.5) * strength);
        let kind = rng.below(5);
        let period_frac = rng.uniform(0.06, 0.18);
        let (sin, cos) = rng.uniform(0.0, std::f32::consts::PI).sin_cos();
        let colour = [
            rng.uniform(0.0, 255.0),
            rng.uniform(0.0, 255.0),
            rng.uniform(0.0, 255.0),
        ];
        let alpha = strength * rng.uniform(0.5, 1.0);
        let noise_seed = rng.next_u64();
        MaskPattern {
            hue,
            kind,
            period_frac,
            sin,
            cos,
            colour,
            alpha,
            noise_seed,
        }
    }

    /// Recolour the mask of the RGB8 w x h image `buf` (see `mask_appearance`).
    pub fn apply(&self, buf: &mut [u8], w: usize, h: usize) -> Result<()> {
        check_out(buf, w, h)?;
        let band = mask_band(w, h);
        let period = (band.w as f32 * self.period_frac).max(2.0);
        let MaskPattern {
            hue,
            kind,
            sin,
            cos,
            colour,
            alpha,
            noise_seed,
            ..
        } = *self;
        let core = frac_rect(w, h, MASK_CORE);
        let mut samples: [Vec<u8>; 3] = Default::default();
        for y in core.y..core.y + core.h {
            for px in buf[(y * w + core.x) * 3..(y * w + core.x + core.w) * 3].chunks_exact(3) {
                if !is_skin(px[0], px[1], px[2]) {
                    for (s, &v) in samples.iter_mut().zip(px) {
                        s.push(v);
                    }
                }
            }
        }
        if samples[0].is_empty() {
            return Ok(());
        }
        let reference = samples.map(|mut s| {
            let mid = s.len() / 2;
            f32::from(*s.select_nth_unstable(mid).1)
        });
        let pattern = |x: f32, y: f32| -> f32 {
            let cell = |v: f32| (v / period).floor() as i64;
            match kind {
                0 => 1.0,
                1 => f32::from(((x * cos + y * sin) / period).rem_euclid(1.0) < 0.5),
                2 => {
                    let (fx, fy) = (
                        (x / period).rem_euclid(1.0) - 0.5,
                        (y / period).rem_euclid(1.0) - 0.5,
                    );
                    f32::from(fx * fx + fy * fy < 0.09)
                }
                3 => f32::from((cell(x) + cell(y)).rem_euclid(2) == 0),
                _ => {
                    let key =
                        (cell(2.0 * x) as u64).wrapping_mul(0x9E37_79B9) ^ ((cell(2.0 * y) as u64) << 32);
                    (crate::rng::mix64(noise_seed ^ key) >> 40) as f32 / (1u64 << 24) as f32
                }
            }
        };
        let weight_of = |px: &[u8]| {
            if is_skin(px[0], px[1], px[2]) {
                return 0.0;
            }
            let dist = px
                .iter()
                .zip(&reference)
                .map(|(&a, b)| (f32::from(a) - b).powi(2))
                .sum::<f32>();
            clampf((50.0 - dist.sqrt()) / 25.0, 0.0, 1.0)
        };
        // Flood fill from the core so look-alike background not touching the mask stays.
        let (bw, bh) = (band.w, band.h);
        let mut weights = vec![-1.0f32; bw * bh];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for y in core.y.max(band.y)..(core.y + core.h).min(band.y + bh) {
            for x in core.x.max(band.x)..(core.x + core.w).min(band.x + bw) {
                stack.push((x - band.x, y - band.y));
            }
        }
        while let Some((bx, by)) = stack.pop() {
            if weights[by * bw + bx] >= 0.0 {
                continue;
            }
            let i = ((band.y + by) * w + band.x + bx) * 3;
            let wt = weight_of(&buf[i..i + 3]);
            weights[by * bw + bx] = wt;
            if wt > 0.0 {
                if bx > 0 {
                    stack.push((bx - 1, by));
                }
                if bx + 1 < bw {
                    stack.push((bx + 1, by));
                }
                if by > 0 {
                    stack.push((bx, by - 1));
                }
                if by + 1 < bh {
                    stack.push((bx, by + 1));
                }
            }
        }
        for by in 0..bh {
            for bx in 0..bw {
                let weight = weights[by * bw + bx];
                if weight <= 0.0 {
                    continue;
                }
                let i = ((band.y + by) * w + band.x + bx) * 3;
                let px = &mut buf[i..i + 3];
                let rgb = [f32::from(px[0]), f32::from(px[1]), f32::from(px[2])];
                let luma = LUMA[0] * rgb[0] + LUMA[1] * rgb[1] + LUMA[2] * rgb[2];
                let shade = clampf(luma / 160.0, 0.2, 1.5);
                let a = alpha * pattern(bx as f32, by as f32);
                for (c, v) in px.iter_mut().enumerate() {
                    let turned = hue[c][0] * rgb[0] + hue[c][1] * rgb[1] + hue[c][2] * rgb[2];
                    let changed = turned * (1.0 - a) + colour[c] * shade * a;
                    *v = clampf((rgb[c] + weight * (changed - rgb[c])).round(), 0.0, 255.0) as u8;
                }
            }
        }
        Ok(())
    }
}

/// Replace every pixel by its luma, so r = g = b.
pub fn to_grayscale(buf: &mut [u8]) -> Result<()> {
    recolor(
        buf,
        ColorOps {
            grayscale: true,
            ..ColorOps::IDENTITY
        },
    )
}

/// Add zero-mean noise of standard deviation `std` (pixel units) to every value. Each
/// sample is a sum of four uniform bytes (Irwin-Hall), close to Gaussian within 3.5 sigma,
/// mapped through a table: far cheaper than Box-Muller per value.
pub fn add_noise(buf: &mut [u8], std: f32, rng: &mut Rng) {
    if std <= 0.0 || std.is_nan() {
        return;
    }
    // A sum of 4 uniform bytes has mean 510 and standard deviation sqrt(4 * (256^2 - 1) / 12).
    let sigma = (4.0f32 * 65535.0 / 12.0).sqrt();
    let table: Vec<i16> = (0..=1020)
        .map(|k| ((k as f32 - 510.0) * std / sigma).round().clamp(-255.0, 255.0) as i16)
        .collect();
    let mut chunks = buf.chunks_exact_mut(2);
    let sample = |bits: u64| (bits & 0xFF) + (bits >> 8 & 0xFF) + (bits >> 16 & 0xFF) + (bits >> 24 & 0xFF);
    let add = |v: &mut u8, k: u64| *v = (i16::from(*v) + table[k as usize]).clamp(0, 255) as u8;
    for pair in &mut chunks {
        let bits = rng.next_u64();
        add(&mut pair[0], sample(bits));
        add(&mut pair[1], sample(bits >> 32));
    }
    if let [last] = chunks.into_remainder() {
        add(last, sample(rng.next_u64()));
    }
}

/// torchvision's RandomErasing rectangle for a w x h image: 10 tries at an area fraction
/// in `scale` and log-uniform aspect ratio in `ratio`; None when no try fits.
pub fn random_erase_rect(
    w: usize,
    h: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut Rng,
) -> Option<Rect> {
    let area = (w * h) as f32;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let eh = (target * aspect).sqrt().round() as usize;
        let ew = (target / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        let y = rng.below((h - eh + 1) as u64) as usize;
        let x = rng.below((w - ew + 1) as u64) as usize;
        return Some(Rect { x, y, w: ew, h: eh });
    }
    None
}

/// Fill `rect` (clamped to the image) of an RGB8 w x h buffer with uniform random bytes.
pub fn erase(buf: &mut [u8], w: usize, h: usize, rect: Rect, rng: &mut Rng) -> Result<()> {
    check_out(buf, w, h)?;
    let (x0, y0) = (rect.x.min(w), rect.y.min(h));
    let (x1, y1) = (
        rect.x.saturating_add(rect.w).min(w),
        rect.y.saturating_add(rect.h).min(h),
    );
    for row in buf.chunks_exact_mut(w * 3).take(y1).skip(y0) {
        for chunk in row[x0 * 3..x1 * 3].chunks_mut(8) {
            let bits = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bits[..chunk.len()]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A w x h image whose pixel (x, y) is (x, y, 7) mod 256: positions are readable back.
    fn coords(w: usize, h: usize) -> Image {
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect();
        Image::from_rgb(w, h, data).unwrap()
    }

    fn noise_image(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..w * h * 3).map(|_| rng.next_u64() as u8).collect()
    }

    #[test]
    fn hflip_twice_is_identity_and_mirrors() {
        let (w, h) = (7, 5);
        let orig = noise_image(w, h, 1);
        let mut buf = orig.clone();
        hflip_in_place(&mut buf, w, h).unwrap();
        assert_eq!(&buf[0..3], &orig[(w - 1) * 3..w * 3]);
        assert_ne!(buf, orig);
        hflip_in_place(&mut buf, w, h).unwrap();
        assert_eq!(buf, orig);
        assert!(hflip_in_place(&mut buf, w + 1, h).is_err());
    }

    #[test]
    fn eval_is_deterministic_and_equals_crop_then_resize() {
        let img = coords(120, 160);
        let cfg = AugmentConfig::preset("mask").unwrap();
        let mut a = vec![0u8; 32 * 24 * 3];
        let mut b = a.clone();
        let mut rng = Rng::new(1);
        process(&img, None, &cfg, false, &mut rng, &mut a, 32, 24).unwrap();
        // Eval draws nothing from the RNG.
        assert_eq!(rng.next_u64(), Rng::new(1).next_u64());
        process(&img, None, &cfg, false, &mut Rng::new(99), &mut b, 32, 24).unwrap();
        assert_eq!(a, b);
        let mut c = vec![0u8; 32 * 24 * 3];
        resize_into(&img, crop_region(&img, None, &cfg), &mut c, 32, 24).unwrap();
        assert_eq!(a, c);
        // Centre crop (1.0, 0.75) shifted up by 5% of the height: rows 12..132 of 160.
        let r = crop_region(&img, None, &AugmentConfig::eval());
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
        let inside = CropBox {
            x0: 20.0,
            y0: 30.0,
            x1: 60.0,
            y1: 50.0,
        };
        let mut out = vec![0u8; 16 * 8 * 3];
        process(
            &img,
            Some(inside),
            &AugmentConfig::eval(),
            false,
            &mut Rng::new(0),
            &mut out,
            16,
            8,
        )
        .unwrap();
        for px in out.chunks_exact(3) {
            assert!((20..60).contains(&px[0]) && (30..50).contains(&px[1]), "{px:?}");
        }
        // Partly outside: clamped to the image.
        let cfg = AugmentConfig::eval();
        let r = crop_region(
            &img,
            Some(CropBox {
                x0: -10.0,
                y0: 90.0,
                x1: 30.0,
                y1: 130.0,
            }),
            &cfg,
        );
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
            CropBox {
                x0: 200.0,
                y0: 0.0,
                x1: 300.0,
                y1: 10.0,
            },
            CropBox {
                x0: 50.0,
                y0: 50.0,
                x1: 40.0,
                y1: 60.0,
            },
            CropBox {
                x0: f32::NAN,
                y0: 0.0,
                x1: 10.0,
                y1: 10.0,
            },
        ] {
            assert_eq!(crop_region(&img, Some(b), &cfg), centre, "{b:?}");
        }
        // A DCT-scaled image maps source coordinates onto its own.
        let small = Image {
            source_width: 400,
            source_height: 400,
            ..img.clone()
        };
        let r = crop_region(
            &small,
            Some(CropBox {
                x0: 40.0,
                y0: 80.0,
                x1: 240.0,
                y1: 400.0,
            }),
            &cfg,
        );
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

    #[test]
    fn train_crops_stay_inside_the_box() {
        let img = coords(200, 200);
        let cfg = AugmentConfig {
            rotate_p: 0.0,
            jitter_p: 0.0,
            noise_p: 0.0,
            erase_p: 0.0,
            grayscale_p: 0.0,
            mask_aug_p: 0.0,
            rrc_p: 1.0,
            ..AugmentConfig::preset("mask").unwrap()
        };
        let b = CropBox {
            x0: 40.0,
            y0: 60.0,
            x1: 160.0,
            y1: 180.0,
        };
        let mut out = vec![0u8; 24 * 24 * 3];
        for seed in 0..50 {
            process(&img, Some(b), &cfg, true, &mut Rng::new(seed), &mut out, 24, 24).unwrap();
            for px in out.chunks_exact(3) {
                assert!((40..160).contains(&px[0]) && (60..180).contains(&px[1]), "{px:?}");
            }
        }
    }

    #[test]
    fn jitter_with_unit_factors_is_identity() {
        let orig = noise_image(16, 16, 3);
        let mut buf = orig.clone();
        adjust_brightness(&mut buf, 1.0).unwrap();
        adjust_contrast(&mut buf, 1.0).unwrap();
        adjust_saturation(&mut buf, 1.0).unwrap();
        adjust_hue(&mut buf, 0.0).unwrap();
        assert_eq!(buf, orig);
    }

    #[test]
    fn colour_ops_do_what_they_say() {
        let mut buf = vec![100u8, 150, 200, 10, 20, 30];
        adjust_brightness(&mut buf, 0.5).unwrap();
        assert_eq!(buf, vec![50, 75, 100, 5, 10, 15]);
        adjust_brightness(&mut buf, 0.0).unwrap();
        assert!(buf.iter().all(|&v| v == 0));
        let mut bright = vec![200u8; 30];
        adjust_brightness(&mut bright, 2.0).unwrap();
        assert!(bright.iter().all(|&v| v == 255));
        // Contrast 0 gives the mean grey everywhere.
        let mut c = vec![0u8, 0, 0, 200, 200, 200];
        adjust_contrast(&mut c, 0.0).unwrap();
        assert_eq!(c, vec![100; 6]);
        // Saturation 0 is grayscale.
        let mut s = noise_image(8, 8, 4);
        let mut g = s.clone();
        adjust_saturation(&mut s, 0.0).unwrap();
        to_grayscale(&mut g).unwrap();
        assert_eq!(s, g);
        assert!(g.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        // A third of a turn takes red to green and green to blue; half a turn keeps grey.
        let mut h = vec![255u8, 0, 0, 0, 255, 0, 128, 128, 128];
        adjust_hue(&mut h, 1.0 / 3.0).unwrap();
        assert!(h[1] > h[0] && h[1] > h[2], "red -> {:?}", &h[0..3]);
        assert!(h[5] > h[3] && h[5] > h[4], "green -> {:?}", &h[3..6]);
        assert!(
            h[6..9].iter().all(|&v| v.abs_diff(128) <= 1),
            "grey -> {:?}",
            &h[6..9]
        );
    }

    #[test]
    fn brightness_factors_stay_in_range() {
        let img = Image::from_rgb(8, 8, vec![100; 8 * 8 * 3]).unwrap();
        let cfg = AugmentConfig {
            jitter_p: 1.0,
            brightness: 0.4,
            ..AugmentConfig::eval()
        };
        let mut out = vec![0u8; 8 * 8 * 3];
        let (mut lo, mut hi) = (255u8, 0u8);
        for seed in 0..300 {
            process(&img, None, &cfg, true, &mut Rng::new(seed), &mut out, 8, 8).unwrap();
            assert!(out.iter().all(|&v| v == out[0]));
            lo = lo.min(out[0]);
            hi = hi.max(out[0]);
        }
        // factor in [0.6, 1.4]: 100 -> [60, 140], and the draws reach near both ends.
        assert!((60..=65).contains(&lo) && (135..=140).contains(&hi), "{lo}..{hi}");
    }

    #[test]
    fn erase_fills_only_its_rectangle() {
        let (w, h) = (20, 10);
        let mut buf = vec![0u8; w * h * 3];
        let rect = Rect {
            x: 3,
            y: 2,
            w: 5,
            h: 4,
        };
        erase(&mut buf, w, h, rect, &mut Rng::new(1)).unwrap();
        let mut changed = 0;
        for y in 0..h {
            for x in 0..w {
                let inside = (3..8).contains(&x) && (2..6).contains(&y);
                let px = &buf[(y * w + x) * 3..(y * w + x) * 3 + 3];
                if !inside {
                    assert_eq!(px, &[0, 0, 0], "({x}, {y})");
                } else if px != [0, 0, 0] {
                    changed += 1;
                }
            }
        }
        assert!(changed >= 18, "{changed} of 20 pixels filled");
        // Rectangles past the edge are clamped.
        erase(
            &mut buf,
            w,
            h,
            Rect {
                x: 18,
                y: 8,
                w: 10,
                h: 10,
            },
            &mut Rng::new(2),
        )
        .unwrap();
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            if let Some(r) = random_erase_rect(w, h, (0.02, 0.33), (0.3, 3.3), &mut rng) {
                assert!(r.x + r.w <= w && r.y + r.h <= h && r.w > 0 && r.h > 0, "{r:?}");
            }
        }
    }

    #[test]
    fn noise_has_the_requested_spread() {
        let mut buf = vec![128u8; 30_001];
        add_noise(&mut buf, 10.0, &mut Rng::new(5));
        let n = buf.len() as f64;
        let mean = buf.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = buf.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 128.0).abs() < 0.3, "{mean}");
        assert!((var.sqrt() - 10.0).abs() < 0.3, "{}", var.sqrt());
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
        let run = |seed: u64| {
            let mut out = vec![0u8; 32 * 32 * 3];
            process(
                &img,
                None,
                &cfg,
                true,
                &mut Rng::derive(&[seed, 1, 2]),
                &mut out,
                32,
                32,
            )
            .unwrap();
            out
        };
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
        assert!(matches!(
            process(&img, None, &cfg, false, &mut rng, &mut out, 5, 5),
            Err(Error::Invalid(_))
        ));
        let mut out = vec![0u8; 0];
        assert!(process(&img, None, &cfg, true, &mut rng, &mut out, 0, 5).is_err());
        let bad = Image {
            data: vec![0; 10],
            ..coords(10, 10)
        };
        let mut out = vec![0u8; 5 * 5 * 3];
        assert!(process(&bad, None, &cfg, false, &mut rng, &mut out, 5, 5).is_err());
        assert!(rotate(&img, crop_region(&img, None, &cfg), 5.0, &mut out[1..], 5, 5).is_err());
    }

    #[test]
    fn rotation_warp_matches_resize_at_zero_and_turns_the_right_way() {
        // Upscaling, where the bilinear resize needs no antialiasing: the two agree.
        let img = Image::from_rgb(16, 16, noise_image(16, 16, 2)).unwrap();
        let region = Region {
            x: 2.0,
            y: 3.0,
            w: 10.0,
            h: 8.0,
        };
        let (mut a, mut b) = (vec![0u8; 40 * 32 * 3], vec![0u8; 40 * 32 * 3]);
        rotate(&img, region, 0.0, &mut a, 40, 32).unwrap();
        resize_into(&img, region, &mut b, 40, 32).unwrap();
        let mad = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>()
            / a.len() as f64;
        assert!(mad < 2.0, "{mad}");
        // 90 degrees counter-clockwise: the output's top-left comes from the source's top-right.
        let img = coords(9, 9);
        let whole = Region {
            x: 0.0,
            y: 0.0,
            w: 9.0,
            h: 9.0,
        };
        let mut out = vec![0u8; 9 * 9 * 3];
        rotate(&img, whole, 90.0, &mut out, 9, 9).unwrap();
        assert_eq!(&out[0..2], &[8, 0]);
    }

    #[test]
    fn presets_validate_and_unknown_is_an_error() {
        for name in ["none", "light", "mask", "gender", "age"] {
            let cfg = AugmentConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            assert!(name == "none" || cfg.hflip_p == 0.5);
        }
        assert!(AugmentConfig::preset("heavy").is_err());
        let bad = AugmentConfig {
            hue: 0.7,
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let bad = AugmentConfig {
            rrc_scale: (0.9, 0.5),
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let bad = AugmentConfig {
            hflip_p: f32::NAN,
            ..AugmentConfig::eval()
        };
        assert!(bad.validate().is_err());
        let eval = AugmentConfig::eval();
        assert_eq!(AugmentConfig::preset("none").unwrap(), eval);
    }

    #[test]
    fn mask_appearance_changes_only_the_band_and_is_deterministic() {
        let (w, h) = (40, 50);
        // Blue "mask" everywhere: never skin, so every band pixel may change.
        let blue: Vec<u8> = (0..w * h).flat_map(|i| [20, 40, 180 + (i % 50) as u8]).collect();
        let band = mask_band(w, h);
        let mut changed_any = false;
        for seed in 0..20 {
            let mut buf = blue.clone();
            mask_appearance(&mut buf, w, h, 1.0, &mut Rng::new(seed)).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let i = (y * w + x) * 3;
                    let inside =
                        (band.x..band.x + band.w).contains(&x) && (band.y..band.y + band.h).contains(&y);
                    if !inside {
                        assert_eq!(buf[i..i + 3], blue[i..i + 3], "seed {seed} ({x}, {y})");
                    } else if buf[i..i + 3] != blue[i..i + 3] {
                        changed_any = true;
                    }
                }
            }
            let mut again = blue.clone();
            mask_appearance(&mut again, w, h, 1.0, &mut Rng::new(seed)).unwrap();
            assert_eq!(buf, again);
        }
        assert!(changed_any);
        // Skin pixels are left alone.
        let skin = [200u8, 150, 120].repeat(w * h);
        let mut buf = skin.clone();
        mask_appearance(&mut buf, w, h, 1.0, &mut Rng::new(3)).unwrap();
        assert_eq!(buf, skin);
        assert!(mask_appearance(&mut buf[1..], w, h, 1.0, &mut Rng::new(3)).is_err());
        // The band of tiny outputs is never empty or out of bounds.
        for (w, h) in [(1, 1), (2, 3), (224, 224)] {
            let r = mask_band(w, h);
            assert!(r.w > 0 && r.h > 0 && r.x + r.w <= w && r.y + r.h <= h, "{r:?}");
        }
    }

    #[test]
    fn mask_aug_off_is_identity_and_on_is_seeded() {
        let img = Image::from_rgb(64, 80, noise_image(64, 80, 11)).unwrap();
        let run = |cfg: &AugmentConfig, seed: u64| {
            let mut out = vec![0u8; 32 * 32 * 3];
            process(&img, None, cfg, true, &mut Rng::new(seed), &mut out, 32, 32).unwrap();
            out
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

    #[test]
    fn resize_image_keeps_the_source_size() {
        let img = Image {
            source_width: 300,
            source_height: 400,
            ..coords(30, 40)
        };
        let small = resize_image(&img, 15, 20).unwrap();
        assert_eq!(
            (small.width, small.height, small.source_width, small.source_height),
            (15, 20, 300, 400)
        );
        assert!(resize_image(&img, 0, 20).is_err());
    }

    #[test]
    fn normalize_matches_the_formula_including_the_tail() {
        let src: Vec<u8> = (0..(31 * 3)).map(|i| (i * 37 % 256) as u8).collect();
        let mut dst = vec![0f32; src.len()];
        let (mean, std) = ([10.0, 20.0, 30.0], [2.0, 4.0, 8.0]);
        normalize_into(&src, &mut dst, mean, std).unwrap();
        for (i, (&s, &d)) in src.iter().zip(&dst).enumerate() {
            let want = (f32::from(s) - mean[i % 3]) / std[i % 3];
            assert!((d - want).abs() < 1e-4, "{i}: {d} vs {want}");
        }
        assert!(normalize_into(&src, &mut dst[1..], mean, std).is_err());
    }

    /// The cache's working image at the output's scale holds the crop on the pixel grid, so
    /// `process_region` copies exactly what a direct resize of the crop gives.
    #[test]
    fn working_image_at_the_output_scale_copies_the_direct_resize() {
        let img = Image::from_rgb(301, 411, noise_image(301, 411, 4)).unwrap();
        let cfg = AugmentConfig::eval();
        for (out_w, out_h) in [(64, 48), (100, 100), (224, 224), (37, 91)] {
            let region = crop_region(&img, None, &cfg);
            let mut direct = vec![0u8; out_w * out_h * 3];
            resize_into(&img, region, &mut direct, out_w, out_h).unwrap();
            let scale = (
                out_w as f64 / f64::from(region.w),
                out_h as f64 / f64::from(region.h),
            );
            let (work, at) = working_image(img.clone(), region, scale).unwrap();
            assert!(
                copy_offset(&work, at, out_w, out_h).is_some(),
                "{at:?} in {work:?}"
            );
            let mut copied = vec![0u8; direct.len()];
            let target = Target::U8(&mut copied);
            process_region(&work, at, &cfg, false, &mut Rng::new(0), target, out_w, out_h).unwrap();
            let worst = direct.iter().zip(&copied).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst <= Some(1), "{out_w}x{out_h}: off by {worst:?}");
        }
    }

    /// A working image keeps all of the crop region (random crops depend on its size) and
    /// maps it in proportion.
    #[test]
    fn working_image_never_cuts_the_region() {
        let img = coords(203, 157);
        let mut rng = Rng::new(8);
        for _ in 0..500 {
            let w = rng.uniform(1.0, 203.0);
            let h = rng.uniform(1.0, 157.0);
            let region = Region {
                x: rng.uniform(0.0, 203.0 - w),
                y: rng.uniform(0.0, 157.0 - h),
                w,
                h,
            };
            let scale = (rng.uniform(0.05, 1.2) as f64, rng.uniform(0.05, 1.2) as f64);
            let (work, at) = working_image(img.clone(), region, scale).unwrap();
            assert!(at.x >= 0.0 && at.y >= 0.0, "{at:?}");
            assert!(
                at.x + at.w <= work.width as f32 + 1e-3,
                "{region:?} {scale:?} -> {at:?} {work:?}"
            );
            assert!(
                at.y + at.h <= work.height as f32 + 1e-3,
                "{region:?} {scale:?} -> {at:?} {work:?}"
            );
            // The scale asked for, or a grid stretched by less than one pixel over the rest.
            let sx = scale.0.min(1.0) as f32;
            let stretch = 1.0 / (203.0 - 1.0 / sx);
            assert!(
                (at.w / region.w - sx).abs() <= stretch + 1e-4,
                "{region:?} {scale:?} -> {at:?}"
            );
        }
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
        let mut out = vec![0u8; 32 * 32 * 3];
        for h in 10..700 {
            let img = Image::from_rgb(64, h, vec![7; 64 * h * 3]).unwrap();
            let mut rng = Rng::new(0);
            process(&img, None, &cfg, false, &mut rng, &mut out, 32, 32)
                .unwrap_or_else(|e| panic!("height {h}: {e}"));
        }
    }
}
