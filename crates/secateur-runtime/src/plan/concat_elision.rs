//! Concatenation elision: a channels-last convolution whose output is read only by a
//! concatenation along channels writes its channels straight into the concatenated buffer
//! (each output pixel `total` values apart, at its channel offset), so the concatenation
//! copies only the inputs no producer wrote in place, or disappears. SqueezeNet's fire
//! modules (two expand convolutions concatenated), Inception's branches and ShuffleNet's
//! branch outputs are such producers. The pass rewrites steps after lowering and before
//! buffer assignment, where a logical buffer written by several steps is allocated at its
//! first writer.

use super::step::{Placement, Step, StepKind};

/// Rewrites `steps` so that every eligible producer of a concatenation writes in place, and
/// drops concatenations left with nothing to copy. `inputs` are the plan's input buffers and
/// `output` its output buffer (neither is elided); `batch` is the plan's batch size.
pub(super) fn elide(steps: &mut Vec<Step>, inputs: &[usize], output: usize, batch: usize) {
    let mut readers = std::collections::HashMap::<usize, usize>::new();
    for s in steps.iter() {
        for &b in s.inputs.iter().filter(|&&b| b != usize::MAX) {
            *readers.entry(b).or_default() += 1;
        }
    }
    let mut dropped = vec![false; steps.len()];
    for ci in 0..steps.len() {
        let StepKind::Concat {
            outer,
            total,
            parts,
        } = &steps[ci].kind
        else {
            continue;
        };
        if !steps[ci].consts.is_empty() {
            continue;
        }
        let (outer, total, parts) = (*outer, *total, parts.clone());
        let target = steps[ci].output;
        let mut kept = Vec::new();
        for (k, &b) in steps[ci].inputs.clone().iter().enumerate() {
            let only_reader = readers.get(&b) == Some(&1) && b != output && !inputs.contains(&b);
            let producer = steps[..ci].iter().rposition(|s| s.output == b);
            let placed = only_reader
                && producer
                    .is_some_and(|pi| place(&mut steps[pi], parts[k], total, outer, batch, target));
            if !placed {
                kept.push(k);
            }
        }
        let concat = &mut steps[ci];
        concat.inputs = kept.iter().map(|&k| concat.inputs[k]).collect();
        concat.kind = StepKind::Concat {
            outer,
            total,
            parts: kept.iter().map(|&k| parts[k]).collect(),
        };
        dropped[ci] = kept.is_empty();
    }
    let mut flags = dropped.into_iter();
    steps.retain(|_| !flags.next().unwrap_or(false));
}

/// Makes `producer` write its output as part `(offset, len)` of the rows of `total` values
/// in buffer `target`, if it is a channels-last convolution that can and whose output is
/// exactly `outer` pixels of `len` channels.
fn place(
    producer: &mut Step,
    (offset, len): (usize, usize),
    total: usize,
    outer: usize,
    batch: usize,
    target: usize,
) -> bool {
    let StepKind::NhwcConv(c) = &mut producer.kind else {
        return false;
    };
    let fits = c.placement.is_none()
        && c.can_be_placed()
        && c.c_out == len
        && batch * c.ho * c.wo == outer;
    if fits {
        c.placement = Some(Placement {
            offset,
            pixel: total,
        });
        producer.output = target;
    }
    fits
}
