//! `secateur bench MODEL...`: latency of models in secateur's runtime (median, p10, p90, FPS)
//! at each batch size and thread count, the kernel chosen for every layer and its share of the
//! time, and with `--compare-ort` the same ONNX files in ONNX Runtime, measured in interleaved
//! rounds in the same run, with the ratios.

use crate::model_ref::load_model;
use anyhow::{Context, Result, bail};
use secateur_graph::Graph;
use secateur_graph::zoo::ZooConfig;
use secateur_runtime::harness::{Stats, probe};
use secateur_runtime::kernels::Format;
use secateur_runtime::{ExecPlan, FormatPolicy, LayerChoice, LayoutPolicy, PlanConfig, Precision};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Models (.onnx files or built-in names).
    #[arg(required = true)]
    pub models: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub batch: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Weight formats: measure (default), dense, csr, block4x1, block8x1, nm2:4.
    #[arg(long, default_value = "measure")]
    pub formats: String,
    /// Also run ONNX Runtime on the same files (needs Python with onnxruntime); the same as
    /// `--compare ort`.
    #[arg(long)]
    pub compare_ort: bool,
    /// Also run a peer runtime on the same files, interleaved: ort, openvino (f32) or
    /// openvino-bf16 (OpenVINO's bf16 execution); needs Python with that runtime.
    #[arg(long, value_enum)]
    pub compare: Option<Peer>,
    /// Memory order of image layers: auto (default), nchw, nhwc, mixed (NHWC with pruned convolutions on the sparse NCHW kernels).
    #[arg(long, default_value = "auto")]
    pub layout: String,
    /// Arithmetic of convolutions and linear layers: f32 (default) or bf16 (weights and layer
    /// inputs rounded to bfloat16, products summed in f32; AVX-512 BF16 where the CPU has it).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Milliseconds of timed runs per model and setting.
    #[arg(long, default_value_t = 1500.0)]
    pub budget_ms: f64,
    #[arg(long)]
    pub json: bool,
}

/// One model at one batch size and thread count.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub precision: &'static str,
    pub latency: Stats,
    pub images_per_sec: f64,
    /// The peer runtime's latency (ONNX Runtime unless `peer` says otherwise).
    pub ort: Option<Stats>,
    /// The peer's median latency / secateur median latency.
    pub speedup_vs_ort: Option<f64>,
    /// The peer runtime compared with.
    pub peer: Option<&'static str>,
    pub layers: Vec<LayerChoice>,
    /// Per step: name and share of the run time.
    pub time_share: Vec<(String, f64)>,
    pub activation_bytes: usize,
    pub weight_bytes: usize,
}

/// A runtime `bench` can time next to secateur's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// ONNX Runtime (CPU execution provider).
    Ort,
    /// OpenVINO at f32 (`INFERENCE_PRECISION_HINT=f32`).
    Openvino,
    /// OpenVINO's bf16 execution (`INFERENCE_PRECISION_HINT=bf16`).
    OpenvinoBf16,
}

impl Peer {
    /// Its name in reports and on the latency server's command line.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Ort => "ort",
            Peer::Openvino => "openvino",
            Peer::OpenvinoBf16 => "openvino-bf16",
        }
    }

    fn module(self) -> &'static str {
        match self {
            Peer::Ort => "onnxruntime",
            Peer::Openvino | Peer::OpenvinoBf16 => "openvino",
        }
    }
}

fn policy(s: &str) -> Result<FormatPolicy> {
    Ok(match s {
        "measure" => FormatPolicy::Measure,
        "dense" => FormatPolicy::Dense,
        "csr" => FormatPolicy::Force(Format::Csr),
        "block4x1" => FormatPolicy::Force(Format::Block { r: 4, c: 1 }),
        "block8x1" => FormatPolicy::Force(Format::Block { r: 8, c: 1 }),
        "nm2:4" => FormatPolicy::Force(Format::Nm { n: 2, m: 4 }),
        o => bail!("--formats '{o}' is not one of measure, dense, csr, block4x1, block8x1, nm2:4"),
    })
}

fn layout(s: &str) -> Result<LayoutPolicy> {
    Ok(match s {
        "auto" => LayoutPolicy::Auto,
        "nchw" => LayoutPolicy::ChannelsFirst,
        "nhwc" => LayoutPolicy::ChannelsLast,
        "mixed" => LayoutPolicy::Mixed,
        o => bail!("--layout '{o}' is not one of auto, nchw, nhwc, mixed"),
    })
}

