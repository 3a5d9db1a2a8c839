//! Image decoding to RGB8: JPEG with zune-jpeg (jpeg-decoder for DCT-scaled 1/4 and 1/8
//! decodes), PNG with zune-png, EXIF orientation applied by a remap of the decoded buffer.
//!
//! Everything here parses untrusted bytes: every read is bounds-checked, sizes are capped at
//! [`MAX_PIXELS`], and the third-party decoders run under `catch_unwind` as a last guard, so
//! any input gives `Ok` or `Err`, never a panic.

use crate::error::{Error, Result};
use crate::roi::{self, Frame, Roi};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// The decoders behind each format, for build_info.
pub const DECODERS: &[&str] = &["jpeg:zune-jpeg", "jpeg-dct-scaled:jpeg-decoder", "png:zune-png"];

/// Largest image accepted, in pixels (width * height), checked before any pixel is decoded.
pub const MAX_PIXELS: usize = 100_000_000;

/// Smallest DCT-domain reduction worth taking. Measured on the 384x512 bench photo:
/// jpeg-decoder at 1/2 is slower than zune-jpeg full decode + resize, at 1/4 and 1/8 it is
/// about 1.6x faster, so 1/2 is served by the full decode.
const MIN_DCT_DENOMINATOR: usize = 4;

/// A decoded image: RGB8, HWC, row-major, `data.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
    /// Size at full scale after EXIF orientation; differs from width/height only when the
    /// image was decoded at a DCT scale. Crop boxes are given in these coordinates.
    pub source_width: usize,
    pub source_height: usize,
}

impl std::fmt::Debug for Image {
    // The pixel buffer is far too long to print usefully.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("source_width", &self.source_width)
            .field("source_height", &self.source_height)
            .finish_non_exhaustive()
    }
}

impl Image {
    /// Wrap an RGB8 buffer decoded at full scale; errors if the length does not match.
    pub fn from_rgb(width: usize, height: usize, data: Vec<u8>) -> Result<Image> {
        check_size(width, height)?;
        if data.len() != width * height * 3 {
            return Err(Error::Invalid(format!(
                "RGB buffer of {} bytes does not match {width}x{height}x3",
                data.len()
            )));
        }
        Ok(Image {
            width,
            height,
            data,
            source_width: width,
            source_height: height,
        })
    }

    /// The RGB value at (x, y); None outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        let p = self.data.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }
}

/// What a caller wants from a decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Apply the EXIF orientation of JPEGs (as PIL's `ImageOps.exif_transpose`). Default true.
    pub apply_exif: bool,
    /// (width, height), after orientation, that the caller needs at least. When set and a
    /// JPEG can be reduced by 4 or 8 while staying at least this size, it is decoded at that
    /// DCT scale. None = full size. PNGs are always decoded at full size.
    pub min_size: Option<(usize, usize)>,
    /// The part of the oriented, full-scale image the caller will read (filter support
    /// included). When set, a sequential JPEG decoded at full scale stops after the last MCU
    /// row the region needs ([`crate::roi`]); pixels outside the region are unspecified.
    pub roi: Option<Roi>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            apply_exif: true,
            min_size: None,
            roi: None,
        }
    }
}

/// Container format, chosen by magic bytes, never by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

/// Header facts of an encoded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    /// Stored size, before EXIF orientation.
    pub width: usize,
    pub height: usize,
    /// EXIF orientation 1..=8 (1 when absent, unreadable or not a JPEG).
    pub orientation: u8,
}

impl ImageInfo {
    /// Size after applying the orientation (orientations 5..8 swap the axes).
    pub fn oriented_size(&self) -> (usize, usize) {
        if self.orientation >= 5 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The format of `bytes` by its magic number, or None.
pub fn sniff_format(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        Some(Format::Png)
    } else {
        None
    }
}

/// Format, stored size and EXIF orientation from the headers only (no pixel decoding).
pub fn read_info(bytes: &[u8]) -> Result<ImageInfo> {
    match sniff(bytes)? {
        Format::Jpeg => {
            let h = scan_jpeg(bytes, false)?;
            Ok(ImageInfo {
                format: Format::Jpeg,
                width: h.width,
                height: h.height,
                orientation: h.orientation,
            })
        }
        Format::Png => {
            let h = scan_png(bytes, false)?;
            Ok(ImageInfo {
                format: Format::Png,
                width: h.0,
                height: h.1,
                orientation: 1,
            })
        }
    }
}

/// (width, height) from the headers only: the size `decode_image` returns at full scale
/// with the same `apply_exif`.
pub fn read_dimensions(bytes: &[u8], apply_exif: bool) -> Result<(usize, usize)> {
    let info = read_info(bytes)?;
    Ok(if apply_exif {
        info.oriented_size()
    } else {
        (info.width, info.height)
    })
}

/// Decode JPEG or PNG bytes to RGB8. Errors are `Error::Image(reason)`.
pub fn decode_image(bytes: &[u8], opts: &DecodeOptions) -> Result<Image> {
    match sniff(bytes)? {
        Format::Jpeg => decode_jpeg(bytes, opts),
        Format::Png => decode_png(bytes),
    }
}

/// Read and decode a file. Errors are `Error::Decode { path, reason }` naming the file.
pub fn decode_file(path: &Path, opts: &DecodeOptions) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    decode_image(&bytes, opts).map_err(|e| e.with_path(path))
}

