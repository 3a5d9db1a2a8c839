//! The epoch plan: which sample goes where, for one (seed, epoch) and one rank.
//!
//! Every rank computes the same global plan from (seed, epoch), then takes its own shard,
//! so shards are disjoint and equal in length without any communication.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How often each class is drawn in an epoch.
#[derive(Clone, Debug, PartialEq)]
pub enum Oversample {
    /// Every sample once.
    None,
    /// Every class as often as the largest one; minority samples repeat (with fresh augmentation).
    Balanced,
    /// Class `c` appears `round(count_c * weights[c])` times: 2.0 doubles a class, 0.5 halves it.
    Weights(Vec<f64>),
}

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub shuffle: bool,
    pub oversample: Oversample,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
    /// Drop the tail that does not fill a whole batch (and, across ranks, a whole round).
    pub drop_last: bool,
    pub batch_size: usize,
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(Error::Invalid(format!(
                "rank {} must be in 0..world_size ({})",
                self.rank, self.world_size
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Invalid("batch_size must be >= 1".into()));
        }
        if let Oversample::Weights(w) = &self.oversample {
            if let Some(bad) = w.iter().find(|x| !x.is_finite() || **x < 0.0) {
                return Err(Error::Invalid(format!(
                    "oversampling weight {bad} must be a finite number >= 0"
                )));
            }
        }
        Ok(())
    }
}

/// Indices into the sample list grouped by label (labels must be >= 0).
fn by_class(labels: &[i64]) -> Result<Vec<Vec<usize>>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &y) in labels.iter().enumerate() {
        let c = usize::try_from(y).map_err(|_| {
            Error::Invalid(format!(
                "label {y} at position {i} is negative; oversampling needs class labels >= 0"
            ))
        })?;
        if c >= groups.len() {
            groups.resize_with(c + 1, Vec::new);
        }
        groups[c].push(i);
    }
    Ok(groups)
}

/// `count` draws from `members`: whole shuffled copies, then a random subset for the rest.
fn repeat_class(members: &[usize], count: usize, rng: &mut Rng, out: &mut Vec<usize>) {
    if members.is_empty() {
        return;
    }
    let mut left = count;
    while left >= members.len() {
        out.extend_from_slice(members);
        left -= members.len();
    }
    if left > 0 {
        let mut pick = members.to_vec();
        rng.shuffle(&mut pick);
        out.extend_from_slice(&pick[..left]);
    }
}

/// The whole epoch's sample order before sharding.
pub fn global_plan(labels: Option<&[i64]>, n: usize, cfg: &SamplerConfig, epoch: u64) -> Result<Vec<usize>> {
    cfg.validate()?;
    let mut rng = Rng::derive(&[cfg.seed, epoch, 0x5A3D_1E5A]);
    let mut plan: Vec<usize> = match (&cfg.oversample, labels) {
        (Oversample::None, _) => (0..n).collect(),
        (_, None) => {
            return Err(Error::Invalid("oversampling needs labels".into()));
        }
        (Oversample::Balanced, Some(labels)) => {
            let groups = by_class(labels)?;
            let largest = groups.iter().map(Vec::len).max().unwrap_or(0);
            let mut plan = Vec::with_capacity(largest * groups.len());
            for members in &groups {
                repeat_class(members, largest, &mut rng, &mut plan);
            }
            plan
        }
        (Oversample::Weights(weights), Some(labels)) => {
            let groups = by_class(labels)?;
            let mut plan = Vec::new();
            for (c, members) in groups.iter().enumerate() {
                let w = weights.get(c).copied().unwrap_or(1.0);
                let count = (members.len() as f64 * w).round() as usize;
                repeat_class(members, count, &mut rng, &mut plan);
            }
            plan
        }
    };
    if cfg.shuffle {
        rng.shuffle(&mut plan);
    }
    Ok(plan)
}

