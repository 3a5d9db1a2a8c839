mod myresize;
use fast_image_resize as fr;
use std::time::Instant;
use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
use zune_jpeg::JpegDecoder;

const OUT: usize = 224;
const CROP: [f64; 4] = [0.0, 64.0, 384.0, 384.0];

fn opts(cs: ColorSpace) -> DecoderOptions {
    DecoderOptions::default()
        .jpeg_set_out_colorspace(cs)
        .set_max_width(65535)
        .set_max_height(65535)
}

fn decode_rgb(b: &[u8], cs: ColorSpace) -> (Vec<u8>, usize, usize) {
    let mut d = JpegDecoder::new_with_options(ZCursor::new(b), opts(cs));
    let v = d.decode().unwrap();
    let (w, h) = d.dimensions().unwrap();
    (v, w, h)
}

fn decode_planar(b: &[u8]) -> Vec<(Vec<u8>, usize, usize)> {
    let mut d = JpegDecoder::new_with_options(ZCursor::new(b), opts(ColorSpace::RGB));
    d.decode_planar().unwrap()
}

fn resize(rs: &mut fr::Resizer, src: &[u8], w: usize, h: usize, pt: fr::PixelType, crop: [f64; 4], out: &mut [u8]) {
    let s = fr::images::ImageRef::new(w as u32, h as u32, src, pt).unwrap();
    let mut d = fr::images::Image::from_slice_u8(OUT as u32, OUT as u32, out, pt).unwrap();
    let o = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(crop[0], crop[1], crop[2], crop[3]).use_alpha(false);
    rs.resize(&s, &mut d, &o).unwrap();
}

#[inline(never)]
fn interleave(a: &[u8], b: &[u8], out: &mut [u8]) {
    for ((o, &a), &b) in out.chunks_exact_mut(2).zip(a).zip(b) { o[0] = a; o[1] = b; }
}

#[inline(never)]
fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    if std::is_x86_feature_detected!("avx2") {
        unsafe { ycc_to_rgb_avx2(y, cb, cr, out) }
    } else {
        ycc_to_rgb_impl(y, cb, cr, out)
    }
}

#[target_feature(enable = "avx2")]
unsafe fn ycc_to_rgb_avx2(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    ycc_to_rgb_impl(y, cb, cr, out)
}

#[inline(always)]
fn ycc_to_rgb_impl(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    // JFIF full-range BT.601, 14-bit fixed point with rounding; 16-pixel blocks so the
    // arithmetic vectorises, then a 3-way interleave.
    const S: i32 = 14;
    const H: i32 = 1 << (S - 1);
    const KR: i32 = 22970; // 1.402
    const KGB: i32 = 5638; // 0.344136
    const KGR: i32 = 11700; // 0.714136
    const KB: i32 = 29032; // 1.772
    let n = y.len();
    let mut i = 0;
    while i + 16 <= n {
        let (mut r, mut g, mut b) = ([0u8; 16], [0u8; 16], [0u8; 16]);
        let (ys, cbs, crs) = (&y[i..i + 16], &cb[i..i + 16], &cr[i..i + 16]);
        for k in 0..16 {
            let yv = ((ys[k] as i32) << S) + H;
            let cbv = cbs[k] as i32 - 128;
            let crv = crs[k] as i32 - 128;
            r[k] = ((yv + KR * crv) >> S).clamp(0, 255) as u8;
            g[k] = ((yv - KGB * cbv - KGR * crv) >> S).clamp(0, 255) as u8;
            b[k] = ((yv + KB * cbv) >> S).clamp(0, 255) as u8;
        }
        let o = &mut out[i * 3..i * 3 + 48];
        for k in 0..16 { o[3 * k] = r[k]; o[3 * k + 1] = g[k]; o[3 * k + 2] = b[k]; }
        i += 16;
    }
    for j in i..n {
        let yv = ((y[j] as i32) << S) + H;
        let cbv = cb[j] as i32 - 128;
        let crv = cr[j] as i32 - 128;
        out[3 * j] = ((yv + KR * crv) >> S).clamp(0, 255) as u8;
        out[3 * j + 1] = ((yv - KGB * cbv - KGR * crv) >> S).clamp(0, 255) as u8;
        out[3 * j + 2] = ((yv + KB * cbv) >> S).clamp(0, 255) as u8;
    }
}

