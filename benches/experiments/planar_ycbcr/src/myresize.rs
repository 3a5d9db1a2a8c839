// Quick separable bilinear (triangle) resize for one u8 plane, vertical pass first, then
// horizontal; 14-bit fixed-point weights padded to T taps. Same filter as fast_image_resize's
// Bilinear (support 1, scaled by the downscale ratio), u8 intermediate like fir.
pub struct Coeffs { pub start: Vec<usize>, pub w: Vec<i16>, pub taps: usize }

pub fn coeffs(src_len: usize, start: f64, len: f64, n_out: usize) -> Coeffs {
    let scale = len / n_out as f64;
    let fs = scale.max(1.0);
    let mut rows: Vec<(usize, Vec<f64>)> = Vec::new();
    for i in 0..n_out {
        let c = start + (i as f64 + 0.5) * scale;
        let lo = ((c - fs).floor().max(0.0)) as usize;
        let hi = ((c + fs).ceil() as usize).min(src_len);
        let ws: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 + 0.5 - c) / fs).abs()).max(0.0)).collect();
        let sum: f64 = ws.iter().sum();
        rows.push((lo, ws.iter().map(|w| w / sum).collect()));
    }
    let taps = rows.iter().map(|r| r.1.len()).max().unwrap();
    let mut st = Vec::new();
    let mut w = Vec::new();
    for (lo, ws) in rows {
        let lo2 = lo.min(src_len - taps);
        let delta = lo - lo2;
        st.push(lo2);
        let mut v = vec![0i16; taps];
        for (k, x) in ws.iter().enumerate() { v[k + delta] = (x * 16384.0).round() as i16; }
        w.extend(v);
    }
    Coeffs { start: st, w, taps }
}

#[target_feature(enable = "avx2")]
pub unsafe fn resize_plane(src: &[u8], stride: usize, cx: &Coeffs, cy: &Coeffs, x0: usize, xw: usize, tmp: &mut Vec<u8>, out: &mut [u8], ow: usize) {
    // vertical: rows of width xw (columns x0..x0+xw)
    let oh = cy.start.len();
    tmp.resize(oh * xw, 0);
    let mut acc = vec![0i32; xw];
    for oy in 0..oh {
        acc.iter_mut().for_each(|a| *a = 1 << 13);
        let sy = cy.start[oy];
        for t in 0..cy.taps {
            let w = cy.w[oy * cy.taps + t] as i32;
            if w == 0 { continue; }
            let row = &src[(sy + t) * stride + x0..][..xw];
            for (a, &s) in acc.iter_mut().zip(row) { *a += w * s as i32; }
        }
        for (d, &a) in tmp[oy * xw..][..xw].iter_mut().zip(&acc) { *d = (a >> 14).clamp(0, 255) as u8; }
    }
    match cx.taps {
        2 => horiz::<2>(tmp, xw, oh, cx, out, ow),
        3 => horiz::<3>(tmp, xw, oh, cx, out, ow),
        4 => horiz::<4>(tmp, xw, oh, cx, out, ow),
        5 => horiz::<5>(tmp, xw, oh, cx, out, ow),
        6 => horiz::<6>(tmp, xw, oh, cx, out, ow),
        _ => panic!("taps"),
    }
}

#[inline(always)]
unsafe fn horiz<const T: usize>(tmp: &[u8], xw: usize, oh: usize, cx: &Coeffs, out: &mut [u8], ow: usize) {
    for oy in 0..oh {
        let row = &tmp[oy * xw..][..xw];
        let orow = &mut out[oy * ow..][..ow];
        for (ox, o) in orow.iter_mut().enumerate() {
            let st = *cx.start.get_unchecked(ox);
            let s: &[u8; T] = &*(row.as_ptr().add(st) as *const [u8; T]);
            let w: &[i16; T] = &*(cx.w.as_ptr().add(ox * T) as *const [i16; T]);
            let mut a = 1i32 << 13;
            for k in 0..T { a += w[k] as i32 * s[k] as i32; }
            *o = (a >> 14).clamp(0, 255) as u8;
        }
    }
}
