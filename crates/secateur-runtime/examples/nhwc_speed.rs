//! Times the NHWC implicit-GEMM convolution on one resnet18-like layer and prints GFLOP/s.
use secateur_graph::Conv;
use secateur_runtime::kernels::epilogue::Tail;
use secateur_runtime::kernels::nhwc_conv::NhwcConv;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (c, hw, k) = (
        args.first().copied().unwrap_or(64),
        args.get(1).copied().unwrap_or(56),
        args.get(2).copied().unwrap_or(3),
    );
    let conv = Conv {
        kernel: [k, k],
        strides: [1, 1],
        pads: [k / 2; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let w: Vec<f32> = (0..c * c * k * k)
        .map(|i| ((i * 7) % 13) as f32 * 0.01)
        .collect();
    let bias = vec![0.1; c];
    let tail = Tail {
        act: std::env::var("SILU")
            .is_ok()
            .then_some(secateur_graph::Pointwise::Silu),
        ..Tail::default()
    };
    let packed = NhwcConv::new(
        secateur_runtime::kernels::Isa::detect(),
        &conv,
        c,
        c,
        &w,
        &bias,
        tail,
    );
    let x: Vec<f32> = (0..c * hw * hw)
        .map(|i| ((i * 3) % 17) as f32 * 0.01)
        .collect();
    let mut y = vec![0.0; c * hw * hw];
    let mut scratch = vec![0.0; packed.scratch_len(hw, hw)];
    for _ in 0..3 {
        packed.run(&x, hw, hw, hw, hw, &mut y, None, &mut scratch, 1);
    }
    let t0 = Instant::now();
    packed.run(&x, hw, hw, hw, hw, &mut y, None, &mut scratch, 1);
    let reps = ((0.5 / t0.elapsed().as_secs_f64()) as usize).clamp(20, 20000);
    let t = Instant::now();
    for _ in 0..reps {
        packed.run(&x, hw, hw, hw, hw, &mut y, None, &mut scratch, 1);
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    let flops = 2.0 * (c * c * k * k * hw * hw) as f64;
    println!(
        "{c}x{hw}x{hw} k{k}: {:.3} ms, {:.1} GFLOP/s",
        s * 1e3,
        flops / s / 1e9
    );
}
