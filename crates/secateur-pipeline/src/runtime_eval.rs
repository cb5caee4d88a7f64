//! Evaluating a classifier in secateur's runtime, in the precision it is meant to ship in.
//! bf16 execution has no simulation in the training engine, so a bf16 model's accuracy is
//! measured by running it: every sample of a split through an execution plan (channels-last
//! in bf16, where its kernels are), giving the same report as the
//! training engine's evaluation (accuracy, mean cross-entropy, per-class accuracy, top-1
//! predictions for agreement with another model).

use crate::{Result, bail};
use secateur_data::{Dataset, Normalization};
use secateur_graph::{Graph, Precision};
use secateur_runtime::{ExecPlan, PlanConfig};
use secateur_train::{EvalReport, Tally};

/// Evaluates `graph` on `data` in secateur's runtime at `precision` (bf16 also when the graph
/// itself asks for it: plans take it from the graph), `batch` samples per run.
pub fn evaluate_in_runtime(
    graph: &Graph,
    data: &Dataset,
    norm: &Normalization,
    batch: usize,
    precision: Precision,
) -> Result<EvalReport> {
    norm.validate(data.channels())?;
    if data.is_empty() {
        bail!("data set '{}' is empty", data.name);
    }
    let batch = batch.clamp(1, data.len());
    let threads = rayon::current_num_threads();
    let config = PlanConfig {
        precision,
        ..PlanConfig::new(batch, threads)
    };
    let mut plan = ExecPlan::compile(graph, config)?;
    let classes: usize = plan.output_shape.iter().skip(1).product();
    if plan.output_shape.len() != 2 || classes < data.classes() {
        bail!(
            "model '{}' outputs {:?}, expected [N, {}] logits for the {} classes of '{}'",
            graph.name,
            plan.output_shape,
            data.classes(),
            data.classes(),
            data.name
        );
    }
    let mut tally = Tally::new(data);
    let sample = data.sample_len();
    let mut x = vec![0f32; batch * sample];
    let order: Vec<usize> = (0..data.len()).collect();
    for chunk in order.chunks(batch) {
        let (xs, labels) = data.batch(chunk, norm);
        // a last, shorter batch is padded with zeros; their outputs are not read
        x.fill(0.0);
        x[..xs.data().len()].copy_from_slice(xs.data());
        let y = plan.run(&x)?;
        for (row, &label) in y.chunks(classes).zip(&labels) {
            let (predicted, loss) = top1_and_loss(row, label as usize);
            tally.loss_sum += loss;
            tally.add(predicted as u32, label);
        }
    }
    Ok(tally.report())
}

/// The index of the largest logit and the cross-entropy of `label` (log-sum-exp, in f64).
fn top1_and_loss(logits: &[f32], label: usize) -> (usize, f64) {
    let top = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |p| p.0);
    let max = logits[top] as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    (top, max + sum.ln() - logits[label] as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secateur_graph::zoo::{self, ZooConfig, ZooModel};

    #[test]
    fn the_runtime_reports_what_the_training_engine_reports_and_bf16_stays_close() {
        let data = secateur_data::load_mini().unwrap();
        let mut g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
        secateur_testkit::randomize_weights(&mut g, 3);
        let (test, norm) = (&data.test, &data.normalization);
        let device = secateur_train::cpu();
        let engine = secateur_train::evaluate(&g, test, norm, 100, &device, None).unwrap();
        let f32 = evaluate_in_runtime(&g, test, norm, 64, Precision::F32).unwrap();
        assert_eq!(f32.samples, test.len());
        assert!(
            (f32.loss - engine.loss).abs() < 1e-4,
            "{} vs {}",
            f32.loss,
            engine.loss
        );
        assert!(f32.agreement(&engine).unwrap() > 0.995);
        assert!((f32.accuracy - engine.accuracy).abs() < 0.005);
        // a graph that asks for bf16 runs in bf16, whatever is asked
        g.precision = Precision::Bf16;
        let bf16 = evaluate_in_runtime(&g, test, norm, 64, Precision::F32).unwrap();
        assert_ne!(bf16.loss, f32.loss, "the bf16 plan computed f32 values");
        assert!((bf16.loss - f32.loss).abs() < 1e-2 * f32.loss.max(1.0));
        assert!(bf16.agreement(&f32).unwrap() > 0.95);
    }

    #[test]
    fn top1_and_cross_entropy_of_logits() {
        let (top, loss) = top1_and_loss(&[0.0, 2.0, 1.0], 2);
        assert_eq!(top, 1);
        let want = (1.0f64 + 2f64.exp() + 1f64.exp()).ln() - 1.0;
        assert!((loss - want).abs() < 1e-12);
    }
}
