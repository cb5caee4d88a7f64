//! Liveness-based buffer assignment: every logical buffer (one per value a step writes) is
//! mapped to a physical one, reusing a buffer once the last step reading its value has run.
//! The input buffers (physical buffers `0..inputs.len()`, in order) and the output buffer
//! are never reused. A buffer several steps write (a concatenation its producers fill in
//! place) is allocated at its first writer.

use super::step::Step;

/// Maps the logical buffers of `sizes` to physical ones and rewrites the steps' buffer
/// indices; returns the physical sizes and the mapping.
pub(super) fn assign(
    steps: &mut [Step],
    sizes: &[usize],
    input_bufs: &[usize],
    output: usize,
) -> (Vec<usize>, Vec<usize>) {
    let mut last_use = vec![0usize; sizes.len()];
    for (si, s) in steps.iter().enumerate() {
        for &i in &s.inputs {
            if i != usize::MAX {
                last_use[i] = si;
            }
        }
    }
    last_use[output] = usize::MAX;
    let mut phys_of = vec![usize::MAX; sizes.len()];
    let mut phys: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for &b in input_bufs {
        last_use[b] = usize::MAX;
        phys_of[b] = phys.len();
        phys.push(sizes[b]);
    }
    for (si, s) in steps.iter().enumerate() {
        if phys_of[s.output] != usize::MAX {
            release_inputs(steps, si, &last_use, &phys_of, &mut free);
            continue;
        }
        let need = sizes[s.output];
        // the most recently freed buffer that is large enough (its lines are the likeliest
        // to be still cached), else the most recently freed one, grown
        let slot = free
            .iter()
            .rposition(|&p| phys[p] >= need)
            .or_else(|| free.len().checked_sub(1));
        let p = match slot {
            Some(fi) => {
                let p = free.remove(fi);
                phys[p] = phys[p].max(need);
                p
            }
            None => {
                phys.push(need);
                phys.len() - 1
            }
        };
        phys_of[s.output] = p;
        release_inputs(steps, si, &last_use, &phys_of, &mut free);
    }
    for s in steps.iter_mut() {
        s.output = phys_of[s.output];
        for i in &mut s.inputs {
            if *i != usize::MAX {
                *i = phys_of[*i];
            }
        }
    }
    (phys, phys_of)
}

/// Frees the physical buffers of step `si`'s inputs that no later step reads.
fn release_inputs(
    steps: &[Step],
    si: usize,
    last_use: &[usize],
    phys_of: &[usize],
    free: &mut Vec<usize>,
) {
    let s = &steps[si];
    for &i in &s.inputs {
        if i != usize::MAX && last_use[i] == si && i != s.output {
            let pi = phys_of[i];
            let read_later = steps[si + 1..].iter().any(|t| {
                t.inputs
                    .iter()
                    .any(|&j| j != usize::MAX && phys_of[j] == pi && last_use[j] > si)
            });
            if !free.contains(&pi) && !read_later {
                free.push(pi);
            }
        }
    }
}
