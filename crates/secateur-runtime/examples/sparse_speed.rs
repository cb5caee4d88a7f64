//! Times the sparse direct convolution on one layer with random unstructured sparsity and
//! prints the effective GFLOP/s of its non-zeros: `sparse_speed C_IN C_OUT HW K STRIDE DENSITY%`.
use secateur_graph::Conv;
use secateur_runtime::harness::{Budget, measure, probe};
use secateur_runtime::kernels::epilogue::{Activation, Epilogue};
use secateur_runtime::kernels::sparse_conv::SparseConv;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (ci, co, hw, k, s, density) = (
        arg(0, 64),
        arg(1, 64),
        arg(2, 56),
        arg(3, 3),
        arg(4, 1),
        arg(5, 40),
    );
    let pad = k / 2;
    let conv = Conv {
        kernel: [k, k],
        strides: [s, s],
        pads: [pad; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let w: Vec<f32> = (0..co * ci * k * k)
        .map(|i| {
            let h = (i.wrapping_mul(2654435761) >> 7) % 100;
            if h < density {
                0.01 * (i % 13) as f32 + 0.01
            } else {
                0.0
            }
        })
        .collect();
    let sc = SparseConv::new(&conv, ci, co, hw, hw, &w).expect("ungrouped");
    let ho = (hw + 2 * pad - k) / s + 1;
    let x: Vec<f32> = (0..ci * hw * hw)
        .map(|i| ((i * 3) % 17) as f32 * 0.01)
        .collect();
    let bias = vec![0.1; co];
    let ep = Epilogue {
        bias: Some(&bias),
        act: Activation::Relu,
    };
    let mut y = vec![0.0; co * ho * ho];
    let mut scratch = vec![0.0; sc.scratch_len(ho, ho)];
    let threads: usize = std::env::var("THREADS").map_or(1, |t| t.parse().expect("a number"));
    // the runtime's own team (an inference's threads), as plans run layers
    let team = secateur_runtime::team::Team::new(threads).expect("threads");
    let isa = secateur_runtime::kernels::Isa::detect();
    let mut run =
        || team.enter(|| sc.run(isa, &x, hw, hw, ho, ho, &mut y, &ep, &mut scratch, threads));
    let one = probe(&mut run);
    let secs = measure(&mut run, Budget::for_duration(one, 500.0)).median_ms / 1e3;
    let flops = 2.0 * (sc.nnz() * ho * ho) as f64;
    println!(
        "{ci}->{co} {hw}x{hw} k{k} s{s} density {density}%: {:.4} ms, {:.1} GFLOP/s of non-zeros",
        secs * 1e3,
        flops / secs / 1e9
    );
}
