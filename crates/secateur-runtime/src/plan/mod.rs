//! Compiling a graph into an execution plan and running it. `ExecPlan::compile` walks the
//! nodes once: views become buffer aliases, every other node is lowered by its op's
//! [`lower::RuntimeOp`] (weighted layers fused with what the graph's fusion rule absorbs, with a
//! measured kernel choice; ops without a kernel through their reference evaluation); then
//! buffers are assigned by liveness (`buffers.rs`). Steps and how they run are
//! in `step.rs`. Activations live in preallocated buffers, and the batch is processed in
//! parallel on a dedicated pool without oversubscription.

mod buffers;
mod lower;
mod step;

use crate::error::{Result, RuntimeError};
use crate::kernels::{Format, Isa};
use secateur_graph::{Graph, OpClass};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;
use step::{Step, StepKind, run_step};

/// Which weight formats a plan may use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FormatPolicy {
    /// Time every applicable format (and 1 vs all threads) per layer; keep the fastest.
    Measure,
    /// Dense everywhere (the baseline).
    Dense,
    /// One format wherever it applies, dense elsewhere.
    Force(Format),
}

/// Settings of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub batch: usize,
    pub threads: usize,
    pub isa: Isa,
    pub policy: FormatPolicy,
}

impl PlanConfig {
    pub fn new(batch: usize, threads: usize) -> Self {
        PlanConfig {
            batch,
            threads,
            isa: Isa::detect(),
            policy: FormatPolicy::Measure,
        }
    }
}

/// The recorded choice for one Conv/Gemm layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    pub node: String,
    pub op: String,
    /// Nodes fused into this layer (batch norm, activation).
    pub fused: Vec<String>,
    pub format: String,
    pub threads: usize,
    /// Fraction of zero weights.
    pub sparsity: f64,
    /// Every candidate tried: format, threads, median milliseconds per call.
    pub candidates: Vec<(String, usize, f64)>,
    pub dense_ms: f64,
    pub chosen_ms: f64,
    /// Multiply-accumulates per inference of the whole batch, dense and as executed.
    pub dense_macs: u64,
    pub executed_macs: u64,
    pub weight_bytes: usize,
}

/// A compiled graph.
pub struct ExecPlan {
    pub config: PlanConfig,
    steps: Vec<Step>,
    buffers: Vec<Vec<f32>>,
    output: usize,
    /// The shape of the first graph input (the only one of most models).
    pub input_shape: Vec<usize>,
    /// The shapes of all graph inputs, in the graph's order (physical buffers `0..n`).
    pub input_shapes: Vec<Vec<usize>>,
    pub output_shape: Vec<usize>,
    pub layers: Vec<LayerChoice>,
    pool: Option<rayon::ThreadPool>,
}

/// Activation memory of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Bytes of all activation buffers (after liveness-based reuse).
    pub activation_bytes: usize,
    /// Bytes of scratch (im2col, transposes).
    pub scratch_bytes: usize,
    /// Bytes of weights in their chosen formats.
    pub weight_bytes: usize,
}

fn err(node: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        node: node.to_string(),
        message: message.into(),
    }
}

