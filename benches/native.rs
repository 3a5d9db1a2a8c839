//! Criterion benches of the native image core: decode of the 384x512 bench photo (full,
//! ROI-cut and DCT-scaled, against the full decode (+ resize) as the baseline), every augmentation op at
//! 224x224, and `process` in eval and train mode. `cargo bench --bench native`.

use std::hint::black_box;
use std::time::Duration;

use _native::augment::{self, AugmentConfig, Rect};
use _native::color::{self, ColorOps};
use _native::decode::{decode_image, DecodeOptions};
use _native::rng::Rng;
use _native::roi::Roi;
use criterion::{criterion_group, criterion_main, Criterion};

const PHOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/photo_384x512.jpg");
const SIDE: usize = 224;

fn photo_bytes() -> Vec<u8> {
    std::fs::read(PHOTO).expect("run tests/data/make_fixtures.py to create the bench photo")
}

fn bench_decode(c: &mut Criterion) {
    let bytes = photo_bytes();
    let full = DecodeOptions::default();
    let mut g = c.benchmark_group("decode_384x512");
    g.bench_function("full", |b| {
        b.iter(|| decode_image(black_box(&bytes), &full).unwrap())
    });
    // ROI decode (rust/roi.rs) for the loader bench's centre crop, 384x384 of 384x512 plus
    // the resize margin, and for a 192x192 face-sized box in the upper half; baseline: full.
    let bench_crop = Roi {
        x0: 0,
        y0: 60,
        x1: 384,
        y1: 452,
    };
    let face_box = Roi {
        x0: 96,
        y0: 40,
        x1: 288,
        y1: 232,
    };
    for (label, roi) in [("roi_centre_384x384", bench_crop), ("roi_face_192x192", face_box)] {
        let opts = DecodeOptions {
            roi: Some(roi),
            ..Default::default()
        };
        g.bench_function(label, |b| {
            b.iter(|| decode_image(black_box(&bytes), &opts).unwrap())
        });
    }
    for (label, need) in [("quarter_96x128", (96, 128)), ("eighth_48x64", (48, 64))] {
        let scaled = DecodeOptions {
            min_size: Some(need),
            ..Default::default()
        };
        g.bench_function(format!("dct_scaled_{label}"), |b| {
            b.iter(|| decode_image(black_box(&bytes), &scaled).unwrap())
        });
        // The baseline the scaled path must beat: full decode, then an antialiased resize.
        g.bench_function(format!("full_then_resize_{label}"), |b| {
            b.iter(|| {
                let img = decode_image(black_box(&bytes), &full).unwrap();
                augment::resize_image(&img, need.0, need.1).unwrap()
            })
        });
    }
    // 192x256 is served by the full decode (jpeg-decoder's 1/2 path measured slower).
    g.bench_function("full_then_resize_half_192x256", |b| {
        b.iter(|| {
            let img = decode_image(black_box(&bytes), &full).unwrap();
            augment::resize_image(&img, 192, 256).unwrap()
        })
    });
    g.finish();
}

