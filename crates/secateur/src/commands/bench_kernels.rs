//! `secateur bench-kernels`: the kernel ratios of the runtime issue (W 1024×1024 × X 1024×64
//! and × a vector, every sparse format against the dense path, single thread, interleaved).

use anyhow::Result;
use secateur_runtime::harness::Budget;
use secateur_runtime::kernel_bench::standard_cases;

#[derive(clap::Args, Debug)]
pub struct BenchKernelsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchKernelsArgs) -> Result<()> {
    let cases = standard_cases(Budget {
        warmup: 5,
        rounds: 9,
        per_round: 15,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cases)?);
        return Ok(());
    }
    println!(
        "{:<10} {:>8} {:>16} {:>10} {:>10} {:>8} {:>7}",
        "format", "sparsity", "W x X", "dense ms", "sparse ms", "speedup", "spread"
    );
    for c in cases {
        println!(
            "{:<10} {:>7.0}% {:>16} {:>10.3} {:>10.3} {:>7.1}x {:>6.0}%",
            c.format,
            c.sparsity * 100.0,
            format!("{}x{} x {}x{}", c.m, c.k, c.k, c.n),
            c.dense_ms,
            c.sparse_ms,
            c.speedup,
            c.spread * 100.0
        );
    }
    Ok(())
}
