//! Lowering of linear layers (Gemm, MatMul by a constant weight) with their fused bias and
//! activation: the weight kernel format and thread count timed fastest for the plan's rows.
//! A dense layer over enough rows (a transformer's projections: one row per token) runs as a
//! 1×1 convolution of the channels-last implicit-GEMM kernel instead, with the whole fused
//! tail (bias, GELU, residual addition) in its register epilogue: 1–8 % faster than the gemm
//! crate on MiniLM's and ViT's shapes (`examples/linear_speed`), and no pass over the output
//! for the tail. A quantized layer runs on the int8 kernel the same way where the CPU has
//! VNNI, and in a bf16 plan a dense layer on the bf16 kernel (or, without AVX-512 BF16, on the
//! f32 kernel with bf16-rounded operands), whatever its rows.

use super::weights::{Choice, Prepared, candidates, choose, prepare};
use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::kernels::bf16::bf16_runs_fast;
use crate::kernels::dense::FullyConnected;
use crate::kernels::nhwc_bf16::NhwcBf16Conv;
use crate::kernels::nhwc_conv::NhwcConv;
use crate::kernels::nhwc_int8::{NhwcInt8Conv, int8_runs_fast};
use crate::kernels::{Format, WeightKernel};
use crate::plan::step::{Linear, NhwcConvStep, NhwcKernel, StepKind};
use crate::plan::{FormatPolicy, LayerChoice, Precision, err};
use secateur_graph::{BatchMatMul, Conv, Gemm, MatMul};

impl RuntimeOp for Gemm {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        lower_weighted_linear(cx)
    }
}

impl RuntimeOp for MatMul {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        lower_weighted_linear(cx)
    }
}

impl RuntimeOp for BatchMatMul {
    fn lower(&self, cx: &LowerCx) -> Result<Lowered> {
        let products = self
            .products(&cx.in_shape(0), &cx.in_shape(1))
            .map_err(|e| err(&cx.node().name, e.to_string()))?;
        let kind = StepKind::BatchMatMul {
            products,
            threads: cx.config.threads,
        };
        Ok(Lowered::plain(cx, kind))
    }
}

fn lower_weighted_linear(cx: &LowerCx) -> Result<Lowered> {
    let prep = prepare(cx)?;
    let shell = Lowered::layer_shell(&prep);
    let op_type = cx.node().op.op_type();
    let (kind, choice) = lower_linear(op_type, prep)?;
    Ok(shell.with(kind, choice))
}

fn lower_linear(op_type: &str, prep: Prepared) -> Result<(StepKind, LayerChoice)> {
    let Prepared {
        name,
        config,
        xs,
        fused,
        fused_names,
        sparsity,
        rows,
        cols,
        pattern,
        int8,
        ..
    } = prep;
    let measure = config.policy == FormatPolicy::Measure;
    let k = *xs.last().unwrap_or(&1);
    let n_rows: usize = xs.iter().product::<usize>() / k.max(1);
    let batch = config.batch.max(1);
    let int8 = int8
        .filter(|_| int8_runs_fast(config.isa) && n_rows.is_multiple_of(batch))
        .and_then(|f| {
            let (conv, tail) = (Conv::new([1, 1], 0), fused.tail);
            NhwcInt8Conv::new(
                config.isa,
                &conv,
                k,
                rows,
                &f.q,
                &f.scales,
                &fused.bias,
                f.quant,
                tail,
            )
        });
    if let Some(kernel) = int8 {
        let macs = (rows * cols * n_rows) as u64;
        let choice = LayerChoice::unmeasured(
            name,
            op_type,
            fused_names,
            "nhwc-int8",
            config.threads,
            sparsity,
            macs,
            kernel.bytes(),
        );
        let per_sample = n_rows / batch;
        let scratch = kernel.scratch_bytes(per_sample, 1).div_ceil(4);
        let rows_kernel = RowsKernel::Int8(kernel, scratch);
        return Ok(token_rows(
            &config,
            choice,
            rows_kernel,
            k,
            rows,
            per_sample,
        ));
    }
    let Choice {
        kernel,
        threads: t,
        candidates: cands,
        dense_ms,
        chosen_ms,
    } = choose(
        config.isa,
        &fused.weight,
        n_rows,
        config.threads,
        &candidates(sparsity, cols, pattern, config.policy),
        measure,
    );
    let choice = LayerChoice {
        node: name.clone(),
        op: op_type.into(),
        fused: fused_names,
        format: kernel.format().to_string(),
        threads: t,
        sparsity,
        candidates: cands,
        dense_ms,
        chosen_ms,
        dense_macs: (rows * cols * n_rows) as u64,
        executed_macs: (kernel.macs_per_column() * n_rows) as u64,
        weight_bytes: kernel.bytes(),
    };
    let bf16 = config.precision == Precision::Bf16;
    if kernel.format() == Format::Dense
        && n_rows.is_multiple_of(batch)
        && (n_rows / batch >= TOKEN_ROWS || bf16)
    {
        let conv = Conv::new([1, 1], 0);
        let (w, b, isa) = (fused.weight.data(), &fused.bias, config.isa);
        let rows_kernel = if !bf16 {
            RowsKernel::F32(NhwcConv::new(isa, &conv, k, rows, w, b, fused.tail))
        } else if !bf16_runs_fast(isa) {
            let gemm = NhwcConv::rounded_to_bf16(isa, &conv, k, rows, w, b, fused.tail);
            let scratch = gemm.scratch_len(n_rows / batch, 1);
            RowsKernel::Bf16InF32(gemm, scratch)
        } else {
            let kb = NhwcBf16Conv::new(isa, &conv, k, rows, w, b, fused.tail)
                .ok_or_else(|| err(&name, "a 1×1 convolution is ungrouped"))?;
            let scratch = kb.scratch_len(n_rows / batch, 1).div_ceil(2);
            RowsKernel::Bf16(kb, scratch)
        };
        return Ok(token_rows(
            &config,
            choice,
            rows_kernel,
            k,
            rows,
            n_rows / batch,
        ));
    }
    let sparse = kernel.format() != Format::Dense && n_rows > 1;
    let dense = match &kernel {
        WeightKernel::Dense { .. } => {
            let wt = fused
                .weight
                .transpose2()
                .map_err(|e| err(&name, e.to_string()))?
                .into_data();
            Some(FullyConnected::new(config.isa, wt, k, rows, n_rows))
        }
        _ => None,
    };
    let kind = StepKind::Linear(Box::new(Linear {
        xt: if sparse {
            vec![0.0; k * n_rows]
        } else {
            Vec::new()
        },
        yt: if sparse {
            vec![0.0; rows * n_rows]
        } else {
            Vec::new()
        },
        dense,
        kernel,
        bias: fused.bias,
        act: fused.act,
        tail: fused.tail,
        k,
        m: rows,
        rows: n_rows,
        threads: t,
    }));
    Ok((kind, choice))
}

