//! Compiling a graph into an execution plan and running it. Values computed from constants
//! alone are evaluated once at compile time (`precompute.rs`); `ExecPlan::compile` then walks
//! the nodes once: views become buffer aliases, every other node is lowered by its op's
//! [`lower::RuntimeOp`] (weighted layers fused with what the graph's fusion rule absorbs, with a
//! measured kernel choice; ops without a kernel through their reference evaluation); then
//! buffers are assigned by liveness (`buffers.rs`). Steps and how they run are
//! in `step.rs`. Activations live in preallocated buffers; one inference is split over the
//! plan's team of threads (`crate::team`), and a batch run as one-sample plans runs them in
//! parallel on a dedicated pool without oversubscription.

mod buffers;
mod build;
mod concat_elision;
mod lower;
mod precompute;
mod step;
mod tail;

use crate::error::{Result, RuntimeError};
use crate::kernels::{Format, Isa};
use crate::team::{FlushDenormals, Team};
use rayon::prelude::*;
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
    /// How a batch goes through the plan.
    #[serde(default)]
    pub batch_mode: BatchMode,
    /// The arithmetic of ungrouped convolutions and dense linear layers.
    #[serde(default)]
    pub precision: Precision,
}

/// The arithmetic precision a plan runs its multiply-heavy layers in. In a bf16 plan the
/// ungrouped convolutions and dense linear layers of channels-last plans round their weights
/// and input to bfloat16 and sum the products in f32 (`kernels::nhwc_bf16`; on CPUs without
/// AVX-512 BF16 the f32 kernels compute the same values from rounded operands). Where a
/// measured plan finds an f32 kernel faster (Winograd, a three-channel first layer) it keeps it
/// (more precise, not less). Every other step, and int8 layers, run as in f32 plans. A plan
/// runs in bf16 when its configuration or its graph asks for it.
pub use secateur_graph::Precision;

/// How a plan runs a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchMode {
    /// Both ways below where the samples are independent, timed, the faster kept.
    #[default]
    Auto,
    /// Each step on the whole batch.
    Whole,
    /// One-sample plans side by side (one per worker): each sample's activations stay in
    /// cache through the network, and workers never wait for each other between layers.
    SamplesApart,
}

/// Which memory order a plan runs image layers in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayoutPolicy {
    /// Channels-last for large dense models; for small models (below 50 M convolution MACs
    /// per sample) and for models whose convolutions are mostly pruned, all three below are
    /// compiled and the fastest whole plan is kept.
    #[default]
    Auto,
    /// NCHW: the measured choice of im2col / direct / sparse kernels and weight formats.
    ChannelsFirst,
    /// NHWC: implicit-GEMM and depthwise kernels with fused epilogues (weights dense).
    ChannelsLast,
    /// NHWC, except ungrouped convolutions pruned to at least 70 % zero weights, which stay on
    /// the NCHW sparse kernels (measured format choice) with conversions at their edges.
    Mixed,
}

