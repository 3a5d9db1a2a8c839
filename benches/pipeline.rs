//! Criterion bench of batch assembly: a batch of 64 samples at 224x224 filled by the
//! pipeline's pool from the 384x512 bench photo, uncached and from a warm cache, with one
//! thread and with every core. `cargo bench --bench pipeline`.

use std::path::PathBuf;
use std::time::Duration;

use _native::augment::AugmentConfig;
use _native::decode::DecodeOptions;
use _native::pipeline::{Pipeline, PipelineConfig, Slot};
use _native::sampler::{Oversample, SamplerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PHOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/photo_384x512.jpg");
const BATCH: usize = 64;
const SIDE: usize = 224;

fn pipeline(threads: usize, cache: bool) -> (Pipeline, Vec<u8>, Vec<i64>) {
    let paths = vec![PathBuf::from(PHOTO); BATCH * 2];
    let labels = Some((0..BATCH as i64 * 2).map(|i| i % 3).collect());
    let cfg = PipelineConfig {
        out_w: SIDE,
        out_h: SIDE,
        threads,
        train: true,
        augment: AugmentConfig::preset("mask").expect("preset"),
        sampler: SamplerConfig {
            shuffle: true,
            oversample: Oversample::None,
            seed: 0,
            rank: 0,
            world_size: 1,
            drop_last: true,
            batch_size: BATCH,
        },
        decode: DecodeOptions::default(),
        cache,
        cache_bytes: None,
        skip_errors: false,
        normalize: None,
    };
    let mut p = Pipeline::new(paths, labels, None, 1, cfg).expect("pipeline");
    let images = vec![0u8; BATCH * SIDE * SIDE * 3];
    let labels = vec![0i64; BATCH];
    p.start_epoch(0).expect("epoch");
    (p, images, labels)
}

fn bench_batches(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut g = c.benchmark_group("batch_64x224x224");
    g.throughput(Throughput::Elements(BATCH as u64));
    for threads in [1, cores] {
        for cache in [false, true] {
            let (mut p, mut images, mut labels) = pipeline(threads, cache);
            // SAFETY: the buffers outlive the pipeline's use of them (it is dropped first below).
            unsafe {
                p.set_slot(
                    0,
                    Slot {
                        images: images.as_mut_ptr(),
                        labels: labels.as_mut_ptr(),
                    },
                )
            }
            .expect("slot");
            let name = format!("{}_threads_{threads}", if cache { "cached" } else { "uncached" });
            let mut batch = 0;
            g.bench_function(name, |b| {
                b.iter(|| {
                    p.schedule(batch % 2, 0).expect("schedule");
                    let n = p
                        .wait(batch % 2, Duration::from_secs(60))
                        .expect("done")
                        .expect("ok");
                    batch += 1;
                    n
                })
            });
            drop(p);
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench_batches
}
criterion_main!(benches);
