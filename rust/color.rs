//! The colour stage of the loader, in one pass over the image: horizontal flip, colour
//! jitter (brightness, contrast, saturation, hue), grayscale, rounding, and the output
//! conversion (uint8 in place, or float32 `(x - mean) / std` into another buffer).
//!
//! Values stay in f32 between operations and are rounded once at the end. With AVX2 (chosen
//! at run time) eight pixels at a time are de-interleaved into planar registers, transformed
//! and re-interleaved; the portable path (other CPUs, row tails) does the same on planar
//! chunks that LLVM vectorises for the target. Both do the same arithmetic in the same order
//! (no fused multiply-add, same min/max semantics), so results do not depend on the CPU.

use crate::error::{Error, Result};

/// torchvision's grayscale weights (0.299, 0.587, 0.114).
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// What the colour stage does to one sample. The identity leaves uint8 pixels unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorOps {
    /// Mirror left-right.
    pub flip: bool,
    /// torchvision adjust_brightness: x * b.
    pub brightness: f32,
    /// torchvision adjust_contrast: blend with the mean luma of the (brightness-adjusted) image.
    pub contrast: f32,
    /// torchvision adjust_saturation: blend each pixel with its own luma.
    pub saturation: f32,
    /// Hue turn in [-0.5, 0.5], as a rotation of the chroma plane in YIQ space.
    pub hue: f32,
    /// Replace every pixel by its luma.
    pub grayscale: bool,
}

impl ColorOps {
    pub const IDENTITY: ColorOps = ColorOps {
        flip: false,
        brightness: 1.0,
        contrast: 1.0,
        saturation: 1.0,
        hue: 0.0,
        grayscale: false,
    };

    pub fn is_identity(&self) -> bool {
        *self == ColorOps::IDENTITY
    }

    /// Factors must be finite and >= 0 and the hue finite: the kernels rely on every value
    /// staying inside 0..=255 between operations (see `Plan`).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Invalid(format!(
                    "colour: {name} factor {v} must be finite and >= 0"
                )));
            }
        }
        if !self.hue.is_finite() {
            return Err(Error::Invalid(format!("colour: hue {} must be finite", self.hue)));
        }
        Ok(())
    }
}

/// The per-image constants of a pass. An operation with an identity factor is skipped.
/// A blend with a factor in [0, 1] (contrast, saturation) and grayscale keep values inside
/// 0..=255 (to an ulp), so only brightness, contrast and saturation above 1 and hue clamp.
/// Every value reaching the final rounding is therefore >= 0 and below 255.5.
#[derive(Clone, Copy)]
struct Plan {
    flip: bool,
    brightness: Option<f32>,
    /// (factor, (1 - factor) * mean luma after brightness)
    contrast: Option<(f32, f32)>,
    saturation: Option<f32>,
    matrix: Option<[[f32; 3]; 3]>,
    grayscale: bool,
}

impl Plan {
    /// Any operation that can leave integer values (all but the flip).
    fn recolours(&self) -> bool {
        self.brightness.is_some()
            || self.contrast.is_some()
            || self.saturation.is_some()
            || self.matrix.is_some()
            || self.grayscale
    }
}

/// Where a row goes: uint8 interleaved, or float32 interleaved as x * scale + offset.
enum Sink<'a> {
    U8(&'a mut [u8]),
    F32 {
        out: &'a mut [f32],
        scale: [f32; 3],
        offset: [f32; 3],
    },
}

/// A w x h RGB8 region of a row-major image: `stride` bytes per row, starting at byte
/// `offset`. Lets the colour stage read a crop of a cached image without copying it.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    data: &'a [u8],
    stride: usize,
    offset: usize,
    w: usize,
    h: usize,
}

impl<'a> View<'a> {
    /// The region at pixel (x, y) of size w x h of an image `width` pixels wide.
    pub fn region(data: &'a [u8], width: usize, x: usize, y: usize, w: usize, h: usize) -> Result<Self> {
        let stride = width.checked_mul(3);
        let offset = y
            .checked_mul(width)
            .and_then(|p| p.checked_add(x))
            .and_then(|p| p.checked_mul(3));
        let end = y
            .checked_add(h)
            .and_then(|b| b.checked_mul(width))
            .and_then(|n| n.checked_mul(3));
        let fits = x.checked_add(w).is_some_and(|r| r <= width) && end.is_some_and(|n| n <= data.len());
        match (stride, offset, fits) {
            (Some(stride), Some(offset), true) => Ok(View {
                data,
                stride,
                offset,
                w,
                h,
            }),
            _ => Err(Error::Invalid(format!(
                "colour: region {w}x{h} at ({x}, {y}) is outside an image {width} wide of {} bytes",
                data.len()
            ))),
        }
    }

    /// A whole w x h image.
    pub fn whole(data: &'a [u8], w: usize, h: usize) -> Result<Self> {
        check_len(data.len(), w, h)?;
        View::region(data, w, 0, 0, w, h)
    }

    pub fn width(&self) -> usize {
        self.w
    }

    pub fn height(&self) -> usize {
        self.h
    }