impl PlanConfig {
    pub fn new(batch: usize, threads: usize) -> Self {
        PlanConfig {
            batch,
            threads,
            isa: Isa::detect(),
            policy: FormatPolicy::Measure,
            layout: LayoutPolicy::Auto,
            batch_mode: BatchMode::Auto,
            precision: Precision::F32,
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

impl LayerChoice {
    /// A layer whose kernel follows from its shape, not from timing candidates: nothing
    /// measured, and it executes every multiply-accumulate it has.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn unmeasured(
        node: String,
        op: &str,
        fused: Vec<String>,
        format: &str,
        threads: usize,
        sparsity: f64,
        macs: u64,
        weight_bytes: usize,
    ) -> Self {
        LayerChoice {
            node,
            op: op.into(),
            fused,
            format: format.into(),
            threads,
            sparsity,
            candidates: vec![],
            dense_ms: f64::NAN,
            chosen_ms: f64::NAN,
            dense_macs: macs,
            executed_macs: macs,
            weight_bytes,
        }
    }
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
    /// The workers of a plan that runs samples apart (one sample plan each).
    pool: Option<rayon::ThreadPool>,
    /// The spinning workers that split one inference's layers (with `threads > 1`).
    team: Option<Team>,
    /// When not empty, the batch runs as one-sample runs of these plans (one per worker, in
    /// parallel), and `steps` is empty: each sample's activations stay in cache through the
    /// whole network, and the workers never wait for each other between layers.
    samples: Vec<ExecPlan>,
    /// With `samples`: the flat tail of the graph (the classifier after the last spatial
    /// value), run once on the whole batch of the sample plans' outputs (`buffers[0]`) into
    /// `buffers[1]`, so its weights are read once per batch, not once per sample.
    tail: Option<Box<ExecPlan>>,
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

/// The fastest of plans of one graph, timed interleaved on zeros (best of five runs each).
fn fastest(mut plans: Vec<ExecPlan>) -> ExecPlan {
    if plans.len() > 1 {
        let inputs: Vec<Vec<f32>> = plans[0]
            .input_shapes
            .iter()
            .map(|s| vec![0.0; s.iter().product()])
            .collect();
        let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
        let mut best = vec![f64::INFINITY; plans.len()];
        for _ in 0..5 {
            for (i, p) in plans.iter_mut().enumerate() {
                let t = Instant::now();
                if p.run_inputs(&refs).is_ok() {
                    best[i] = best[i].min(t.elapsed().as_secs_f64());
                }
            }
        }
        let winner = (0..plans.len())
            .min_by(|&a, &b| best[a].total_cmp(&best[b]))
            .unwrap_or(0);
        plans.swap(0, winner);
    }
    plans.swap_remove(0)
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
    /// Compiles `graph` for `config`: every concrete way of running it that `config` leaves
    /// open ([`Self::candidate_configs`]) is compiled, and the fastest kept. The plan runs in
    /// bf16 when `config` or the graph asks for it.
    pub fn compile(graph: &Graph, config: PlanConfig) -> Result<ExecPlan> {
        let plans = Self::candidate_configs(graph, config)
            .into_iter()
            .map(|c| match c.batch_mode {
                BatchMode::SamplesApart => Self::compile_samples_apart(graph, c),
                _ => Self::compile_in(graph, c),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(fastest(plans))
    }

    /// The concrete configurations (layout, batch mode and precision fixed: bf16 when `config`
    /// or the graph asks) `compile` chooses among:
    /// with `Auto` layout, NHWC for large dense models, NCHW when a weight format is forced,
    /// both for small or mostly-pruned ones ([`LayoutPolicy::Auto`]), NHWC alone in bf16 (where
    /// its kernels are, so that a bf16 model runs in bf16); with `Auto` batch mode, both ways
    /// for a batch of independent samples.
    pub fn candidate_configs(graph: &Graph, config: PlanConfig) -> Vec<PlanConfig> {
        let config = PlanConfig {
            precision: match graph.precision {
                Precision::Bf16 => Precision::Bf16,
                Precision::F32 => config.precision,
            },
            ..config
        };
        let layouts = match config.layout {
            LayoutPolicy::Auto if config.precision == Precision::Bf16 => {
                vec![LayoutPolicy::ChannelsLast]
            }
            LayoutPolicy::Auto => match (config.policy, both_layouts(graph)) {
                (FormatPolicy::Force(_), _) => vec![LayoutPolicy::ChannelsFirst],
                (FormatPolicy::Measure, true) => vec![
                    LayoutPolicy::ChannelsFirst,
                    LayoutPolicy::ChannelsLast,
                    LayoutPolicy::Mixed,
                ],
                _ => vec![LayoutPolicy::ChannelsLast],
            },
            fixed => vec![fixed],
        };
        let modes = match config.batch_mode {
            BatchMode::Auto if config.batch > 1 && graph.samples_independent() => {
                vec![BatchMode::Whole, BatchMode::SamplesApart]
            }
            BatchMode::Auto => vec![BatchMode::Whole],
            fixed => vec![fixed],
        };
        layouts
            .iter()
            .flat_map(|&layout| {
                modes.iter().map(move |&batch_mode| PlanConfig {
                    layout,
                    batch_mode,
                    ..config
                })
            })
            .collect()
    }

    /// A plan that runs `config.batch` samples as one-sample plans on
    /// `min(threads, batch)` workers; an error for graphs whose samples are not independent
    /// ([`Graph::samples_independent`]).
    pub fn compile_samples_apart(graph: &Graph, config: PlanConfig) -> Result<ExecPlan> {
        if !graph.samples_independent() {
            return Err(RuntimeError::Unsupported {
                node: graph.name.clone(),
                message: "the samples of a batch are not computed independently (an op mixes \
                          or moves the batch axis)"
                    .into(),
            });
        }
        if config.batch == 0 || config.threads == 0 {
            return Err(RuntimeError::Config(
                "batch and threads must be at least 1".into(),
            ));
        }
        let workers = config.threads.min(config.batch);
        let one = PlanConfig {
            batch: 1,
            threads: (config.threads / workers).max(1),
            batch_mode: BatchMode::Whole,
            ..config
        };
        let split = tail::split_flat_tail(graph);
        let (graph, tail) = match &split {
            Some((head, tail)) => {
                let whole = PlanConfig {
                    batch_mode: BatchMode::Whole,
                    ..config
                };
                (head, Some(Box::new(Self::compile(tail, whole)?)))
            }
            None => (graph, None),
        };
        // one compilation (kernel choices timed once), copied for the other workers
        let first = Self::compile(graph, one)?;
        let mut samples = (1..workers)
            .map(|_| first.duplicate())
            .collect::<Result<Vec<_>>>()?;
        samples.insert(0, first);
        let first = &samples[0];
        let b = config.batch;
        let scale = |shape: &[usize]| {
            let mut s = shape.to_vec();
            s[0] *= b;
            s
        };
        let input_shapes: Vec<Vec<usize>> = first.input_shapes.iter().map(|s| scale(s)).collect();
        let head_out = scale(&first.output_shape);
        let mut layers: Vec<LayerChoice> = first
            .layers
            .iter()
            .map(|l| LayerChoice {
                dense_macs: l.dense_macs * b as u64,
                executed_macs: l.executed_macs * b as u64,
                ..l.clone()
            })
            .collect();
        let mut buffers = vec![vec![0.0; head_out.iter().product()]];
        let output_shape = match &tail {
            Some(t) => {
                layers.extend(t.layers.iter().cloned());
                buffers.push(vec![0.0; t.output_shape.iter().product()]);
                t.output_shape.clone()
            }
            None => head_out,
        };
        Ok(ExecPlan {
            config: PlanConfig {
                layout: first.config.layout,
                batch_mode: BatchMode::SamplesApart,
                ..config
            },
            steps: Vec::new(),
            output: buffers.len() - 1,
            buffers,
            input_shape: input_shapes[0].clone(),
            input_shapes,
            output_shape,
            layers,
            pool: Self::thread_pool(workers)?,
            team: None,
            samples,
            tail,
        })
    }

    /// An independent copy of this plan (steps, weights and buffers; its own thread pool).
    fn duplicate(&self) -> Result<ExecPlan> {
        Ok(ExecPlan {
            config: self.config,
            steps: self.steps.clone(),
            buffers: self.buffers.clone(),
            output: self.output,
            input_shape: self.input_shape.clone(),
            input_shapes: self.input_shapes.clone(),
            output_shape: self.output_shape.clone(),
            layers: self.layers.clone(),
            pool: if self.samples.is_empty() {
                None
            } else {
                Self::thread_pool(self.config.threads)?
            },
            team: Self::team(self.config.threads, &self.samples)?,
            samples: self
                .samples
                .iter()
                .map(|p| p.duplicate())
                .collect::<Result<_>>()?,
            tail: match &self.tail {
                Some(t) => Some(Box::new(t.duplicate()?)),
                None => None,
            },
        })
    }

    /// The team splitting each layer of a plan that runs samples one by one over `threads`.
    fn team(threads: usize, samples: &[ExecPlan]) -> Result<Option<Team>> {
        if threads <= 1 || !samples.is_empty() {
            return Ok(None);
        }
        Team::new(threads)
            .map(Some)
            .map_err(|e| RuntimeError::Config(format!("cannot start {threads} threads: {e}")))
    }

    /// A pool of `threads` workers, or none for one thread.
    fn thread_pool(threads: usize) -> Result<Option<rayon::ThreadPool>> {
        if threads <= 1 {
            return Ok(None);
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map(Some)
            .map_err(|e| RuntimeError::Config(format!("cannot start {threads} threads: {e}")))
    }

    /// Compiles `graph` as one plan for the whole batch in the layout `config` names (not
    /// `Auto`).
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
        // values computed from constants alone become weights of this batch size
        let folded = precompute::precompute(graph, &shapes, b);
        let (graph, shapes) = match &folded {
            Some((g, s)) => (g, s),
            None => (graph, &shapes),
        };
        let team = Self::team(config.threads, &[])?;
        let mut builder = build::Builder::new(graph, shapes, config);
        // kernels timed on several threads while the plan is built run on the team that will
        // run them (a rayon pool's wake-ups would cost each loop tens of microseconds)
        match &team {
            Some(t) => t.enter(|| builder.run())?,
            None => builder.run()?,
        }
        let output = builder.output()?;
        let out_name = &graph.outputs[0];
        let build::Builder {
            mut steps,
            sizes,
            layers,
            input_bufs,
            ..
        } = builder;
        concat_elision::elide(&mut steps, &input_bufs, output, b);
        let (phys, phys_of) = buffers::assign(&mut steps, &sizes, &input_bufs, output);
        check_activation_memory(&phys, b, &graph.name)?;
        let buffers = phys.iter().map(|&n| vec![0.0f32; n]).collect();
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
            pool: None,
            team,
            samples: Vec::new(),
            tail: None,
        })
    }

    /// Activation, scratch and weight memory of this plan.
    pub fn memory(&self) -> MemoryReport {
        if !self.samples.is_empty() {
            let parts: Vec<MemoryReport> = self.samples.iter().map(|p| p.memory()).collect();
            return MemoryReport {
                activation_bytes: parts.iter().map(|m| m.activation_bytes).sum::<usize>()
                    + self.buffers[0].len() * 4,
                scratch_bytes: parts.iter().map(|m| m.scratch_bytes).sum(),
                weight_bytes: parts.iter().map(|m| m.weight_bytes).sum(),
            };
        }
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
        Ok(self.output())
    }

    /// The output of the last run.
    fn output(&self) -> &[f32] {
        let n: usize = self.output_shape.iter().product();
        &self.buffers[self.output][..n]
    }

    /// Whether the batch runs as one-sample plans side by side.
    pub fn runs_samples_apart(&self) -> bool {
        !self.samples.is_empty()
    }

    /// Whether the one-sample plans hand their features to a batched tail (the classifier).
    pub fn has_batched_tail(&self) -> bool {
        self.tail.is_some()
    }

    /// Median time of every step over `reps` profiled runs (name, milliseconds).
    pub fn time_steps(&mut self, inputs: &[&[f32]], reps: usize) -> Result<Vec<(String, f64)>> {
        let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
        for _ in 0..reps.max(1) {
            for (i, (name, ms)) in self.run_profiled(inputs)?.into_iter().enumerate() {
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

    /// Runs the plan on one slice per graph input and returns the time spent in each step
    /// (name, milliseconds).
    pub fn run_profiled(&mut self, inputs: &[&[f32]]) -> Result<Vec<(String, f64)>> {
        if !self.samples.is_empty() {
            return self.run_samples_profiled(inputs);
        }
        let mut times = Vec::with_capacity(self.steps.len());
        self.run_inner(inputs, Some(&mut times))?;
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
        }
        if !self.samples.is_empty() {
            return self.run_samples(inputs);
        }
        for (k, input) in inputs.iter().enumerate() {
            self.buffers[k][..input.len()].copy_from_slice(input);
        }
        let isa = self.config.isa;
        let batch = self.config.batch;
        let pool = self.pool.take();
        let team = self.team.take();
        let _flush = FlushDenormals::new();
        let mut body = || -> Result<()> {
            for si in 0..self.steps.len() {
                let t = Instant::now();
                let out_idx = self.steps[si].output;
                let mut out = std::mem::take(&mut self.buffers[out_idx]);
                let images = batch * self.steps[si].images;
                let ran = run_step(&mut self.steps[si], &self.buffers, &mut out, isa, images);
                self.buffers[out_idx] = out;
                ran.map_err(|m| RuntimeError::Input(format!("{}: {m}", self.steps[si].name)))?;
                if let Some(tv) = times.as_deref_mut() {
                    tv.push((self.steps[si].name.clone(), t.elapsed().as_secs_f64() * 1e3));
                }
            }
            Ok(())
        };
        // (entering a rayon pool costs tens of microseconds per call: the team does it all)
        let result = match (&pool, &team) {
            (_, Some(t)) => t.enter(body),
            (Some(p), None) => p.install(body),
            (None, None) => body(),
        };
        self.team = team;
        self.pool = pool;
        result
    }

    /// Sample `s` of every input.
    fn sample_inputs<'a>(&self, inputs: &[&'a [f32]], s: usize) -> Vec<&'a [f32]> {
        let b = self.config.batch;
        inputs
            .iter()
            .map(|x| {
                let n = x.len() / b;
                &x[s * n..(s + 1) * n]
            })
            .collect()
    }

    /// Runs the batch as one-sample runs, each worker's plan on consecutive samples.
    fn run_samples(&mut self, inputs: &[&[f32]]) -> Result<()> {
        let b = self.config.batch;
        let per_worker = b.div_ceil(self.samples.len());
        let out_n = self.buffers[0].len() / b;
        let mut out = std::mem::take(&mut self.buffers[0]);
        let slices: Vec<Vec<&[f32]>> = (0..b).map(|s| self.sample_inputs(inputs, s)).collect();
        let work = |(w, (plan, ys)): (usize, (&mut ExecPlan, &mut [f32]))| -> Result<()> {
            for (j, y) in ys.chunks_mut(out_n).enumerate() {
                y.copy_from_slice(plan.run_inputs(&slices[w * per_worker + j])?);
            }
            Ok(())
        };
        let result = match &self.pool {
            Some(pool) => pool.install(|| {
                self.samples
                    .par_iter_mut()
                    .zip(out.par_chunks_mut(per_worker * out_n))
                    .enumerate()
                    .try_for_each(work)
            }),
            None => self
                .samples
                .iter_mut()
                .zip(out.chunks_mut(per_worker * out_n))
                .enumerate()
                .try_for_each(work),
        };
        self.buffers[0] = out;
        result?;
        self.run_tail(None)
    }

    /// The batched tail on the sample plans' outputs (`buffers[0]`) into `buffers[1]`, with
    /// its step times appended to `times` when given.
    fn run_tail(&mut self, times: Option<&mut Vec<(String, f64)>>) -> Result<()> {
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        let features = std::mem::take(&mut self.buffers[0]);
        let ran = match times {
            Some(times) => tail.run_profiled(&[&features]).map(|t| times.extend(t)),
            None => tail.run_inputs(&[&features]).map(|_| ()),
        };
        self.buffers[0] = features;
        ran?;
        let y = tail.output();
        self.buffers[1][..y.len()].copy_from_slice(y);
        Ok(())
    }

    /// Step times summed over the samples of the batch, run one after the other on the first
    /// worker's plan (then the batched tail's).
    fn run_samples_profiled(&mut self, inputs: &[&[f32]]) -> Result<Vec<(String, f64)>> {
        let b = self.config.batch;
        let out_n = self.buffers[0].len() / b;
        let mut total: Vec<(String, f64)> = Vec::new();
        for s in 0..b {
            let x = self.sample_inputs(inputs, s);
            let times = self.samples[0].run_profiled(&x)?;
            self.buffers[0][s * out_n..(s + 1) * out_n].copy_from_slice(self.samples[0].output());
            if total.is_empty() {
                total = times;
            } else {
                for (t, (_, ms)) in total.iter_mut().zip(times) {
                    t.1 += ms;
                }
            }
        }
        self.run_tail(Some(&mut total))?;
        Ok(total)
    }
}

/// Refuses a plan whose activation buffers would exceed 16 times the per-tensor limit of
/// [`secateur_graph::max_elements`] per sample (4 GiB at batch 1 by default) before anything
/// is allocated.
fn check_activation_memory(buffers: &[usize], batch: usize, graph: &str) -> Result<()> {
    let limit = secateur_graph::max_elements()
        .saturating_mul(16)
        .saturating_mul(batch);
    let total = buffers
        .iter()
        .try_fold(0usize, |a, &n| a.checked_add(n))
        .unwrap_or(usize::MAX);
    if total > limit {
        return Err(RuntimeError::Unsupported {
            node: graph.to_string(),
            message: format!(
                "the activations at batch {batch} need {} MiB, more than the limit of {} MiB (SECATEUR_MAX_TENSOR_MB raises it)",
                total / (1 << 18),
                limit / (1 << 18)
            ),
        });
    }
    Ok(())
}
