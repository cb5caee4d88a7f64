//! Lowering of linear layers (Gemm, MatMul by a constant weight) with their fused bias and
//! activation: the weight kernel format and thread count timed fastest for the plan's rows.
//! A dense layer over enough rows (a transformer's projections: one row per token) runs as a
//! 1×1 convolution of the channels-last implicit-GEMM kernel instead, with the whole fused
//! tail (bias, GELU, residual addition) in its register epilogue: 1–8 % faster than the gemm
//! crate on MiniLM's and ViT's shapes (`examples/linear_speed`), and no pass over the output
//! for the tail.

use super::weights::{Choice, Prepared, candidates, choose, prepare};
use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::kernels::nhwc_conv::NhwcConv;
use crate::kernels::{Format, WeightKernel};
use crate::plan::step::{Linear, NhwcConvStep, NhwcKernel, StepKind};
use crate::plan::{FormatPolicy, LayerChoice, err};
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
        ..
    } = prep;
    let measure = config.policy == FormatPolicy::Measure;
    let k = *xs.last().unwrap_or(&1);
    let n_rows: usize = xs.iter().product::<usize>() / k.max(1);
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
    let batch = config.batch.max(1);
    if kernel.format() == Format::Dense
        && n_rows.is_multiple_of(batch)
        && n_rows / batch >= TOKEN_ROWS
    {
        return Ok(token_rows(&config, choice, &fused, k, rows, n_rows / batch));
    }
    let sparse = kernel.format() != Format::Dense && n_rows > 1;
    let wt = match &kernel {
        WeightKernel::Dense { .. } => fused
            .weight
            .transpose2()
            .map_err(|e| err(&name, e.to_string()))?
            .into_data(),
        _ => Vec::new(),
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
        wt,
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

/// A dense linear layer over `per_sample` rows of each sample as a 1×1 convolution of the
/// channels-last kernel over `per_sample × 1` pixels (rows are independent, so any equal split
/// of the rows into samples is exact, whatever axis the batch is on).
fn token_rows(
    config: &crate::plan::PlanConfig,
    mut choice: LayerChoice,
    fused: &crate::fold::FusedLayer,
    k: usize,
    m: usize,
    per_sample: usize,
) -> (StepKind, LayerChoice) {
    let conv = Conv::new([1, 1], 0);
    let kernel = NhwcConv::new(
        config.isa,
        &conv,
        k,
        m,
        fused.weight.data(),
        &fused.bias,
        fused.tail,
    );
    let batch = config.batch.max(1);
    let (workers, threads) = if batch >= config.threads {
        (config.threads, 1)
    } else if per_sample * k * m < SPLIT_MIN_MACS {
        (1, 1)
    } else {
        (1, config.threads)
    };
    choice.format = "nhwc-gemm".into();
    choice.threads = threads.max(workers);
    choice.weight_bytes = kernel.bytes();
    let kind = StepKind::NhwcConv(Box::new(NhwcConvStep {
        kernel: NhwcKernel::Gemm(kernel),
        c_in: k,
        c_out: m,
        h: per_sample,
        w: 1,
        ho: per_sample,
        wo: 1,
        threads,
        scratch: vec![Vec::new(); workers],
    }));
    (kind, choice)
}