    fn row(&self, y: usize) -> &'a [u8] {
        let at = self.offset + y * self.stride;
        &self.data[at..at + self.w * 3]
    }

    fn rows(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.h).map(|y| self.row(y))
    }
}

/// Where `apply` writes: uint8 HWC, or float32 HWC `(x - mean[c]) / std[c]` (0..255 units).
pub enum Output<'a> {
    U8(&'a mut [u8]),
    F32 {
        out: &'a mut [f32],
        mean: [f32; 3],
        std: [f32; 3],
    },
}

impl Output<'_> {
    /// Values it holds (bytes or floats).
    pub fn len(&self) -> usize {
        match self {
            Output::U8(o) => o.len(),
            Output::F32 { out, .. } => out.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Apply `ops` to `src` and write the w x h result to `out`; the float output holds the
/// same values as the uint8 output, normalised.
pub fn apply(src: View<'_>, ops: &ColorOps, out: Output<'_>) -> Result<()> {
    ops.validate()?;
    let len = src.w * src.h * 3;
    let have = out.len();
    if have != len {
        return Err(Error::Invalid(format!(
            "colour: output of {have} values for a {}x{} RGB image",
            src.w, src.h
        )));
    }
    if src.w == 0 || src.h == 0 {
        return Ok(());
    }
    let plan = make_plan(src, ops);
    let row = src.w * 3;
    match out {
        Output::U8(o) => {
            for (line, dst) in src.rows().zip(o.chunks_exact_mut(row)) {
                run_row(line, &plan, Sink::U8(dst));
            }
        }
        Output::F32 { out, mean, std } => {
            let scale = std.map(|s| 1.0 / s);
            let offset = [0, 1, 2].map(|c| -mean[c] / std[c]);
            for (line, dst) in src.rows().zip(out.chunks_exact_mut(row)) {
                run_row(
                    line,
                    &plan,
                    Sink::F32 {
                        out: dst,
                        scale,
                        offset,
                    },
                );
            }
        }
    }
    Ok(())
}

/// Apply `ops` to the RGB8 w x h image `buf` in place.
pub fn apply_in_place(buf: &mut [u8], w: usize, h: usize, ops: &ColorOps) -> Result<()> {
    check_len(buf.len(), w, h)?;
    ops.validate()?;
    if ops.is_identity() || w == 0 {
        return Ok(());
    }
    let plan = make_plan(View::whole(buf, w, h)?, ops);
    // A flip reads the mirrored end of the row, so each row is copied out before it is written.
    let mut row = vec![0u8; w * 3];
    for line in buf.chunks_exact_mut(w * 3) {
        row.copy_from_slice(line);
        run_row(&row, &plan, Sink::U8(line));
    }
    Ok(())
}

fn check_len(len: usize, w: usize, h: usize) -> Result<()> {
    if w.checked_mul(h).and_then(|n| n.checked_mul(3)) != Some(len) {
        return Err(Error::Invalid(format!(
            "colour: buffer of {len} bytes is not a {w}x{h} RGB image"
        )));
    }
    Ok(())
}

fn make_plan(src: View<'_>, ops: &ColorOps) -> Plan {
    let active = |f: f32| (f != 1.0).then_some(f);
    Plan {
        flip: ops.flip,
        brightness: active(ops.brightness),
        contrast: active(ops.contrast)
            .map(|c| (c, (1.0 - c) * mean_luma_after_brightness(src, ops.brightness))),
        saturation: active(ops.saturation),
        matrix: (ops.hue != 0.0).then(|| hue_matrix(ops.hue)),
        grayscale: ops.grayscale,
    }
}

#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    // Same result as x86 minps, NaN included (the second operand).
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn clip(v: f32) -> f32 {
    min(max(v, 0.0), 255.0)
}

/// One row: the AVX2 kernel takes whole blocks of 8 pixels, the scalar one the rest.
fn run_row(src: &[u8], plan: &Plan, mut sink: Sink<'_>) {
    let room = match &sink {
        Sink::U8(out) => out.len(),
        Sink::F32 { out, .. } => out.len(),
    };
    let n = src.len().min(room) / 3;
    let src = &src[..n * 3];
    let done = simd::run(src, plan, &mut sink);
    portable_row(src, plan, &mut sink, done);
}

/// A slice as whole pixels of three values (the tail that is not a whole pixel is left out).
fn triples<T>(s: &[T]) -> &[[T; 3]] {
    // SAFETY: [T; 3] has T's alignment and three times its size; len / 3 pixels fit in s.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len() / 3) }
}

fn triples_mut<T>(s: &mut [T]) -> &mut [[T; 3]] {
    // SAFETY: as in `triples`, and the result borrows s mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len() / 3) }
}

/// Pixels per chunk of the portable path: three planar arrays that stay in registers or L1.
const CHUNK: usize = 32;
type Lane = [f32; CHUNK];

/// Output pixels `from..` of a row, a chunk at a time: de-interleave into planar arrays, one
/// loop per operation, re-interleave. Plain loops over fixed-size arrays, which LLVM
/// vectorises for any target (SSE2, NEON); the same arithmetic as the AVX2 kernel.
fn portable_row(src: &[u8], plan: &Plan, sink: &mut Sink<'_>, from: usize) {
    let px = triples(src);
    let n = px.len();
    let mut i = from;
    while i < n {
        let len = CHUNK.min(n - i);
        let (mut r, mut g, mut b) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
        let lanes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
        if plan.flip {
            // Output pixels i.. come from source pixels ..n - i, mirrored.
            for (p, ((r, g), b)) in px[n - i - len..n - i].iter().rev().zip(lanes) {
                (*r, *g, *b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
            }
        } else {
            for (p, ((r, g), b)) in px[i..i + len].iter().zip(lanes) {
                (*r, *g, *b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
            }
        }
        transform_lanes(plan, &mut r, &mut g, &mut b);
        let lanes = r.iter().zip(&g).zip(&b);
        match sink {
            Sink::U8(out) => {
                let out = &mut triples_mut(out)[i..i + len];
                for (o, ((r, g), b)) in out.iter_mut().zip(lanes) {
                    *o = [*r as u8, *g as u8, *b as u8];
                }
            }
            Sink::F32 { out, scale, offset } => {
                let out = &mut triples_mut(out)[i..i + len];
                for (o, ((r, g), b)) in out.iter_mut().zip(lanes) {
                    *o = [
                        r * scale[0] + offset[0],
                        g * scale[1] + offset[1],
                        b * scale[2] + offset[2],
                    ];
                }
            }
        }
        i += len;
    }
}

#[inline(always)]
fn each(lane: &mut Lane, f: impl Fn(f32) -> f32) {
    for v in lane.iter_mut() {
        *v = f(*v);
    }
}

/// Brightness, contrast, saturation, hue, grayscale in torchvision's order, then rounding
/// half up (see `Plan` for where values are clamped).
fn transform_lanes(p: &Plan, r: &mut Lane, g: &mut Lane, b: &mut Lane) {
    if let Some(f) = p.brightness {
        for lane in [&mut *r, &mut *g, &mut *b] {
            if f > 1.0 {
                each(lane, |v| min(v * f, 255.0));
            } else {
                each(lane, |v| v * f);
            }
        }
    }
    if let Some((c, off)) = p.contrast {
        for lane in [&mut *r, &mut *g, &mut *b] {
            if c > 1.0 {
                each(lane, |v| clip(v * c + off));
            } else {
                each(lane, |v| v * c + off);
            }
        }
    }
    if let Some(s) = p.saturation {
        let mut y = [0f32; CHUNK];
        for k in 0..CHUNK {
            y[k] = (r[k] * LUMA[0] + g[k] * LUMA[1] + b[k] * LUMA[2]) * (1.0 - s);
        }
        for lane in [&mut *r, &mut *g, &mut *b] {
            for (v, y) in lane.iter_mut().zip(&y) {
                *v = if s > 1.0 { clip(*v * s + y) } else { *v * s + y };
            }
        }
    }
    if let Some(m) = p.matrix {
        for k in 0..CHUNK {
            let (x, y, z) = (r[k], g[k], b[k]);
            r[k] = clip(m[0][0] * x + m[0][1] * y + m[0][2] * z);
            g[k] = clip(m[1][0] * x + m[1][1] * y + m[1][2] * z);
            b[k] = clip(m[2][0] * x + m[2][1] * y + m[2][2] * z);
        }
    }
    if p.grayscale {
        for k in 0..CHUNK {
            let y = r[k] * LUMA[0] + g[k] * LUMA[1] + b[k] * LUMA[2];
            (r[k], g[k], b[k]) = (y, y, y);
        }
    }
    if p.recolours() {
        // Every value is >= 0 here, so truncation is floor (and needs no SSE4.1 or libm).
        for lane in [&mut *r, &mut *g, &mut *b] {
            each(lane, |v| ((v + 0.5) as i32) as f32);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The AVX2 kernel: the scalar `pixel` on eight pixels at a time.
    use super::{Plan, Sink, LUMA};
    use std::arch::x86_64::*;

    /// Writes output pixels 0..k for the largest multiple of 8 k <= n and returns k, or
    /// returns 0 (leaving the row to the portable path) without AVX2 or when the sink has
    /// less room than `src`.
    pub(super) fn run(src: &[u8], plan: &Plan, sink: &mut Sink<'_>) -> usize {
        let room = match sink {
            Sink::U8(out) => out.len(),
            Sink::F32 { out, .. } => out.len(),
        };
        if room < src.len() || !std::arch::is_x86_feature_detected!("avx2") {
            return 0;
        }
        let blocks = src.len() / 3 / 8;
        // SAFETY: AVX2 is present and the sink holds at least src.len() values (both checked
        // above); `blocks` whole blocks of 24 bytes lie in `src` and in the sink.
        unsafe { blocks_avx2(src, plan, sink, blocks) };
        blocks * 8
    }

    struct Consts {
        zero: __m256,
        c255: __m256,
        half: __m256,
        luma: [__m256; 3],
        brightness: __m256,
        contrast: __m256,
        contrast_offset: __m256,
        saturation: __m256,
        one_minus_saturation: __m256,
        matrix: [[__m256; 3]; 3],
        reverse: __m256i,
    }

    #[target_feature(enable = "avx2")]
    unsafe fn blocks_avx2(src: &[u8], plan: &Plan, sink: &mut Sink<'_>, blocks: usize) {
        let n = src.len() / 3;
        let m = plan.matrix.unwrap_or_default();
        let (c, off) = plan.contrast.unwrap_or((1.0, 0.0));
        let sat = plan.saturation.unwrap_or(1.0);
        let k = Consts {
            zero: _mm256_setzero_ps(),
            c255: _mm256_set1_ps(255.0),
            half: _mm256_set1_ps(0.5),
            luma: LUMA.map(|v| _mm256_set1_ps(v)),
            brightness: _mm256_set1_ps(plan.brightness.unwrap_or(1.0)),
            contrast: _mm256_set1_ps(c),
            contrast_offset: _mm256_set1_ps(off),
            saturation: _mm256_set1_ps(sat),
            one_minus_saturation: _mm256_set1_ps(1.0 - sat),
            matrix: m.map(|row| row.map(|v| _mm256_set1_ps(v))),
            reverse: _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0),
        };
        // Per-value scale and offset for 24 interleaved floats (8 pixels): lane j is channel
        // j % 3 of the block.
        let (scale, offset) = match sink {
            Sink::F32 { scale, offset, .. } => (*scale, *offset),
            Sink::U8(_) => ([1.0; 3], [0.0; 3]),
        };
        let pattern = |v: [f32; 3], start: usize| {
            let a: [f32; 8] = std::array::from_fn(|j| v[(start + j) % 3]);
            _mm256_loadu_ps(a.as_ptr())
        };
        let scales = [pattern(scale, 0), pattern(scale, 8), pattern(scale, 16)];
        let offsets = [pattern(offset, 0), pattern(offset, 8), pattern(offset, 16)];
        if let (Sink::F32 { out, .. }, false) = (&mut *sink, plan.flip || plan.recolours()) {
            // Plain normalisation: 24 contiguous bytes to 24 floats, no de-interleaving.
            for blk in 0..blocks {
                let (p, q) = (src.as_ptr().add(blk * 24), out.as_mut_ptr().add(blk * 24));
                let first = _mm_loadu_si128(p as *const __m128i);
                let last = _mm_loadl_epi64(p.add(16) as *const __m128i);
                for (j, v) in [first, _mm_srli_si128(first, 8), last].into_iter().enumerate() {
                    let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                    _mm256_storeu_ps(
                        q.add(8 * j),
                        _mm256_add_ps(_mm256_mul_ps(f, scales[j]), offsets[j]),
                    );
                }
            }
            return;
        }
        for blk in 0..blocks {
            let i = blk * 8;
            let from = if plan.flip { n - 8 - i } else { i };
            let [mut r, mut g, mut b] = load8(src.as_ptr().add(from * 3));
            if plan.flip {
                r = _mm256_permutevar8x32_ps(r, k.reverse);
                g = _mm256_permutevar8x32_ps(g, k.reverse);
                b = _mm256_permutevar8x32_ps(b, k.reverse);
            }
            let [r, g, b] = transform(plan, &k, [r, g, b]);
            let (first, last) = pack8(r, g, b);
            match sink {
                Sink::U8(out) => {
                    let p = out.as_mut_ptr().add(i * 3);
                    _mm_storeu_si128(p as *mut __m128i, first);
                    _mm_storel_epi64(p.add(16) as *mut __m128i, last);
                }
                Sink::F32 { out, .. } => {
                    let p = out.as_mut_ptr().add(i * 3);
                    let bytes = [first, _mm_srli_si128(first, 8), last];
                    for (j, v) in bytes.into_iter().enumerate() {
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                        let y = _mm256_add_ps(_mm256_mul_ps(f, scales[j]), offsets[j]);
                        _mm256_storeu_ps(p.add(8 * j), y);
                    }
                }
            }
        }
    }

    /// Eight RGB pixels (24 bytes at `p`) as planar f32 R, G, B.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8(p: *const u8) -> [__m256; 3] {
        let lo = _mm_loadu_si128(p as *const __m128i); // bytes 0..16
        let hi = _mm_loadl_epi64(p.add(16) as *const __m128i); // bytes 16..24
        let upper = _mm_alignr_epi8(hi, lo, 12); // bytes 12..24: pixels 4..8
        let split = _mm_setr_epi8(0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, -1, -1, -1, -1);
        let a = _mm_shuffle_epi8(lo, split); // R0-3 G0-3 B0-3 -
        let c = _mm_shuffle_epi8(upper, split); // R4-7 G4-7 B4-7 -
        let rg = _mm_unpacklo_epi32(a, c); // R0-3 R4-7 G0-3 G4-7
        let bb = _mm_unpackhi_epi32(a, c); // B0-3 B4-7 - -
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        [f(rg), f(_mm_srli_si128(rg, 8)), f(bb)]
    }

    /// Planar integral f32 in 0..=255 back to 24 interleaved bytes: (bytes 0..16, 16..24).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pack8(r: __m256, g: __m256, b: __m256) -> (__m128i, __m128i) {
        let (ri, gi, bi) = (
            _mm256_cvtps_epi32(r),
            _mm256_cvtps_epi32(g),
            _mm256_cvtps_epi32(b),
        );
        let rg = _mm256_packus_epi32(ri, gi); // per lane: R G as u16
        let bb = _mm256_packus_epi32(bi, bi);
        let bytes = _mm256_packus_epi16(rg, bb); // per lane: R0-3 G0-3 B0-3 B0-3
        let join = _mm256_setr_epi8(
            0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1,
            -1, -1, -1,
        );
        let y = _mm256_shuffle_epi8(bytes, join); // per lane: 4 RGB pixels, 4 zero bytes
        let (l0, l1) = (_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
        (_mm_or_si128(l0, _mm_slli_si128(l1, 12)), _mm_srli_si128(l1, 4))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn clip(k: &Consts, v: __m256) -> __m256 {
        _mm256_min_ps(_mm256_max_ps(v, k.zero), k.c255)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn luma(k: &Consts, r: __m256, g: __m256, b: __m256) -> __m256 {
        let rg = _mm256_add_ps(_mm256_mul_ps(r, k.luma[0]), _mm256_mul_ps(g, k.luma[1]));
        _mm256_add_ps(rg, _mm256_mul_ps(b, k.luma[2]))
    }

    /// `super::transform_lanes` on 8 pixels, operation for operation.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn transform(plan: &Plan, k: &Consts, [mut r, mut g, mut b]: [__m256; 3]) -> [__m256; 3] {
        let clip_if = |on: bool, v: __m256| if on { clip(k, v) } else { v };
        if let Some(f) = plan.brightness {
            // Never negative (f >= 0): only the top can clip, as in the portable path.
            [r, g, b] = [r, g, b].map(|v| {
                let v = _mm256_mul_ps(v, k.brightness);
                if f > 1.0 {
                    _mm256_min_ps(v, k.c255)
                } else {
                    v
                }
            });
        }
        if let Some((c, _)) = plan.contrast {
            [r, g, b] = [r, g, b].map(|v| {
                clip_if(
                    c > 1.0,
                    _mm256_add_ps(_mm256_mul_ps(v, k.contrast), k.contrast_offset),
                )
            });
        }
        if let Some(s) = plan.saturation {
            let y = _mm256_mul_ps(luma(k, r, g, b), k.one_minus_saturation);
            [r, g, b] = [r, g, b].map(|v| clip_if(s > 1.0, _mm256_add_ps(_mm256_mul_ps(v, k.saturation), y)));
        }
        if plan.matrix.is_some() {
            let m = &k.matrix;
            let row = |c: usize| {
                let xy = _mm256_add_ps(_mm256_mul_ps(m[c][0], r), _mm256_mul_ps(m[c][1], g));
                clip(k, _mm256_add_ps(xy, _mm256_mul_ps(m[c][2], b)))
            };
            [r, g, b] = [row(0), row(1), row(2)];
        }
        if plan.grayscale {
            let y = luma(k, r, g, b);
            [r, g, b] = [y, y, y];
        }
        if plan.recolours() {
            [r, g, b] = [r, g, b].map(|v| _mm256_floor_ps(_mm256_add_ps(v, k.half)));
        }
        [r, g, b]
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::{Plan, Sink};

    /// No vector kernel off x86-64: the scalar path does every pixel.
    pub(super) fn run(_src: &[u8], _plan: &Plan, _sink: &mut Sink<'_>) -> usize {
        0
    }
}

/// Run `f` compiled with AVX2 when the CPU has it. `f` must be a small closure over
/// `#[inline(always)]` code, so that it is compiled inside the AVX2 function.
#[inline(always)]
fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Mean luma of `min(x * brightness, 255)` over an RGB8 buffer: the grey that contrast
/// blends towards, taken after brightness as in torchvision.
fn mean_luma_after_brightness(src: View<'_>, brightness: f32) -> f32 {
    let n = src.w * src.h;
    if n == 0 {
        return 0.0;
    }
    let mut sums = [0f64; 3];
    for row in src.rows() {
        let part: [f64; 3] = if brightness <= 1.0 {
            // Nothing clips: the mean scales exactly. Integer sums vectorise well.
            channel_sums(row).map(|s| s as f64 * f64::from(brightness))
        } else {
            clipped_sums(row, brightness)
        };
        for (t, p) in sums.iter_mut().zip(part) {
            *t += p;
        }
    }
    let weighted: f64 = sums.iter().zip(LUMA).map(|(&s, w)| s * f64::from(w)).sum();
    (weighted / n as f64) as f32
}

/// Per-channel sums of an RGB8 buffer.
fn channel_sums(buf: &[u8]) -> [u64; 3] {
    let mut total = [0u64; 3];
    dispatch(
        #[inline(always)]
        || {
            // 24 u32 lanes (8 pixels) over blocks that cannot overflow (255 * 2^16 * 8 < 2^32).
            for block in buf.chunks(24 << 16) {
                let mut acc = [0u32; 24];
                let mut it = block.chunks_exact(24);
                for c in &mut it {
                    for k in 0..24 {
                        acc[k] += u32::from(c[k]);
                    }
                }
                for (k, &v) in it.remainder().iter().enumerate() {
                    acc[k] += u32::from(v);
                }
                for (k, a) in acc.iter().enumerate() {
                    total[k % 3] += u64::from(*a);
                }
            }
        },
    );
    total
}

/// Per-channel sums of `min(x * f, 255)`, in 24 f32 lanes per block of 2^12 pixels (exact
/// enough: a lane sums at most 512 values below 256) gathered in f64.
fn clipped_sums(buf: &[u8], f: f32) -> [f64; 3] {
    let mut total = [0f64; 3];
    dispatch(
        #[inline(always)]
        || {
            for block in buf.chunks(3 << 12) {
                let mut acc = [0f32; 24];
                let mut it = block.chunks_exact(24);
                for c in &mut it {
                    for k in 0..24 {
                        acc[k] += min(f32::from(c[k]) * f, 255.0);
                    }
                }
                for (k, &v) in it.remainder().iter().enumerate() {
                    acc[k] += min(f32::from(v) * f, 255.0);
                }
                for (k, a) in acc.iter().enumerate() {
                    total[k % 3] += f64::from(*a);
                }
            }
        },
    );
    total
}

/// The RGB -> RGB matrix that turns hue by `shift` turns (a rotation in YIQ space).
pub fn hue_matrix(shift: f32) -> [[f32; 3]; 3] {
    const TO_YIQ: [[f32; 3]; 3] = [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.322],
        [0.211, -0.523, 0.312],
    ];
    const TO_RGB: [[f32; 3]; 3] = [[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]];
    // HSV hue runs R -> G -> B, which is clockwise in the (I, Q) plane: rotate by -shift.
    let (s, c) = (-shift * std::f32::consts::TAU).sin_cos();
    let rot = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
    let mul = |a: &[[f32; 3]; 3], b: &[[f32; 3]; 3]| {
        let mut m = [[0.0f32; 3]; 3];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        m
    };
    mul(&TO_RGB, &mul(&rot, &TO_YIQ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn noise(w: usize, h: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..w * h * 3).map(|_| rng.next_u64() as u8).collect()
    }

    /// `apply` of a whole w x h image into a new float buffer.
    fn to_floats(src: &[u8], w: usize, h: usize, ops: &ColorOps, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        let view = View::whole(src, w, h).unwrap();
        apply(
            view,
            ops,
            Output::F32 {
                out: &mut out,
                mean,
                std,
            },
        )
        .unwrap();
        out
    }

    /// The same operations, one pixel at a time in f64, as the reference.
    fn reference(src: &[u8], w: usize, ops: &ColorOps) -> Vec<u8> {
        let n = src.len() / 3;
        let px: Vec<[f64; 3]> = src
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]].map(f64::from))
            .collect();
        let luma = |p: &[f64; 3]| (0..3).map(|c| p[c] * f64::from(LUMA[c])).sum::<f64>();
        let clip = |v: f64| v.clamp(0.0, 255.0);
        let b = f64::from(ops.brightness);
        let px: Vec<[f64; 3]> = px.iter().map(|p| p.map(|v| (v * b).min(255.0))).collect();
        let mean = px.iter().map(luma).sum::<f64>() / n as f64;
        let c = f64::from(ops.contrast);
        let px: Vec<[f64; 3]> = px
            .iter()
            .map(|p| p.map(|v| clip(c * v + (1.0 - c) * mean)))
            .collect();
        let s = f64::from(ops.saturation);
        let px: Vec<[f64; 3]> = px
            .iter()
            .map(|p| {
                let y = luma(p);
                p.map(|v| clip(s * v + (1.0 - s) * y))
            })
            .collect();
        let m = hue_matrix(ops.hue);
        let px: Vec<[f64; 3]> = if ops.hue != 0.0 {
            px.iter()
                .map(|p| [0, 1, 2].map(|i| clip((0..3).map(|k| f64::from(m[i][k]) * p[k]).sum())))
                .collect()
        } else {
            px
        };
        let px: Vec<[f64; 3]> = if ops.grayscale {
            px.iter().map(|p| [luma(p); 3]).collect()
        } else {
            px
        };
        let mut out: Vec<u8> = px
            .iter()
            .flat_map(|p| p.map(|v| (clip(v) + 0.5).floor() as u8))
            .collect();
        if ops.flip {
            for row in out.chunks_exact_mut(w * 3) {
                row.reverse();
                row.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
            }
        }
        out
    }

    #[test]
    fn identity_is_exact_and_flip_twice_is_identity() {
        let (w, h) = (70, 5); // wider than a chunk, with a tail
        let orig = noise(w, h, 1);
        let mut buf = orig.clone();
        apply_in_place(&mut buf, w, h, &ColorOps::IDENTITY).unwrap();
        assert_eq!(buf, orig);
        let flip = ColorOps {
            flip: true,
            ..ColorOps::IDENTITY
        };
        apply_in_place(&mut buf, w, h, &flip).unwrap();
        assert_eq!(&buf[0..3], &orig[(w - 1) * 3..w * 3]);
        apply_in_place(&mut buf, w, h, &flip).unwrap();
        assert_eq!(buf, orig);
    }

    #[test]
    fn every_combination_matches_the_f64_reference_within_one_level() {
        let (w, h) = (131, 7);
        let src = noise(w, h, 2);
        let mut rng = Rng::new(3);
        for case in 0..64 {
            let pick = |bit: usize, v: f32, id: f32| if case >> bit & 1 == 1 { v } else { id };
            let ops = ColorOps {
                flip: case & 1 == 1,
                brightness: pick(1, rng.uniform(0.5, 1.6), 1.0),
                contrast: pick(2, rng.uniform(0.5, 1.6), 1.0),
                saturation: pick(3, rng.uniform(0.0, 2.0), 1.0),
                hue: pick(4, rng.uniform(-0.5, 0.5), 0.0),
                grayscale: case >> 5 & 1 == 1,
            };
            let mut got = src.clone();
            apply_in_place(&mut got, w, h, &ops).unwrap();
            let want = reference(&src, w, &ops);
            let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 1, "{ops:?}: off by {worst}");
            let exact = got.iter().zip(&want).filter(|(a, b)| a == b).count();
            assert!(
                exact * 100 >= got.len() * 99,
                "{ops:?}: {exact} of {} exact",
                got.len()
            );
        }
    }

    #[test]
    fn vector_kernel_equals_the_portable_path_bit_for_bit() {
        let (w, h) = (45, 6); // five blocks of 8 and a tail of 5 per row
        let src = noise(w, h, 6);
        let mut rng = Rng::new(7);
        for case in 0..32 {
            let ops = ColorOps {
                flip: case & 1 == 1,
                brightness: if case & 2 != 0 { rng.uniform(0.4, 1.8) } else { 1.0 },
                contrast: if case & 4 != 0 { rng.uniform(0.4, 1.8) } else { 1.0 },
                saturation: if case & 2 != 0 { rng.uniform(0.0, 2.0) } else { 1.0 },
                hue: if case & 8 != 0 {
                    rng.uniform(-0.5, 0.5)
                } else {
                    0.0
                },
                grayscale: case & 16 != 0,
            };
            let mut got = src.clone();
            apply_in_place(&mut got, w, h, &ops).unwrap();
            let plan = make_plan(View::whole(&src, w, h).unwrap(), &ops);
            let mut want = vec![0u8; src.len()];
            for (row, out) in src.chunks_exact(w * 3).zip(want.chunks_exact_mut(w * 3)) {
                portable_row(row, &plan, &mut Sink::U8(out), 0);
            }
            assert_eq!(got, want, "{ops:?}");
            let (mean, std) = ([100.0, 110.0, 120.0], [50.0, 55.0, 60.0]);
            let floats = to_floats(&src, w, h, &ops, mean, std);
            let (scale, offset) = (std.map(|s| 1.0 / s), [0, 1, 2].map(|c| -mean[c] / std[c]));
            let mut want_f = vec![0f32; src.len()];
            for (row, out) in src.chunks_exact(w * 3).zip(want_f.chunks_exact_mut(w * 3)) {
                portable_row(row, &plan, &mut Sink::F32 { out, scale, offset }, 0);
            }
            assert_eq!(floats, want_f, "{ops:?}");
        }
    }

    #[test]
    fn normalized_output_equals_uint8_output_normalised() {
        let (w, h) = (67, 9);
        let src = noise(w, h, 4);
        let ops = ColorOps {
            flip: true,
            brightness: 1.3,
            contrast: 0.7,
            saturation: 1.4,
            hue: 0.1,
            grayscale: false,
        };
        let (mean, std) = ([120.0, 115.0, 100.0], [60.0, 58.0, 57.0]);
        let mut floats = to_floats(&src, w, h, &ops, mean, std);
        let whole = View::whole(&src, w, h).unwrap();
        let mut bytes = src.clone();
        apply_in_place(&mut bytes, w, h, &ops).unwrap();
        for (i, (&f, &u)) in floats.iter().zip(&bytes).enumerate() {
            let want = f32::from(u) * (1.0 / std[i % 3]) + -mean[i % 3] / std[i % 3];
            assert_eq!(f, want, "value {i}");
        }
        assert!(apply(
            whole,
            &ops,
            Output::F32 {
                out: &mut floats[1..],
                mean,
                std
            }
        )
        .is_err());
        assert!(View::region(&src, w, 1, 0, w, h).is_err());
        assert!(View::region(&src, w, 0, 1, w, h).is_err());
        assert!(apply_in_place(&mut bytes[1..], w, h, &ops).is_err());
    }

    #[test]
    fn a_region_view_equals_its_copied_crop() {
        let (w, h) = (50, 30);
        let img = noise(w, h, 8);
        let (x, y, cw, ch) = (7, 5, 33, 20);
        let crop: Vec<u8> = (y..y + ch)
            .flat_map(|r| img[(r * w + x) * 3..(r * w + x + cw) * 3].to_vec())
            .collect();
        let ops = ColorOps {
            flip: true,
            brightness: 1.2,
            contrast: 1.3,
            saturation: 0.6,
            hue: 0.0,
            grayscale: false,
        };
        let mut a = vec![0u8; cw * ch * 3];
        apply(
            View::region(&img, w, x, y, cw, ch).unwrap(),
            &ops,
            Output::U8(&mut a),
        )
        .unwrap();
        let mut b = crop.clone();
        apply_in_place(&mut b, cw, ch, &ops).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn out_of_range_factors_and_regions_are_refused() {
        let mut buf = noise(4, 4, 9);
        let orig = buf.clone();
        let bad = [
            ColorOps {
                brightness: f32::INFINITY,
                ..ColorOps::IDENTITY
            },
            ColorOps {
                brightness: f32::NAN,
                ..ColorOps::IDENTITY
            },
            ColorOps {
                contrast: -3.0,
                ..ColorOps::IDENTITY
            },
            ColorOps {
                saturation: -0.5,
                ..ColorOps::IDENTITY
            },
            ColorOps {
                hue: f32::NAN,
                ..ColorOps::IDENTITY
            },
        ];
        for ops in bad {
            assert!(apply_in_place(&mut buf, 4, 4, &ops).is_err(), "{ops:?}");
            let mut out = vec![0u8; buf.len()];
            let view = View::whole(&orig, 4, 4).unwrap();
            assert!(apply(view, &ops, Output::U8(&mut out)).is_err(), "{ops:?}");
        }
        assert_eq!(buf, orig);
        assert!(View::region(&buf, usize::MAX, usize::MAX / 2, 0, 1, 0).is_err());
        assert!(View::region(&buf, 4, 3, 0, 2, 1).is_err());
        let v = View::region(&buf, 4, 1, 1, 2, 3).unwrap();
        assert_eq!((v.width(), v.height()), (2, 3));
    }

    #[test]
    fn contrast_mean_is_taken_after_brightness_with_clipping() {
        // Half the pixels clip at 255 when doubled: the mean is (255 + 100) / 2, not 2 * 140.
        let buf: Vec<u8> = [[200u8; 3], [50u8; 3]].iter().flatten().copied().collect();
        let m = mean_luma_after_brightness(View::whole(&buf, 2, 1).unwrap(), 2.0);
        assert!((m - 177.5).abs() < 1e-3, "{m}");
        let m = mean_luma_after_brightness(View::whole(&buf, 2, 1).unwrap(), 0.5);
        assert!((m - 62.5).abs() < 1e-3, "{m}");
        let big = noise(300, 300, 5);
        let want = |b: f64| {
            let luma = |p: &[u8]| -> f64 {
                (0..3)
                    .map(|c| (f64::from(p[c]) * b).min(255.0) * f64::from(LUMA[c]))
                    .sum()
            };
            big.chunks_exact(3).map(luma).sum::<f64>() / 90000.0
        };
        let got = |b: f32| {
            f64::from(mean_luma_after_brightness(
                View::whole(&big, 300, 300).unwrap(),
                b,
            ))
        };
        assert!((got(1.0) - want(1.0)).abs() < 1e-3);
        assert!((got(1.5) - want(1.5)).abs() < 1e-2);
    }

    /// `ops` with one operation changed from the identity, applied to `src` as one row.
    fn recolored(src: &[u8], edit: impl FnOnce(&mut ColorOps)) -> Vec<u8> {
        let mut ops = ColorOps::IDENTITY;
        edit(&mut ops);
        let mut buf = src.to_vec();
        apply_in_place(&mut buf, src.len() / 3, 1, &ops).unwrap();
        buf
    }

    #[test]
    fn colour_ops_do_what_they_say() {
        let buf = [100u8, 150, 200, 10, 20, 30];
        assert_eq!(recolored(&buf, |o| o.brightness = 0.5), [50, 75, 100, 5, 10, 15]);
        assert!(recolored(&buf, |o| o.brightness = 0.0).iter().all(|&v| v == 0));
        assert!(recolored(&[200; 30], |o| o.brightness = 2.0)
            .iter()
            .all(|&v| v == 255));
        // Contrast 0 gives the mean grey everywhere.
        assert_eq!(
            recolored(&[0, 0, 0, 200, 200, 200], |o| o.contrast = 0.0),
            [100; 6]
        );
        // Saturation 0 is grayscale.
        let px = noise(8, 8, 4);
        let gray = recolored(&px, |o| o.grayscale = true);
        assert_eq!(recolored(&px, |o| o.saturation = 0.0), gray);
        assert!(gray.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        // A third of a turn takes red to green and green to blue; half a turn keeps grey.
        let h = recolored(&[255, 0, 0, 0, 255, 0, 128, 128, 128], |o| o.hue = 1.0 / 3.0);
        assert!(h[1] > h[0] && h[1] > h[2], "red -> {:?}", &h[0..3]);
        assert!(h[5] > h[3] && h[5] > h[4], "green -> {:?}", &h[3..6]);
        assert!(
            h[6..9].iter().all(|&v| v.abs_diff(128) <= 1),
            "grey -> {:?}",
            &h[6..9]
        );
    }
}
