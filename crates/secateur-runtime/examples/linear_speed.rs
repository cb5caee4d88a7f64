//! GFLOP/s of the dense linear-layer product (`x[rows×k] · Wᵀ`, the path of a transformer's
//! projections) at the shapes of all-MiniLM-L6-v2 (sequence length 128) and ViT-B/16 (197
//! tokens), one thread: the gemm crate with a separate bias pass, and the NHWC implicit-GEMM
//! kernel as a 1×1 convolution over `rows` pixels (bias in its register epilogue). Three
//! arguments `ROWS K M` time that one shape instead.
//!
//!     cargo run --release -p secateur-runtime --example linear_speed [ROWS K M]

use secateur_graph::Conv;
use secateur_runtime::harness::{Budget, measure};
use secateur_runtime::kernels::epilogue::Tail;
use secateur_runtime::kernels::nhwc_conv::NhwcConv;
use secateur_runtime::kernels::{Epilogue, dense};

fn main() {
    let isa = secateur_runtime::kernels::Isa::detect();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: ROWS K M"))
        .collect();
    let shapes = match args[..] {
        [rows, k, m] => vec![(rows, k, m)],
        _ => vec![
            (128, 384, 384),
            (128, 384, 1536),
            (128, 1536, 384),
            (128, 384, 192),
            (197, 768, 768),
            (197, 768, 3072),
            (197, 3072, 768),
        ],
    };
    for (rows, k, m) in shapes {
        let wt: Vec<f32> = (0..k * m).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 5) % 11) as f32 * 0.01)
            .collect();
        let bias = vec![0.1f32; m];
        let mut y = vec![0.0f32; rows * m];
        let ep = Epilogue {
            bias: Some(&bias),
            act: secateur_runtime::kernels::Activation::None,
        };
        let flops = 2.0 * (rows * k * m) as f64;
        let fc = dense::FullyConnected::new(isa, wt.clone(), k, m, rows);
        let gemm = measure(&mut || fc.run(&x, &mut y, rows, &ep, 1), Budget::default()).median_ms;
        // W [m × k] row-major is the 1×1 convolution's weight
        let w: Vec<f32> = (0..m * k).map(|i| wt[(i % k) * m + i / k]).collect();
        let conv = Conv::new([1, 1], 0);
        let packed = NhwcConv::new(isa, &conv, k, m, &w, &bias, Tail::default());
        let mut scratch = vec![0.0; packed.scratch_len(rows, 1)];
        let mut y2 = vec![0.0f32; rows * m];
        let nhwc = measure(
            &mut || packed.run(&x, rows, 1, rows, 1, &mut y2, None, &mut scratch, 1),
            Budget::default(),
        )
        .median_ms;
        let diff = y
            .iter()
            .zip(&y2)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f32, f32::max);
        println!(
            "rows {rows} k {k} m {m}: gemm {gemm:.3} ms {:.1} GFLOP/s | nhwc 1x1 {nhwc:.3} ms {:.1} GFLOP/s (max rel diff {diff:.1e})",
            flops / (gemm * 1e6),
            flops / (nhwc * 1e6)
        );
    }
}