pub use crate::python::find as python;

/// A running ONNX Runtime latency server.
pub struct OrtServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _script: tempfile::TempPath,
}

/// What a synthetic benchmark input holds.
pub use secateur_graph::{InputKind, synthetic_inputs};

impl OrtServer {
    /// Starts `peer` on `model` with inputs of these shapes and kinds (graph order).
    pub fn start(
        python: &Path,
        peer: Peer,
        model: &Path,
        inputs: &[(Vec<usize>, InputKind)],
        threads: usize,
    ) -> Result<Self> {
        let mut f = tempfile::Builder::new().suffix(".py").tempfile()?;
        f.write_all(include_str!("../../assets/ort_bench.py").as_bytes())?;
        let script = f.into_temp_path();
        let mut child = Command::new(python)
            .arg(&script)
            .arg(model)
            .arg(serde_json::to_string(inputs)?)
            .arg(threads.to_string())
            .arg(peer.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", peer.name()))?;
        let stdin = child.stdin.take().context("ORT stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("ORT stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!(
                "{} could not load '{}': {err}",
                peer.name(),
                model.display()
            );
        }
        Ok(OrtServer {
            child,
            stdin,
            stdout,
            _script: script,
        })
    }

    /// Runs the model `n` times; per-run milliseconds.
    pub fn run(&mut self, n: usize) -> Result<Vec<f64>> {
        writeln!(self.stdin, "{n}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line).context("reading ONNX Runtime timings")
    }
}

impl Drop for OrtServer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Profiled runs behind the per-step time shares.
const PROFILED_RUNS: usize = 15;

/// Benchmarks one graph; `onnx` is its file for ONNX Runtime.
#[allow(clippy::too_many_arguments)]
pub fn bench_graph(
    name: &str,
    g: &Graph,
    onnx: Option<&Path>,
    batch: usize,
    threads: usize,
    (policy, layout, precision): (FormatPolicy, LayoutPolicy, Precision),
    budget_ms: f64,
    peer: Option<(&Path, Peer)>,
) -> Result<BenchResult> {
    let mut plan = ExecPlan::compile(
        g,
        PlanConfig {
            policy,
            layout,
            precision,
            ..PlanConfig::new(batch, threads)
        },
    )?;
    let synthetic = synthetic_inputs(g, &plan.input_shapes);
    let input: Vec<&[f32]> = synthetic.iter().map(|(_, v)| v.as_slice()).collect();
    plan.run_inputs(&input)?;
    let one = probe(&mut || {
        plan.run_inputs(&input).expect("input sizes checked");
    });
    let runs_per_round = ((budget_ms / 7.0) / one.max(1e-3)).clamp(3.0, 500.0) as usize;
    let mut ort = match (onnx, peer) {
        (Some(p), Some((py, peer))) => {
            let described: Vec<(Vec<usize>, InputKind)> = plan
                .input_shapes
                .iter()
                .cloned()
                .zip(synthetic.iter().map(|(k, _)| *k))
                .collect();
            let mut s = OrtServer::start(py, peer, p, &described, threads)?;
            s.run(runs_per_round.min(20))?;
            Some(s)
        }
        _ => None,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // both runtimes' idle worker threads spin for a while after a run: a pause before each
    // round keeps one runtime's spinning threads from taking the other's cores
    let settle = || std::thread::sleep(std::time::Duration::from_millis(50));
    for _ in 0..7 {
        settle();
        for _ in 0..runs_per_round {
            let t = Instant::now();
            plan.run_inputs(&input)?;
            ours.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if let Some(s) = ort.as_mut() {
            settle();
            theirs.extend(s.run(runs_per_round)?);
        }
    }
    // time share per step: each step's median over profiled runs (a sum over five runs had
    // let one slow run of a shared machine decide a layer's share)
    let mut step_times: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..PROFILED_RUNS {
        for (i, (name, ms)) in plan.run_profiled(&input)?.into_iter().enumerate() {
            if step_times.len() <= i {
                step_times.push((name, Vec::new()));
            }
            step_times[i].1.push(ms);
        }
    }
    let mut shares: Vec<(String, f64)> = step_times
        .into_iter()
        .map(|(name, times)| (name, Stats::from_samples(times).median_ms))
        .collect();
    let total: f64 = shares.iter().map(|s| s.1).sum::<f64>().max(1e-12);
    shares.iter_mut().for_each(|s| s.1 /= total);
    let latency = Stats::from_samples(ours);
    let ort_stats = (!theirs.is_empty()).then(|| Stats::from_samples(theirs));
    let mem = plan.memory();
    Ok(BenchResult {
        model: name.to_string(),
        batch,
        threads,
        precision: if g.precision == Precision::Bf16 {
            Precision::Bf16.name()
        } else {
            precision.name()
        },
        images_per_sec: batch as f64 / (latency.median_ms / 1e3),
        speedup_vs_ort: ort_stats.as_ref().map(|o| o.median_ms / latency.median_ms),
        peer: peer.filter(|_| ort_stats.is_some()).map(|(_, p)| p.name()),
        latency,
        ort: ort_stats,
        layers: plan.layers.clone(),
        time_share: shares,
        activation_bytes: mem.activation_bytes + mem.scratch_bytes,
        weight_bytes: mem.weight_bytes,
    })
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let policy = policy(&args.formats)?;
    let layout = layout(&args.layout)?;
    let precision: Precision = args
        .precision
        .parse()
        .map_err(|e| anyhow::anyhow!("--precision: {e}"))?;
    let peer = match (args.compare, args.compare_ort) {
        (Some(p), _) => Some(p),
        (None, true) => Some(Peer::Ort),
        (None, false) => None,
    };
    let python = match peer {
        Some(p) => Some((python().with_context(|| format!("--compare {} needs Python with {} (python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt, or set SECATEUR_PYTHON)", p.name(), p.module()))?, p)),
        None => None,
    };
    let tmp = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (i, spec) in args.models.iter().enumerate() {
        let g = load_model(spec, &ZooConfig::default())?;
        let onnx = if Path::new(spec).is_file() {
            PathBuf::from(spec)
        } else {
            // a built-in name or a checkpoint directory (a path: never joined onto the
            // temporary directory, which an absolute one would replace)
            let p = tmp.path().join(format!("model{i}.onnx"));
            secateur_onnx::save_model(&g, &p)?;
            p
        };
        for &b in &args.batch {
            for &t in &args.threads {
                let r = bench_graph(
                    spec,
                    &g,
                    Some(&onnx),
                    b,
                    t,
                    (policy, layout, precision),
                    args.budget_ms,
                    python.as_ref().map(|(py, p)| (py.as_path(), *p)),
                )?;
                if !args.json {
                    print_result(&r);
                }
                results.push(r);
            }
        }
    }
    if args.json {
        super::emit_json(&results)?;
    }
    Ok(())
}

/// A kernel time of the format choice, or "-" where no choice was measured (dense layers).
fn measured_ms(ms: f64) -> String {
    if ms.is_finite() {
        format!("{ms:.4}")
    } else {
        "-".into()
    }
}

fn print_result(r: &BenchResult) {
    let l = &r.latency;
    print!(
        "{}  batch {}  threads {}  {}: median {:.3} ms (p10 {:.3}, p90 {:.3}), {:.0} images/s",
        r.model, r.batch, r.threads, r.precision, l.median_ms, l.p10_ms, l.p90_ms, r.images_per_sec
    );
    if let (Some(o), Some(s)) = (&r.ort, r.speedup_vs_ort) {
        let peer = match r.peer {
            Some("ort") | None => "ONNX Runtime",
            Some(p) => p,
        };
        print!("; {peer} {:.3} ms -> {s:.2}x", o.median_ms);
    }
    println!();
    println!(
        "  {:<22} {:<10} {:>7} {:>8} {:>9} {:>9} {:>7}",
        "layer", "kernel", "threads", "sparsity", "dense ms", "chosen ms", "time"
    );
    for (name, share) in &r.time_share {
        if let Some(c) = r.layers.iter().find(|c| c.node == *name) {
            println!(
                "  {:<22} {:<10} {:>7} {:>7.1}% {:>9} {:>9} {:>6.1}%",
                c.node,
                c.format,
                c.threads,
                c.sparsity * 100.0,
                measured_ms(c.dense_ms),
                measured_ms(c.chosen_ms),
                share * 100.0
            );
        } else if *share > 0.02 {
            println!(
                "  {:<22} {:<10} {:>7} {:>8} {:>9} {:>9} {:>6.1}%",
                name,
                "-",
                "",
                "",
                "",
                "",
                share * 100.0
            );
        }
    }
}
