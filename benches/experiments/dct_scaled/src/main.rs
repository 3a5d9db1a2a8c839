use fast_image_resize as fr;
use std::time::Instant;
use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
use zune_jpeg::JpegDecoder;

const OUT: usize = 224;

fn opts() -> DecoderOptions {
    DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_max_width(65535).set_max_height(65535)
}

fn decode_rgb(b: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut d = JpegDecoder::new_with_options(ZCursor::new(b), opts());
    let v = d.decode().unwrap();
    let (w, h) = d.dimensions().unwrap();
    (v, w, h)
}

fn resize(rs: &mut fr::Resizer, src: &[u8], w: usize, h: usize, pt: fr::PixelType, crop: [f64; 4], out: &mut [u8]) {
    let s = fr::images::ImageRef::new(w as u32, h as u32, src, pt).unwrap();
    let mut d = fr::images::Image::from_slice_u8(OUT as u32, OUT as u32, out, pt).unwrap();
    let o = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(crop[0], crop[1], crop[2], crop[3]).use_alpha(false);
    rs.resize(&s, &mut d, &o).unwrap();
}

/// Centre square crop of a w x h image (full width, rows centred), as the bench.
fn crop_of(w: usize, h: usize) -> [f64; 4] {
    let s = w.min(h) as f64;
    [(w as f64 - s) / 2.0, (h as f64 - s) / 2.0, s, s]
}

fn ycc2_to_rgb(y: &[u8], cbcr: &[u8], out: &mut [u8]) {
    const S: i32 = 14;
    const H: i32 = 1 << (S - 1);
    const KR: i32 = 22970; const KGB: i32 = 5638; const KGR: i32 = 11700; const KB: i32 = 29032;
    for ((o, ys), c) in out.chunks_exact_mut(48).zip(y.chunks_exact(16)).zip(cbcr.chunks_exact(32)) {
        let (mut r, mut g, mut b) = ([0u8; 16], [0u8; 16], [0u8; 16]);
        for k in 0..16 {
            let yv = ((ys[k] as i32) << S) + H;
            let cbv = c[2 * k] as i32 - 128;
            let crv = c[2 * k + 1] as i32 - 128;
            r[k] = ((yv + KR * crv) >> S).clamp(0, 255) as u8;
            g[k] = ((yv - KGB * cbv - KGR * crv) >> S).clamp(0, 255) as u8;
            b[k] = ((yv + KB * cbv) >> S).clamp(0, 255) as u8;
        }
        for k in 0..16 { o[3 * k] = r[k]; o[3 * k + 1] = g[k]; o[3 * k + 2] = b[k]; }
    }
}

/// Scale n/8: the smallest n with the crop still >= OUT.
fn scale_for(crop: [f64; 4]) -> usize {
    (1..=8).find(|&n| crop[2].min(crop[3]) * n as f64 / 8.0 >= OUT as f64).unwrap_or(8)
}

struct Tmp { cbcr: Vec<u8>, cbcr_o: Vec<u8>, y: Vec<u8> }

/// D: planar scaled decode, Y resize, CbCr (U8x2) resize, YCbCr -> RGB. None = not baseline.
fn path_d(rs: &mut fr::Resizer, f: &[u8], t: &mut Tmp, out: &mut [u8], fixed: Option<usize>) -> Option<usize> {
    let mut hd = JpegDecoder::new_with_options(ZCursor::new(f), opts());
    hd.decode_headers().ok()?;
    let (w, h) = hd.dimensions()?;
    let crop = crop_of(w, h);
    let n = fixed.unwrap_or_else(|| scale_for(crop));
    let mut d = JpegDecoder::new_with_options(ZCursor::new(f), opts());
    let p = d.decode_planar_scaled(n).ok()?;
    if p.len() != 3 { return None; }
    let (ref yp, yw, yh) = p[0];
    let s = n as f64 / 8.0;
    let yc = [crop[0] * s, crop[1] * s, (crop[2] * s).min(yw as f64), (crop[3] * s).min(yh as f64)];
    resize(rs, yp, yw, yh, fr::PixelType::U8, yc, &mut t.y);
    let (cw, ch) = (p[1].1, p[1].2);
    let (sx, sy) = (cw as f64 / yw as f64, ch as f64 / yh as f64);
    let cc = [yc[0] * sx, yc[1] * sy, (yc[2] * sx).min(cw as f64), (yc[3] * sy).min(ch as f64)];
    t.cbcr.resize(cw * ch * 2, 0);
    for ((o, &a), &b) in t.cbcr.chunks_exact_mut(2).zip(&p[1].0).zip(&p[2].0) { o[0] = a; o[1] = b; }
    resize(rs, &t.cbcr, cw, ch, fr::PixelType::U8x2, cc, &mut t.cbcr_o);
    ycc2_to_rgb(&t.y, &t.cbcr_o, out);
    Some(n)
}

fn path_a(rs: &mut fr::Resizer, f: &[u8], out: &mut [u8]) {
    let (v, w, h) = decode_rgb(f);
    resize(rs, &v, w, h, fr::PixelType::U8x3, crop_of(w, h), out);
}

