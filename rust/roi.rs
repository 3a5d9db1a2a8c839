//! Region-of-interest JPEG decoding: stop entropy decoding after the last MCU row a crop needs.
//!
//! zune-jpeg has no crop API, but its baseline decoder works one MCU row at a time and stops
//! after the frame height's last row. So the ROI decode hands it a copy of the file whose
//! frame header (SOF) claims fewer rows: the Huffman decoding, IDCT, upsampling and colour
//! conversion of every row below the cut are never done. Rows above the crop are still
//! decoded (a baseline scan cannot be entered in the middle without restart markers).
//!
//! Exactness: every decoded row is the full decode's row, except the last `v_max` rows of
//! the frame, whose chroma is upsampled with edge replication instead of the next MCU row; the
//! cut leaves those rows out of the region. Progressive files (every scan covers the whole
//! frame) take the full decode. Tests compare against the full decode followed by the crop.

use crate::augment::{self, AugmentConfig, CropBox};
use crate::decode::Image;

/// A rectangle of the oriented, full-scale image that the caller will read:
/// columns x0..x1 and rows y0..y1 (ends exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roi {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// What the marker walk learns about a frame, for the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// SOFn marker byte (0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...).
    pub marker: u8,
    /// Offset of the frame height (2 bytes, big-endian) in the file.
    pub height_at: usize,
    /// Largest vertical sampling factor of the components (1..=4).
    pub v_max: usize,
}

impl Frame {
    /// Rows per MCU row of the scan.
    pub fn mcu_height(&self) -> usize {
        8 * self.v_max.clamp(1, 4)
    }

    /// Baseline and extended sequential Huffman frames: one scan, MCU row after MCU row.
    pub fn is_sequential(&self) -> bool {
        matches!(self.marker, 0xC0 | 0xC1)
    }
}

/// Stored rows 0..n that hold every pixel of `roi` once EXIF orientation `o` is applied to a
/// stored `w` x `h` image (see `decode::apply_orientation`). The ROI is clamped to the image.
pub fn stored_rows_needed(roi: Roi, w: usize, h: usize, o: u8) -> usize {
    let (ow, oh) = if o >= 5 { (h, w) } else { (w, h) };
    let (x0, x1) = (roi.x0.min(ow), roi.x1.min(ow));
    let (y0, y1) = (roi.y0.min(oh), roi.y1.min(oh));
    if x1 <= x0 || y1 <= y0 {
        return h; // an empty ROI: nothing to save, decode everything
    }
    // The stored row of oriented pixel (x, y), per orientation, at its largest over the ROI.
    let last = match o {
        3 | 4 => h - 1 - y0,
        5 | 8 => x1 - 1,
        6 | 7 => h - 1 - x0,
        _ => y1 - 1,
    };
    (last + 1).min(h)
}

/// Frame height for the cut: whole MCU rows, with the rows upsampled by edge replication
/// (the last `v_max` of the frame) below `rows`. Never more than the full height `h`.
pub fn cut_height(rows: usize, frame: &Frame, h: usize) -> usize {
    let mcu = frame.mcu_height();
    (rows + frame.v_max).div_ceil(mcu).saturating_mul(mcu).min(h)
}

/// A copy of the JPEG whose frame header claims `height` rows; None if it does not fit.
pub fn with_frame_height(bytes: &[u8], frame: &Frame, height: usize) -> Option<Vec<u8>> {
    let h = u16::try_from(height).ok().filter(|&h| h > 0)?;
    let end = frame.height_at.checked_add(2)?;
    bytes.get(frame.height_at..end)?;
    let mut patched = bytes.to_vec();
    patched[frame.height_at..end].copy_from_slice(&h.to_be_bytes());
    Some(patched)
}