fn sniff(bytes: &[u8]) -> Result<Format> {
    if bytes.is_empty() {
        return Err(Error::Image("empty file (0 bytes)".into()));
    }
    sniff_format(bytes).ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Error::Image(format!(
            "not a JPEG or PNG image (starts with {})",
            head.join(" ")
        ))
    })
}

fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Image(format!(
            "image has a zero dimension ({width}x{height})"
        )));
    }
    match width.checked_mul(height) {
        Some(n) if n <= MAX_PIXELS => Ok(()),
        _ => Err(Error::Image(format!(
            "image is {width}x{height}, over the limit of {} megapixels",
            MAX_PIXELS / 1_000_000
        ))),
    }
}

/// Run a third-party decoder, turning a panic inside it into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::Image(format!("{what}: decoder panicked on this input"))))
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// What the marker walk learns about a JPEG.
#[derive(Clone, Copy, Debug)]
struct JpegHeader {
    width: usize,
    height: usize,
    components: u8,
    orientation: u8,
    frame: Frame,
}

#[inline]
fn be16(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

/// Walk the JPEG marker segments. With `to_end`, also skip every entropy-coded segment and
/// require the EOI marker: a file cut short anywhere fails here instead of decoding to grey.
/// The header facts (frame size, EXIF orientation) come only from the segments before the
/// first SOS, as PIL reads them, so `to_end` and the header-only walk always agree.
fn scan_jpeg(bytes: &[u8], to_end: bool) -> Result<JpegHeader> {
    let trunc = || Error::Image("truncated JPEG (no end-of-image marker)".into());
    let mut sof: Option<(usize, usize, u8, Frame)> = None;
    let mut orientation: Option<u8> = None;
    let mut pos = 2;
    let mut seen_eoi = false;
    let mut seen_sos = false;
    // Only the first EXIF block counts, as in PIL, even when it holds no orientation.
    let mut seen_exif = false;
    // Stray bytes and 0xFF fill before a marker are skipped, as libjpeg does.
    'walk: while let Some(ff) = find_ff(bytes, pos) {
        pos = ff;
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else { break };
        pos += 1;
        match marker {
            0xD9 => {
                seen_eoi = true;
                break;
            }
            // Standalone markers (RSTn, TEM, stuffed zero, a repeated SOI) carry no length.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = be16(bytes, pos).ok_or_else(trunc)?;
        if len < 2 {
            return Err(Error::Image(format!(
                "corrupt JPEG: marker ff{marker:02x} length {len}"
            )));
        }
        let end = pos + len;
        let seg = bytes.get(pos + 2..end).ok_or_else(trunc)?;
        match marker {
            // SOFn; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) && sof.is_none() && !seen_sos => {
                let (Some(h), Some(w), Some(&nc)) = (be16(seg, 1), be16(seg, 3), seg.get(5)) else {
                    return Err(Error::Image("corrupt JPEG: short frame header".into()));
                };
                // Sampling factors: (H << 4 | V) in the second byte of each component's 3.
                let v_max = (0..usize::from(nc))
                    .filter_map(|i| seg.get(7 + 3 * i))
                    .map(|&hv| usize::from(hv & 0x0F))
                    .max()
                    .unwrap_or(1);
                let frame = Frame {
                    marker,
                    height_at: pos + 3,
                    v_max,
                };
                sof = Some((w, h, nc, frame));
            }
            0xE1 if !seen_exif && !seen_sos => {
                if let Some(tiff) = seg.strip_prefix(b"Exif\0\0") {
                    seen_exif = true;
                    orientation = exif_orientation(tiff);
                }
            }
            0xDA => {
                if !to_end {
                    break 'walk;
                }
                seen_sos = true;
                // Entropy-coded data runs to the next marker that is not RSTn or a stuffed 0.
                let mut p = end;
                loop {
                    let Some(i) = find_ff(bytes, p) else {
                        return Err(trunc());
                    };
                    match bytes.get(i + 1) {
                        None => return Err(trunc()),
                        Some(0x00 | 0xD0..=0xD7) => p = i + 2,
                        Some(0xFF) => p = i + 1,
                        Some(_) => {
                            pos = i;
                            continue 'walk;
                        }
                    }
                }
            }
            _ => {}
        }
        pos = end;
    }
    let Some((width, height, components, frame)) = sof else {
        return Err(Error::Image("corrupt JPEG: no frame header (SOF) found".into()));
    };
    if to_end && !seen_eoi {
        return Err(trunc());
    }
    check_size(width, height)?;
    Ok(JpegHeader {
        width,
        height,
        components,
        orientation: orientation.unwrap_or(1),
        frame,
    })
}

