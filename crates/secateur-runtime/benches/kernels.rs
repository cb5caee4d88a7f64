//! Criterion benchmarks of the kernels: W 1024×1024 × X 1024×64 (and × a vector) in every
//! format, with the dense path in the same group so ratios come from one run.
//! `cargo bench -p secateur-runtime --bench kernels`

use criterion::{Criterion, criterion_group, criterion_main};
use secateur_runtime::kernel_bench::sparse_weight;
use secateur_runtime::kernels::{Epilogue, Format, Isa, WeightKernel};
use std::hint::black_box;

fn kernels(c: &mut Criterion) {
    let isa = Isa::detect();
    let (m, k) = (1024, 1024);
    for n in [64usize, 1] {
        let mut group = c.benchmark_group(format!("w1024x1024_x{n}"));
        group.sample_size(30);
        let x: Vec<f32> = (0..k * n).map(|i| (i % 97) as f32 / 97.0).collect();
        for (fmt, s) in [
            (Format::Dense, 0.0),
            (Format::Csr, 0.9),
            (Format::Csr, 0.95),
            (Format::Block { r: 4, c: 1 }, 0.9),
            (Format::Block { r: 8, c: 1 }, 0.9),
            (Format::Nm { n: 2, m: 4 }, 0.5),
        ] {
            let w = sparse_weight(m, k, fmt, s, 2);
            let kern = WeightKernel::build_for(fmt, m, k, &w, n).expect("format fits");
            let mut y = vec![0.0f32; m * n];
            group.bench_function(format!("{fmt}@{s}"), |b| {
                b.iter(|| kern.matmul(isa, black_box(&x), n, &mut y, &Epilogue::NONE, 1))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