fn bench_ops(c: &mut Criterion) {
    let photo = decode_image(&photo_bytes(), &DecodeOptions::default()).unwrap();
    let eval = AugmentConfig::eval();
    let region = augment::crop_region(&photo, None, &eval).region;
    let mut base = vec![0u8; SIDE * SIDE * 3];
    augment::resize_into(&photo, region, &mut base, SIDE, SIDE).unwrap();
    let mut buf = base.clone();
    let mut rng = Rng::new(1);

    let mut g = c.benchmark_group("ops_224");
    g.bench_function("resize_384x384_region", |b| {
        b.iter(|| augment::resize_into(&photo, black_box(region), &mut buf, SIDE, SIDE).unwrap())
    });
    g.bench_function("rotate_warp_7deg", |b| {
        b.iter(|| augment::rotate(&photo, black_box(region), 7.0, &mut buf, SIDE, SIDE).unwrap())
    });
    g.bench_function("hflip", |b| {
        b.iter(|| augment::hflip_in_place(&mut buf, SIDE, SIDE).unwrap())
    });
    // Each colour op restores the buffer first so every iteration sees the same photo.
    let mut colour = |name: &str, op: &dyn Fn(&mut [u8], &mut Rng)| {
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(&base);
                op(&mut buf, &mut rng)
            })
        });
    };
    colour("copy_only_baseline", &|_, _| {});
    // One colour operation at a time through the colour stage.
    let one = |edit: fn(&mut ColorOps)| {
        let mut ops = ColorOps::IDENTITY;
        edit(&mut ops);
        move |b: &mut [u8], _: &mut Rng| color::apply_in_place(b, SIDE, SIDE, &ops).unwrap()
    };
    colour("brightness", &one(|o| o.brightness = 1.2));
    colour("contrast", &one(|o| o.contrast = 0.8));
    colour("saturation", &one(|o| o.saturation = 1.3));
    colour("hue_yiq", &one(|o| o.hue = 0.05));
    colour("grayscale", &one(|o| o.grayscale = true));
    colour("noise", &|b, r| augment::add_noise(b, 5.0, r));
    colour("erase_quarter", &|b, r| {
        augment::erase(
            b,
            SIDE,
            SIDE,
            Rect {
                x: 50,
                y: 50,
                w: 112,
                h: 112,
            },
            r,
        )
        .unwrap()
    });
    g.finish();

    // The loader's colour stage as the bench loader config uses it: flip + b, c, s jitter,
    // written as normalised float32 in the same pass.
    let mut g = c.benchmark_group("colour_stage_224");
    let ops = ColorOps {
        flip: true,
        brightness: 1.15,
        contrast: 0.9,
        saturation: 1.1,
        ..ColorOps::IDENTITY
    };
    let mut floats = vec![0f32; SIDE * SIDE * 3];
    let (mean, std) = ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4]);
    g.bench_function("flip_bcs_to_f32", |b| {
        b.iter(|| {
            color::apply(
                color::View::whole(black_box(&base), SIDE, SIDE).unwrap(),
                &ops,
                color::Output::F32 {
                    out: &mut floats,
                    mean,
                    std,
                },
            )
            .unwrap()
        })
    });
    g.bench_function("normalize_only_to_f32", |b| {
        b.iter(|| augment::normalize_into(black_box(&base), &mut floats, mean, std).unwrap())
    });
    g.bench_function("flip_bcs_in_place_u8", |b| {
        b.iter(|| {
            buf.copy_from_slice(&base);
            color::apply_in_place(&mut buf, SIDE, SIDE, &ops).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("process_224");
    let mask = AugmentConfig::preset("mask").unwrap();
    let mut out = vec![0u8; SIDE * SIDE * 3];
    let centre = augment::crop_region(&photo, None, &eval);
    let mut process = |cfg: &AugmentConfig, train: bool, rng: &mut Rng| {
        let target = augment::Target::u8(&mut out, SIDE, SIDE).unwrap();
        augment::process(&photo, centre, cfg, train, rng, target).unwrap()
    };
    g.bench_function("eval", |b| b.iter(|| process(&eval, false, &mut rng)));
    let mut seed = 0u64;
    g.bench_function("train_mask_preset", |b| {
        b.iter(|| {
            seed += 1;
            let mut r = Rng::derive(&[seed]);
            process(&mask, true, &mut r)
        })
    });
    let all_on = AugmentConfig {
        rrc_p: 1.0,
        rotate_p: 1.0,
        jitter_p: 1.0,
        hue: 0.05,
        grayscale_p: 0.0,
        noise_p: 1.0,
        erase_p: 1.0,
        ..mask.clone()
    };
    g.bench_function("train_every_op", |b| {
        b.iter(|| {
            seed += 1;
            let mut r = Rng::derive(&[seed]);
            process(&all_on, true, &mut r)
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! { name = benches; config = config(); targets = bench_decode, bench_ops }
criterion_main!(benches);