/// Index of the next 0xFF byte at or after `from`, eight bytes at a time.
#[inline]
fn find_ff(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    let mut chunks = tail.chunks_exact(8);
    let mut base = from;
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Classic zero-byte test on !w: the lowest flagged byte is exactly the first 0xFF.
        let x = !w;
        let z = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
        if z != 0 {
            return Some(base + (z.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == 0xFF)
        .map(|p| base + p)
}

/// The orientation (1..=8) in an EXIF TIFF block (the APP1 payload after "Exif\0\0"), or
/// None if it is absent, out of range or the block is malformed. Both byte orders.
pub fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let little = match tiff.get(0..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let rd16 = |at: usize| -> Option<u32> {
        let b: [u8; 2] = tiff.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(u32::from(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let rd32 = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd0 = usize::try_from(rd32(4)?).ok()?;
    let count = rd16(ifd0)? as usize;
    // A real IFD0 has a few dozen entries; the cap bounds the work on garbage.
    for i in 0..count.min(1024) {
        let entry = ifd0.checked_add(2 + i * 12)?;
        if rd16(entry)? != 0x0112 {
            continue;
        }
        let value = match (rd16(entry + 2)?, rd32(entry + 4)?) {
            (_, 0) => return None,
            (3, _) => rd16(entry + 8)?,
            (4, _) => rd32(entry + 8)?,
            _ => return None,
        };
        return u8::try_from(value).ok().filter(|v| (1..=8).contains(v));
    }
    None
}

/// DCT reduction (1, 4 or 8) for a stored w x h that keeps at least `need` (stored axes).
fn dct_denominator(w: usize, h: usize, need: (usize, usize)) -> usize {
    [8, 4, 2]
        .into_iter()
        .filter(|&d| d >= MIN_DCT_DENOMINATOR)
        .find(|&d| w.div_ceil(d) >= need.0 && h.div_ceil(d) >= need.1)
        .unwrap_or(1)
}

fn decode_jpeg(bytes: &[u8], opts: &DecodeOptions) -> Result<Image> {
    let hdr = scan_jpeg(bytes, true)?;
    let orientation = if opts.apply_exif { hdr.orientation } else { 1 };
    let swap = orientation >= 5;
    let (source_width, source_height) = if swap {
        (hdr.height, hdr.width)
    } else {
        (hdr.width, hdr.height)
    };
    // jpeg-decoder's scaled path handles YCbCr and grey; CMYK/YCCK go the full-size way.
    let denom = match opts.min_size {
        Some((mw, mh)) if matches!(hdr.components, 1 | 3) => {
            let need = if swap { (mh, mw) } else { (mw, mh) };
            dct_denominator(hdr.width, hdr.height, need)
        }
        _ => 1,
    };
    let scaled = if denom > 1 {
        let want = (hdr.width.div_ceil(denom), hdr.height.div_ceil(denom));
        guarded("jpeg", || decode_jpeg_scaled(bytes, want)).ok()
    } else {
        None
    };
    // Only the rows the region needs, when that saves at least one MCU row.
    let cut = match (&scaled, opts.roi) {
        (None, Some(r)) if hdr.frame.is_sequential() && (1..=4).contains(&hdr.frame.v_max) => {
            let rows = roi::stored_rows_needed(r, hdr.width, hdr.height, orientation);
            let cut = roi::cut_height(rows, &hdr.frame, hdr.height);
            (cut < hdr.height).then_some(cut)
        }
        _ => None,
    };
    let partial = cut.and_then(|cut| guarded("jpeg", || decode_jpeg_rows(bytes, &hdr, cut)).ok());
    // A scaled or partial decode that failed falls back to the full decode and its error.
    let (data, w, h) = match scaled.or(partial) {
        Some(r) => r,
        None => guarded("jpeg", || decode_jpeg_full(bytes, &hdr))?,
    };
    let (data, width, height) = apply_orientation(data, w, h, orientation);
    Ok(Image {
        width,
        height,
        data,
        source_width,
        source_height,
    })
}

fn decode_jpeg_full(bytes: &[u8], hdr: &JpegHeader) -> Result<(Vec<u8>, usize, usize)> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    // Our own MAX_PIXELS check already ran; lift zune's 16384-per-side default to JPEG's max.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let data = dec.decode().map_err(|e| Error::Image(format!("jpeg: {e}")))?;
    let (w, h) = (hdr.width, hdr.height);
    if data.len() != w * h * 3 {
        return Err(Error::Image(format!(
            "jpeg: decoder returned {} bytes for {w}x{h} RGB",
            data.len()
        )));
    }
    Ok((data, w, h))
}

/// The first `cut` stored rows of a sequential JPEG, in a full-size buffer whose rows below
/// the cut are zero (see [`crate::roi`]).
fn decode_jpeg_rows(bytes: &[u8], hdr: &JpegHeader, cut: usize) -> Result<(Vec<u8>, usize, usize)> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let patched = roi::with_frame_height(bytes, &hdr.frame, cut)
        .ok_or_else(|| Error::Image("jpeg (rows): frame header out of reach".into()))?;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(&patched[..]), options);
    dec.decode_headers()
        .map_err(|e| Error::Image(format!("jpeg (rows): {e}")))?;
    let (w, h) = (hdr.width, hdr.height);
    if dec.dimensions() != Some((w, cut)) || dec.output_buffer_size() != Some(w * cut * 3) {
        return Err(Error::Image("jpeg (rows): decoder disagrees on the size".into()));
    }
    // Zeroed by the allocator (fresh pages for large buffers): the rows below the cut cost
    // nothing until something touches them.
    let mut data = vec![0u8; w * h * 3];
    dec.decode_into(&mut data[..w * cut * 3])
        .map_err(|e| Error::Image(format!("jpeg (rows): {e}")))?;
    Ok((data, w, h))
}

/// Reduced-IDCT decode with jpeg-decoder to at least `want` (stored axes).
fn decode_jpeg_scaled(bytes: &[u8], want: (usize, usize)) -> Result<(Vec<u8>, usize, usize)> {
    use jpeg_decoder::{Decoder, PixelFormat};
    let err = |e: jpeg_decoder::Error| Error::Image(format!("jpeg (scaled): {e}"));
    let req = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
    let mut dec = Decoder::new(bytes);
    let (w, h) = dec.scale(req(want.0), req(want.1)).map_err(err)?;
    let (w, h) = (usize::from(w), usize::from(h));
    let format = dec.info().map(|i| i.pixel_format);
    let px = dec.decode().map_err(err)?;
    let data = match format {
        Some(PixelFormat::RGB24) if px.len() == w * h * 3 => px,
        Some(PixelFormat::L8) if px.len() == w * h => px.iter().flat_map(|&g| [g, g, g]).collect(),
        other => {
            return Err(Error::Image(format!(
                "jpeg (scaled): unexpected output {other:?}"
            )));
        }
    };
    if w < want.0 || h < want.1 {
        return Err(Error::Image(format!(
            "jpeg (scaled): got {w}x{h}, wanted {want:?}"
        )));
    }
    Ok((data, w, h))
}

// ---------------------------------------------------------------------------------------------
// PNG

#[inline]
fn be32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(b)).ok()
}

