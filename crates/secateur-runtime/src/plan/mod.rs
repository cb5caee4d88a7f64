//! Compiling a graph into an execution plan and running it. `ExecPlan::compile` walks the
//! nodes once: views become buffer aliases, every other node is lowered by its op's
//! [`lower::RuntimeOp`] (weighted layers fused with what the graph's fusion rule absorbs, with a
//! measured kernel choice; ops without a kernel through their reference evaluation); then
//! buffers are assigned by liveness (`buffers.rs`). Steps and how they run are
//! in `step.rs`. Activations live in preallocated buffers, and the batch is processed in
//! parallel on a dedicated pool without oversubscription.

mod buffers;
mod build;
mod lower;
mod step;

use crate::error::{Result, RuntimeError};
use crate::kernels::{Format, Isa};
use secateur_graph::Graph;
use serde::{Deserialize, Serialize};
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
    /// The memory order of image activations.
    #[serde(default)]
    pub layout: LayoutPolicy,
}

/// Which memory order a plan runs image layers in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutPolicy {
    /// Channels-last for large dense models; for small models (below 50 M convolution MACs
    /// per sample) and for models whose convolutions are mostly pruned, both are compiled and
    /// the faster whole plan is kept.
    #[default]
    Auto,
    /// NCHW: the measured choice of im2col / direct / sparse kernels and weight formats.
    ChannelsFirst,
    /// NHWC: implicit-GEMM and depthwise kernels with fused epilogues (weights dense).
    ChannelsLast,
}

impl PlanConfig {
    pub fn new(batch: usize, threads: usize) -> Self {
        PlanConfig {
            batch,
            threads,
            isa: Isa::detect(),
            policy: FormatPolicy::Measure,
            layout: LayoutPolicy::Auto,
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

/// Whether both layouts are worth compiling and timing: at least half of the convolution
/// weights are zero (where the NCHW sparse kernels may win), or the convolutions are small
/// (below 50 M multiply-accumulates per sample, where NCHW's measured kernels may win).
fn both_layouts(graph: &Graph) -> bool {
    let (mut zeros, mut total) = (0usize, 0usize);
    for (ni, node) in graph.nodes.iter().enumerate() {
        if node.op.op_type() != "Conv" || !graph.is_weighted_layer(ni) {
            continue;
        }
        let w = &graph.initializers[&node.inputs[1]];
        zeros += w.count_zeros();
        total += w.len();
    }
    let macs = secateur_graph::summarize(graph).map_or(0, |s| s.total_macs);
    total > 0 && (zeros * 2 >= total || macs < 50_000_000)
}

/// The faster of two plans of one graph, timed interleaved on zeros.
fn faster(a: ExecPlan, b: ExecPlan) -> ExecPlan {
    let mut plans = [a, b];
    let inputs: Vec<Vec<f32>> = plans[0]
        .input_shapes
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut best = [f64::INFINITY; 2];
    for _ in 0..5 {
        for (i, p) in plans.iter_mut().enumerate() {
            let t = Instant::now();
            if p.run_inputs(&refs).is_ok() {
                best[i] = best[i].min(t.elapsed().as_secs_f64());
            }
        }
    }
    let [a, b] = plans;
    if best[1] < best[0] { b } else { a }
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
        let with = |layout| PlanConfig { layout, ..config };
        match config.layout {
            LayoutPolicy::Auto => match (config.policy, both_layouts(graph)) {
                (FormatPolicy::Force(_), _) => {
                    Self::compile_in(graph, with(LayoutPolicy::ChannelsFirst))
                }
                (FormatPolicy::Measure, true) => {
                    let first = Self::compile_in(graph, with(LayoutPolicy::ChannelsFirst))?;
                    let last = Self::compile_in(graph, with(LayoutPolicy::ChannelsLast))?;
                    Ok(faster(first, last))
                }
                _ => Self::compile_in(graph, with(LayoutPolicy::ChannelsLast)),
            },
            _ => Self::compile_in(graph, config),
        }
    }

    /// Compiles `graph` in the layout `config` names (not `Auto`).
    fn compile_in(graph: &Graph, config: PlanConfig) -> Result<ExecPlan> {
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
        let mut builder = build::Builder::new(graph, &shapes, config);
        builder.run()?;
        let output = builder.output()?;
        let out_name = &graph.outputs[0];
        let build::Builder {
            mut steps,
            sizes,
            layers,
            input_bufs,
            ..
        } = builder;
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
