//! Mask rearrangement (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
//! Transformers", §4.2): within one group (a layer's heads or FFN neurons) the number of
//! channels kept is fixed by the search, but which ones is refined with the group's block of
//! the Fisher information instead of its diagonal. With `G` the per-sample gradients of the
//! channel masks (`samples × channels`) and `F = GᵀG`, removing the set `R` costs about
//! `1_Rᵀ F 1_R = Σ_s (Σ_{j∈R} g_sj)²`: channels whose effects cancel are cheaper to remove
//! together than their diagonal scores say, and correlated ones dearer. Starting from the
//! given mask, the swap of a kept and a removed channel that lowers this cost most is made
//! until none lowers it.

use super::fisher::MaskGradients;
use super::plan::Plan;
use std::collections::HashMap;

/// A group's cost before and after rearrangement, and the swaps made.
#[derive(Clone, Debug, PartialEq)]
pub struct Rearranged {
    pub group: String,
    pub before: f64,
    pub after: f64,
    pub swaps: usize,
}

/// `F = GᵀG`, row-major `channels × channels`.
fn fisher_block(grads: &MaskGradients) -> Vec<f64> {
    let n = grads.channels;
    let mut f = vec![0.0f64; n * n];
    for s in 0..grads.samples {
        let row = &grads.g[s * n..(s + 1) * n];
        for (i, &gi) in row.iter().enumerate() {
            if gi == 0.0 {
                continue;
            }
            let fi = &mut f[i * n..(i + 1) * n];
            for (v, &gj) in fi[i..].iter_mut().zip(&row[i..]) {
                *v += gi * gj;
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            f[i * n + j] = f[j * n + i];
        }
    }
    f
}

/// The channels to keep (as many as `keep`, ascending) after rearranging, with the cost
/// before and after and the number of swaps (at most `channels`).
pub fn rearrange(keep: &[usize], grads: &MaskGradients) -> (Vec<usize>, f64, f64, usize) {
    let n = grads.channels;
    let f = fisher_block(grads);
    let mut kept = vec![false; n];
    keep.iter()
        .filter(|&&k| k < n)
        .for_each(|&k| kept[k] = true);
    // q[c] = Σ_{j removed} F[c][j]; the cost is Σ_{i removed} q[i]
    let mut q = vec![0.0f64; n];
    for j in (0..n).filter(|&j| !kept[j]) {
        for (c, v) in q.iter_mut().enumerate() {
            *v += f[c * n + j];
        }
    }
    let cost = |q: &[f64], kept: &[bool]| (0..n).filter(|&i| !kept[i]).map(|i| q[i]).sum::<f64>();
    let before = cost(&q, &kept);
    let mut swaps = 0;
    while swaps < n {
        // removing kept channel `i` and restoring removed channel `j` changes the cost by
        // 2(q_i − q_j) + F_ii + F_jj − 2F_ij
        let mut best = (0.0f64, 0, 0);
        for i in (0..n).filter(|&i| kept[i]) {
            for j in (0..n).filter(|&j| !kept[j]) {
                let delta = 2.0 * (q[i] - q[j]) + f[i * n + i] + f[j * n + j] - 2.0 * f[i * n + j];
                if delta < best.0 {
                    best = (delta, i, j);
                }
            }
        }
        let (delta, i, j) = best;
        if delta >= -1e-12 * before.abs().max(f64::MIN_POSITIVE) {
            break;
        }
        kept[i] = false;
        kept[j] = true;
        for (c, v) in q.iter_mut().enumerate() {
            *v += f[c * n + i] - f[c * n + j];
        }
        swaps += 1;
    }
    let after = cost(&q, &kept);
    let out = (0..n).filter(|&k| kept[k]).collect();
    (out, before, after, swaps)
}

/// Rearranges every partly pruned group of `plan` that has mask gradients.
pub fn rearrange_plan(plan: &mut Plan, grads: &HashMap<String, MaskGradients>) -> Vec<Rearranged> {
    let mut report = Vec::new();
    for e in &mut plan.entries {
        let Some(g) = grads.get(&e.group).filter(|g| g.channels == e.channels) else {
            continue;
        };
        if e.keep.is_empty() || e.keep.len() >= e.channels {
            continue;
        }
        let (keep, before, after, swaps) = rearrange(&e.keep, g);
        e.keep = keep;
        report.push(Rearranged {
            group: e.group.clone(),
            before,
            after,
            swaps,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grads(samples: usize, channels: usize, g: Vec<f64>) -> MaskGradients {
        MaskGradients {
            samples,
            channels,
            g,
        }
    }

    /// Two channels whose effects cancel cost nothing removed together, though each scores
    /// high on the diagonal: keeping one of them (the diagonal ranking's choice) and removing
    /// the small third channel with the other is what rearrangement undoes.
    #[test]
    fn cancelling_channels_are_removed_together() {
        // samples × channels: channels 0 and 1 cancel, channel 2 is small
        let g = grads(2, 3, vec![3.0, -3.0, 0.5, 1.0, -1.0, 0.5]);
        let (keep, before, after, swaps) = rearrange(&[0], &g);
        assert_eq!(keep, [2]);
        // removing 1 and 2: (−3 + 0.5)² + (−1 + 0.5)²
        assert!((before - 6.5).abs() < 1e-12, "{before}");
        assert!(after.abs() < 1e-12, "{after}");
        assert_eq!(swaps, 1);
    }

    /// On random gradients the cost never rises, the count kept is unchanged, and the result
    /// is a local optimum: no single swap lowers the cost further.
    #[test]
    fn rearrangement_lowers_the_cost_to_a_local_optimum() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for (samples, n, k) in [(5, 6, 3), (16, 24, 10), (3, 40, 30)] {
            let g = grads(samples, n, (0..samples * n).map(|_| next()).collect());
            let start: Vec<usize> = (0..k).collect();
            let (keep, before, after, _) = rearrange(&start, &g);
            assert_eq!(keep.len(), k);
            assert!(after <= before + 1e-12, "{after} > {before}");
            let cost = |keep: &[usize]| -> f64 {
                (0..samples)
                    .map(|s| {
                        let r: f64 = (0..n)
                            .filter(|c| !keep.contains(c))
                            .map(|c| g.g[s * n + c])
                            .sum();
                        r * r
                    })
                    .sum()
            };
            assert!((cost(&keep) - after).abs() < 1e-9 * (1.0 + after));
            for i in keep.clone() {
                for j in (0..n).filter(|j| !keep.contains(j)) {
                    let swapped: Vec<usize> =
                        keep.iter().map(|&c| if c == i { j } else { c }).collect();
                    assert!(cost(&swapped) >= after - 1e-9 * (1.0 + after));
                }
            }
        }
    }
}