#[inline(never)]
fn ycc2_to_rgb(y: &[u8], cbcr: &[u8], _cb: &mut [u8], _cr: &mut [u8], out: &mut [u8]) {
    unsafe { ycc2_avx2(y, cbcr, out) }
}
#[target_feature(enable = "avx2")]
unsafe fn ycc2_avx2(y: &[u8], cbcr: &[u8], out: &mut [u8]) {
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
    // 224*224 is a multiple of 16: no tail
}

struct Bufs { a: Vec<u8>, y: Vec<u8>, cb: Vec<u8>, cr: Vec<u8>, b: Vec<u8> }

fn path_a(rs: &mut fr::Resizer, f: &[u8], out: &mut [u8]) {
    let (v, w, h) = decode_rgb(f, ColorSpace::RGB);
    resize(rs, &v, w, h, fr::PixelType::U8x3, CROP, out);
}

fn path_b(rs: &mut fr::Resizer, f: &[u8], bf: &mut Bufs) {
    let p = decode_planar(f);
    let (ref yp, yw, yh) = p[0];
    resize(rs, yp, yw, yh, fr::PixelType::U8, CROP, &mut bf.y);
    let [x, y, w, h] = CROP;
    // chroma crop in its own coordinates (scale per plane; 4:4:4 -> same as luma)
    let sx = p[1].1 as f64 / yw as f64;
    let sy = p[1].2 as f64 / yh as f64;
    let cc = [x * sx, y * sy, w * sx, h * sy];
    resize(rs, &p[1].0, p[1].1, p[1].2, fr::PixelType::U8, cc, &mut bf.cb);
    resize(rs, &p[2].0, p[2].1, p[2].2, fr::PixelType::U8, cc, &mut bf.cr);
    ycc_to_rgb(&bf.y, &bf.cb, &bf.cr, &mut bf.b);
}

