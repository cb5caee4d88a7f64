//! Epoch ordering and light augmentation for training: a seeded shuffle per epoch, and random
//! crops (zero padding then a random window) and horizontal flips applied to a normalised batch.
//! Deterministic given the seed and epoch.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::Tensor;
use serde::{Deserialize, Serialize};

/// Indices `0..n` in the order of epoch `epoch` for a seed.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    idx.shuffle(&mut rng);
    idx
}

/// Batches of an index order (the last one may be short).
pub fn batches(order: &[usize], batch: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(batch.max(1))
}

/// Image augmentation settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Pad by this many pixels, then crop back to the original size at a random offset (0: off).
    pub crop_pad: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    pub fn is_off(&self) -> bool {
        self.crop_pad == 0 && !self.flip
    }

    /// Augments a `[N, C, H, W]` batch in place (normalised values; padding uses zero, the mean).
    pub fn apply(&self, batch: &mut Tensor, rng: &mut impl Rng) {
        if self.is_off() || batch.rank() != 4 {
            return;
        }
        let s = batch.shape().to_vec();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let p = self.crop_pad as i64;
        let mut plane = vec![0.0f32; h * w];
        for i in 0..n {
            let dy = if p > 0 { rng.random_range(-p..=p) } else { 0 };
            let dx = if p > 0 { rng.random_range(-p..=p) } else { 0 };
            let flip = self.flip && rng.random_bool(0.5);
            for ch in 0..c {
                let base = (i * c + ch) * h * w;
                let src = &batch.data()[base..base + h * w];
                for y in 0..h {
                    for x in 0..w {
                        let sy = y as i64 + dy;
                        let sx0 = if flip { (w - 1 - x) as i64 } else { x as i64 };
                        let sx = sx0 + dx;
                        plane[y * w + x] = if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                            src[sy as usize * w + sx as usize]
                        } else {
                            0.0
                        };
                    }
                }
                batch.data_mut()[base..base + h * w].copy_from_slice(&plane);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 0);
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn flip_only_mirrors() {
        let mut t = Tensor::from_fn(vec![1, 1, 1, 4], |i| i as f32);
        let aug = Augment {
            crop_pad: 0,
            flip: true,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen_flip = false;
        for _ in 0..8 {
            let before = t.clone();
            aug.apply(&mut t, &mut rng);
            let mut sorted = t.data().to_vec();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, vec![0., 1., 2., 3.]);
            seen_flip |= t != before;
        }
        assert!(seen_flip);
    }
}
