//! Zero padding of one sample's input for the direct convolution kernels, which read every
//! tap from a padded copy instead of testing bounds in their inner loops.

/// `x` (`[c_in, h, w]`) as seen through `pads` (top, left, bottom, right): `x` itself when
/// there is no padding, otherwise a zero-padded copy `[c_in, h+top+bottom, w+left+right]`
/// written into the front of `scratch`.
pub fn padded<'a>(
    x: &'a [f32],
    c_in: usize,
    h: usize,
    w: usize,
    pads: [usize; 4],
    scratch: &'a mut [f32],
) -> &'a [f32] {
    if pads.iter().all(|&v| v == 0) {
        return x;
    }
    let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    let out = &mut scratch[..c_in * hp * wp];
    out.fill(0.0);
    for c in 0..c_in {
        for r in 0..h {
            let dst = (c * hp + r + pads[0]) * wp + pads[1];
            out[dst..dst + w].copy_from_slice(&x[(c * h + r) * w..(c * h + r + 1) * w]);
        }
    }
    out
}