fn median(v: &mut Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let list = std::env::args().nth(1).unwrap_or("/tmp/planar_list.txt".into());
    let passes: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let files: Vec<Vec<u8>> = std::fs::read_to_string(&list).unwrap().lines()
        .filter(|l| !l.is_empty()).map(|l| std::fs::read(l).unwrap()).collect();
    eprintln!("{} files", files.len());
    let mut rs = fr::Resizer::new();
    let mut bf = Bufs { a: vec![0; OUT * OUT * 3], y: vec![0; OUT * OUT], cb: vec![0; OUT * OUT], cr: vec![0; OUT * OUT], b: vec![0; OUT * OUT * 3] };

    // ---- correctness ----
    let (mut ymax, mut ysum, mut cdiff_sum, mut cdiff_max, mut n_c) = (0u32, 0u64, 0u64, 0u32, 0u64);
    let mut dsum = [0u64; 3];
    let mut dmax = [0u32; 3];
    let mut hist = [0u64; 8];
    let mut npx = 0u64;
    let mut fancy_max = 0f64;
    let mut exact444 = 0u32;
    for f in &files {
        let p = decode_planar(f);
        let (ycc, w, h) = decode_rgb(f, ColorSpace::YCbCr);
        assert_eq!(p[0].1 * p[0].2, w * h);
        for i in 0..w * h {
            let d = (p[0].0[i] as i32 - ycc[i * 3] as i32).unsigned_abs();
            ymax = ymax.max(d);
            ysum += d as u64;
        }
        for k in 1..3 {
            let (ref cp, cw, ch) = p[k];
            for yy in 0..h {
                for xx in 0..w {
                    let cx = (xx * cw / w).min(cw - 1);
                    let cy = (yy * ch / h).min(ch - 1);
                    let d = (cp[cy * cw + cx] as i32 - ycc[(yy * w + xx) * 3 + k] as i32).unsigned_abs();
                    cdiff_sum += d as u64;
                    cdiff_max = cdiff_max.max(d);
                    n_c += 1;
                }
            }
        }
        if p[1].1 * 2 == w && p[1].2 * 2 == h {
            for k in 1..3 {
                let (ref c, cw, ch) = p[k];
                let at = |x: usize, y: usize| c[y * cw + x] as i32;
                for yy in 2..h - 2 {
                    for xx in 2..w - 2 {
                        let (cy, cx) = (yy / 2, xx / 2);
                        let fy = if yy % 2 == 0 { cy - 1 } else { cy + 1 };
                        let fx = if xx % 2 == 0 { cx - 1 } else { cx + 1 };
                        let col = |x: usize| 3 * at(x, cy) + at(x, fy);
                        let v = (3 * col(cx) + col(fx)) as f64 / 16.0;
                        let d = (v - ycc[(yy * w + xx) * 3 + k] as f64).abs();
                        if d > fancy_max { fancy_max = d; }
                    }
                }
            }
        } else if p[1].1 == w {
            for k in 1..3 { for i in 0..w * h { exact444 = exact444.max((p[k].0[i] as i32 - ycc[i * 3 + k] as i32).unsigned_abs()); } }
        }
        path_a(&mut rs, f, &mut bf.a);
        path_b(&mut rs, f, &mut bf);
        for i in 0..OUT * OUT {
            for c in 0..3 {
                let d = (bf.a[i * 3 + c] as i32 - bf.b[i * 3 + c] as i32).unsigned_abs();
                dsum[c] += d as u64;
                dmax[c] = dmax[c].max(d);
                hist[(d as usize).min(7)] += 1;
            }
            npx += 1;
        }
    }
    println!("chroma planes -> libjpeg h2v2 fancy formula (f64) vs zune YCbCr-out chroma, interior: max abs {fancy_max:.3}; 4:4:4 chroma exact max abs {exact444}");
    let tot = (files.len() * files[0].len()) as f64; let _ = tot;
    println!("Y plane vs zune YCbCr-out Y: max abs {ymax}, sum abs {ysum}");
    println!("chroma planes (nearest x2) vs zune YCbCr-out upsampled chroma: mean abs {:.3}, max {}", cdiff_sum as f64 / n_c as f64, cdiff_max);
    println!("B vs A pixel diff per channel R,G,B: mean abs {:.3} {:.3} {:.3}; max {} {} {}",
        dsum[0] as f64 / npx as f64, dsum[1] as f64 / npx as f64, dsum[2] as f64 / npx as f64, dmax[0], dmax[1], dmax[2]);
    let ht: u64 = hist.iter().sum();
    println!("B vs A |diff| histogram (0..6, >=7): {:?}", hist.iter().map(|&x| format!("{:.4}", x as f64 / ht as f64)).collect::<Vec<_>>());

    // ---- timing ----
    let mut t = vec![Vec::new(); 18];
    let mut mtmp = Vec::new();
    let (mut cy_o, mut ccb_o, mut ccr_o, mut c_out) = (vec![0u8; OUT * OUT], vec![0u8; OUT * OUT], vec![0u8; OUT * OUT], vec![0u8; OUT * OUT * 3]);
    let mut cdiff = [0u32; 3];
    let mut cdsum = [0u64; 3];
    let mut cbcr = vec![0u8; 192 * 256 * 2];
    let mut cbcr_o = vec![0u8; OUT * OUT * 2];
    let mut b2 = vec![0u8; OUT * OUT * 3];
    let (mut t_cb, mut t_cr) = (vec![0u8; OUT * OUT], vec![0u8; OUT * OUT]);
    let mut b2diff = [0u32; 3];
    let names = ["A' zune RGB decode", "A resize U8x3", "A total", "B' planar decode", "B resize Y", "B resize Cb+Cr", "B ycc->rgb", "B total", "B2 interleave CbCr", "B2 resize CbCr U8x2", "B2 ycc->rgb", "B2 total (B'+Y+..)", "B2 vs A check", "B2 total minus interleave", "C custom resize Y", "C custom resize Cb+Cr", "C ycc->rgb", "C total (B'+..)"];
    for _pass in 0..passes {
        for f in &files {
            let t0 = Instant::now();
            let (v, w, h) = decode_rgb(f, ColorSpace::RGB);
            let t1 = Instant::now();
            resize(&mut rs, &v, w, h, fr::PixelType::U8x3, CROP, &mut bf.a);
            let t2 = Instant::now();
            drop(v);
            let p = decode_planar(f);
            let t3 = Instant::now();
            let (ref yp, yw, yh) = p[0];
            resize(&mut rs, yp, yw, yh, fr::PixelType::U8, CROP, &mut bf.y);
            let t4 = Instant::now();
            let (sx, sy) = (p[1].1 as f64 / yw as f64, p[1].2 as f64 / yh as f64);
            let cc = [CROP[0] * sx, CROP[1] * sy, CROP[2] * sx, CROP[3] * sy];
            if cbcr.len() != p[1].0.len() * 2 { cbcr.resize(p[1].0.len() * 2, 0); }
            resize(&mut rs, &p[1].0, p[1].1, p[1].2, fr::PixelType::U8, cc, &mut bf.cb);
            resize(&mut rs, &p[2].0, p[2].1, p[2].2, fr::PixelType::U8, cc, &mut bf.cr);
            let t5 = Instant::now();
            ycc_to_rgb(&bf.y, &bf.cb, &bf.cr, &mut bf.b);
            let t6 = Instant::now();
            let t7 = Instant::now();
            interleave(&p[1].0, &p[2].0, &mut cbcr);
            let t8 = Instant::now();
            resize(&mut rs, &cbcr, p[1].1, p[1].2, fr::PixelType::U8x2, cc, &mut cbcr_o);
            let t9 = Instant::now();
            ycc2_to_rgb(&bf.y, &cbcr_o, &mut t_cb, &mut t_cr, &mut b2);
            let t10 = Instant::now();
            std::hint::black_box(&b2);
            if _pass == 0 && std::env::var("DBG").is_ok() {
                let mut m = (0u32, 0u32, 0usize, 0usize);
                for i in 0..OUT * OUT {
                    let d0 = (cbcr_o[2 * i] as i32 - bf.cb[i] as i32).unsigned_abs();
                    let d1 = (cbcr_o[2 * i + 1] as i32 - bf.cr[i] as i32).unsigned_abs();
                    if d0 > m.0 { m.0 = d0; m.2 = i; }
                    if d1 > m.1 { m.1 = d1; m.3 = i; }
                }
                if m.0 > 1 || m.1 > 1 { eprintln!("u8x2 vs u8x1: cb max {} at ({},{}), cr max {} at ({},{})", m.0, m.2 % OUT, m.2 / OUT, m.1, m.3 % OUT, m.3 / OUT); }
            }
            let t11 = Instant::now();
            let pl = |k: usize| (&p[k].0[..], p[k].1, p[k].2);
            let (yp2, yw2, yh2) = pl(0);
            unsafe {
                let cx = myresize::coeffs(yw2, CROP[0], CROP[2], OUT);
                let cyc = myresize::coeffs(yh2, CROP[1], CROP[3], OUT);
                myresize::resize_plane(yp2, yw2, &cx, &cyc, 0, yw2, &mut mtmp, &mut cy_o, OUT);
            }
            let t12 = Instant::now();
            unsafe {
                let (cw, ch) = (p[1].1, p[1].2);
                let cx = myresize::coeffs(cw, cc[0], cc[2], OUT);
                let cyc = myresize::coeffs(ch, cc[1], cc[3], OUT);
                myresize::resize_plane(&p[1].0, cw, &cx, &cyc, 0, cw, &mut mtmp, &mut ccb_o, OUT);
                myresize::resize_plane(&p[2].0, cw, &cx, &cyc, 0, cw, &mut mtmp, &mut ccr_o, OUT);
            }
            let t13 = Instant::now();
            ycc_to_rgb(&cy_o, &ccb_o, &ccr_o, &mut c_out);
            let t14 = Instant::now();
            std::hint::black_box(&c_out);
            for (i, (x, y)) in c_out.iter().zip(&bf.b).enumerate() { let d = (*x as i32 - *y as i32).unsigned_abs(); cdiff[i % 3] = cdiff[i % 3].max(d); cdsum[i % 3] += d as u64; }
            let us = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6;
            t[14].push(us(t11, t12)); t[15].push(us(t12, t13)); t[16].push(us(t13, t14)); t[17].push(us(t2, t3) + us(t11, t14));
            t[8].push(us(t7, t8)); t[9].push(us(t8, t9)); t[10].push(us(t9, t10));
            t[11].push(us(t2, t4) + us(t7, t10));
            t[12].push(if b2 == bf.b { 0.0 } else { 1.0 });
            for (i, (x, y)) in b2.iter().zip(&bf.b).enumerate() { b2diff[i % 3] = b2diff[i % 3].max((*x as i32 - *y as i32).unsigned_abs()); }
            t[13].push(us(t2, t4) + us(t8, t10));
            t[0].push(us(t0, t1)); t[1].push(us(t1, t2)); t[2].push(us(t0, t2));
            t[3].push(us(t2, t3)); t[4].push(us(t3, t4)); t[5].push(us(t4, t5)); t[6].push(us(t5, t6)); t[7].push(us(t2, t6));
            std::hint::black_box((&bf.a, &bf.b));
        }
    }
    println!("B2 vs B max abs diff per channel: {:?}", b2diff);
    let nn = (t[0].len() * OUT * OUT) as f64;
    println!("C vs B max abs diff per channel: {:?}, mean {:.4} {:.4} {:.4}", cdiff, cdsum[0] as f64 / nn, cdsum[1] as f64 / nn, cdsum[2] as f64 / nn);
    for (n, v) in names.iter().zip(t.iter_mut()) {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!("{n:24} median {:8.1} us  mean {:8.1} us  (n={})", median(v), mean, v.len());
    }
}
