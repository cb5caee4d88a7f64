//! The channels-last kernels equal the IR's reference operators on random geometries: the
//! implicit-GEMM convolution (groups, kernel sizes, asymmetric pads, strides, dilations,
//! channel counts that are not multiples of the vector width, one or two threads) with every
//! part of the fused tail (element-wise function, residual addition, function after it), the
//! Winograd F(4×4, 3×3) convolution wherever it applies (channel counts across the 8-lane and
//! 16-channel panel edges, outputs not a multiple of the 4×4 tile, reductions longer than one
//! chunk), the int8 convolution (VNNI and portable) against the reference on the quantized
//! values it stands for, the bf16 convolution (AVX-512 BF16 and portable) against the reference
//! on the bf16-rounded input and weights, the depthwise convolution, max and average pooling, and global
//! average pooling.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::{
    ActQuant, AveragePool, Conv, MaxPool, OpSemantics, Pointwise, PoolGeometry, Tensor,
};
use secateur_runtime::kernels::Isa;
use secateur_runtime::kernels::bf16::round_bf16;
use secateur_runtime::kernels::epilogue::Tail;
use secateur_runtime::kernels::nhwc_bf16::NhwcBf16Conv;
use secateur_runtime::kernels::nhwc_conv::NhwcConv;
use secateur_runtime::kernels::nhwc_int8::NhwcInt8Conv;
use secateur_runtime::kernels::nhwc_ops::{self, NhwcDepthwise};
use secateur_runtime::kernels::nhwc_stem::{NhwcStemConv, StemInput};
use secateur_runtime::kernels::winograd::NhwcWinograd;
use secateur_runtime::ops;

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tail_of(i: u8) -> Tail {
    let f = |k: u8| match k % 4 {
        0 => None,
        1 => Some(Pointwise::Relu),
        2 => Some(Pointwise::Silu),
        _ => Some(Pointwise::Clip {
            min: -0.3,
            max: 0.4,
        }),
    };
    Tail {
        act: f(i),
        residual: i & 4 != 0,
        post: f(i >> 3),
    }
}

/// A seeded generator and the random input, weights (`c_out × c_in/groups × kh × kw`) and
/// bias of a convolution test, drawn in that order.
fn operands(
    conv: &Conv,
    [c_in, c_out, h, w]: [usize; 4],
    seed: u64,
) -> (ChaCha8Rng, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [k0, k1] = conv.kernel;
    let x = random(c_in * h * w, &mut rng);
    let wt = random(c_out * c_in / conv.groups * k0 * k1, &mut rng);
    let bias = random(c_out, &mut rng);
    (rng, x, wt, bias)
}

/// `post(act(y) + r)` of a reference output.
fn finish(y: &[f32], tail: &Tail, r: &[f32]) -> Vec<f32> {
    y.iter()
        .zip(r)
        .map(|(v, r)| {
            let mut v = tail.act.map_or(*v, |f| f.apply(*v));
            if tail.residual {
                v += r;
            }
            tail.post.map_or(v, |f| f.apply(v))
        })
        .collect()
}

