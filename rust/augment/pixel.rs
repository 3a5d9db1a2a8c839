//! Per-pixel stages after the resize: Gaussian-like noise, random erasing, normalisation.

use super::{check_out, Rect};
use crate::color::{self, ColorOps, Output, View};
use crate::error::{Error, Result};
use crate::rng::Rng;

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
}