/// Rows per sample from which a dense linear layer runs on the implicit-GEMM kernel (its
/// register tile covers 6 rows).
const TOKEN_ROWS: usize = 12;

/// Multiply-adds per sample below which one sample runs on one thread (as for convolutions).
const SPLIT_MIN_MACS: usize = 400_000;

/// The channels-last kernel a linear layer's rows run on.
enum RowsKernel {
    F32(NhwcConv),
    /// With the scratch (in floats) for its quantized input.
    Int8(NhwcInt8Conv, usize),
    /// With the scratch (in floats) for its rounded input.
    Bf16(NhwcBf16Conv, usize),
    /// The f32 kernel on bf16-rounded operands, with the scratch for its rounded input.
    Bf16InF32(NhwcConv, usize),
}

/// A dense linear layer over `per_sample` rows of each sample as a 1×1 convolution of the
/// channels-last kernel over `per_sample × 1` pixels (rows are independent, so any equal split
/// of the rows into samples is exact, whatever axis the batch is on).
fn token_rows(
    config: &crate::plan::PlanConfig,
    mut choice: LayerChoice,
    kernel: RowsKernel,
    k: usize,
    m: usize,
    per_sample: usize,
) -> (StepKind, LayerChoice) {
    let batch = config.batch.max(1);
    let (workers, threads) = if batch >= config.threads {
        (config.threads, 1)
    } else if per_sample * k * m < SPLIT_MIN_MACS {
        (1, 1)
    } else {
        (1, config.threads)
    };
    choice.threads = threads.max(workers);
    let (kernel, scratch_len) = match kernel {
        RowsKernel::F32(k) => {
            choice.format = "nhwc-gemm".into();
            choice.weight_bytes = k.bytes();
            (NhwcKernel::Gemm(k), 0)
        }
        RowsKernel::Int8(k, scratch) => (NhwcKernel::Int8(k), scratch),
        RowsKernel::Bf16(k, scratch) => {
            choice.format = "nhwc-bf16".into();
            choice.weight_bytes = k.bytes();
            (NhwcKernel::Bf16(k), scratch)
        }
        RowsKernel::Bf16InF32(k, scratch) => {
            choice.format = "nhwc-bf16-in-f32".into();
            choice.weight_bytes = k.bytes();
            (NhwcKernel::Gemm(k), scratch)
        }
    };
    let kind = StepKind::NhwcConv(Box::new(NhwcConvStep {
        kernel,
        c_in: k,
        c_out: m,
        h: per_sample,
        w: 1,
        ho: per_sample,
        wo: 1,
        threads,
        scratch: vec![vec![0.0; scratch_len]; workers],
        placement: None,
    }));
    (kind, choice)
}