/// The part of a `src_w` x `src_h` source image (oriented, full scale) that
/// `augment::process` can read for one sample: the crop region (box or centre crop, which the
/// random resized crop stays inside), widened by what a training rotation about the crop's
/// centre can sweep, plus the bilinear filter's footprint. Keep in step with
/// `augment::process`: `sample_roi_reads_what_process_reads` checks it on every preset.
pub fn sample_roi(
    cfg: &AugmentConfig,
    train: bool,
    out: (usize, usize),
    src: (usize, usize),
    crop: Option<CropBox>,
) -> Option<Roi> {
    let (src_w, src_h) = src;
    let header = Image {
        width: src_w,
        height: src_h,
        data: Vec::new(),
        source_width: src_w,
        source_height: src_h,
    };
    let crop_region = augment::crop_region(&header, crop, cfg);
    if crop_region.angle.is_some() {
        // A turned box reads along its turned edges and repeats edge pixels past the image:
        // decode it whole rather than widen the region by every angle's sweep.
        return None;
    }
    let r = crop_region.region;
    let (rx, ry, rw, rh) = (f64::from(r.x), f64::from(r.y), f64::from(r.w), f64::from(r.h));
    // Bilinear support is one source step of the downscale on each side; +2 for rounding.
    let step = (rw / out.0.max(1) as f64).max(rh / out.1.max(1) as f64).max(1.0);
    let m = step.ceil() + 2.0;
    // A box inside the region rotated by up to a about its own centre stays inside the
    // region widened by (h/2 sin a, w/2 sin a).
    let sin = if train && cfg.rotate_p > 0.0 {
        f64::from(cfg.rotate_deg).clamp(0.0, 90.0).to_radians().sin()
    } else {
        0.0
    };
    let (mx, my) = (m + rh * 0.5 * sin, m + rw * 0.5 * sin);
    let lo = |v: f64, m: f64| (v - m).floor().max(0.0) as usize;
    let hi = |v: f64, m: f64, max: usize| ((v + m).ceil().max(0.0) as usize).min(max);
    Some(Roi {
        x0: lo(rx, mx),
        y0: lo(ry, my),
        x1: hi(rx + rw, mx, src_w),
        y1: hi(ry + rh, my, src_h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{Target, PRESETS};
    use crate::color::Output;
    use crate::decode::{decode_image, DecodeOptions};
    use crate::rng::Rng;

    /// A sample made from the ROI decode is byte-identical to one made from the full decode,
    /// for every preset, train and eval, centre crops and boxes (inside, across, outside).
    #[test]
    fn sample_roi_reads_what_process_reads() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut saved = 0;
        for name in [
            "photo_384x512.jpg",
            "jpeg_restart_rows.jpg",
            "exif_6.jpg",
            "jpeg_cmyk.jpg",
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let full = decode_image(&bytes, &DecodeOptions::default()).unwrap();
            let (w, h) = (full.width as f32, full.height as f32);
            let boxes = [
                None,
                Some(CropBox {
                    x0: 0.1 * w,
                    y0: 0.05 * h,
                    x1: 0.7 * w,
                    y1: 0.5 * h,
                    angle: None,
                }),
                Some(CropBox {
                    x0: -20.0,
                    y0: 0.6 * h,
                    x1: w + 20.0,
                    y1: h + 40.0,
                    angle: None,
                }),
                Some(CropBox {
                    x0: w + 1.0,
                    y0: h + 1.0,
                    x1: w + 9.0,
                    y1: h + 9.0,
                    angle: None,
                }),
            ];
            for (preset, make) in PRESETS {
                let cfg = make();
                for train in [false, true] {
                    for (out_w, out_h) in [(224, 224), (32, 24)] {
                        for crop in boxes {
                            let src = (full.width, full.height);
                            let r = sample_roi(&cfg, train, (out_w, out_h), src, crop).unwrap();
                            let opts = DecodeOptions {
                                roi: Some(r),
                                ..Default::default()
                            };
                            let part = decode_image(&bytes, &opts).unwrap();
                            saved += usize::from(part != full);
                            let region = augment::crop_region(&full, crop, &cfg);
                            for seed in 0..12 {
                                let mut outs = [vec![0u8; out_w * out_h * 3], vec![0u8; out_w * out_h * 3]];
                                for (img, out) in [&full, &part].into_iter().zip(&mut outs) {
                                    let t = Target::new(Output::U8(out), out_w, out_h).unwrap();
                                    let mut rng = Rng::new(seed);
                                    augment::process(img, region, &cfg, train, &mut rng, t).unwrap();
                                }
                                assert_eq!(
                                    outs[0], outs[1],
                                    "{name} {preset} train {train} {crop:?} seed {seed}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(
            saved > 20,
            "ROI decodes differed from the full decode only {saved} times"
        );
    }

    #[test]
    fn stored_rows_follow_each_orientation() {
        // Stored 6 wide, 10 high; the ROI is oriented columns 1..3, rows 2..4.
        let roi = Roi {
            x0: 1,
            y0: 2,
            x1: 3,
            y1: 4,
        };
        let want = [(1, 4), (2, 4), (3, 8), (4, 8), (5, 3), (6, 9), (7, 9), (8, 3)];
        for (o, rows) in want {
            assert_eq!(stored_rows_needed(roi, 6, 10, o), rows, "orientation {o}");
        }
        // Clamped to the image; an empty ROI needs everything.
        let big = Roi {
            x0: 0,
            y0: 0,
            x1: 100,
            y1: 100,
        };
        assert_eq!(stored_rows_needed(big, 6, 10, 1), 10);
        let empty = Roi { x1: 1, ..roi };
        assert_eq!(stored_rows_needed(empty, 6, 10, 1), 10);
    }

    #[test]
    fn the_cut_keeps_edge_replicated_rows_out() {
        let f420 = Frame {
            marker: 0xC0,
            height_at: 0,
            v_max: 2,
        };
        assert_eq!(cut_height(448, &f420, 512), 464);
        assert_eq!(cut_height(446, &f420, 512), 448);
        assert_eq!(cut_height(510, &f420, 512), 512);
        let grey = Frame { v_max: 1, ..f420 };
        assert_eq!(cut_height(8, &grey, 64), 16);
        assert_eq!(cut_height(7, &grey, 64), 8);
        assert!(with_frame_height(&[0; 4], &Frame { height_at: 3, ..f420 }, 5).is_none());
        assert!(with_frame_height(&[0; 4], &f420, 70_000).is_none());
        assert_eq!(with_frame_height(&[0; 4], &f420, 258), Some(vec![1, 2, 0, 0]));
    }

    /// A turned face box reads along its turned edges: such samples decode the whole image.
    #[test]
    fn turned_boxes_decode_whole() {
        let cfg = (PRESETS[0].1)();
        let turned = Some(CropBox::turned(10.0, 10.0, 100.0, 120.0, 15.0));
        assert!(sample_roi(&cfg, false, (64, 64), (384, 512), turned).is_none());
        let plain = Some(CropBox::turned(10.0, 10.0, 100.0, 120.0, 0.0));
        assert!(sample_roi(&cfg, false, (64, 64), (384, 512), plain).is_none());
        assert!(sample_roi(&cfg, false, (64, 64), (384, 512), None).is_some());
    }
}
