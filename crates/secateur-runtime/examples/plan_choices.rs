//! Times every configuration `ExecPlan::compile` chooses among for a zoo model, interleaved,
//! and the one `compile` keeps: `plan_choices MODEL BATCH THREADS`.
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_runtime::harness::{Budget, measure_interleaved, probe};
use secateur_runtime::{ExecPlan, PlanConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = ZooModel::ALL
        .into_iter()
        .find(|m| m.name() == args.first().map_or("mobilenet-v2", |s| s.as_str()))
        .expect("a zoo model name");
    let batch: usize = args.get(1).map_or(8, |s| s.parse().expect("batch"));
    let threads: usize = args.get(2).map_or(1, |s| s.parse().expect("threads"));
    let g = zoo::build(model, &ZooConfig::default()).expect("zoo model");
    let config = PlanConfig::new(batch, threads);
    let mut plans: Vec<(String, ExecPlan)> = ExecPlan::candidate_configs(&g, config)
        .into_iter()
        .map(|c| {
            let name = format!("{:?}/{:?}", c.layout, c.batch_mode);
            (name, ExecPlan::compile(&g, c).expect("compiles"))
        })
        .collect();
    let chosen = ExecPlan::compile(&g, config).expect("compiles");
    println!(
        "compile keeps {:?}/{:?}",
        chosen.config.layout, chosen.config.batch_mode
    );
    let n: usize = plans[0].1.input_shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 31) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let mut runners: Vec<Box<dyn FnMut() + '_>> = plans
        .iter_mut()
        .map(|(_, p)| {
            let x = &x;
            Box::new(move || {
                p.run(x).expect("runs");
            }) as Box<dyn FnMut()>
        })
        .collect();
    let one = probe(&mut *runners[0]);
    let mut refs: Vec<&mut dyn FnMut()> = runners.iter_mut().map(|r| &mut **r as _).collect();
    let stats = measure_interleaved(&mut refs, Budget::for_duration(one, 2000.0));
    drop(refs);
    drop(runners);
    for ((name, _), s) in plans.iter().zip(stats) {
        println!("{name}: median {:.3} ms", s.median_ms);
    }
}
