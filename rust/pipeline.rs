//! The batch pipeline: a rayon pool fills whole batches into caller-owned buffers.
//!
//! The caller owns a ring of slots (image and label buffers). It schedules batch `b` into a
//! free slot, later waits for it, uses it and hands the slot back by scheduling another batch
//! into it. Work for a batch is split per sample across the pool, and several batches are in
//! flight at once, so decode of batch b+1 overlaps the consumer's use of batch b. Memory is
//! bounded by the ring plus the optional cache. Cancelling (new epoch, close) bumps a
//! generation counter that in-flight samples check, then waits until no job touches a slot.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rayon::prelude::*;

use crate::augment::{self, AugmentConfig, Crop, CropBox};
use crate::color::Output;
use crate::decode::{self, DecodeOptions, Image};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::roi;
use crate::sampler::{self, SamplerConfig};

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Output image size in pixels.
    pub out_w: usize,
    pub out_h: usize,
    pub threads: usize,
    pub train: bool,
    pub augment: AugmentConfig,
    /// The epoch plan, batch size included.
    pub sampler: SamplerConfig,
    pub decode: DecodeOptions,
    /// Keep decoded, downscaled images in RAM across epochs.
    pub cache: bool,
    /// Upper bound of the cache's pixel bytes; past it images are decoded as usual.
    pub cache_bytes: Option<usize>,
    /// Replace a sample that fails to decode with another of its class instead of failing.
    pub skip_errors: bool,
    /// Write float32 `(x - mean) / std` per channel (0..255 units) instead of uint8.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl PipelineConfig {
    /// Bytes of one output sample in a slot: uint8 HWC, or float32 HWC when normalising.
    pub fn sample_bytes(&self) -> usize {
        let elem = if self.normalize.is_some() { 4 } else { 1 };
        self.out_w * self.out_h * 3 * elem
    }
}

/// One ring slot: raw views of buffers the caller keeps alive while the pipeline may write.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub images: *mut u8,
    pub labels: *mut i64,
}

// SAFETY: a slot is written by at most one batch job at a time (the caller never schedules a
// busy slot: `schedule` refuses it), and the caller keeps the memory alive (see lib.rs).
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

struct State {
    done: HashMap<usize, Result<usize>>,
    busy: Vec<bool>,
    in_flight: usize,
}

