//! Every direct convolution kernel — channel-vectorised, pixel-vectorised and sparse — equals
//! the IR's reference convolution on random geometries (kernel sizes, asymmetric pads, strides
//! and dilations where the kernel supports them, widths that are not multiples of the vector
//! width) and sparsities, with fused bias and activations.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::{Conv, OpSemantics, Tensor};
use secateur_runtime::kernels::Isa;
use secateur_runtime::kernels::direct_conv::DirectConv;
use secateur_runtime::kernels::epilogue::{Activation, Epilogue};
use secateur_runtime::kernels::sparse_conv::SparseConv;

struct Case {
    conv: Conv,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn case(
    c_in: usize,
    c_out: usize,
    k: usize,
    h: usize,
    w: usize,
    pads: [usize; 4],
    stride: usize,
    dil: usize,
    density: f64,
    seed: u64,
) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let conv = Conv {
        kernel: [k, k],
        strides: [stride, stride],
        pads,
        dilations: [dil, dil],
        groups: 1,
    };
    let kk = c_in * k * k;
    Case {
        conv,
        c_in,
        c_out,
        h,
        w,
        x: (0..c_in * h * w)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect(),
        weight: (0..c_out * kk)
            .map(|_| {
                if rng.random_bool(density) {
                    rng.random_range(-1.0..1.0)
                } else {
                    0.0
                }
            })
            .collect(),
        bias: (0..c_out).map(|_| rng.random_range(-0.5..0.5)).collect(),
    }
}

fn act_of(i: u8) -> Activation {
    match i % 3 {
        0 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Clip {
            min: -0.3,
            max: 0.4,
        },
    }
}

/// The IR's reference convolution plus bias and activation: `[c_out, ho, wo]` and (ho, wo).
fn reference(c: &Case, act: Activation) -> (Vec<f32>, usize, usize) {
    let [kh, kw] = c.conv.kernel;
    let x = Tensor::new(vec![1, c.c_in, c.h, c.w], c.x.clone()).unwrap();
    let w = Tensor::new(vec![c.c_out, c.c_in, kh, kw], c.weight.clone()).unwrap();
    let b = Tensor::new(vec![c.c_out], c.bias.clone()).unwrap();
    let y = c.conv.eval(&[&x, &w, &b]).unwrap().remove(0);
    let (ho, wo) = (y.shape()[2], y.shape()[3]);
    (y.data().iter().map(|v| act.apply(*v)).collect(), ho, wo)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn direct_kernels_match_the_reference(
        c_in in 1usize..5, c_out in 1usize..40, k in 1usize..6, h in 3usize..24, w in 3usize..40,
        pads in proptest::array::uniform4(0usize..3), stride in 1usize..3, dil in 1usize..3,
        density in 0.05f64..1.0, a in 0u8..3, seed in 0u64..1000,
    ) {
        let span = (k - 1) * dil + 1;
        prop_assume!(h + pads[0] + pads[2] >= span && w + pads[1] + pads[3] >= span);
        let c = case(c_in, c_out, k, h, w, pads, stride, dil, density, seed);
        let act = act_of(a);
        let (want, ho, wo) = reference(&c, act);
        let ep = Epilogue { bias: Some(&c.bias), act };
        let mut kernels = vec![("channels", DirectConv::new(&c.conv, c_in, c_out, &c.weight))];
        if let Some(d) = DirectConv::pixels(&c.conv, c_in, c_out, &c.weight) {
            kernels.push(("pixels", d));
        }
        for (name, d) in &kernels {
            let mut y = vec![f32::NAN; c_out * ho * wo];
            let mut scratch = vec![0.0f32; d.scratch_len(h, w)];
            d.run(&c.x, h, w, ho, wo, &mut y, &ep, &mut scratch);
            assert_close(&y, &want, name);
        }
        if let Some(s) = SparseConv::new(&c.conv, c_in, c_out, h, w, &c.weight) {
            for (isa, threads) in Isa::available().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
                let mut y = vec![f32::NAN; c_out * ho * wo];
                let mut scratch = vec![0.0f32; s.scratch_len(ho, wo)];
                s.run(isa, &c.x, h, w, ho, wo, &mut y, &ep, &mut scratch, threads);
                assert_close(&y, &want, &format!("sparse {isa}, {threads} threads"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Many input channels at low density: the non-zeros fall into several input-channel
    /// chunks whose partial sums the tiles carry through the output, output channels go in
    /// pairs (and an odd one alone), and runs span full and partial tiles.
    #[test]
    fn chunked_sparse_convolutions_match_the_reference(
        c_in in 48usize..120, c_out in 1usize..12, k in 2usize..4, hw in 12usize..30,
        stride in 1usize..3, density in 0.15f64..0.4, a in 0u8..3, seed in 0u64..1000,
    ) {
        let pad = k / 2;
        let c = case(c_in, c_out, k, hw, hw + 3, [pad; 4], stride, 1, density, seed);
        let act = act_of(a);
        let (want, ho, wo) = reference(&c, act);
        let ep = Epilogue { bias: Some(&c.bias), act };
        let s = SparseConv::new(&c.conv, c_in, c_out, hw, hw + 3, &c.weight).unwrap();
        prop_assert!(s.chunks() > 1, "{} chunks", s.chunks());
        for (isa, threads) in Isa::available().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
            let mut y = vec![f32::NAN; c_out * ho * wo];
            let mut scratch = vec![0.0f32; s.scratch_len(ho, wo)];
            s.run(isa, &c.x, hw, hw + 3, ho, wo, &mut y, &ep, &mut scratch, threads);
            assert_close(&y, &want, &format!("chunked sparse {isa}, {threads} threads"));
        }
    }
}