/// This rank's share of the epoch: disjoint from the other ranks' and of equal length.
///
/// Without drop_last the plan is padded from its start to a multiple of world_size (as
/// torch's DistributedSampler does); with drop_last it is cut to whole batches on every rank.
pub fn epoch_plan(labels: Option<&[i64]>, n: usize, cfg: &SamplerConfig, epoch: u64) -> Result<Vec<usize>> {
    let mut plan = global_plan(labels, n, cfg, epoch)?;
    let ws = cfg.world_size;
    if cfg.drop_last {
        let per_rank = plan.len() / ws / cfg.batch_size * cfg.batch_size;
        plan.truncate(per_rank * ws);
    } else if !plan.is_empty() && plan.len() % ws != 0 {
        let pad = ws - plan.len() % ws;
        let head: Vec<usize> = plan.iter().cycle().take(pad).copied().collect();
        plan.extend(head);
    }
    Ok(plan.into_iter().skip(cfg.rank).step_by(ws).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(oversample: Oversample) -> SamplerConfig {
        SamplerConfig {
            shuffle: true,
            oversample,
            seed: 1,
            rank: 0,
            world_size: 1,
            drop_last: false,
            batch_size: 4,
        }
    }

    fn labels() -> Vec<i64> {
        // 50 of class 0, 10 of class 1, 3 of class 2
        let mut v = vec![0i64; 50];
        v.extend(vec![1; 10]);
        v.extend(vec![2; 3]);
        v
    }

    #[test]
    fn plain_plan_is_a_permutation_and_depends_on_seed_and_epoch() {
        let c = cfg(Oversample::None);
        let a = epoch_plan(None, 100, &c, 0).unwrap();
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_plan(None, 100, &c, 0).unwrap());
        assert_ne!(a, epoch_plan(None, 100, &c, 1).unwrap());
        let unshuffled = SamplerConfig { shuffle: false, ..c };
        assert_eq!(epoch_plan(None, 5, &unshuffled, 3).unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn balanced_draws_every_class_as_often_as_the_largest() {
        let y = labels();
        let plan = epoch_plan(Some(&y), y.len(), &cfg(Oversample::Balanced), 0).unwrap();
        let mut counts = [0usize; 3];
        for &i in &plan {
            counts[y[i] as usize] += 1;
        }
        assert_eq!(counts, [50, 50, 50]);
        // class 2 (3 members) repeats whole copies: each member 16 or 17 times
        let mut per = std::collections::HashMap::new();
        for &i in plan.iter().filter(|&&i| y[i] == 2) {
            *per.entry(i).or_insert(0) += 1;
        }
        assert!(per.values().all(|&c| c == 16 || c == 17), "{per:?}");
    }

    #[test]
    fn weights_scale_each_class() {
        let y = labels();
        let plan = epoch_plan(
            Some(&y),
            y.len(),
            &cfg(Oversample::Weights(vec![0.5, 2.0, 3.0])),
            0,
        )
        .unwrap();
        let mut counts = [0usize; 3];
        for &i in &plan {
            counts[y[i] as usize] += 1;
        }
        assert_eq!(counts, [25, 20, 9]);
        let bad = cfg(Oversample::Weights(vec![-1.0]));
        assert!(epoch_plan(Some(&y), y.len(), &bad, 0).is_err());
    }

    #[test]
    fn shards_are_disjoint_equal_and_cover_the_plan() {
        let y = labels();
        for drop_last in [false, true] {
            let mut all = Vec::new();
            let mut lens = Vec::new();
            for rank in 0..3 {
                let c = SamplerConfig {
                    rank,
                    world_size: 3,
                    drop_last,
                    ..cfg(Oversample::None)
                };
                let shard = epoch_plan(Some(&y), y.len(), &c, 2).unwrap();
                lens.push(shard.len());
                all.extend(shard);
            }
            assert!(lens.iter().all(|&l| l == lens[0]), "{lens:?}");
            let mut uniq = all.clone();
            uniq.sort();
            uniq.dedup();
            if drop_last {
                assert_eq!(uniq.len(), all.len(), "no overlap");
                assert_eq!(lens[0] % 4, 0, "whole batches per rank");
            } else {
                assert_eq!(uniq.len(), y.len(), "every sample seen");
                assert_eq!(all.len(), 63);
            }
        }
        let bad = SamplerConfig {
            rank: 3,
            world_size: 3,
            ..cfg(Oversample::None)
        };
        assert!(epoch_plan(None, 10, &bad, 0).is_err());
    }

    #[test]
    fn negative_labels_are_refused_for_oversampling() {
        let err = epoch_plan(Some(&[0, -1]), 2, &cfg(Oversample::Balanced), 0).unwrap_err();
        assert!(err.to_string().contains("label -1 at position 1"));
    }
}
