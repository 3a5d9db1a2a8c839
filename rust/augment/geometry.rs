//! Where pixels come from: crop regions, random resized crops, resize, rotation, flip and
//! the working image of a cache.

use super::{check_image, check_out, clampf, AugmentConfig};
use crate::decode::Image;
use crate::error::{Error, Result};
use crate::rng::Rng;
use fast_image_resize as fr;
use std::cell::RefCell;

/// A crop box in SOURCE pixel coordinates (`Image::source_width/height`, i.e. full scale
/// after EXIF orientation).
///
/// `angle` None, a plain box: parts outside the image are clamped away; a box with less than
/// one source pixel of width or height left (including reversed or NaN boxes) is degenerate
/// and falls back to the centre crop of the config.
///
/// `angle` Some(degrees), a turned box: the rectangle (x0, y0)-(x1, y1) turned about its
/// centre by `angle`, its x axis towards +y (clockwise as seen; `fastmask.faces.alignment`'s
/// convention, so the eye angle of a face levels its eyes). It is never clamped: where it
/// leaves the image the edge pixels repeat. `check` says whether its values can be used; one
/// that cannot falls back to the centre crop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub angle: Option<f32>,
}

/// How far (source pixels) a turned box may reach, and how far (degrees) it may turn.
pub const MAX_TURNED_COORD: f32 = 1e6;
pub const MAX_TURN_DEG: f32 = 360.0;

impl CropBox {
    pub fn plain(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        CropBox {
            x0,
            y0,
            x1,
            y1,
            angle: None,
        }
    }

    pub fn turned(x0: f32, y0: f32, x1: f32, y1: f32, angle: f32) -> Self {
        CropBox {
            angle: Some(angle),
            ..CropBox::plain(x0, y0, x1, y1)
        }
    }

    /// A turned box must be finite, non-empty, within `MAX_TURNED_COORD` pixels and
    /// `MAX_TURN_DEG` degrees; a plain box always passes (a degenerate one means the centre
    /// crop, see above).
    pub fn check(&self) -> Result<()> {
        let Some(angle) = self.angle else {
            return Ok(());
        };
        let coords = [self.x0, self.y0, self.x1, self.y1];
        if !coords
            .iter()
            .all(|v| v.is_finite() && v.abs() <= MAX_TURNED_COORD)
        {
            return Err(Error::Invalid(format!(
                "turned crop box {coords:?} must have finite coordinates within \u{b1}{MAX_TURNED_COORD} pixels"
            )));
        }
        if !(self.x1 > self.x0 && self.y1 > self.y0) {
            return Err(Error::Invalid(format!(
                "turned crop box {coords:?} is empty: needs x1 > x0 and y1 > y0"
            )));
        }
        if !(angle.is_finite() && angle.abs() <= MAX_TURN_DEG) {
            return Err(Error::Invalid(format!(
                "turned crop box angle {angle} must be finite and within \u{b1}{MAX_TURN_DEG} degrees"
            )));
        }
        Ok(())
    }
}

/// The deterministic crop of an image, in its decoded pixel coordinates: what `crop_region`
/// gives and `process` takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crop {
    /// The rectangle; for a turned crop, in its own frame (before turning about its centre).
    pub region: Region,
    /// None: axis-aligned, kept inside the image. Some(degrees): turned about the region's
    /// centre as a turned `CropBox`, never clamped.
    pub angle: Option<f32>,
}

