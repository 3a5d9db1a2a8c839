//! The mask appearance: recolour and pattern the mask region of a face-framed output.

use super::{check_out, clampf, Rect};
use crate::color::{hue_matrix, LUMA};
use crate::error::Result;
use crate::rng::Rng;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
