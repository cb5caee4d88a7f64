//! Quick look at the kernel ratios of the runtime issue (the real benchmark is
//! `secateur bench-kernels` and the criterion bench).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_runtime::harness::{Budget, measure_interleaved};
use secateur_runtime::kernels::*;

fn main() {
    let (m, k) = (1024, 1024);
    let isa = Isa::detect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let dense_w: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    for n in [64usize, 1] {
        let x: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        for (name, sparsity, block) in [
            ("csr 90", 0.9, None),
            ("csr 95", 0.95, None),
            ("block4x1 90", 0.9, Some((4, 1))),
            ("block8x1 90", 0.9, Some((8, 1))),
            ("block1x4 90", 0.9, Some((1, 4))),
        ] {
            let w: Vec<f32> = match block {
                None => dense_w
                    .iter()
                    .map(|&v| {
                        if rng.random_bool(1.0 - sparsity) {
                            v
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                Some((r, c)) => {
                    let mut w = dense_w.clone();
                    for br in 0..m / r {
                        for bc in 0..k / c {
                            if !rng.random_bool(1.0 - sparsity) {
                                for i in 0..r {
                                    for j in 0..c {
                                        w[(br * r + i) * k + bc * c + j] = 0.0;
                                    }
                                }
                            }
                        }
                    }
                    w
                }
            };
            let fmt = match block {
                None => Format::Csr,
                Some((r, c)) => Format::Block { r, c },
            };
            let dense = WeightKernel::build(Format::Dense, m, k, &dense_w).unwrap();
            let sparse = WeightKernel::build(fmt, m, k, &w).unwrap();
            let mut y1 = vec![0.0; m * n];
            let mut y2 = vec![0.0; m * n];
            let ep = Epilogue::NONE;
            let mut a = || dense.matmul(isa, &x, n, &mut y1, &ep, 1);
            let mut b = || sparse.matmul(isa, &x, n, &mut y2, &ep, 1);
            let s = measure_interleaved(
                &mut [&mut a, &mut b],
                Budget {
                    warmup: 5,
                    rounds: 7,
                    per_round: 10,
                },
            );
            println!(
                "n={n} {name}: dense {:.3} ms, sparse {:.3} ms, ratio {:.1}x",
                s[0].median_ms,
                s[1].median_ms,
                s[0].median_ms / s[1].median_ms
            );
        }
    }
}
