//! `secateur bench-train`: training and evaluation throughput (images per second) of zoo
//! models on the embedded data, for BENCHMARKS.md.

use anyhow::Result;
use secateur_data::load_mini;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_train::{NoHook, TrainConfig, Trainer, cpu, evaluate};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    /// Models to measure.
    #[arg(long, value_delimiter = ',', default_value = "lenet5-bn,mlp")]
    pub models: Vec<String>,
    #[arg(long = "batch", default_value_t = 128)]
    pub batch_size: usize,
    /// Training images per measurement.
    #[arg(long, default_value_t = 5000)]
    pub images: usize,
    /// Micro-batches per batch (parallel data workers).
    #[arg(long, default_value_t = 2)]
    pub micro_batches: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct BenchLine {
    model: String,
    batch: usize,
    micro_batches: usize,
    threads: usize,
    train_images_per_sec: f64,
    eval_images_per_sec: f64,
    lenet_epoch_seconds_60k: f64,
}

pub fn run(args: &BenchTrainArgs) -> Result<()> {
    let split = load_mini()?;
    let train = split.train.take(args.images);
    let mut lines = Vec::new();
    for name in &args.models {
        let m: ZooModel = name.parse()?;
        let g = zoo::build(m, &ZooConfig::default())?;
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: args.batch_size,
            micro_batches: args.micro_batches,
            ..Default::default()
        };
        let mut t = Trainer::new(g, cfg, cpu())?;
        // warm-up on a few batches
        let warm = split.train.take(args.batch_size * 2);
        t.fit(&warm, &split.normalization, &mut NoHook, &mut |_| {})?;
        t.epochs_done = 0;
        let start = Instant::now();
        t.fit(&train, &split.normalization, &mut NoHook, &mut |_| {})?;
        let train_ips = train.len() as f64 / start.elapsed().as_secs_f64();
        let g = t.into_graph()?;
        let start = Instant::now();
        evaluate(&g, &split.test, &split.normalization, 256, &cpu(), None)?;
        let eval_ips = split.test.len() as f64 / start.elapsed().as_secs_f64();
        lines.push(BenchLine {
            model: name.clone(),
            batch: args.batch_size,
            micro_batches: args.micro_batches,
            threads: rayon::current_num_threads(),
            train_images_per_sec: train_ips,
            eval_images_per_sec: eval_ips,
            lenet_epoch_seconds_60k: 60_000.0 / train_ips,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        println!(
            "{:<14} {:>6} {:>8} {:>14} {:>14} {:>16}",
            "model", "batch", "threads", "train img/s", "eval img/s", "60k epoch (s)"
        );
        for l in &lines {
            println!(
                "{:<14} {:>6} {:>8} {:>14.0} {:>14.0} {:>16.1}",
                l.model,
                l.batch,
                l.threads,
                l.train_images_per_sec,
                l.eval_images_per_sec,
                l.lenet_epoch_seconds_60k
            );
        }
    }
    Ok(())
}