/// (width, height) from IHDR. With `to_end`, walk every chunk and require IEND, so a cut
/// file is an error rather than a partly decoded image.
fn scan_png(bytes: &[u8], to_end: bool) -> Result<(usize, usize)> {
    let corrupt = |why: &str| Error::Image(format!("corrupt PNG: {why}"));
    if bytes.get(12..16) != Some(b"IHDR") {
        return Err(corrupt("first chunk is not IHDR"));
    }
    let (Some(w), Some(h)) = (be32(bytes, 16), be32(bytes, 20)) else {
        return Err(corrupt("short IHDR"));
    };
    check_size(w, h)?;
    if to_end {
        let mut pos = 8usize;
        loop {
            let (Some(len), Some(kind)) = (be32(bytes, pos), bytes.get(pos + 4..pos + 8)) else {
                return Err(Error::Image("truncated PNG (no IEND chunk)".into()));
            };
            if kind == b"IEND" {
                break;
            }
            // length + type + data + CRC
            pos = match pos.checked_add(12).and_then(|p| p.checked_add(len)) {
                Some(p) if p <= bytes.len() => p,
                _ => return Err(Error::Image("truncated PNG (chunk runs past the end)".into())),
            };
        }
    }
    Ok((w, h))
}

fn decode_png(bytes: &[u8]) -> Result<Image> {
    let (w, h) = scan_png(bytes, true)?;
    let data = guarded("png", || decode_png_pixels(bytes, w, h))?;
    Ok(Image {
        width: w,
        height: h,
        data,
        source_width: w,
        source_height: h,
    })
}

