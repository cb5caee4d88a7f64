//! Sparsity schedules as pure functions: the cubic gradual schedule of Zhu & Gupta (AGP), the
//! targets of iterative prune–fine-tune rounds, the cosine-decayed update fraction of RigL, and
//! RigL's drop-and-grow update of one layer's mask (drop the smallest-magnitude active weights,
//! grow the inactive ones with the largest gradient, keeping the count fixed).

use serde::{Deserialize, Serialize};

/// The AGP schedule: sparsity rises from `initial` to `final_` between `start` and `end` steps,
/// `s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(t₁ − t₀))³`, updated every `frequency` steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agp {
    pub initial: f64,
    pub final_: f64,
    pub start: usize,
    pub end: usize,
    pub frequency: usize,
}

impl Agp {
    /// Target sparsity at step `t`.
    ///
    /// ```
    /// use secateur_prune::weights::Agp;
    /// let s = Agp { initial: 0.0, final_: 0.9, start: 0, end: 100, frequency: 10 };
    /// assert_eq!(s.sparsity_at(0), 0.0);
    /// assert!((s.sparsity_at(50) - 0.9 * (1.0 - 0.125)).abs() < 1e-12);
    /// assert_eq!(s.sparsity_at(100), 0.9);
    /// ```
    pub fn sparsity_at(&self, t: usize) -> f64 {
        if t <= self.start {
            return self.initial;
        }
        if t >= self.end || self.end <= self.start {
            return self.final_;
        }
        let p = (t - self.start) as f64 / (self.end - self.start) as f64;
        self.final_ + (self.initial - self.final_) * (1.0 - p).powi(3)
    }

    /// Whether masks are recomputed at step `t`.
    pub fn is_update_step(&self, t: usize) -> bool {
        t >= self.start && t <= self.end && (t - self.start).is_multiple_of(self.frequency.max(1))
    }
}

/// Sparsity after round `r` (1-based) of `rounds` iterative rounds towards `target`, removing
/// the same fraction of the remaining weights each round: `1 − (1 − s)^(r / R)`.
pub fn iterative_target(target: f64, r: usize, rounds: usize) -> f64 {
    1.0 - (1.0 - target).powf(r as f64 / rounds.max(1) as f64)
}

/// RigL's update fraction at step `t`: `α/2 · (1 + cos(π t / t_end))`, 0 after `t_end`.
pub fn rigl_fraction(alpha: f64, t: usize, t_end: usize) -> f64 {
    if t >= t_end {
        return 0.0;
    }
    alpha / 2.0 * (1.0 + (std::f64::consts::PI * t as f64 / t_end as f64).cos())
}

/// One RigL drop-and-grow update of a layer's keep mask: drops `fraction` of the active
/// weights with the smallest magnitude and grows as many inactive weights with the largest
/// gradient magnitude. Returns the indices that were grown (to be set to zero).
pub fn rigl_update(keep: &mut [bool], weights: &[f32], grads: &[f32], fraction: f64) -> Vec<usize> {
    let active: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    let k = ((active.len() as f64) * fraction).floor() as usize;
    let inactive_count = keep.len() - active.len();
    let k = k.min(inactive_count);
    if k == 0 {
        return Vec::new();
    }
    let mut by_mag = active.clone();
    by_mag.sort_by(|&a, &b| weights[a].abs().total_cmp(&weights[b].abs()));
    let dropped: Vec<usize> = by_mag[..k].to_vec();
    // candidates for growth: inactive before this update (dropped ones are not regrown now)
    let mut candidates: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i]).collect();
    candidates.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
    let grown: Vec<usize> = candidates[..k].to_vec();
    for &i in &dropped {
        keep[i] = false;
    }
    for &i in &grown {
        keep[i] = true;
    }
    grown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterative_targets_reach_the_goal() {
        assert!((iterative_target(0.9, 3, 3) - 0.9).abs() < 1e-12);
        assert!(iterative_target(0.9, 1, 3) < iterative_target(0.9, 2, 3));
    }

    #[test]
    fn rigl_keeps_the_count_and_swaps_by_magnitude_and_gradient() {
        let mut keep = vec![true, true, false, false];
        let w = [0.1, 2.0, 0.0, 0.0];
        let g = [0.0, 0.0, 0.5, 3.0];
        let grown = rigl_update(&mut keep, &w, &g, 0.5);
        assert_eq!(grown, vec![3]);
        assert_eq!(keep, vec![false, true, false, true]);
        assert!((rigl_fraction(0.3, 0, 100) - 0.3).abs() < 1e-12);
        assert_eq!(rigl_fraction(0.3, 100, 100), 0.0);
    }
}
