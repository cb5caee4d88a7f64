//! Times the NHWC depthwise convolution on one layer and prints GFLOP/s:
//! `depthwise_speed C HW K STRIDE` (`SILU=1` fuses a SiLU, `ISA=avx2` skips AVX-512, `PAD=P`
//! pads by `P` instead of `K/2`: `PAD=0` times the interior kernel alone; `MIN=1` reports the
//! fastest run instead of the median).
use secateur_graph::Conv;
use secateur_runtime::harness::{Budget, measure, probe};
use secateur_runtime::kernels::epilogue::Tail;
use secateur_runtime::kernels::nhwc_ops::NhwcDepthwise;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (c, hw, k, s) = (arg(0, 144), arg(1, 56), arg(2, 3), arg(3, 1));
    let pad: usize = std::env::var("PAD").map_or(k / 2, |t| t.parse().expect("a number"));
    let conv = Conv {
        kernel: [k, k],
        strides: [s, s],
        pads: [pad; 4],
        dilations: [1, 1],
        groups: c,
    };
    let w: Vec<f32> = (0..c * k * k)
        .map(|i| ((i * 7) % 13) as f32 * 0.01)
        .collect();
    let tail = Tail {
        act: std::env::var("SILU")
            .is_ok()
            .then_some(secateur_graph::Pointwise::Silu),
        ..Tail::default()
    };
    let dw = NhwcDepthwise::new(&conv, c, &w, &vec![0.1; c], tail);
    if std::env::var("SILU_ONLY").is_ok() {
        silu_only(c * hw * hw);
    }
    let ho = (hw + 2 * pad - k) / s + 1;
    let x: Vec<f32> = (0..c * hw * hw)
        .map(|i| ((i * 3) % 17) as f32 * 0.01)
        .collect();
    let mut y = vec![0.0; c * ho * ho];
    let isa = match std::env::var("ISA").as_deref() {
        Ok("avx2") => secateur_runtime::kernels::Isa::Avx2,
        _ => secateur_runtime::kernels::Isa::detect(),
    };
    let mut run = || dw.run(isa, &x, hw, hw, ho, ho, &mut y, None, 1);
    let one = probe(&mut run);
    let stats = measure(&mut run, Budget::for_duration(one, 500.0));
    let ms = if std::env::var("MIN").is_ok() {
        stats.min_ms
    } else {
        stats.median_ms
    };
    let flops = 2.0 * (c * k * k * ho * ho) as f64;
    println!(
        "depthwise {c}ch {hw}x{hw} k{k} s{s} p{pad}: {ms:.4} ms, {:.1} GFLOP/s, {:.2} ns per output pixel",
        flops / ms / 1e6,
        ms * 1e6 / (ho * ho) as f64
    );
}

/// SiLU alone over an output of the same size (the share of the tail in the layer's time).
#[allow(dead_code)]
fn silu_only(n: usize) {
    let mut y: Vec<f32> = (0..n).map(|i| ((i * 3) % 17) as f32 * 0.1 - 0.8).collect();
    let isa = match std::env::var("ISA").as_deref() {
        Ok("avx2") => secateur_runtime::kernels::Isa::Avx2,
        _ => secateur_runtime::kernels::Isa::detect(),
    };
    let mut run = || {
        secateur_runtime::kernels::elementwise::pointwise_in_place(
            isa,
            secateur_graph::Pointwise::Silu,
            &mut y,
        )
    };
    let one = probe(&mut run);
    let ms = measure(&mut run, Budget::for_duration(one, 500.0)).median_ms;
    println!(
        "silu over {n} values: {ms:.4} ms, {:.2} ns per value",
        ms * 1e6 / n as f64
    );
}
