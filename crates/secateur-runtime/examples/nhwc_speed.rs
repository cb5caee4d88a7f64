//! Times the NHWC implicit-GEMM convolution on one layer, the Winograd kernel where it
//! applies (3×3), the int8 kernel (ungrouped, quantizing its input in the timed call) and the
//! bf16 kernel (ungrouped, rounding its input in the timed call), the stem kernel (few input
//! channels, reading NCHW or NHWC), and prints GFLOP/s (GOP/s for
//! int8) of the direct sum's operations:
//! `nhwc_speed C_IN C_OUT HW K [PAD]` (`SILU=1` fuses a SiLU, `THREADS=N` splits one sample,
//! `STRIDE=S` strides the convolution, `CONV_GROUPS=G` groups it, `ISA=avx2` skips AVX-512, `ONLY=NAME` times one kernel).
use secateur_graph::Conv;
use secateur_runtime::harness::{Budget, measure, probe};
use secateur_runtime::kernels::epilogue::Tail;
use secateur_runtime::kernels::nhwc_bf16::NhwcBf16Conv;
use secateur_runtime::kernels::nhwc_conv::NhwcConv;
use secateur_runtime::kernels::nhwc_int8::NhwcInt8Conv;
use secateur_runtime::kernels::nhwc_stem::{NhwcStemConv, StemInput};
use secateur_runtime::kernels::winograd::NhwcWinograd;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (ci, co, hw, k) = (arg(0, 64), arg(1, 64), arg(2, 56), arg(3, 3));
    let pad = arg(4, k / 2);
    let stride: usize = std::env::var("STRIDE").map_or(1, |t| t.parse().expect("a number"));
    let groups: usize = std::env::var("CONV_GROUPS").map_or(1, |t| t.parse().expect("a number"));
    let conv = Conv {
        kernel: [k, k],
        strides: [stride, stride],
        pads: [pad; 4],
        dilations: [1, 1],
        groups,
    };
    let w: Vec<f32> = (0..co * ci / groups * k * k)
        .map(|i| ((i * 7) % 13) as f32 * 0.01)
        .collect();
    let bias = vec![0.1; co];
    let tail = Tail {
        act: std::env::var("SILU")
            .is_ok()
            .then_some(secateur_graph::Pointwise::Silu),
        ..Tail::default()
    };
    let isa = match std::env::var("ISA").as_deref() {
        Ok("avx2") => secateur_runtime::kernels::Isa::Avx2,
        _ => secateur_runtime::kernels::Isa::detect(),
    };
    let packed = NhwcConv::new(isa, &conv, ci, co, &w, &bias, tail);
    let ho = (hw + 2 * pad - k) / stride + 1;
    let x: Vec<f32> = (0..ci * hw * hw)
        .map(|i| ((i * 3) % 17) as f32 * 0.01)
        .collect();
    let mut y = vec![0.0; co * ho * ho];
    let mut scratch = vec![0.0; packed.scratch_len(hw, hw)];
    let threads: usize = std::env::var("THREADS").map_or(1, |t| t.parse().expect("a number"));
    // the runtime's own team (an inference's threads), as plans run layers
    let team = secateur_runtime::team::Team::new(threads).expect("threads");
    let flops = 2.0 * (co * ci / groups * k * k * ho * ho) as f64;
    let report = |name: &str, ms: f64| {
        println!(
            "{name:9} {ci}->{co} {hw}x{hw} k{k} p{pad}: {ms:.4} ms, {:.1} GFLOP/s",
            flops / ms / 1e6
        )
    };
    let time = |f: &mut dyn FnMut()| {
        let one = probe(&mut *f);
        measure(&mut *f, Budget::for_duration(one, 500.0)).median_ms
    };
    let wanted = |name: &str| std::env::var("ONLY").map_or(true, |only| only == name);
    let copies: usize = std::env::var("COLD_COPIES").map_or(0, |t| t.parse().expect("a number"));
    if wanted("gemm") {
        let ms = time(&mut || {
            team.enter(|| packed.run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
        });
        report("gemm", ms);
    }
    if copies > 0 && wanted("gemm") {
        // as in a plan: every call reads weights that are not in the caches
        let many: Vec<NhwcConv> = (0..copies)
            .map(|_| NhwcConv::new(isa, &conv, ci, co, &w, &bias, tail))
            .collect();
        let mut next = 0;
        let ms = time(&mut || {
            next = (next + 1) % copies;
            team.enter(|| many[next].run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
        });
        report("gemm-cold", ms);
    }
    if let Some(wino) =
        NhwcWinograd::new(isa, &conv, ci, co, &w, &bias, tail).filter(|_| wanted("winograd"))
    {
        let mut scratch = vec![0.0; wino.scratch_len(hw, hw)];
        let ms = time(&mut || {
            team.enter(|| wino.run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
        });
        report("winograd", ms);
        if copies > 0 {
            // as in a plan: every call reads transformed weights that are not in the caches
            let many: Vec<NhwcWinograd> = (0..copies)
                .filter_map(|_| NhwcWinograd::new(isa, &conv, ci, co, &w, &bias, tail))
                .collect();
            let mut next = 0;
            let ms = time(&mut || {
                next = (next + 1) % copies;
                team.enter(|| {
                    many[next].run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads)
                })
            });
            report("wino-cold", ms);
        }
    }
    for (name, input) in [
        ("stem-nchw", StemInput::Nchw),
        ("stem-nhwc", StemInput::Nhwc),
    ] {
        if let Some(stem) =
            NhwcStemConv::new(isa, &conv, ci, co, &w, &bias, tail, input).filter(|_| wanted(name))
        {
            let mut scratch = vec![0.0; stem.scratch_len(hw, hw)];
            let ms = time(&mut || {
                team.enter(|| stem.run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
            });
            report(name, ms);
        }
    }
    let q: Vec<i8> = (0..w.len()).map(|i| ((i * 7) % 255) as i8).collect();
    let scales = vec![0.01; co];
    let quant = secateur_graph::ActQuant::from_range(0.0, 0.2);
    if let Some(int8) = NhwcInt8Conv::new(isa, &conv, ci, co, &q, &scales, &bias, quant, tail)
        .filter(|_| wanted("int8"))
    {
        let mut scratch = vec![0u8; int8.scratch_bytes(hw, hw)];
        let ms = time(&mut || {
            team.enter(|| int8.run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
        });
        report("int8", ms);
    }
    if let Some(bf16) =
        NhwcBf16Conv::new(isa, &conv, ci, co, &w, &bias, tail).filter(|_| wanted("bf16"))
    {
        let mut scratch = vec![0u16; bf16.scratch_len(hw, hw)];
        let ms = time(&mut || {
            team.enter(|| bf16.run(&x, hw, hw, ho, ho, &mut y, None, &mut scratch, threads))
        });
        report("bf16", ms);
    }
}
