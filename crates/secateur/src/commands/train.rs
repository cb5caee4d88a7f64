//! `secateur train`: train a zoo model or an ONNX graph on a data set, with per-epoch
//! checkpoints (`--resume` continues after a kill), then export to ONNX.

use crate::data_args::{DataArgs, zoo_config_for};
use crate::model_ref::load_model;
use crate::progress::Reporter;
use crate::train_args::OptimArgs;
use anyhow::{Context, Result, bail};
use secateur_data::NORMALIZATION_KEY;
use secateur_train::{DistillConfig, Progress, TrainHook, Trainer, checkpoint, cpu, evaluate};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Built-in model name or .onnx file.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Distil from this teacher model (.onnx or zoo name with trained weights).
    #[arg(long)]
    pub teacher: Option<String>,
    /// Distillation temperature.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight of the distillation term.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Weights to keep frozen (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// L1 penalty on batch-norm scales (network slimming).
    #[arg(long, default_value_t = 0.0)]
    pub bn_l1: f64,
    /// Output model.
    #[arg(long)]
    pub out: PathBuf,
    /// Checkpoint file (default: OUT with extension .ckpt.safetensors).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint of an interrupted run with the same options.
    #[arg(long)]
    pub resume: bool,
    /// Print the final evaluation as JSON.
    #[arg(long)]
    pub json: bool,
}

struct EpochCheckpoint<'a> {
    path: &'a Path,
    report: &'a mut Reporter,
}

impl TrainHook for EpochCheckpoint<'_> {
    fn after_epoch(&mut self, epoch: usize, trainer: &mut Trainer) -> secateur_train::Result<()> {
        checkpoint::save(trainer, self.path)?;
        self.report.update(
            (epoch + 1) as u64,
            trainer.config.epochs as u64,
            &format!("epoch {} done, checkpoint saved", epoch + 1),
            true,
        );
        Ok(())
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    crate::guard_output(&args.out, &[args.model.as_str()])?;
    let split = args.data.load()?;
    let mut graph = load_model(&args.model, &zoo_config_for(&split, args.optim.seed))?;
    let norm = args.data.normalization(&split, Some(&graph))?;
    graph
        .metadata
        .insert(NORMALIZATION_KEY.into(), norm.to_metadata());
    let mut cfg = args.optim.config(args.epochs)?;
    cfg.frozen = args.freeze.clone();
    cfg.bn_l1 = args.bn_l1;
    if args.teacher.is_some() {
        cfg.distill = Some(DistillConfig {
            temperature: args.temperature,
            alpha: args.alpha,
        });
    }
    let device = cpu();
    let mut trainer = Trainer::new(graph, cfg, device.clone())?;
    if let Some(t) = &args.teacher {
        trainer.set_teacher(load_model(t, &zoo_config_for(&split, 0))?)?;
    }
    let ck = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| args.out.with_extension("ckpt.safetensors"));
    if args.resume {
        if !ck.exists() {
            bail!("--resume: no checkpoint at '{}'", ck.display());
        }
        checkpoint::load(&mut trainer, &ck)
            .with_context(|| format!("resuming from '{}'", ck.display()))?;
        eprintln!(
            "resuming after epoch {} of {}",
            trainer.epochs_done, args.epochs
        );
    } else if ck.exists() {
        bail!(
            "a checkpoint of an earlier run exists at '{}': pass --resume to continue it, or delete it",
            ck.display()
        );
    }
    let (mut epochs_bar, mut batch_bar) =
        Reporter::nested(("epochs", args.epochs as u64), ("train", 1));
    epochs_bar.update(trainer.epochs_done as u64, args.epochs as u64, "", false);
    let mut on_progress = |p: &Progress| {
        batch_bar.update(
            p.batch as u64,
            p.batches as u64,
            &format!(
                "epoch {}/{} loss {:.4} lr {:.2e} {:.0} img/s",
                p.epoch + 1,
                p.epochs,
                p.loss,
                p.lr,
                p.images_per_sec
            ),
            false,
        );
    };
    let mut hook = EpochCheckpoint {
        path: &ck,
        report: &mut epochs_bar,
    };
    trainer.fit(&split.train, &norm, &mut hook, &mut on_progress)?;
    batch_bar.finish_and_clear();
    epochs_bar.finish();
    let graph = trainer.into_graph()?;
    secateur_onnx::save_model(&graph, &args.out)?;
    let _ = std::fs::remove_file(&ck);
    let report = evaluate(&graph, &split.test, &norm, 256, &device, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "wrote {}: test accuracy {:.4}, loss {:.4} on {} images",
            args.out.display(),
            report.accuracy,
            report.loss,
            report.samples
        );
    }
    Ok(())
}