impl From<Region> for Crop {
    fn from(region: Region) -> Self {
        Crop { region, angle: None }
    }
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

/// The deterministic crop of `img`, in its decoded pixel coordinates: the crop box (a plain
/// one clamped, a turned one as it is) or, without one or when it is degenerate, the centre
/// crop of `cfg`.
pub fn crop_region(img: &Image, crop: Option<CropBox>, cfg: &AugmentConfig) -> Crop {
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
    if let Some(b) = crop.filter(|b| b.angle.is_some() && b.check().is_ok()) {
        return Crop {
            region: Region {
                x: b.x0 * iw / sw,
                y: b.y0 * ih / sh,
                w: (b.x1 - b.x0) * iw / sw,
                h: (b.y1 - b.y0) * ih / sh,
            },
            angle: b.angle,
        };
    }
    let boxed = crop
        .filter(|b| b.angle.is_none() && ![b.x0, b.y0, b.x1, b.y1].iter().any(|v| v.is_nan()))
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
    Crop::from(fit_region(
        Region {
            x: r.x * iw / sw,
            y: r.y * ih / sh,
            w: r.w * iw / sw,
            h: r.h * ih / sh,
        },
        iw,
        ih,
    ))
}

/// Keep a region inside a w x h image and at least one pixel on each side.
pub(super) fn fit_region(r: Region, w: f32, h: f32) -> Region {
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
pub(super) fn copy_offset(img: &Image, region: Region, out_w: usize, out_h: usize) -> Option<(usize, usize)> {
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
pub(super) fn copy_region(img: &Image, x: usize, y: usize, out: &mut [u8], out_w: usize, out_h: usize) {
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

/// A cache's working image: `img` resampled by `scale` (x, y) so that the crop's region
/// starts on a whole pixel, and the crop in the result's coordinates. With the output's scale,
/// the region is then the output size on the pixel grid, so `process` copies it, and the copy
/// is the block a direct resize of the region would give (the resizer reads past a crop
/// window, so a block of a larger resize is the same resize). An axis with scale >= 1 is kept
/// as it is. A turned crop is warped, never copied: the whole image is resized by the larger
/// of the two scales, the same on both axes so that turns stay turns.
pub fn working_image(img: Image, crop: Crop, scale: (f64, f64)) -> Result<(Image, Crop)> {
    check_image(&img)?;
    if crop.angle.is_some() {
        return turned_working_image(img, crop, scale.0.max(scale.1));
    }
    let region = crop.region;
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
        return Ok((img, work.into()));
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
    Ok((img, work.into()))
}

/// `working_image` of a turned crop: `img` resized by `scale` on both axes (kept when
/// scale >= 1) and the crop moved with it.
fn turned_working_image(img: Image, crop: Crop, scale: f64) -> Result<(Image, Crop)> {
    if !(scale.is_finite() && scale > 0.0 && scale < 1.0) {
        return Ok((img, crop));
    }
    let side = |n: usize| ((n as f64 * scale).round() as usize).clamp(1, n);
    let small = resize_image(&img, side(img.width), side(img.height))?;
    let kx = small.width as f32 / img.width as f32;
    let ky = small.height as f32 / img.height as f32;
    let r = crop.region;
    let region = Region {
        x: r.x * kx,
        y: r.y * ky,
        w: r.w * kx,
        h: r.h * ky,
    };
    Ok((small, Crop { region, ..crop }))
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

/// Crop `region` (kept inside the image), rotate it by `angle_deg` about its centre (positive
/// = counter-clockwise) and resize it into `out`, as one inverse-affine bilinear warp. Samples
/// outside the image repeat the edge pixel. Not antialiased: meant for small training
/// rotations.
pub fn rotate(
    img: &Image,
    region: Region,
    angle_deg: f32,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    check_image(img)?;
    let region = fit_region(region, img.width as f32, img.height as f32);
    warp(img, region, angle_deg, out, out_w, out_h)
}

/// The region of the image that `sub`, a region of the turned crop `whole` in its own frame,
/// covers: its centre turned by `angle_deg` about the centre of `whole`, its size kept (the
/// warp turns it by the same angle).
pub(super) fn turn_about(sub: Region, whole: Region, angle_deg: f32) -> Region {
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    let (cx, cy) = (whole.x + whole.w * 0.5, whole.y + whole.h * 0.5);
    let (u, v) = (sub.x + sub.w * 0.5 - cx, sub.y + sub.h * 0.5 - cy);
    let (x, y) = (cx + u * cos - v * sin, cy + u * sin + v * cos);
    Region {
        x: x - sub.w * 0.5,
        y: y - sub.h * 0.5,
        ..sub
    }
}

/// How far (pixels) a region given to `warp` may reach: far past any image, and small enough
/// that its 16.16 fixed-point steps cannot overflow.
const MAX_WARP_COORD: f32 = 1e8;

/// `rotate` without keeping the region inside the image: output pixel (u, v) samples the
/// source at centre + R(angle) (u, v), with `fastmask.faces.crop_matrix`'s map, bilinear;
/// samples beyond the image repeat its edge pixels (OpenCV's BORDER_REPLICATE).
pub(super) fn warp(
    img: &Image,
    region: Region,
    angle_deg: f32,
    out: &mut [u8],
    out_w: usize,
    out_h: usize,
) -> Result<()> {
    check_image(img)?;
    check_out(out, out_w, out_h)?;
    let values = [region.x, region.y, region.w, region.h];
    if !values.iter().all(|v| v.is_finite() && v.abs() <= MAX_WARP_COORD) || !angle_deg.is_finite() {
        return Err(Error::Invalid(format!(
            "warp region {region:?} turned by {angle_deg} degrees is out of range"
        )));
    }
    let (w, h) = (img.width, img.height);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::testing::{coords, mean_abs_diff, noise_image};

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
        let mad = mean_abs_diff(&a, &b);
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
            let (work, at) = working_image(img.clone(), region.into(), scale).unwrap();
            let at = at.region;
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
}