struct Shared {
    paths: Vec<PathBuf>,
    labels: Option<Vec<i64>>,
    boxes: Option<Vec<Option<CropBox>>>,
    class_members: Vec<Vec<usize>>,
    cfg: PipelineConfig,
    cache: Vec<OnceLock<Arc<Working>>>,
    cache_used: AtomicUsize,
    generation: AtomicU64,
    state: Mutex<State>,
    cond: Condvar,
    skipped: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is caught per job; the data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Pipeline {
    shared: Arc<Shared>,
    pool: rayon::ThreadPool,
    slots: Vec<Option<Slot>>,
    plan: Arc<Vec<usize>>,
    epoch: u64,
}

impl Pipeline {
    pub fn new(
        paths: Vec<PathBuf>,
        labels: Option<Vec<i64>>,
        boxes: Option<Vec<Option<CropBox>>>,
        ring: usize,
        cfg: PipelineConfig,
    ) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Invalid("no images given".into()));
        }
        if let Some(l) = &labels {
            if l.len() != paths.len() {
                return Err(Error::Invalid(format!(
                    "{} labels for {} paths",
                    l.len(),
                    paths.len()
                )));
            }
        }
        if let Some(b) = &boxes {
            if b.len() != paths.len() {
                return Err(Error::Invalid(format!(
                    "{} crop boxes for {} paths",
                    b.len(),
                    paths.len()
                )));
            }
            for (i, crop) in b.iter().enumerate() {
                if let Some(Err(e)) = crop.map(|c| c.check()) {
                    let path = paths[i].display();
                    return Err(Error::Invalid(format!("crop box {i} ({path}): {e}")));
                }
            }
        }
        if cfg.out_w == 0 || cfg.out_h == 0 || cfg.out_w > 8192 || cfg.out_h > 8192 {
            return Err(Error::Invalid(format!(
                "image size {}x{} must be in 1..=8192",
                cfg.out_w, cfg.out_h
            )));
        }
        if ring == 0 {
            return Err(Error::Invalid("the ring needs at least one slot".into()));
        }
        cfg.sampler.validate()?;
        let threads = cfg.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fastmask-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        let mut class_members: Vec<Vec<usize>> = Vec::new();
        if let Some(l) = &labels {
            for (i, &y) in l.iter().enumerate() {
                if let Ok(c) = usize::try_from(y) {
                    if c >= class_members.len() {
                        class_members.resize_with(c + 1, Vec::new);
                    }
                    class_members[c].push(i);
                }
            }
        }
        let n = paths.len();
        let shared = Shared {
            paths,
            labels,
            boxes,
            class_members,
            cache: (0..n).map(|_| OnceLock::new()).collect(),
            cache_used: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            state: Mutex::new(State {
                done: HashMap::new(),
                busy: vec![false; ring],
                in_flight: 0,
            }),
            cond: Condvar::new(),
            skipped: Mutex::new(Vec::new()),
            cfg,
        };
        Ok(Pipeline {
            shared: Arc::new(shared),
            pool,
            slots: vec![None; ring],
            plan: Arc::new(Vec::new()),
            epoch: 0,
        })
    }

    pub fn sample_bytes(&self) -> usize {
        self.shared.cfg.sample_bytes()
    }

    pub fn batch_size(&self) -> usize {
        self.shared.cfg.sampler.batch_size
    }

    pub fn ring(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.shared.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.paths.is_empty()
    }

    /// Samples in this epoch's plan for this rank.
    pub fn plan_len(&self) -> usize {
        self.plan.len()
    }

    pub fn num_batches(&self) -> usize {
        self.plan.len().div_ceil(self.shared.cfg.sampler.batch_size)
    }

    /// Bytes of pixels held by the cache now.
    pub fn cache_bytes_used(&self) -> usize {
        self.shared.cache_used.load(Ordering::Relaxed)
    }

    /// Paths skipped (with on_error=skip) since the last call.
    pub fn take_skipped(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.shared.skipped))
    }

    /// Point slot `index` at new buffers. The slot must not be in flight.
    ///
    /// # Safety
    /// `images` must be valid for writes of batch_size * sample_bytes bytes and `labels` for
    /// batch_size i64 values until the slot is replaced or the pipeline is cancelled/dropped.
    pub unsafe fn set_slot(&mut self, index: usize, slot: Slot) -> Result<()> {
        if index >= self.slots.len() {
            return Err(Error::Invalid(format!(
                "slot {index} is outside the ring of {}",
                self.slots.len()
            )));
        }
        if lock(&self.shared.state).busy[index] {
            return Err(Error::Invalid(format!("slot {index} is being filled")));
        }
        self.slots[index] = Some(slot);
        Ok(())
    }

    /// Cancel in-flight work and wait until no job touches any slot.
    pub fn cancel(&mut self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let mut st = lock(&self.shared.state);
        while st.in_flight > 0 {
            st = self.shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.done.clear();
        st.busy.iter_mut().for_each(|b| *b = false);
    }

    /// Cancel what is in flight and plan `epoch`; returns the number of batches.
    pub fn start_epoch(&mut self, epoch: u64) -> Result<usize> {
        self.cancel();
        let labels = self.shared.labels.as_deref();
        let plan = sampler::epoch_plan(labels, self.shared.paths.len(), &self.shared.cfg.sampler, epoch)?;
        self.plan = Arc::new(plan);
        self.epoch = epoch;
        Ok(self.num_batches())
    }

    /// Start filling `batch` of the current epoch into `slot`.
    pub fn schedule(&self, batch: usize, slot_index: usize) -> Result<()> {
        if batch >= self.num_batches() {
            return Err(Error::Invalid(format!(
                "batch {batch} is past the epoch's {} batches",
                self.num_batches()
            )));
        }
        let slot = self
            .slots
            .get(slot_index)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Invalid(format!("slot {slot_index} has no buffers")))?;
        {
            let mut st = lock(&self.shared.state);
            if st.busy[slot_index] {
                return Err(Error::Invalid(format!("slot {slot_index} is still being filled")));
            }
            st.busy[slot_index] = true;
            st.in_flight += 1;
        }
        let shared = Arc::clone(&self.shared);
        let plan = Arc::clone(&self.plan);
        let generation = shared.generation.load(Ordering::SeqCst);
        let epoch = self.epoch;
        self.pool.spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                fill_batch(&shared, &plan, epoch, batch, slot, generation)
            }))
            .unwrap_or_else(|panic| {
                Err(Error::Invalid(format!(
                    "internal error while filling a batch: {}",
                    panic_message(&panic)
                )))
            });
            let mut st = lock(&shared.state);
            st.in_flight -= 1;
            st.busy[slot_index] = false;
            if shared.generation.load(Ordering::SeqCst) == generation {
                st.done.insert(batch, result);
            }
            drop(st);
            shared.cond.notify_all();
        });
        Ok(())
    }

    /// Wait up to `timeout` for `batch`; Some(samples in it) when done, None on timeout.
    pub fn wait(&self, batch: usize, timeout: Duration) -> Option<Result<usize>> {
        let mut st = lock(&self.shared.state);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = st.done.remove(&batch) {
                return Some(r);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Jobs hold raw pointers into caller memory: they must finish before it can go away.
        self.cancel();
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Scale from the source image to the working image: the crop region, and for training the
/// smallest random-resized crop of it, still covers the output at full resolution.
fn working_scale(cfg: &PipelineConfig, src_w: usize, src_h: usize, crop: Option<CropBox>) -> f64 {
    let (mut rw, mut rh) = match crop {
        // A turned box is never clamped: all of it reaches the output.
        Some(b) if b.angle.is_some() => (f64::from(b.x1 - b.x0).max(1.0), f64::from(b.y1 - b.y0).max(1.0)),
        Some(b) => (
            (b.x1.min(src_w as f32) - b.x0.max(0.0)).max(1.0) as f64,
            (b.y1.min(src_h as f32) - b.y0.max(0.0)).max(1.0) as f64,
        ),
        None => (
            src_w as f64 * cfg.augment.center_crop.0.clamp(0.01, 1.0) as f64,
            src_h as f64 * cfg.augment.center_crop.1.clamp(0.01, 1.0) as f64,
        ),
    };
    if cfg.train && cfg.augment.rrc_p > 0.0 {
        let shrink = (cfg.augment.rrc_scale.0.clamp(0.01, 1.0) as f64).sqrt();
        rw *= shrink;
        rh *= shrink;
    }
    (cfg.out_w as f64 / rw).max(cfg.out_h as f64 / rh).min(1.0)
}

/// An image ready for `augment::process`: pixels and the deterministic crop in them.
struct Working {
    img: Image,
    region: Crop,
}

/// The scale (x, y) of a cache's working image against the decoded one: the output's scale
/// of the crop region, so that eval copies it (see `augment::working_image`). Training and
/// turned crops keep one scale for both axes (rotations stay rotations), training enlarged so
/// the smallest random-resized crop still covers the output at full resolution. Never above
/// 1: no upscaling.
fn cache_scale(cfg: &PipelineConfig, crop: Crop) -> (f64, f64) {
    let region = crop.region;
    let sx = cfg.out_w as f64 / f64::from(region.w);
    let sy = cfg.out_h as f64 / f64::from(region.h);
    let (sx, sy) = if cfg.train || crop.angle.is_some() {
        let mut s = sx.max(sy);
        if cfg.train && cfg.augment.rrc_p > 0.0 {
            s /= (cfg.augment.rrc_scale.0.clamp(0.01, 1.0) as f64).sqrt();
        }
        (s, s)
    } else {
        (sx, sy)
    };
    (sx.min(1.0), sy.min(1.0))
}

/// Decode one image (DCT-scaled when possible) and, for a caching loader, resample it to its
/// working scale.
fn load_working(shared: &Shared, index: usize) -> Result<Arc<Working>> {
    if let Some(work) = shared.cache[index].get() {
        return Ok(Arc::clone(work));
    }
    let cfg = &shared.cfg;
    let path = &shared.paths[index];
    let bytes = std::fs::read(path).map_err(|e| Error::Decode {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let (src_w, src_h) =
        decode::read_dimensions(&bytes, cfg.decode.apply_exif).map_err(|e| e.with_path(path))?;
    let crop = shared.boxes.as_ref().and_then(|b| b[index]);
    let s = working_scale(cfg, src_w, src_h, crop);
    let work_w = ((src_w as f64 * s).ceil() as usize).clamp(1, src_w);
    let work_h = ((src_h as f64 * s).ceil() as usize).clamp(1, src_h);
    // Uncached, decode only the rows the sample can read; the cache keeps the whole region.
    let roi = (!cfg.cache)
        .then(|| {
            roi::sample_roi(
                &cfg.augment,
                cfg.train,
                (cfg.out_w, cfg.out_h),
                (src_w, src_h),
                crop,
            )
        })
        .flatten();
    let opts = DecodeOptions {
        min_size: Some((work_w, work_h)),
        roi,
        ..cfg.decode
    };
    let img = decode::decode_image(&bytes, &opts).map_err(|e| e.with_path(path))?;
    let region = augment::crop_region(&img, crop, &cfg.augment);
    if !cfg.cache {
        // Nothing is kept: resizing twice would only cost time and sharpness.
        return Ok(Arc::new(Working { img, region }));
    }
    // Cached or not, every image of a caching loader goes through the same working image, so
    // batches do not depend on which images fit under the cap.
    let (mut img, region) =
        augment::working_image(img, region, cache_scale(cfg, region)).map_err(|e| e.with_path(path))?;
    img.data.shrink_to_fit();
    let work = Arc::new(Working { img, region });
    let bytes = work.img.data.len();
    let cap = cfg.cache_bytes.unwrap_or(usize::MAX);
    let before = shared.cache_used.fetch_add(bytes, Ordering::SeqCst);
    if before.saturating_add(bytes) > cap || shared.cache[index].set(Arc::clone(&work)).is_err() {
        shared.cache_used.fetch_sub(bytes, Ordering::SeqCst);
    }
    Ok(work)
}

fn make_sample(shared: &Shared, index: usize, rng: &mut Rng, out: &mut [u8]) -> Result<()> {
    let cfg = &shared.cfg;
    let work = load_working(shared, index)?;
    let output = match cfg.normalize {
        None => Output::U8(out),
        Some((mean, std)) => {
            // SAFETY: plain f32 has no invalid bit patterns; align_to_mut only yields aligned
            // middles.
            let (head, floats, tail) = unsafe { out.align_to_mut::<f32>() };
            if !head.is_empty() || !tail.is_empty() {
                return Err(Error::Invalid("float output buffer is not 4-byte aligned".into()));
            }
            Output::F32 {
                out: floats,
                mean,
                std,
            }
        }
    };
    let target = augment::Target::new(output, cfg.out_w, cfg.out_h)?;
    augment::process(&work.img, work.region, &cfg.augment, cfg.train, rng, target)
        .map_err(|e| e.with_path(&shared.paths[index]))
}

/// `make_sample` with a panic turned into an error naming the image, so one bad input never
/// takes down a batch without saying which file it was.
fn guarded_sample(shared: &Shared, index: usize, rng: &mut Rng, out: &mut [u8]) -> Result<()> {
    let path = &shared.paths[index];
    catch_unwind(AssertUnwindSafe(|| {
        failpoint(path);
        make_sample(shared, index, rng, out)
    }))
    .unwrap_or_else(|panic| {
        Err(Error::Decode {
            path: path.clone(),
            reason: format!(
                "internal error (panic) while loading it: {}",
                panic_message(&panic)
            ),
        })
    })
}

/// Test hook: with FASTMASK_FAILPOINT_PANIC=TEXT set when the process starts, loading any path
/// that contains TEXT panics, so tests can prove a worker panic reaches Python and never hangs.
fn failpoint(path: &std::path::Path) {
    static PANIC_ON: OnceLock<Option<String>> = OnceLock::new();
    let text = PANIC_ON.get_or_init(|| {
        std::env::var("FASTMASK_FAILPOINT_PANIC")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if let Some(text) = text {
        if path.to_string_lossy().contains(text.as_str()) {
            panic!("failpoint FASTMASK_FAILPOINT_PANIC={text} hit");
        }
    }
}

/// On a failed sample with skip_errors: another sample of the same class (or any sample).
fn replacement(shared: &Shared, index: usize, rng: &mut Rng) -> usize {
    let members = shared
        .labels
        .as_ref()
        .and_then(|l| usize::try_from(l[index]).ok())
        .and_then(|c| shared.class_members.get(c))
        .filter(|m| m.len() > 1);
    match members {
        Some(m) => m[rng.below(m.len() as u64) as usize],
        None => rng.below(shared.paths.len() as u64) as usize,
    }
}

fn fill_batch(
    shared: &Shared,
    plan: &[usize],
    epoch: u64,
    batch: usize,
    slot: Slot,
    generation: u64,
) -> Result<usize> {
    let cfg = &shared.cfg;
    let bs = cfg.sampler.batch_size;
    let sb = cfg.sample_bytes();
    let start = batch * bs;
    let end = (start + bs).min(plan.len());
    let n = end - start;
    // SAFETY: the slot's buffers hold bs samples and bs labels (checked in lib.rs) and only this
    // job writes them until it reports done (schedule marks the slot busy).
    let images = unsafe { std::slice::from_raw_parts_mut(slot.images, bs * sb) };
    let labels = unsafe { std::slice::from_raw_parts_mut(slot.labels, bs) };
    let sampler = &cfg.sampler;
    images[..n * sb]
        .par_chunks_mut(sb)
        .zip(labels[..n].par_iter_mut())
        .enumerate()
        .try_for_each(|(i, (out, label))| {
            if shared.generation.load(Ordering::Relaxed) != generation {
                return Err(Error::Closed);
            }
            let position = (start + i) as u64;
            let mut index = plan[start + i];
            // One stream per (seed, epoch, rank, position): independent of which thread runs it.
            let mut rng = Rng::derive(&[sampler.seed, epoch, sampler.rank as u64, position]);
            let mut attempt = 0u64;
            loop {
                match guarded_sample(shared, index, &mut rng, out) {
                    Ok(()) => break,
                    Err(err) if cfg.skip_errors && attempt < 16 => {
                        lock(&shared.skipped).push(format!("{err}"));
                        attempt += 1;
                        let mut pick = Rng::derive(&[sampler.seed, epoch, position, attempt, 0x5C1F]);
                        index = replacement(shared, index, &mut pick);
                        rng = Rng::derive(&[sampler.seed, epoch, sampler.rank as u64, position, attempt]);
                    }
                    Err(err) => return Err(err),
                }
            }
            *label = shared.labels.as_ref().map_or(-1, |l| l[index]);
            Ok(())
        })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::Oversample;
    use std::sync::mpsc;

    const PHOTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/photo_384x512.jpg");
    const BATCH: usize = 2;
    const LONG: Duration = Duration::from_secs(60);

    /// A one-thread eval pipeline over 4 copies of the photo, with 2 slots and their buffers
    /// (declared after the pipeline, so it is dropped, and cancelled, first).
    struct Fixture {
        pipe: Pipeline,
        images: Vec<Vec<u8>>,
        labels: Vec<Vec<i64>>,
    }

    fn fixture() -> Fixture {
        let cfg = PipelineConfig {
            out_w: 8,
            out_h: 6,
            threads: 1,
            train: false,
            augment: AugmentConfig::eval(),
            sampler: SamplerConfig {
                shuffle: false,
                oversample: Oversample::None,
                seed: 0,
                rank: 0,
                world_size: 1,
                drop_last: false,
                batch_size: BATCH,
            },
            decode: DecodeOptions::default(),
            cache: false,
            cache_bytes: None,
            skip_errors: false,
            normalize: None,
        };
        let paths = vec![PathBuf::from(PHOTO); 4];
        let mut pipe = Pipeline::new(paths, Some(vec![0, 1, 2, 3]), None, 2, cfg).unwrap();
        let mut images = vec![vec![0u8; BATCH * pipe.sample_bytes()]; 2];
        let mut labels = vec![vec![-7i64; BATCH]; 2];
        for (i, (img, lab)) in images.iter_mut().zip(&mut labels).enumerate() {
            let slot = Slot {
                images: img.as_mut_ptr(),
                labels: lab.as_mut_ptr(),
            };
            // SAFETY: the buffers live in the fixture, which drops the pipeline first.
            unsafe { pipe.set_slot(i, slot) }.unwrap();
        }
        assert_eq!(pipe.start_epoch(0).unwrap(), 2);
        Fixture { pipe, images, labels }
    }

    /// Occupy the pool's one thread until the returned sender is dropped: jobs scheduled
    /// meanwhile wait in its queue.
    fn hold_pool(pipe: &Pipeline) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel::<()>();
        pipe.pool.spawn(move || {
            let _ = rx.recv();
        });
        tx
    }

    fn wait_until_idle(pipe: &Pipeline) {
        let mut st = lock(&pipe.shared.state);
        while st.in_flight > 0 {
            st = pipe.shared.cond.wait_timeout(st, LONG).unwrap().0;
        }
    }

    #[test]
    fn a_busy_slot_is_refused_until_its_batch_is_done() {
        let mut f = fixture();
        let held = hold_pool(&f.pipe);
        f.pipe.schedule(0, 0).unwrap();
        let refused = f.pipe.schedule(1, 0);
        assert!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("still being filled")),
            "{refused:?}"
        );
        let mut spare = (vec![0u8; BATCH * f.pipe.sample_bytes()], vec![0i64; BATCH]);
        let slot = Slot {
            images: spare.0.as_mut_ptr(),
            labels: spare.1.as_mut_ptr(),
        };
        // SAFETY: refused, so the pipeline never keeps these pointers.
        assert!(unsafe { f.pipe.set_slot(0, slot) }.is_err());
        drop(held);
        assert_eq!(f.pipe.wait(0, LONG).unwrap().unwrap(), BATCH);
        assert!(f.images[0].iter().any(|&v| v != 0));
        assert_eq!(f.labels[0], [0, 1]);
        // Done, so free again: the next batch goes into the same slot.
        f.pipe.schedule(1, 0).unwrap();
        assert_eq!(f.pipe.wait(1, LONG).unwrap().unwrap(), BATCH);
        assert!(f.pipe.schedule(2, 1).is_err(), "past the epoch's 2 batches");
    }

    #[test]
    fn cancel_then_wait_finds_nothing_and_every_slot_is_free() {
        let mut f = fixture();
        let held = hold_pool(&f.pipe);
        f.pipe.schedule(0, 0).unwrap();
        f.pipe.schedule(1, 1).unwrap();
        // cancel blocks until the queued jobs have run: let them go once it has started.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        f.pipe.cancel();
        release.join().unwrap();
        assert!(f.pipe.wait(0, Duration::from_millis(20)).is_none());
        assert!(f.pipe.wait(1, Duration::from_millis(20)).is_none());
        // Both slots are free, and the same batches complete when scheduled again.
        f.pipe.schedule(1, 0).unwrap();
        f.pipe.schedule(0, 1).unwrap();
        assert_eq!(f.pipe.wait(0, LONG).unwrap().unwrap(), BATCH);
        assert_eq!(f.pipe.wait(1, LONG).unwrap().unwrap(), BATCH);
    }

    #[test]
    fn a_job_of_an_older_generation_writes_and_reports_nothing() {
        let f = fixture();
        let held = hold_pool(&f.pipe);
        f.pipe.schedule(0, 0).unwrap();
        // What cancel does first, while the job still waits in the queue.
        f.pipe.shared.generation.fetch_add(1, Ordering::SeqCst);
        drop(held);
        wait_until_idle(&f.pipe);
        assert!(f.pipe.wait(0, Duration::from_millis(20)).is_none());
        assert!(f.images[0].iter().all(|&v| v == 0), "a stale job wrote pixels");
        assert!(!lock(&f.pipe.shared.state).busy[0]);
        // A job of the current generation reports as usual.
        f.pipe.schedule(0, 0).unwrap();
        assert_eq!(f.pipe.wait(0, LONG).unwrap().unwrap(), BATCH);
    }
}