fn nhwc(x: &[f32], c: usize, p: usize) -> Vec<f32> {
    let mut y = vec![0.0; c * p];
    nhwc_ops::to_nhwc(x, c, p, &mut y);
    y
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

/// The implicit-GEMM kernel against the reference convolution, on every instruction set.
#[allow(clippy::too_many_arguments)]
fn check_conv(
    conv: &Conv,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    tail: Tail,
    threads: usize,
    seed: u64,
) {
    let [k0, k1] = conv.kernel;
    let cin_g = c_in / conv.groups;
    let (mut rng, x, wt, bias) = operands(conv, [c_in, c_out, h, w], seed);
    let y = conv
        .eval(&[
            &Tensor::new(vec![1, c_in, h, w], x.clone()).unwrap(),
            &Tensor::new(vec![c_out, cin_g, k0, k1], wt.clone()).unwrap(),
            &Tensor::new(vec![c_out], bias.clone()).unwrap(),
        ])
        .unwrap()
        .remove(0);
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    let r = random(c_out * ho * wo, &mut rng);
    let want = nhwc(&finish(y.data(), &tail, &r), c_out, ho * wo);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let rn = nhwc(&r, c_out, ho * wo);
    for isa in Isa::available() {
        let packed = NhwcConv::new(isa, conv, c_in, c_out, &wt, &bias, tail);
        let mut out = vec![f32::NAN; c_out * ho * wo];
        let mut scratch = vec![0.0; packed.scratch_len(h, w)];
        pool.install(|| {
            packed.run(
                &nhwc(&x, c_in, h * w),
                h,
                w,
                ho,
                wo,
                &mut out,
                Some(&rn),
                &mut scratch,
                threads,
            )
        });
        assert_close(&out, &want, &format!("nhwc conv {isa} {conv:?}"));
        let Some(wino) = NhwcWinograd::new(isa, conv, c_in, c_out, &wt, &bias, tail) else {
            assert!(!NhwcWinograd::applies(conv), "Winograd refused {conv:?}");
            continue;
        };
        let mut out = vec![f32::NAN; c_out * ho * wo];
        let mut scratch = vec![f32::NAN; wino.scratch_len(h, w)];
        let x = nhwc(&x, c_in, h * w);
        pool.install(|| wino.run(&x, h, w, ho, wo, &mut out, Some(&rn), &mut scratch, threads));
        // the transforms round partial sums scaled by up to 8 and 1/24: an error that grows
        // like the square root of the reduction length (C_in · 9)
        let slack = 2e-5 * ((c_in * 9) as f32).sqrt();
        for (i, (g, v)) in out.iter().zip(&want).enumerate() {
            assert!(
                (g - v).abs() <= 1e-4 * (1.0 + v.abs()) + slack,
                "winograd {isa} {conv:?} {c_in}->{c_out} element {i}: {g} vs {v}"
            );
        }
    }
}

/// The int8 kernel against the reference convolution of the values it represents: the input
/// quantized and dequantized by `quant`, the weights `q · scale` per output channel.
/// A reference convolution of the values a reduced-precision kernel stands for, with a random
/// residual: the expected channels-last output of the whole tail.
struct Case {
    ho: usize,
    wo: usize,
    want: Vec<f32>,
    /// The residual, channels-last.
    residual: Vec<f32>,
}

impl Case {
    fn new(
        conv: &Conv,
        [c_in, c_out, h, w]: [usize; 4],
        (x, wt, bias): (Vec<f32>, Vec<f32>, &[f32]),
        tail: Tail,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let [k0, k1] = conv.kernel;
        let y = conv
            .eval(&[
                &Tensor::new(vec![1, c_in, h, w], x).unwrap(),
                &Tensor::new(vec![c_out, c_in, k0, k1], wt).unwrap(),
                &Tensor::new(vec![c_out], bias.to_vec()).unwrap(),
            ])
            .unwrap()
            .remove(0);
        let (ho, wo) = (y.shape()[2], y.shape()[3]);
        let r = random(c_out * ho * wo, rng);
        Case {
            ho,
            wo,
            want: nhwc(&finish(y.data(), &tail, &r), c_out, ho * wo),
            residual: nhwc(&r, c_out, ho * wo),
        }
    }
}

/// The stem kernel (few input channels, vectorised over output pixels) against the reference
/// convolution, reading NCHW and NHWC input; it must apply wherever its limits say it does.
#[allow(clippy::too_many_arguments)]
fn check_stem(
    conv: &Conv,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    tail: Tail,
    threads: usize,
    seed: u64,
) {
    let (mut rng, x, wt, bias) = operands(conv, [c_in, c_out, h, w], seed);
    let case = Case::new(
        conv,
        [c_in, c_out, h, w],
        (x.clone(), wt.clone(), &bias),
        tail,
        &mut rng,
    );
    let pool = pool_of(threads);
    for (input, data) in [
        (StemInput::Nchw, x.clone()),
        (StemInput::Nhwc, nhwc(&x, c_in, h * w)),
    ] {
        let stem = NhwcStemConv::new(Isa::detect(), conv, c_in, c_out, &wt, &bias, tail, input);
        let Some(stem) = stem else {
            assert!(
                Isa::detect() != Isa::Avx512,
                "the stem kernel refused {conv:?} {c_in}->{c_out}"
            );
            return;
        };
        let mut out = vec![f32::NAN; c_out * case.ho * case.wo];
        let mut scratch = vec![f32::NAN; stem.scratch_len(h, w)];
        pool.install(|| {
            stem.run(
                &data,
                h,
                w,
                case.ho,
                case.wo,
                &mut out,
                Some(&case.residual),
                &mut scratch,
                threads,
            )
        });
        assert_close(
            &out,
            &case.want,
            &format!("stem {input:?} {conv:?} {c_in}->{c_out}"),
        );
    }
}

fn pool_of(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn check_int8(
    conv: &Conv,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    quant: ActQuant,
    tail: Tail,
    threads: usize,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let [k0, k1] = conv.kernel;
    let x = random(c_in * h * w, &mut rng);
    let q: Vec<i8> = (0..c_out * c_in * k0 * k1)
        .map(|_| rng.random_range(-127i8..=127))
        .collect();
    let scales: Vec<f32> = (0..c_out).map(|_| rng.random_range(0.001..0.02)).collect();
    let wt: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * scales[i / (c_in * k0 * k1)])
        .collect();
    let bias = random(c_out, &mut rng);
    let xq: Vec<f32> = x.iter().map(|&v| quant.fake(v)).collect();
    let Case {
        ho,
        wo,
        want,
        residual: rn,
    } = Case::new(conv, [c_in, c_out, h, w], (xq, wt, &bias), tail, &mut rng);
    let pool = pool_of(threads);
    let xn = nhwc(&x, c_in, h * w);
    for isa in Isa::available() {
        let k = NhwcInt8Conv::new(isa, conv, c_in, c_out, &q, &scales, &bias, quant, tail)
            .expect("an ungrouped convolution");
        let mut out = vec![f32::NAN; c_out * ho * wo];
        let mut scratch = vec![0u8; k.scratch_bytes(h, w)];
        pool.install(|| {
            k.run(
                &xn,
                h,
                w,
                ho,
                wo,
                &mut out,
                Some(&rn),
                &mut scratch,
                threads,
            )
        });
        assert_close(
            &out,
            &want,
            &format!("int8 conv {isa} {conv:?} {c_in}->{c_out}"),
        );
    }
}

#[test]
fn int8_convolutions_of_real_layer_shapes() {
    let conv = |k: usize, s: usize| Conv {
        kernel: [k, k],
        strides: [s, s],
        pads: [k / 2; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let tail = Tail {
        act: Some(Pointwise::Relu),
        residual: true,
        post: Some(Pointwise::Relu),
    };
    let image = ActQuant::from_range(-2.1, 2.6);
    check_int8(&conv(7, 2), 3, 64, 23, 21, image, Tail::default(), 1, 1);
    let relu = ActQuant::from_range(0.0, 1.3);
    check_int8(&conv(3, 1), 96, 80, 9, 8, relu, tail, 2, 2);
    check_int8(&conv(1, 2), 130, 48, 7, 7, relu, Tail::default(), 1, 3);
}

/// The bf16 kernel against the reference convolution of the bf16-rounded input and weights
/// (the products are exact in f32, so only the order of the f32 sums differs), on every
/// instruction set.
#[allow(clippy::too_many_arguments)]
fn check_bf16(
    conv: &Conv,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    tail: Tail,
    threads: usize,
    seed: u64,
) {
    let (mut rng, x, wt, bias) = operands(conv, [c_in, c_out, h, w], seed);
    let rounded = |v: &[f32]| v.iter().map(|&v| round_bf16(v)).collect::<Vec<f32>>();
    let (xr, wr) = (rounded(&x), rounded(&wt));
    let Case {
        ho,
        wo,
        want,
        residual: rn,
    } = Case::new(conv, [c_in, c_out, h, w], (xr, wr, &bias), tail, &mut rng);
    let pool = pool_of(threads);
    let xn = nhwc(&x, c_in, h * w);
    for isa in Isa::available() {
        let k = NhwcBf16Conv::new(isa, conv, c_in, c_out, &wt, &bias, tail)
            .expect("an ungrouped convolution");
        let mut out = vec![f32::NAN; c_out * ho * wo];
        let mut scratch = vec![0u16; k.scratch_len(h, w)];
        pool.install(|| {
            let res = Some(rn.as_slice());
            k.run(&xn, h, w, ho, wo, &mut out, res, &mut scratch, threads)
        });
        assert_close(
            &out,
            &want,
            &format!("bf16 conv {isa} {conv:?} {c_in}->{c_out}"),
        );
        // the f32 kernel on rounded values (CPUs without AVX-512 BF16) computes the same
        let k = NhwcConv::rounded_to_bf16(isa, conv, c_in, c_out, &wt, &bias, tail);
        let mut scratch = vec![0.0f32; k.scratch_len(h, w)];
        pool.install(|| {
            let res = Some(rn.as_slice());
            k.run(&xn, h, w, ho, wo, &mut out, res, &mut scratch, threads)
        });
        let what = format!("bf16 in f32 arithmetic {isa} {conv:?} {c_in}->{c_out}");
        assert_close(&out, &want, &what);
    }
}

#[test]
fn bf16_convolutions_of_real_layer_shapes() {
    let conv = |k: usize, s: usize| Conv {
        kernel: [k, k],
        strides: [s, s],
        pads: [k / 2; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let tail = Tail {
        act: Some(Pointwise::Relu),
        residual: true,
        post: Some(Pointwise::Relu),
    };
    check_bf16(&conv(7, 2), 3, 64, 23, 21, Tail::default(), 1, 1);
    check_bf16(&conv(3, 1), 96, 80, 9, 8, tail, 2, 2);
    check_bf16(&conv(1, 2), 131, 48, 7, 7, Tail::default(), 1, 3);
}

#[test]
fn max_pools_with_windows_beyond_eight_by_eight_match_the_reference() {
    // more taps than the AVX-512 row path holds: the generic path takes them, no panic
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (c, h, w) = (20, 14, 13);
    for (k, pad) in [(9, 4), (11, 0), (8, 3)] {
        let geometry = PoolGeometry {
            kernel: [k, k],
            strides: [1, 2],
            pads: [pad; 4],
            dilations: [1, 1],
            ceil_mode: false,
        };
        let x = random(c * h * w, &mut rng);
        let xt = Tensor::new(vec![1, c, h, w], x.clone()).unwrap();
        let y = MaxPool {
            geometry: geometry.clone(),
        }
        .eval(&[&xt])
        .unwrap()
        .remove(0);
        let (ho, wo) = (y.shape()[2], y.shape()[3]);
        let want = nhwc(y.data(), c, ho * wo);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; c * ho * wo];
            nhwc_ops::pool(
                isa,
                &nhwc(&x, c, h * w),
                c,
                h,
                w,
                &geometry,
                true,
                false,
                ho,
                wo,
                &mut out,
                1,
            );
            assert_close(&out, &want, &format!("{k}x{k} max pool {isa}"));
        }
    }
}

#[test]
fn long_reductions_accumulate_chunk_by_chunk() {
    // K = 3·3·70 = 630 and 1·1·600 (several chunks of 256), grouped 2·(3·3·40)
    let tail = Tail {
        act: Some(Pointwise::Relu),
        residual: true,
        post: Some(Pointwise::Silu),
    };
    let conv = |k: usize, groups: usize| Conv {
        kernel: [k, k],
        strides: [1, 1],
        pads: [k / 2; 4],
        dilations: [1, 1],
        groups,
    };
    check_conv(&conv(3, 1), 70, 37, 6, 7, tail, 1, 1);
    // four panels at a time (64 channels) and a partial fifth, over several chunks
    check_conv(&conv(3, 1), 70, 70, 6, 7, tail, 1, 4);
    check_conv(&conv(1, 1), 600, 20, 3, 5, tail, 2, 2);
    check_conv(&conv(3, 2), 80, 34, 5, 5, Tail::default(), 2, 3);
}

#[test]
fn large_padded_inputs_copied_band_by_band_match_the_reference() {
    // padded inputs of 0.6–0.8 MB: the zero-bordered copy is made a band of
    // rows at a time (symmetric, asymmetric and bottom-heavy padding, strides, dilation,
    // groups, the tail with a residual)
    let tail = Tail {
        act: Some(Pointwise::Relu),
        residual: true,
        post: Some(Pointwise::Silu),
    };
    let conv = |k: usize, stride: usize, pads: [usize; 4], dil: usize, groups: usize| Conv {
        kernel: [k, k],
        strides: [stride, stride],
        pads,
        dilations: [dil, dil],
        groups,
    };
    check_conv(&conv(3, 1, [1; 4], 1, 1), 32, 20, 70, 72, tail, 1, 11);
    check_conv(&conv(3, 2, [1, 0, 1, 1], 1, 2), 32, 32, 75, 71, tail, 1, 12);
    check_conv(
        &conv(5, 1, [4; 4], 2, 1),
        40,
        17,
        60,
        58,
        Tail::default(),
        1,
        13,
    );
    check_conv(&conv(3, 3, [0, 1, 2, 1], 1, 1), 36, 40, 71, 70, tail, 1, 14);
    // several threads: each copies and computes the bands of its own share of the rows
    check_conv(&conv(3, 1, [1; 4], 1, 1), 32, 20, 70, 72, tail, 2, 15);
    check_conv(&conv(3, 2, [1, 0, 1, 1], 1, 2), 32, 32, 75, 71, tail, 3, 16);
    check_conv(&conv(3, 3, [0, 1, 2, 1], 1, 1), 36, 40, 71, 70, tail, 2, 17);
}

#[test]
fn winograd_reductions_longer_than_a_chunk_accumulate() {
    // K = C_in = 600: two chunks of the product kernel; 2 threads split panels of one block
    let conv = Conv {
        kernel: [3, 3],
        strides: [1, 1],
        pads: [1; 4],
        dilations: [1, 1],
        groups: 1,
    };
    let tail = Tail {
        act: Some(Pointwise::Relu),
        residual: true,
        post: None,
    };
    check_conv(&conv, 600, 40, 5, 6, tail, 2, 4);
    check_conv(&conv, 24, 33, 9, 13, Tail::default(), 1, 5);
}

/// A depthwise convolution against the reference on every instruction set, with a residual
/// and the tail; returns the input (NCHW), as a tensor and in NHWC for further checks.
fn check_depthwise(
    conv: &Conv,
    c: usize,
    h: usize,
    w: usize,
    tail: Tail,
    seed: u64,
) -> (Vec<f32>, Tensor, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = conv.kernel[0];
    let x = random(c * h * w, &mut rng);
    let xt = Tensor::new(vec![1, c, h, w], x.clone()).unwrap();
    let wt = random(c * k * k, &mut rng);
    let bias = random(c, &mut rng);
    let y = conv
        .eval(&[
            &xt,
            &Tensor::new(vec![c, 1, k, k], wt.clone()).unwrap(),
            &Tensor::new(vec![c], bias.clone()).unwrap(),
        ])
        .unwrap()
        .remove(0);
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    let r = random(c * ho * wo, &mut rng);
    let want = nhwc(&finish(y.data(), &tail, &r), c, ho * wo);
    let d = NhwcDepthwise::new(conv, c, &wt, &bias, tail);
    let xn = nhwc(&x, c, h * w);
    for isa in Isa::available() {
        let mut out = vec![f32::NAN; c * ho * wo];
        d.run(
            isa,
            &xn,
            h,
            w,
            ho,
            wo,
            &mut out,
            Some(&nhwc(&r, c, ho * wo)),
            1,
        );
        assert_close(
            &out,
            &want,
            &format!("depthwise {isa} {conv:?} c {c} {h}x{w}"),
        );
    }
    (x, xt, xn)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn winograd_convolution_matches_the_reference(
        c_in in 1usize..40, c_out in 1usize..40, h in 1usize..20, w in 1usize..20,
        pads in proptest::array::uniform4(0usize..3), t in 0u8..32, threads in 1usize..3,
        seed in 0u64..1000,
    ) {
        prop_assume!(h + pads[0] + pads[2] >= 3 && w + pads[1] + pads[3] >= 3);
        let conv = Conv { kernel: [3, 3], strides: [1, 1], pads, dilations: [1, 1], groups: 1 };
        check_conv(&conv, c_in, c_out, h, w, tail_of(t), threads, seed);
    }

    #[test]
    fn implicit_gemm_convolution_matches_the_reference(
        groups in 1usize..4, cin_g in 1usize..24, cout_g in 1usize..90, k in 1usize..4,
        h in 2usize..12, w in 2usize..30, pads in proptest::array::uniform4(0usize..2),
        stride in 1usize..3, dil in 1usize..3, t in 0u8..32, threads in 1usize..3,
        seed in 0u64..1000,
    ) {
        let span = (k - 1) * dil + 1;
        prop_assume!(h + pads[0] + pads[2] >= span && w + pads[1] + pads[3] >= span);
        let conv = Conv { kernel: [k, k], strides: [stride, stride], pads, dilations: [dil, dil], groups };
        check_conv(&conv, groups * cin_g, groups * cout_g, h, w, tail_of(t), threads, seed);
    }

    #[test]
    fn stem_convolution_matches_the_reference(
        c_in in 1usize..5, c_out in 1usize..40, kh in 1usize..8, kw in 1usize..8,
        h in 1usize..40, w in 1usize..40, pads in proptest::array::uniform4(0usize..3),
        sh in 1usize..4, sw in 1usize..4, t in 0u8..32, threads in 1usize..3, seed in 0u64..1000,
    ) {
        prop_assume!(c_in * kh * kw <= secateur_runtime::kernels::nhwc_stem::MAX_REDUCTION);
        prop_assume!(h + pads[0] + pads[2] >= kh && w + pads[1] + pads[3] >= kw);
        let conv = Conv { kernel: [kh, kw], strides: [sh, sw], pads, dilations: [1, 1], groups: 1 };
        check_stem(&conv, c_in, c_out, h, w, tail_of(t), threads, seed);
    }

    #[test]
    fn int8_convolution_matches_the_reference(
        c_in in 1usize..20, c_out in 1usize..70, k in 1usize..4, h in 2usize..12,
        w in 2usize..20, pads in proptest::array::uniform4(0usize..2), stride in 1usize..3,
        dil in 1usize..3, lo in -3.0f32..0.5, t in 0u8..32, threads in 1usize..3,
        seed in 0u64..1000,
    ) {
        let span = (k - 1) * dil + 1;
        prop_assume!(h + pads[0] + pads[2] >= span && w + pads[1] + pads[3] >= span);
        let conv = Conv { kernel: [k, k], strides: [stride, stride], pads, dilations: [dil, dil], groups: 1 };
        let quant = ActQuant::from_range(lo, lo + 2.5);
        check_int8(&conv, c_in, c_out, h, w, quant, tail_of(t), threads, seed);
    }

    #[test]
    fn bf16_convolution_matches_the_reference(
        c_in in 1usize..20, c_out in 1usize..70, k in 1usize..4, h in 2usize..12,
        w in 2usize..20, pads in proptest::array::uniform4(0usize..2), stride in 1usize..3,
        dil in 1usize..3, t in 0u8..32, threads in 1usize..3, seed in 0u64..1000,
    ) {
        let span = (k - 1) * dil + 1;
        prop_assume!(h + pads[0] + pads[2] >= span && w + pads[1] + pads[3] >= span);
        let conv = Conv { kernel: [k, k], strides: [stride, stride], pads, dilations: [dil, dil], groups: 1 };
        check_bf16(&conv, c_in, c_out, h, w, tail_of(t), threads, seed);
    }

    #[test]
    fn depthwise_and_pooling_match_the_reference(
        c in 1usize..90, k in 1usize..6, h in 2usize..16, w in 2usize..20,
        pads in proptest::array::uniform4(0usize..3), stride in 1usize..3, dil in 1usize..3,
        t in 0u8..32, include_pad: bool, seed in 0u64..1000,
    ) {
        let span = (k - 1) * dil + 1;
        prop_assume!(h + pads[0] + pads[2] >= span && w + pads[1] + pads[3] >= span);
        prop_assume!(pads.iter().all(|&p| p < span));
        let conv = Conv { kernel: [k, k], strides: [stride, stride], pads, dilations: [dil, dil], groups: c };
        let (x, xt, xn) = check_depthwise(&conv, c, h, w, tail_of(t), seed);
        let (ho, wo) = (conv.out_size(h, 0).unwrap(), conv.out_size(w, 1).unwrap());
        let geometry = PoolGeometry { kernel: [k, k], strides: [stride, stride], pads, dilations: [dil, dil], ceil_mode: false };
        let pools: [(bool, Box<dyn OpSemantics>); 2] = [
            (true, Box::new(MaxPool { geometry: geometry.clone() })),
            (false, Box::new(AveragePool { geometry: geometry.clone(), count_include_pad: include_pad })),
        ];
        for (max, op) in pools {
            let y = op.eval(&[&xt]).unwrap().remove(0);
            let want = nhwc(y.data(), c, ho * wo);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; c * ho * wo];
                nhwc_ops::pool(isa, &xn, c, h, w, &geometry, max, include_pad, ho, wo, &mut out, 2);
                assert_close(&out, &want, &format!("pool max={max} {isa}"));
            }
            let mut planar = vec![f32::NAN; c * ho * wo];
            ops::pool(&x, c, h, w, &geometry, max, include_pad, ho, wo, &mut planar);
            assert_close(&planar, y.data(), &format!("NCHW pool max={max}"));
        }
        let want: Vec<f32> = (0..c).map(|ch| x[ch * h * w..(ch + 1) * h * w].iter().sum::<f32>() / (h * w) as f32).collect();
        for threads in [1, 3] {
            let mut gap = vec![0.0; c];
            nhwc_ops::global_avg_pool(Isa::detect(), &xn, h * w, c, &mut gap, threads);
            assert_close(&gap, &want, &format!("global average pool, {threads} threads"));
        }
    }

    #[test]
    fn depthwise_sliding_windows_match_the_reference(
        vectors in 1usize..7, rest in 0usize..3, k in 3usize..6, h in 2usize..12,
        w in 2usize..40, pads in proptest::array::uniform4(0usize..3), stride in 1usize..3,
        t in 0u8..32, seed in 0u64..1000,
    ) {
        // 5×5 kernels (and, for comparison, 3×3 and 4×4) over whole 16-channel vectors and a
        // few more, rows long enough for windows of 16 pixels, padding on either side
        let c = 16 * vectors + [0, 8, 5][rest];
        prop_assume!(h + pads[0] + pads[2] >= k && w + pads[1] + pads[3] >= k);
        prop_assume!(pads.iter().all(|&p| p < k));
        let conv = Conv { kernel: [k, k], strides: [stride, stride], pads, dilations: [1, 1], groups: c };
        check_depthwise(&conv, c, h, w, tail_of(t), seed);
    }
}