/// Any PNG colour type and depth to RGB8. Alpha is dropped, not composited (PIL's
/// `convert("RGB")` does the same); 16-bit samples keep their high byte.
fn decode_png_pixels(bytes: &[u8], w: usize, h: usize) -> Result<Vec<u8>> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let err = |e: zune_png::error::PngDecodeErrors| Error::Image(format!("png: {e}"));
    let options = DecoderOptions::default()
        .png_set_strip_to_8bit(true)
        .set_max_width(w.max(1))
        .set_max_height(h.max(1));
    let mut dec = zune_png::PngDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers().map_err(err)?;
    let colorspace = dec.colorspace();
    if dec.dimensions() != Some((w, h)) {
        return Err(Error::Image("png: decoder disagrees on the image size".into()));
    }
    let raw = dec.decode_raw().map_err(err)?;
    let channels = match colorspace {
        Some(ColorSpace::Luma) => 1,
        Some(ColorSpace::LumaA) => 2,
        Some(ColorSpace::RGB) => 3,
        Some(ColorSpace::RGBA) => 4,
        other => return Err(Error::Image(format!("png: unsupported colour space {other:?}"))),
    };
    let n = w * h;
    if raw.len() < n * channels {
        return Err(Error::Image(format!(
            "png: decoder returned {} bytes for {w}x{h}x{channels}",
            raw.len()
        )));
    }
    let raw = &raw[..n * channels];
    Ok(match channels {
        3 => raw.to_vec(),
        1 => raw.iter().flat_map(|&g| [g, g, g]).collect(),
        2 => raw.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        _ => raw.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Orientation

/// Apply EXIF orientation `o` (1..=8; anything else is 1) to an RGB8 w x h buffer, as
/// PIL's `exif_transpose`. Returns the new buffer and its (width, height).
pub fn apply_orientation(data: Vec<u8>, w: usize, h: usize, o: u8) -> (Vec<u8>, usize, usize) {
    if !(2..=8).contains(&o) || data.len() != w * h * 3 || w == 0 || h == 0 {
        return (data, w, h);
    }
    let (ow, oh) = if o >= 5 { (h, w) } else { (w, h) };
    let (wi, hi) = (w as isize, h as isize);
    // Source pixel of output (x, y) is (sx0 + x*ax + y*bx, sy0 + x*ay + y*by).
    let (sx0, ax, bx, sy0, ay, by): (isize, isize, isize, isize, isize, isize) = match o {
        2 => (wi - 1, -1, 0, 0, 0, 1),
        3 => (wi - 1, -1, 0, hi - 1, 0, -1),
        4 => (0, 1, 0, hi - 1, 0, -1),
        5 => (0, 0, 1, 0, 1, 0),
        6 => (0, 0, 1, hi - 1, -1, 0),
        7 => (wi - 1, 0, -1, hi - 1, -1, 0),
        _ => (wi - 1, 0, -1, 0, 1, 0), // 8
    };
    let mut out = vec![0u8; data.len()];
    let step = (ax + ay * wi) * 3;
    // One pass over output rows; a transposed source column of a 384x512 image fits in L2.
    for (y, row) in out.chunks_exact_mut(ow * 3).enumerate() {
        let y = y as isize;
        let mut s = ((sy0 + y * by) * wi + sx0 + y * bx) * 3;
        for px in row.chunks_exact_mut(3) {
            let i = s as usize;
            px.copy_from_slice(&data[i..i + 3]);
            s += step;
        }
    }
    debug_assert_eq!(out.len(), ow * oh * 3);
    (out, ow, oh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::path::PathBuf;

    fn data_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(data_dir().join(name)).expect("fixture exists")
    }

    fn fnv1a64(data: &[u8]) -> String {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        format!("{h:016x}")
    }

    fn reference() -> serde_json::Map<String, serde_json::Value> {
        let text = std::fs::read_to_string(data_dir().join("reference.json")).expect("json");
        serde_json::from_str(&text).expect("valid json")
    }

    /// PIL's pixels for a fixture, checked against the hash PIL wrote.
    fn reference_pixels(entry: &serde_json::Value) -> Image {
        let ref_name = entry["ref"].as_str().expect("ref path");
        let img = decode_image(&read(ref_name), &DecodeOptions::default()).expect("ref png");
        assert_eq!(
            fnv1a64(&img.data),
            entry["fnv1a64"].as_str().unwrap(),
            "{ref_name}"
        );
        img
    }

    /// (mean abs diff per channel, worst single-sample difference).
    fn diff(a: &Image, b: &Image) -> ([f64; 3], u8) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let mut sum = [0u64; 3];
        let mut worst = 0u8;
        for (pa, pb) in a.data.chunks_exact(3).zip(b.data.chunks_exact(3)) {
            for c in 0..3 {
                let d = pa[c].abs_diff(pb[c]);
                sum[c] += u64::from(d);
                worst = worst.max(d);
            }
        }
        let n = (a.width * a.height) as f64;
        (sum.map(|s| s as f64 / n), worst)
    }

    #[test]
    fn every_fixture_matches_pil() {
        let reference = reference();
        let mut checked = 0;
        for (name, entry) in &reference {
            let bytes = read(name);
            let img =
                decode_image(&bytes, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (w, h) = (
                entry["width"].as_u64().unwrap(),
                entry["height"].as_u64().unwrap(),
            );
            assert_eq!((img.width as u64, img.height as u64), (w, h), "{name}");
            assert_eq!((img.source_width, img.source_height), (img.width, img.height));
            assert_eq!(
                read_dimensions(&bytes, true).unwrap(),
                (img.width, img.height),
                "{name}"
            );
            // Means first: they also cover the bench photo, which has no reference PNG.
            let mean = entry["mean"].as_array().unwrap();
            let n = (img.width * img.height) as f64;
            for (c, want) in mean.iter().enumerate() {
                let m: f64 = img.data.iter().skip(c).step_by(3).map(|&v| f64::from(v)).sum();
                let want = want.as_f64().unwrap();
                assert!(
                    (m / n - want).abs() <= 1.0,
                    "{name} channel {c}: {} vs {want}",
                    m / n
                );
            }
            if entry.get("ref").is_some() {
                let (mad, worst) = diff(&img, &reference_pixels(entry));
                println!("parity {name:28} mean abs diff {mad:.3?} worst pixel {worst}");
                assert!(mad.iter().all(|&d| d <= 1.0), "{name}: {mad:?}");
                if name.ends_with(".png") {
                    assert_eq!(worst, 0, "{name}: PNG decoding is lossless");
                }
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} fixtures in reference.json");
    }

    #[test]
    fn exif_orientations_match_pil_transpose() {
        let reference = reference();
        let plain = decode_image(&read("jpeg_420.jpg"), &DecodeOptions::default()).unwrap();
        for name in (1..=8)
            .map(|k| format!("exif_{k}.jpg"))
            .chain(["exif_be_3.jpg".into()])
        {
            let bytes = read(&name);
            let info = read_info(&bytes).unwrap();
            assert_eq!(info.orientation.to_string(), name[name.len() - 5..name.len() - 4]);
            let img = decode_image(&bytes, &DecodeOptions::default()).unwrap();
            let (mad, _) = diff(&img, &reference_pixels(&reference[&name]));
            assert!(mad.iter().all(|&d| d <= 1.0), "{name}: {mad:?}");
            // apply_exif = false keeps the stored pixels.
            let raw = DecodeOptions {
                apply_exif: false,
                ..Default::default()
            };
            let stored = decode_image(&bytes, &raw).unwrap();
            assert_eq!((stored.width, stored.height), (48, 64));
            assert_eq!(read_dimensions(&bytes, false).unwrap(), (48, 64));
            let (mad, _) = diff(&stored, &plain);
            assert!(mad.iter().all(|&d| d <= 1.0), "{name} unrotated: {mad:?}");
        }
    }

    #[test]
    fn exif_parser_handles_both_orders_and_garbage() {
        let le = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        let be = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0\0\0\0\0";
        assert_eq!(exif_orientation(le), Some(6));
        assert_eq!(exif_orientation(be), Some(8));
        assert_eq!(exif_orientation(b""), None);
        assert_eq!(exif_orientation(b"II*\0\xff\xff\xff\xff"), None);
        let mut bad = le.to_vec();
        bad[18] = 9; // orientation 9 does not exist
        assert_eq!(exif_orientation(&bad), None);
        // The value ends at byte 20; any shorter block is unreadable, never out of bounds.
        for cut in 0..le.len() {
            assert_eq!(
                exif_orientation(&le[..cut]),
                (cut >= 20).then_some(6),
                "cut {cut}"
            );
        }
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let mut g = le.to_vec();
            let i = rng.below(g.len() as u64) as usize;
            g[i] = rng.next_u64() as u8;
            let _ = exif_orientation(&g);
        }
    }

    #[test]
    fn orientation_remap_round_trips() {
        let (w, h) = (5, 3);
        let data: Vec<u8> = (0..w * h * 3).map(|v| v as u8).collect();
        // 2, 3, 4, 5 and 7 are their own inverse; 6 and 8 undo each other.
        for (o, inv) in [(2, 2), (3, 3), (4, 4), (5, 5), (6, 8), (7, 7), (8, 6)] {
            let (a, aw, ah) = apply_orientation(data.clone(), w, h, o);
            let (b, bw, bh) = apply_orientation(a, aw, ah, inv);
            assert_eq!((b, bw, bh), (data.clone(), w, h), "orientation {o}");
        }
        // Orientation 6 is a clockwise quarter turn: the bottom-left pixel goes top-left.
        let (a, aw, _) = apply_orientation(data.clone(), w, h, 6);
        assert_eq!(aw, h);
        assert_eq!(&a[0..3], &data[(2 * w) * 3..(2 * w) * 3 + 3]);
    }

    #[test]
    fn scaled_decode_has_expected_size_and_content() {
        let bytes = read("photo_384x512.jpg");
        let full = decode_image(&bytes, &DecodeOptions::default()).unwrap();
        for (need, expect) in [
            ((100, 100), (384, 512)), // 1/2 would fit, but 1/4 would not: full size
            ((96, 128), (96, 128)),
            ((60, 60), (96, 128)),
            ((48, 64), (48, 64)),
            ((1, 1), (48, 64)),
            ((400, 10), (384, 512)),
        ] {
            let opts = DecodeOptions {
                min_size: Some(need),
                ..Default::default()
            };
            let img = decode_image(&bytes, &opts).unwrap();
            assert_eq!((img.width, img.height), expect, "min_size {need:?}");
            assert_eq!((img.source_width, img.source_height), (384, 512));
            assert!(img.width >= need.0.min(384) && img.height >= need.1.min(512));
            if expect.0 < 384 {
                // Compare with a box average of the full decode.
                let k = 384 / expect.0;
                let mut sum = 0u64;
                for y in 0..expect.1 {
                    for x in 0..expect.0 {
                        for c in 0..3 {
                            let mut acc = 0u32;
                            for dy in 0..k {
                                for dx in 0..k {
                                    let p = full.pixel(x * k + dx, y * k + dy).unwrap();
                                    acc += u32::from(p[c]);
                                }
                            }
                            let avg = (acc as f32 / (k * k) as f32).round() as u8;
                            let got = img.pixel(x, y).unwrap()[c];
                            sum += u64::from(avg.abs_diff(got));
                        }
                    }
                }
                let mad = sum as f64 / (expect.0 * expect.1 * 3) as f64;
                println!("scaled 1/{k}: mean abs diff vs box-averaged full decode {mad:.3}");
                assert!(mad < 4.0, "1/{k}: {mad}");
            }
        }
        // min_size is in oriented axes: orientation 6 swaps it before choosing the scale.
        let rotated = read("exif_6.jpg");
        let opts = DecodeOptions {
            min_size: Some((16, 12)),
            ..Default::default()
        };
        let img = decode_image(&rotated, &opts).unwrap();
        assert_eq!(
            (img.width, img.height, img.source_width, img.source_height),
            (16, 12, 64, 48)
        );
        // Grey JPEGs scale too; CMYK stays full size.
        let opts = DecodeOptions {
            min_size: Some((12, 16)),
            ..Default::default()
        };
        let grey = decode_image(&read("jpeg_gray.jpg"), &opts).unwrap();
        assert_eq!((grey.width, grey.height), (12, 16));
        assert!(grey.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let cmyk = decode_image(&read("jpeg_cmyk.jpg"), &opts).unwrap();
        assert_eq!((cmyk.width, cmyk.height), (48, 64));
    }

    /// The region's pixels of `img` (w x h from x, y), as a flat RGB buffer.
    fn crop(img: &Image, r: Roi) -> Vec<u8> {
        let mut out = Vec::new();
        for y in r.y0..r.y1.min(img.height) {
            let row = &img.data[(y * img.width) * 3..(y + 1) * img.width * 3];
            out.extend_from_slice(&row[r.x0.min(img.width) * 3..r.x1.min(img.width) * 3]);
        }
        out
    }

    /// ROI decode gives the full decode's pixels inside the region, for every kind of JPEG
    /// fixture (baseline 4:2:0/4:2:2/4:4:4, odd sizes, grey, CMYK, restart markers,
    /// progressive, every EXIF orientation) and regions inside, across and outside the image.
    #[test]
    fn roi_decode_matches_full_decode_then_crop() {
        let mut cut_short = 0;
        let names: Vec<String> = [
            "photo_384x512.jpg",
            "jpeg_420.jpg",
            "jpeg_422.jpg",
            "jpeg_444.jpg",
            "jpeg_odd_420.jpg",
            "jpeg_gray.jpg",
            "jpeg_cmyk.jpg",
            "jpeg_restart.jpg",
            "jpeg_restart_rows.jpg",
            "jpeg_progressive.jpg",
            "jpeg_progressive_444.jpg",
            "jpeg_progressive_restart.jpg",
            "exif_be_3.jpg",
            "exif_be_6.jpg",
        ]
        .into_iter()
        .map(String::from)
        .chain((1..=8).map(|k| format!("exif_{k}.jpg")))
        .collect();
        for name in &names {
            let bytes = read(name);
            for apply_exif in [true, false] {
                let base = DecodeOptions {
                    apply_exif,
                    ..Default::default()
                };
                let full = decode_image(&bytes, &base).unwrap();
                let (w, h) = (full.width, full.height);
                let rois = [
                    (0, 0, w, h),
                    (0, h / 8, w, h - h / 8), // the bench's centre crop
                    (w / 4, h / 4, w / 2, h / 2),
                    (0, 0, 1, 1),
                    (w - 1, h - 1, w, h),
                    (w / 3, 0, w, 1),
                    (0, h / 2, 3, h + 50),        // runs past the bottom
                    (w + 5, h + 5, w + 9, h + 9), // wholly outside: nothing to save
                ];
                for (x0, y0, x1, y1) in rois {
                    let r = Roi { x0, y0, x1, y1 };
                    let opts = DecodeOptions { roi: Some(r), ..base };
                    let got = decode_image(&bytes, &opts).unwrap();
                    assert_eq!((got.width, got.height), (w, h), "{name} {r:?}");
                    assert_eq!(crop(&got, r), crop(&full, r), "{name} exif {apply_exif} {r:?}");
                    cut_short += usize::from(got.data.iter().rev().take(3 * w).all(|&v| v == 0));
                }
            }
        }
        // The cut really happens (the last row stays zero when the orientation keeps it last).
        assert!(cut_short > 60, "only {cut_short} ROI decodes stopped early");
    }

    #[test]
    fn roi_decode_of_damaged_files_never_panics_and_keeps_the_region() {
        let mut rng = Rng::new(7);
        for name in ["photo_384x512.jpg", "jpeg_restart.jpg", "jpeg_cmyk.jpg"] {
            let good = read(name);
            for _ in 0..150 {
                let mut bytes = good.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] = rng.next_u64() as u8;
                }
                let r = Roi {
                    x0: 0,
                    y0: 0,
                    x1: 16,
                    y1: 16,
                };
                let opts = DecodeOptions {
                    roi: Some(r),
                    ..Default::default()
                };
                let part = decode_image(&bytes, &opts);
                if let Ok(img) = &part {
                    assert_eq!(img.data.len(), img.width * img.height * 3);
                }
                // Damage below the cut cannot change the region; above it, both see it.
                if let Ok(full) = decode_image(&bytes, &DecodeOptions::default()) {
                    let part = part.expect("a file the full decode reads");
                    assert_eq!(crop(&part, r), crop(&full, r), "{name}");
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_file() {
        for name in [
            "bad_zero.jpg",
            "bad_truncated.jpg",
            "bad_truncated.png",
            "bad_corrupt.jpg",
            "bad_corrupt.png",
            "bad_text.jpg",
            "bad_appledouble.jpg",
            "does_not_exist.jpg",
        ] {
            let path = data_dir().join(name);
            match decode_file(&path, &DecodeOptions::default()) {
                Err(Error::Decode { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(!reason.is_empty());
                    let msg = Error::Decode { path: p, reason }.to_string();
                    assert!(msg.contains(name), "{msg}");
                }
                other => panic!("{name}: expected a decode error, got {other:?}"),
            }
        }
    }

    #[test]
    fn size_limits_are_enforced() {
        // A JPEG header claiming 20000x20000 (400 MP) and a PNG claiming 0 x 5.
        let mut jpeg = read("jpeg_420.jpg");
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
        let e = decode_image(&jpeg, &DecodeOptions::default()).unwrap_err();
        assert!(e.to_string().contains("megapixels"), "{e}");
        let mut png = read("png_rgb.png");
        png[16..20].copy_from_slice(&[0, 0, 0, 0]);
        let e = decode_image(&png, &DecodeOptions::default()).unwrap_err();
        assert!(e.to_string().contains("zero dimension"), "{e}");
        assert!(Image::from_rgb(2, 2, vec![0; 11]).is_err());
    }

    /// Found by `cargo fuzz run decode`: an EXIF APP1 segment after the first scan (here
    /// just before EOI) was applied by `decode_image` (whose walk goes to the end) but not by
    /// `read_dimensions` (which stops at the first SOS), so the two disagreed on the size.
    /// PIL reads header segments only up to the first SOS; so do both walks now.
    #[test]
    fn exif_after_first_scan_is_ignored_by_both_walks() {
        let le6 = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        let mut app1 = vec![0xFF, 0xE1, 0, (2 + 6 + le6.len()) as u8];
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(le6);
        let plain = read("jpeg_420.jpg");
        let mut late = plain[..plain.len() - 2].to_vec();
        late.extend_from_slice(&app1);
        late.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(read_info(&late).unwrap().orientation, 1);
        let img = decode_image(&late, &DecodeOptions::default()).unwrap();
        assert_eq!((img.width, img.height), (48, 64));
        assert_eq!(read_dimensions(&late, true).unwrap(), (48, 64));
        assert_eq!(img, decode_image(&plain, &DecodeOptions::default()).unwrap());
        // The same segment before the scan still rotates, in both walks.
        let mut early = plain[..2].to_vec();
        early.extend_from_slice(&app1);
        early.extend_from_slice(&plain[2..]);
        assert_eq!(read_dimensions(&early, true).unwrap(), (64, 48));
        let img = decode_image(&early, &DecodeOptions::default()).unwrap();
        assert_eq!((img.width, img.height), (64, 48));
        // A frame header after the first scan does not count either: both walks refuse.
        let sof = plain.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let len = usize::from(u16::from_be_bytes([plain[sof + 2], plain[sof + 3]]));
        let mut moved = plain[..sof].to_vec();
        moved.extend_from_slice(&plain[sof + 2 + len..plain.len() - 2]);
        moved.extend_from_slice(&plain[sof..sof + 2 + len]);
        moved.extend_from_slice(&[0xFF, 0xD9]);
        assert!(read_info(&moved).is_err());
        assert!(decode_image(&moved, &DecodeOptions::default()).is_err());
    }

    /// Seen while checking the fuzz finding above against PIL: with two EXIF blocks PIL uses
    /// the first even when it has no orientation tag; the walk used the first readable one.
    #[test]
    fn only_the_first_exif_block_counts() {
        let app1 = |tiff: &[u8]| {
            let mut seg = vec![0xFF, 0xE1, 0, (2 + 6 + tiff.len()) as u8];
            seg.extend_from_slice(b"Exif\0\0");
            seg.extend_from_slice(tiff);
            seg
        };
        let le6 = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        // The same IFD with tag 0x010F (Make) where the orientation tag was.
        let mut no_orientation = le6.to_vec();
        no_orientation[10] = 0x0F;
        let plain = read("jpeg_420.jpg");
        let mut two = plain[..2].to_vec();
        two.extend(app1(&no_orientation));
        two.extend(app1(le6));
        two.extend_from_slice(&plain[2..]);
        assert_eq!(read_info(&two).unwrap().orientation, 1);
        let img = decode_image(&two, &DecodeOptions::default()).unwrap();
        assert_eq!((img.width, img.height), (48, 64));
        // Swapped, the first block rotates.
        let mut swapped = plain[..2].to_vec();
        swapped.extend(app1(le6));
        swapped.extend(app1(&no_orientation));
        swapped.extend_from_slice(&plain[2..]);
        assert_eq!(read_info(&swapped).unwrap().orientation, 6);
    }

    /// Truncations at 200 random points and 200 random byte flips: Ok or Err, never a panic.
    #[test]
    fn fuzzed_inputs_never_panic() {
        let mut rng = Rng::new(42);
        for name in [
            "jpeg_420.jpg",
            "jpeg_progressive.jpg",
            "exif_6.jpg",
            "png_rgba.png",
        ] {
            let good = read(name);
            for round in 0..400 {
                let mut bytes = good.clone();
                if round < 200 {
                    bytes.truncate(rng.below(good.len() as u64) as usize);
                } else {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(bytes.len() as u64) as usize;
                        bytes[i] = rng.next_u64() as u8;
                    }
                }
                let scaled = DecodeOptions {
                    min_size: Some((8, 8)),
                    ..Default::default()
                };
                for opts in [DecodeOptions::default(), scaled] {
                    if let Ok(img) = decode_image(&bytes, &opts) {
                        assert_eq!(img.data.len(), img.width * img.height * 3);
                    }
                }
                let _ = read_info(&bytes);
                if round < 200 && bytes.len() < good.len() {
                    // A cut file misses its end marker.
                    assert!(decode_image(&bytes, &DecodeOptions::default()).is_err());
                }
            }
        }
    }
}
