//! Every kernel, on every instruction set this CPU has, equals the naive reference on random
//! shapes and sparsities, including ragged edges (sizes that are not multiples of the vector
//! width or of the block shape) and with fused bias and activations.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_runtime::kernels::*;

fn sparse_matrix(rows: usize, cols: usize, density: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| {
            if rng.random_bool(density) {
                rng.random_range(-1.0..1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Zeroes whole r×c blocks so that about `density` of the blocks survive.
fn block_matrix(rows: usize, cols: usize, r: usize, c: usize, density: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for br in 0..rows.div_ceil(r) {
        for bc in 0..cols.div_ceil(c) {
            if !rng.random_bool(density) {
                for i in br * r..((br + 1) * r).min(rows) {
                    for j in bc * c..((bc + 1) * c).min(cols) {
                        w[i * cols + j] = 0.0;
                    }
                }
            }
        }
    }
    w
}

/// Keeps the N largest of every M along rows.
fn nm_matrix(rows: usize, cols: usize, n: usize, m: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for r in 0..rows {
        for g in 0..cols / m {
            let base = r * cols + g * m;
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by(|&a, &b| w[base + b].abs().total_cmp(&w[base + a].abs()));
            for &j in &idx[n..] {
                w[base + j] = 0.0;
            }
        }
    }
    w
}

#[allow(clippy::too_many_arguments)]
fn check(
    w: &[f32],
    rows: usize,
    cols: usize,
    format: Format,
    n: usize,
    act: Activation,
    threads: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 77);
    let x: Vec<f32> = (0..cols * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bias: Vec<f32> = (0..rows).map(|_| rng.random_range(-0.5..0.5)).collect();
    let ep = Epilogue {
        bias: Some(&bias),
        act,
    };
    let expect = reference_matmul(w, rows, cols, &x, n, &ep);
    let k = WeightKernel::build(format, rows, cols, w).expect("format fits");
    for isa in Isa::available() {
        let mut y = vec![f32::NAN; rows * n];
        k.matmul(isa, &x, n, &mut y, &ep, threads);
        for (i, (a, b)) in y.iter().zip(&expect).enumerate() {
            let tol = 1e-4 * (1.0 + b.abs()) * (cols as f32).sqrt();
            assert!(
                (a - b).abs() <= tol,
                "{format} {isa} {rows}x{cols}x{n} threads {threads}: y[{i}] = {a}, reference {b}"
            );
        }
    }
}

fn act_of(i: u8) -> Activation {
    match i % 3 {
        0 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Clip { min: 0.0, max: 0.5 },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn dense_and_csr_match_reference(rows in 1usize..70, cols in 1usize..90, n in 1usize..150, density in 0.0f64..1.0, a in 0u8..3, threads in 1usize..3, seed in 0u64..1000) {
        let w = sparse_matrix(rows, cols, density, seed);
        check(&w, rows, cols, Format::Dense, n, act_of(a), threads, seed);
        check(&w, rows, cols, Format::Csr, n, act_of(a), threads, seed);
    }

    #[test]
    fn blocks_match_reference(rows in 1usize..40, cols in 1usize..40, n in 1usize..100, shape in 0usize..4, density in 0.05f64..1.0, a in 0u8..3, threads in 1usize..3, seed in 0u64..1000) {
        let (r, c) = [(4, 1), (1, 4), (8, 1), (2, 3)][shape];
        let w = block_matrix(rows, cols, r, c, density, seed);
        check(&w, rows, cols, Format::Block { r, c }, n, act_of(a), threads, seed);
        // unstructured weights in a block format: zeros inside stored blocks are fill-in
        let u = sparse_matrix(rows, cols, density, seed + 1);
        check(&u, rows, cols, Format::Block { r, c }, n, act_of(a), threads, seed);
    }

    #[test]
    fn fully_connected_products_match_reference(m in 1usize..300, k in 1usize..90, n in 1usize..4, a in 0u8..3, threads in 1usize..3, seed in 0u64..1000) {
        // y[n×m] = x[n×k] · wt[k×m]: at n = 1 the vector-matrix kernel over packed column
        // blocks (AVX-512), whose blocks of 128 end in masked lanes for every m
        let w = sparse_matrix(m, k, 1.0, seed);
        let wt: Vec<f32> = (0..k * m).map(|i| w[(i % m) * k + i / m]).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 5);
        let x: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let xt: Vec<f32> = (0..k * n).map(|i| x[(i % n) * k + i / n]).collect();
        let bias: Vec<f32> = (0..m).map(|_| rng.random_range(-0.5..0.5)).collect();
        let ep = Epilogue { bias: Some(&bias), act: act_of(a) };
        let want = reference_matmul(&w, m, k, &xt, n, &ep);
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; n * m];
            let fc = dense::FullyConnected::new(isa, wt.clone(), k, m, n);
            fc.run(&x, &mut y, n, &ep, threads);
        for i in 0..n {
            for j in 0..m {
                let (got, want) = (y[i * m + j], want[j * n + i]);
                let tol = 1e-4 * (1.0 + want.abs()) * (k as f32).sqrt();
                prop_assert!((got - want).abs() <= tol, "{isa:?} {m}x{k}x{n}: y[{i}][{j}] = {got}, reference {want}");
            }
        }
        }
    }

    #[test]
    fn nm_matches_reference(rows in 1usize..40, groups in 1usize..12, n in 1usize..100, pat in 0usize..3, a in 0u8..3, seed in 0u64..1000) {
        let (keep, m) = [(2, 4), (1, 4), (4, 8)][pat];
        let cols = groups * m;
        let w = nm_matrix(rows, cols, keep, m, seed);
        check(&w, rows, cols, Format::Nm { n: keep, m }, n, act_of(a), 1, seed);
    }
}

#[test]
fn large_index_space_uses_u32() {
    let cols = 70_000;
    let mut w = vec![0.0f32; 2 * cols];
    w[cols - 1] = 1.0;
    w[cols + 69_999] = 2.0;
    let c = Csr::from_dense(2, cols, &w);
    assert!(matches!(c.idx, Indices::U32(_)));
    check(&w, 2, cols, Format::Csr, 3, Activation::None, 1, 1);
    let small = Csr::from_dense(2, 100, &w[..200]);
    assert!(matches!(small.idx, Indices::U16(_)));
}

#[test]
fn nm_rejects_matrices_that_break_the_pattern() {
    let w = vec![1.0f32; 8];
    assert!(NmSparse::from_dense(1, 8, &w, 2, 4).is_none());
    assert!(NmSparse::from_dense(1, 6, &w[..6], 2, 4).is_none());
}

#[test]
fn chunked_csr_layouts_match_reference() {
    for (rows, cols, n) in [
        (37, 300, 1),
        (37, 300, 20),
        (64, 700, 70),
        (5, 1000, 64),
        (9, 513, 17),
    ] {
        for density in [0.05, 0.3] {
            let w = sparse_matrix(rows, cols, density, rows as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let x: Vec<f32> = (0..cols * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let ep = Epilogue {
                bias: None,
                act: Activation::Relu,
            };
            let expect = reference_matmul(&w, rows, cols, &x, n, &ep);
            let k = WeightKernel::build_for(Format::Csr, rows, cols, &w, n).unwrap();
            for isa in Isa::available() {
                for threads in [1, 2] {
                    let mut y = vec![f32::NAN; rows * n];
                    k.matmul(isa, &x, n, &mut y, &ep, threads);
                    for (a, b) in y.iter().zip(&expect) {
                        assert!(
                            (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                            "{rows}x{cols}x{n} {isa}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Constant padding equals the IR's Pad on random ranks, sizes and pads.
    #[test]
    fn constant_padding_matches_the_reference(
        dims in proptest::collection::vec(1usize..5, 1..5),
        pads in proptest::collection::vec((0usize..3, 0usize..3), 4),
        fill in -2.0f32..2.0, seed in 0u64..100,
    ) {
        use secateur_graph::{OpSemantics, Pad, PadMode, Tensor};
        let r = dims.len();
        let (before, after): (Vec<usize>, Vec<usize>) = pads[..r].iter().copied().unzip();
        let n: usize = dims.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let pad = Pad { before: before.clone(), after: after.clone(), mode: PadMode::Constant(fill) };
        let want = pad.eval(&[&Tensor::new(dims.clone(), x.clone()).unwrap()]).unwrap().remove(0);
        let mut y = vec![f32::NAN; want.data().len()];
        layout::pad_constant(&x, &dims, &before, &after, fill, &mut y);
        prop_assert_eq!(&y[..], want.data());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    /// Gathers at constant positions equal the element-by-element definition, for channel
    /// shuffles (their transpose path) and for other position lists alike.
    #[test]
    fn gathers_match_their_definition(
        outer in 1usize..6, h in 1usize..20, g in 1usize..6, inner in 1usize..3,
        shuffled in any::<bool>(), seed in 0u64..100,
    ) {
        let n = g * h;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let positions: Vec<usize> = if shuffled {
            (0..n).map(|i| (i % g) * h + i / g).collect()
        } else {
            (0..n).map(|_| rng.random_range(0..n)).collect()
        };
        let x: Vec<f32> = (0..outer * n * inner).map(|i| i as f32).collect();
        let mut y = vec![f32::NAN; outer * n * inner];
        layout::gather_blocks(&x, outer, n, inner, &positions, &mut y);
        for o in 0..outer {
            for (j, &p) in positions.iter().enumerate() {
                for k in 0..inner {
                    prop_assert_eq!(y[(o * n + j) * inner + k], x[(o * n + p) * inner + k]);
                }
            }
        }
    }
}

proptest! {
    /// Both quantization kernels, on every instruction set, against the IR's `ActQuant` (the
    /// simulation's definition), on
    /// random values, exact ties (k + 0.5 levels), values past both ends, infinities and NaN,
    /// at lengths across the 16-lane edge.
    #[test]
    fn quantization_kernels_equal_the_simulation(
        lo in -4.0f32..0.5, width in 0.01f32..8.0, n in 0usize..70, seed in 0u64..1000,
    ) {
        use secateur_runtime::kernels::quantize::{fake_quantize, quantize};
        let q = secateur_graph::ActQuant::from_range(lo, lo + width);
        let mut x = secateur_testkit::random_tensor(&[n.max(1)], seed).into_data();
        x.truncate(n);
        for (i, v) in x.iter_mut().enumerate() {
            *v = match i % 7 {
                0 => (((i / 7) as f32) - 3.0 + 0.5) * q.scale,
                1 => *v * 1e4,
                2 => f32::INFINITY,
                3 if i % 14 == 3 => f32::NAN,
                _ => *v * (width + 1.0),
            };
        }
        for isa in Isa::available() {
        let (mut levels, mut values) = (vec![0u8; n], vec![0.0f32; n]);
        quantize(isa, &x, q.scale, q.zero_point, &mut levels);
        fake_quantize(isa, &x, q.scale, q.zero_point, &mut values);
        for i in 0..n {
            let want = q.fake(x[i]);
            if want.is_nan() {
                // NaN propagates through the simulation; as a byte it is level 0
                prop_assert!(values[i].is_nan(), "value {} of NaN", values[i]);
                prop_assert_eq!(levels[i], 0);
                continue;
            }
            prop_assert_eq!(values[i], want, "value {} of {}", i, x[i]);
            let level = (want / q.scale).round() + q.zero_point as f32;
            prop_assert_eq!(levels[i] as f32, level, "level {} of {}", i, x[i]);
        }
        }
    }
}