impl ExecPlan {
    /// Compiles `graph` for `config`.
    pub fn compile(graph: &Graph, config: PlanConfig) -> Result<ExecPlan> {
        graph.check()?;
        if graph.outputs.is_empty() {
            return Err(RuntimeError::Unsupported {
                node: graph.name.clone(),
                message: "the graph has no output".into(),
            });
        }
        if config.batch == 0 || config.threads == 0 {
            return Err(RuntimeError::Config(
                "batch and threads must be at least 1".into(),
            ));
        }
        let b = config.batch;
        let shapes = graph.infer_shapes()?;
        let concrete = |v: &str| -> Vec<usize> { shapes[v].resolve(b) };
        // buffers: one per value unless aliased; assigned with liveness afterwards
        let mut value_buf: HashMap<String, usize> = HashMap::new();
        let mut sizes: Vec<usize> = Vec::new();
        let new_buf = |sizes: &mut Vec<usize>, n: usize| {
            sizes.push(n);
            sizes.len() - 1
        };
        let mut input_bufs = Vec::with_capacity(graph.inputs.len());
        for input in &graph.inputs {
            let buf = new_buf(&mut sizes, concrete(&input.name).iter().product());
            value_buf.insert(input.name.clone(), buf);
            input_bufs.push(buf);
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut layers = Vec::new();
        let mut absorbed = vec![false; graph.nodes.len()];
        let quant = graph.quantization.as_ref();
        for (ni, node) in graph.nodes.iter().enumerate() {
            if absorbed[ni] {
                continue;
            }
            let name = node.name.clone();
            let mut in_bufs = Vec::new();
            let mut consts = Vec::new();
            for (k, v) in node.inputs.iter().enumerate() {
                if let Some(&bi) = value_buf.get(v) {
                    in_bufs.push(bi);
                } else if let Some(t) = graph.initializers.get(v) {
                    in_bufs.push(usize::MAX);
                    consts.push((k, t.data().to_vec()));
                } else {
                    return Err(err(&name, format!("input '{v}' is not available")));
                }
            }
            // quantized activation entering this node
            if let Some(q) = quant.and_then(|q| q.activations.get(&name))
                && in_bufs[0] != usize::MAX
            {
                let n = concrete(&node.inputs[0]).iter().product();
                let qb = new_buf(&mut sizes, n);
                steps.push(Step {
                    name: format!("{name}.quantize_input"),
                    kind: StepKind::Quant { q: *q, n },
                    inputs: vec![in_bufs[0]],
                    output: qb,
                    consts: vec![],
                });
                in_bufs[0] = qb;
            }
            // aliases: no data movement
            if node.op.class() == OpClass::View && in_bufs[0] != usize::MAX {
                value_buf.insert(node.outputs[0].clone(), in_bufs[0]);
                continue;
            }
            let cx = lower::LowerCx {
                graph,
                shapes: &shapes,
                node: ni,
                config,
            };
            let lowered = lower::lowering(&node.op).lower(&cx)?;
            for &a in &lowered.absorbed {
                absorbed[a] = true;
            }
            layers.extend(lowered.choice);
            let (inputs, consts) = if lowered.data_only {
                (vec![in_bufs[0]], vec![])
            } else {
                (in_bufs, consts)
            };
            let ob = new_buf(&mut sizes, lowered.out_len);
            steps.push(Step {
                name,
                kind: lowered.kind,
                inputs,
                output: ob,
                consts,
            });
            value_buf.insert(lowered.output, ob);
        }
        let out_name = &graph.outputs[0];
        let output = *value_buf
            .get(out_name)
            .ok_or_else(|| err(out_name, "graph output is not computed"))?;
        let (phys, phys_of) = buffers::assign(&mut steps, &sizes, &input_bufs, output);
        let buffers = phys.iter().map(|&n| vec![0.0f32; n]).collect();
        let pool = if config.threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.threads)
                    .build()
                    .map_err(|e| {
                        RuntimeError::Config(format!(
                            "cannot start {} threads: {e}",
                            config.threads
                        ))
                    })?,
            )
        } else {
            None
        };
        let input_shapes: Vec<Vec<usize>> =
            graph.inputs.iter().map(|i| i.shape.resolve(b)).collect();
        let output_shape = shapes[out_name].resolve(b);
        Ok(ExecPlan {
            config,
            steps,
            buffers,
            output: phys_of[output],
            input_shape: input_shapes[0].clone(),
            input_shapes,
            output_shape,
            layers,
            pool,
        })
    }

    /// Activation, scratch and weight memory of this plan.
    pub fn memory(&self) -> MemoryReport {
        let scratch: usize = self
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Conv(c) => c.scratch.iter().map(|v| v.len()).sum::<usize>(),
                StepKind::Linear(l) => l.xt.len() + l.yt.len(),
                _ => 0,
            })
            .sum();
        MemoryReport {
            activation_bytes: self.buffers.iter().map(|b| b.len() * 4).sum(),
            scratch_bytes: scratch * 4,
            weight_bytes: self.layers.iter().map(|l| l.weight_bytes).sum(),
        }
    }

    /// Runs the plan of a one-input graph on `input` (`[batch, ...]`, row-major) and returns
    /// the output.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.run_inputs(&[input])
    }

    /// Runs the plan on one slice per graph input (in the graph's order; integer inputs as
    /// exact float values) and returns the output.
    pub fn run_inputs(&mut self, inputs: &[&[f32]]) -> Result<&[f32]> {
        self.run_inner(inputs, None)?;
        let n: usize = self.output_shape.iter().product();
        Ok(&self.buffers[self.output][..n])
    }

    /// Median time of every step over `reps` profiled runs (name, milliseconds).
    pub fn time_steps(&mut self, input: &[f32], reps: usize) -> Result<Vec<(String, f64)>> {
        let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..reps.max(1) {
            for (i, (name, ms)) in self.run_profiled(input)?.into_iter().enumerate() {
                if samples.len() <= i {
                    samples.push((name, Vec::new()));
                }
                samples[i].1.push(ms);
            }
        }
        Ok(samples
            .into_iter()
            .map(|(n, v)| (n, crate::harness::Stats::from_samples(v).median_ms))
            .collect())
    }

    /// Runs the plan and returns the time spent in each step (name, milliseconds).
    pub fn run_profiled(&mut self, input: &[f32]) -> Result<Vec<(String, f64)>> {
        let mut times = Vec::with_capacity(self.steps.len());
        self.run_inner(&[input], Some(&mut times))?;
        Ok(times)
    }

    fn run_inner(
        &mut self,
        inputs: &[&[f32]],
        mut times: Option<&mut Vec<(String, f64)>>,
    ) -> Result<()> {
        if inputs.len() != self.input_shapes.len() {
            return Err(RuntimeError::Input(format!(
                "the graph has {} inputs, {} were given",
                self.input_shapes.len(),
                inputs.len()
            )));
        }
        for (k, (input, shape)) in inputs.iter().zip(&self.input_shapes).enumerate() {
            let n_in: usize = shape.iter().product();
            if input.len() != n_in {
                return Err(RuntimeError::Input(format!(
                    "input {k}: expected {n_in} values for shape {shape:?}, got {}",
                    input.len()
                )));
            }
            self.buffers[k][..n_in].copy_from_slice(input);
        }
        let isa = self.config.isa;
        let batch = self.config.batch;
        let pool = self.pool.take();
        let mut body = || -> Result<()> {
            for si in 0..self.steps.len() {
                let t = Instant::now();
                let out_idx = self.steps[si].output;
                let mut out = std::mem::take(&mut self.buffers[out_idx]);
                let ran = run_step(&mut self.steps[si], &self.buffers, &mut out, isa, batch);
                self.buffers[out_idx] = out;
                ran.map_err(|m| RuntimeError::Input(format!("{}: {m}", self.steps[si].name)))?;
                if let Some(tv) = times.as_deref_mut() {
                    tv.push((self.steps[si].name.clone(), t.elapsed().as_secs_f64() * 1e3));
                }
            }
            Ok(())
        };
        let result = match &pool {
            Some(p) => p.install(body),
            None => body(),
        };
        self.pool = pool;
        result
    }
}
