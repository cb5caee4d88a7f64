//! Lowering of linear layers (Gemm, MatMul by a constant weight) with their fused bias and
//! activation: the weight kernel format and thread count timed fastest for the plan's rows.

use super::weights::{Choice, Prepared, candidates, choose, prepare};
use super::{LowerCx, Lowered, RuntimeOp};
use crate::error::Result;
use crate::kernels::{Format, WeightKernel};
use crate::plan::step::{Linear, StepKind};
use crate::plan::{FormatPolicy, LayerChoice, err};
use secateur_graph::{BatchMatMul, Gemm, MatMul};

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