fn median(v: &mut Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let list = std::env::args().nth(1).expect("list");
    let passes: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let fixed: Option<usize> = std::env::args().nth(3).map(|s| s.parse().unwrap());
    let files: Vec<Vec<u8>> = std::fs::read_to_string(&list).unwrap().lines()
        .filter(|l| !l.is_empty()).map(|l| std::fs::read(l).unwrap()).collect();
    let mut rs = fr::Resizer::new();
    let mut t = Tmp { cbcr: vec![], cbcr_o: vec![0; OUT * OUT * 2], y: vec![0; OUT * OUT] };
    let (mut a, mut b) = (vec![0u8; OUT * OUT * 3], vec![0u8; OUT * OUT * 3]);
    // fidelity: D vs A
    let (mut dsum, mut dmax, mut npx, mut nd) = (0u64, 0u32, 0u64, 0usize);
    let mut worst = (0f64, 0usize);
    for (fi, f) in files.iter().enumerate() {
        path_a(&mut rs, f, &mut a);
        if path_d(&mut rs, f, &mut t, &mut b, fixed).is_some() {
            nd += 1;
            let mut s = 0u64;
            for (x, y) in a.iter().zip(&b) { let d = (*x as i32 - *y as i32).unsigned_abs(); s += d as u64; dmax = dmax.max(d); }
            dsum += s; npx += a.len() as u64;
            let m = s as f64 / a.len() as f64; if m > worst.0 { worst = (m, fi); }
        }
    }
    println!("{} files, {} through D; D vs A: mean abs {:.3}, max {}, worst file mean {:.3} (#{})", files.len(), nd, dsum as f64 / npx as f64, dmax, worst.0, worst.1);
    let base: Vec<&Vec<u8>> = files.iter().filter(|f| {
        let mut d = JpegDecoder::new_with_options(ZCursor::new(f), opts());
        d.decode_planar().is_ok()
    }).collect();
    let n = fixed.unwrap_or(5);
    let names = ["full RGB decode", "A: decode + crop-resize U8x3", "planar 8/8 decode", "planar n/8 decode", "D total", "D: Y resize", "D: CbCr interleave+resize", "D: ycc->rgb"];
    let mut tt: Vec<Vec<f64>> = vec![vec![]; names.len()];
    for _ in 0..passes {
        let mut acc = vec![0.0; names.len()];
        for f in &base {
            let us = |x: Instant, y: Instant| (y - x).as_secs_f64() * 1e6;
            let t0 = Instant::now();
            let v = decode_rgb(f); std::hint::black_box(&v); drop(v);
            let t1 = Instant::now();
            path_a(&mut rs, f, &mut a);
            let t2 = Instant::now();
            let mut d = JpegDecoder::new_with_options(ZCursor::new(f), opts());
            let p8 = d.decode_planar_scaled(8).unwrap(); std::hint::black_box(&p8); drop(p8);
            let t3 = Instant::now();
            path_d(&mut rs, f, &mut t, &mut b, Some(n)).unwrap();
            let t4 = Instant::now();
            let mut d = JpegDecoder::new_with_options(ZCursor::new(f), opts());
            let p = d.decode_planar_scaled(n).unwrap();
            let t5 = Instant::now();
            let (ref yp, yw, yh) = p[0];
            let s = n as f64 / 8.0;
            let (w, h) = (yw * 8 / n, yh * 8 / n);
            let crop = crop_of(w, h);
            let yc = [crop[0] * s, crop[1] * s, (crop[2] * s).min(yw as f64), (crop[3] * s).min(yh as f64)];
            resize(&mut rs, yp, yw, yh, fr::PixelType::U8, yc, &mut t.y);
            let t6 = Instant::now();
            let (cw, ch) = (p[1].1, p[1].2);
            let (sx, sy) = (cw as f64 / yw as f64, ch as f64 / yh as f64);
            let cc = [yc[0] * sx, yc[1] * sy, (yc[2] * sx).min(cw as f64), (yc[3] * sy).min(ch as f64)];
            t.cbcr.resize(cw * ch * 2, 0);
            for ((o, &a), &b) in t.cbcr.chunks_exact_mut(2).zip(&p[1].0).zip(&p[2].0) { o[0] = a; o[1] = b; }
            resize(&mut rs, &t.cbcr, cw, ch, fr::PixelType::U8x2, cc, &mut t.cbcr_o);
            let t7 = Instant::now();
            ycc2_to_rgb(&t.y, &t.cbcr_o, &mut b);
            let t8 = Instant::now();
            for (k, v) in [us(t0,t1), us(t1,t2), us(t2,t3), us(t4,t5), us(t3,t4), us(t5,t6), us(t6,t7), us(t7,t8)].into_iter().enumerate() { acc[k] += v; }
        }
        for (k, v) in acc.into_iter().enumerate() { tt[k].push(v / base.len() as f64); }
    }
    println!("{} baseline files, scale {n}/8, per image, medians of {passes} passes:", base.len());
    for (nm, v) in names.iter().zip(tt.iter_mut()) { println!("  {nm:32} {:8.1} us", median(v)); }

}
