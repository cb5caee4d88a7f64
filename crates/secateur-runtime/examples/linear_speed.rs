//! GFLOP/s of the dense linear-layer product (`x[rows×k] · Wᵀ`, the path of a transformer's
//! projections) at the shapes of all-MiniLM-L6-v2 at sequence length 128, one thread.
//!
//!     cargo run --release -p secateur-runtime --example linear_speed

use secateur_runtime::harness::{Budget, measure};
use secateur_runtime::kernels::{Epilogue, dense};

fn main() {
    for (rows, k, m) in [
        (128, 384, 384),
        (128, 384, 1536),
        (128, 1536, 384),
        (128, 384, 192),
    ] {
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
        let s = measure(
            &mut || dense::matmul_pretransposed(&wt, &x, &mut y, m, k, rows, &ep, 1),
            Budget::default(),
        );
        let gflops = 2.0 * (rows * k * m) as f64 / (s.median_ms * 1e6);
        println!(
            "rows {rows} k {k} m {m}: {:.3} ms, {gflops:.1} GFLOP/s",
            s.median_ms
        );
    }
}
