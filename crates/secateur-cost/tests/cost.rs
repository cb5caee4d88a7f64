//! Counts match hand counts for dense, 90 %-sparse and channel-pruned models; the energy model
//! ranks correctly; profiles validate and malformed ones name the field; the RAPL reader works
//! on a fake powercap tree (wrap-around, unreadable counters, no interface); latency tables
//! predict recorded models exactly and interpolate others.

use secateur_cost::counts::storage;
use secateur_cost::energy::{Execution, assumed_execution};
use secateur_cost::*;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Graph, MaskPattern};
use secateur_prune::structured::{DependencyGraph, Plan, apply_plan};
use secateur_prune::weights::{
    Criterion, CriterionData, Granularity, Scope, WeightPruneConfig, apply_masks, compute_masks,
};
use std::collections::HashMap;

fn lenet() -> Graph {
    zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap()
}

#[test]
fn dense_and_sparse_counts_match_hand_counts() {
    let l = layer_counts(&lenet()).unwrap();
    let t = totals(&l);
    assert_eq!(t.params, 317_258);
    assert_eq!(t.macs, 460_800 + 3_276_800 + 262_144 + 2_560);
    // fc2: 10x256 dense f32 = 10 240 bytes, int8 = 2 560 + 10 scales x 4
    let fc2 = l.iter().find(|x| x.node == "fc2").unwrap();
    assert_eq!(fc2.weight.dense_f32, 10_240);
    assert_eq!(fc2.weight.dense_int8, 2_560 + 40);
    // activations of conv1 per sample: input 784 floats, output 32x24x24 floats
    let c1 = l.iter().find(|x| x.node == "conv1").unwrap();
    assert_eq!((c1.input_bytes, c1.output_bytes), (784 * 4, 32 * 576 * 4));

    // 90 % per layer: every weighted layer keeps round(10 %) of its weights
    let mut g = lenet();
    let cfg = WeightPruneConfig {
        criterion: Criterion::Magnitude { l2: false },
        granularity: Granularity::Unstructured,
        sparsity: Some(0.9),
        scope: Scope::PerLayer,
        exclude: vec![],
        seed: 0,
        min_density: None,
    };
    let m = compute_masks(&g, &cfg, &CriterionData::default()).unwrap();
    apply_masks(&mut g, m).unwrap();
    let l = layer_counts(&g).unwrap();
    let fc2 = l.iter().find(|x| x.node == "fc2").unwrap();
    // 2 560 weights, 256 kept: CSR = 4·256 values + 2·256 u16 indices + 4·11 row pointers
    assert_eq!(fc2.weight.csr_f32, 1024 + 512 + 44);
    assert_eq!(fc2.sparse_macs, 256);
    let conv2 = l.iter().find(|x| x.node == "conv2").unwrap();
    // 51 200 weights, 5 120 kept: 3 276 800 MACs x 0.1
    assert_eq!(conv2.sparse_macs, 327_680);
    assert_eq!(
        storage(64, 800, 5_120, None).csr_int8,
        5_120 + 10_240 + 4 * 65 + 4 * 64
    );
    let nm = storage(10, 256, 1_280, Some(MaskPattern::NM { n: 2, m: 4 }));
    assert_eq!(nm.nm_f32, Some(1_280 * 5));
}

#[test]
fn channel_pruned_counts_match_hand_counts() {
    let g = lenet();
    let deps = DependencyGraph::build(&g).unwrap();
    let mut plan = Plan::default();
    plan.keep(deps.group("conv1").unwrap(), (0..8).collect());
    plan.keep(deps.group("conv2").unwrap(), (0..16).collect());
    plan.keep(deps.group("fc1").unwrap(), (0..64).collect());
    let p = apply_plan(&g, &deps, &plan).unwrap();
    let t = totals(&layer_counts(&p).unwrap());
    // conv1 8·25+8, bn1 16, conv2 16·8·25+16, bn2 32, fc1 (16·4·4)·64+64, fc2 64·10+10
    assert_eq!(t.params, 208 + 16 + 3_216 + 32 + 16_448 + 650);
    // conv1 8·576·25, conv2 16·64·200, fc1 256·64, fc2 64·10
    assert_eq!(t.macs, 115_200 + 204_800 + 16_384 + 640);
    let mlp =
        totals(&layer_counts(&zoo::build(ZooModel::Mlp, &ZooConfig::default()).unwrap()).unwrap());
    assert_eq!(mlp.params, 266_610);
}

/// An MLP 784-h-10 (weights dominate).
fn mlp(h: usize) -> Graph {
    let (mut b, x) = secateur_graph::GraphBuilder::new("m", &[784], 0);
    let y = b.linear("fc1", &x, h).unwrap();
    let y = b.relu("r", &y).unwrap();
    let y = b.linear("fc2", &y, 10).unwrap();
    b.finish(&y).unwrap()
}

#[test]
fn energy_ranks_memory_levels_correctly() {
    let emb = HardwareProfile::load("embedded").unwrap();
    // about 470 KB of weights fit the 512 KB SRAM, about 560 KB do not
    let small = layer_counts(&mlp(150)).unwrap();
    let big = layer_counts(&mlp(178)).unwrap();
    let es = model(&small, &emb, 1, &HashMap::new());
    let eb = model(&big, &emb, 1, &HashMap::new());
    assert_eq!(es.weight_level, "SRAM");
    assert_eq!(eb.weight_level, "flash");
    let mac_ratio = totals(&big).macs as f64 / totals(&small).macs as f64;
    let mem_ratio = eb.memory_joules / es.memory_joules;
    assert!(
        mem_ratio > 5.0 * mac_ratio,
        "leaving SRAM must cost far more than the extra MACs: memory x{mem_ratio:.2}, MACs x{mac_ratio:.2}"
    );
    assert!(eb.joules_per_inference > es.joules_per_inference);

    // removing one DRAM-resident weight saves more than removing one MAC
    let cloud = HardwareProfile::load("cloud").unwrap();
    let huge = layer_counts(&mlp(20_000)).unwrap();
    let base = model(&huge, &cloud, 1, &HashMap::new());
    assert_eq!(base.weight_level, "DDR5");
    let fc1 = huge.iter().find(|l| l.node == "fc1").unwrap();
    let e = assumed_execution(fc1);
    let mut fewer_weight = HashMap::new();
    fewer_weight.insert(
        "fc1".to_string(),
        Execution {
            weight_bytes: e.weight_bytes - 4,
            ..e
        },
    );
    let mut fewer_mac = HashMap::new();
    fewer_mac.insert(
        "fc1".to_string(),
        Execution {
            macs: e.macs - 1,
            ..e
        },
    );
    let dw =
        base.joules_per_inference - model(&huge, &cloud, 1, &fewer_weight).joules_per_inference;
    let dm = base.joules_per_inference - model(&huge, &cloud, 1, &fewer_mac).joules_per_inference;
    assert!(
        dw > dm * 5.0,
        "a DRAM weight ({dw:e} J) must cost much more than a MAC ({dm:e} J)"
    );
    // watts at a frame rate: static power plus energy per frame times frames per second
    assert!(
        (base.watts_at(100.0) - (cloud.static_watts + 100.0 * base.joules_per_inference)).abs()
            < 1e-12
    );
}

#[test]
fn embedded_profile_reproduces_mlperf_tiny_order_of_magnitude() {
    // a keyword-spotting-sized int8 workload: ~2.7 M MACs, ~40 KB of weights
    let emb = HardwareProfile::load("embedded").unwrap();
    let l = LayerCount {
        node: "kws".into(),
        op: "Conv".into(),
        params: 40_000,
        nonzero_params: 40_000,
        macs: 2_700_000,
        sparse_macs: 2_700_000,
        elementwise_ops: 100_000,
        weight: storage(64, 625, 40_000, None),
        other_param_bytes: 0,
        input_bytes: 4_000,
        output_bytes: 4_000,
        int8: true,
    };
    let e = model(&[l], &emb, 1, &HashMap::new());
    let mj = e.joules_per_inference * 1e3;
    assert!(
        (2.0..12.0).contains(&mj),
        "MLPerf Tiny measured 5.2 mJ; model gives {mj:.2} mJ"
    );
}

#[test]
fn profiles_validate_and_errors_name_the_field() {
    for n in HardwareProfile::built_in_names() {
        HardwareProfile::load(n).unwrap();
    }
    let good = include_str!("../profiles/mobile.toml");
    let e = HardwareProfile::from_toml(
        &good.replace("capacity_bytes = 524288", "capacity_bytes = -5"),
        "bad.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.toml") && e.contains("capacity_bytes") && e.contains("L2"),
        "{e}"
    );
    let e = HardwareProfile::from_toml(
        &good.replace("mac_f32_pj = \"", "mac_f32_pj_x = \""),
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sources") && e.contains("mac_f32_pj"), "{e}");
    let e = HardwareProfile::from_toml(
        &good.replace("clock_ghz = 2.4", "clock_ghz = \"fast\""),
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("clock_ghz"), "{e}");
    let e = HardwareProfile::from_toml(&format!("{good}\nturbo = true\n"), "p.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("turbo"), "{e}");
    let e = HardwareProfile::load("quantum").unwrap_err().to_string();
    assert!(e.contains("embedded"), "{e}");
}

#[test]
fn rapl_reader_on_a_fake_powercap_tree() {
    use secateur_cost::rapl::{delta_uj, domains, measure};
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("intel-rapl:0");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("name"), "package-0\n").unwrap();
    std::fs::write(pkg.join("max_energy_range_uj"), "1000000\n").unwrap();
    std::fs::write(pkg.join("energy_uj"), "999000\n").unwrap();
    let core = dir.path().join("intel-rapl:0:0");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(core.join("name"), "core\n").unwrap();
    std::fs::write(core.join("max_energy_range_uj"), "1000000\n").unwrap();
    std::fs::write(core.join("energy_uj"), "5\n").unwrap();
    assert_eq!(domains(dir.path()).unwrap().len(), 2);
    // the counter wraps during the runs: 999 000 -> 1 000 000 -> 3 000 = 4 000 µJ
    let energy = pkg.join("energy_uj");
    let m = measure(dir.path(), 4, &mut || {
        let v: u64 = std::fs::read_to_string(&energy)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(&energy, format!("{}\n", (v + 1_000) % 1_000_000)).unwrap();
    })
    .unwrap();
    assert!((m.joules_per_run - 0.001).abs() < 1e-12, "{m:?}");
    assert!(m.method.contains("RAPL") && m.method.contains("4 runs"));
    assert_eq!(delta_uj(10, 30, 100), 20);
    assert_eq!(delta_uj(90, 5, 100), 15);
    // an unreadable counter is an error naming the file
    std::fs::remove_file(&energy).unwrap();
    std::fs::create_dir(&energy).unwrap();
    let e = domains(dir.path()).unwrap_err().to_string();
    assert!(e.contains("energy_uj"), "{e}");
    // no powercap at all
    let e = domains(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no powercap interface"), "{e}");
}

#[test]
fn latency_table_predicts_recorded_and_interpolates() {
    let host = HardwareProfile::load("host").unwrap();
    let mut table = LatencyTable {
        machine: "test".into(),
        entries: vec![],
    };
    let prune = |s: f64| {
        let mut g = lenet();
        if s > 0.0 {
            let cfg = WeightPruneConfig {
                criterion: Criterion::Magnitude { l2: false },
                granularity: Granularity::Unstructured,
                sparsity: Some(s),
                scope: Scope::PerLayer,
                exclude: vec![],
                seed: 0,
                min_density: None,
            };
            let m = compute_masks(&g, &cfg, &CriterionData::default()).unwrap();
            apply_masks(&mut g, m).unwrap();
        }
        g
    };
    for s in [0.0, 0.8, 0.95] {
        table.record_model(&prune(s), 4, 1, 5).unwrap();
    }
    let sigs = signatures(&prune(0.8)).unwrap();
    assert_eq!(
        sigs.len(),
        6,
        "conv1, pool1, conv2, pool2, fc1, fc2 (BN and ReLU fused)"
    );
    let recorded: f64 = table
        .entries
        .iter()
        .filter(|e| (e.sig.density - 0.2).abs() < 0.02 || e.sig.density > 0.99 && e.sig.macs == 0)
        .map(|e| e.ms)
        .sum();
    assert!(recorded > 0.0);
    // an unseen sparsity is interpolated between its neighbours
    let mid = signatures(&prune(0.9)).unwrap();
    let conv2 = mid.iter().find(|s| s.node == "conv2").unwrap();
    let (t, how) = table.predict_layer(conv2, 4, 1, &host);
    assert_eq!(how, "interpolated");
    let at = |d: f64| {
        table
            .entries
            .iter()
            .find(|e| e.sig.node == "conv2" && (e.sig.density - d).abs() < 0.02)
            .unwrap()
            .ms
    };
    assert!(t <= at(0.2).max(at(0.05)) + 1e-9 && t >= at(0.2).min(at(0.05)) - 1e-9);
    let dir = tempfile::tempdir().unwrap();
    table.save(&dir.path().join("t.json")).unwrap();
    assert_eq!(
        LatencyTable::load(&dir.path().join("t.json")).unwrap(),
        table
    );
    assert!(table.predict(&prune(0.9), 4, 1, &host).unwrap() > 0.0);
    // each recorded plan was also timed whole: predictions of the same graph are scaled by
    // the median ratio of whole-plan time to the sum of its steps
    let whole: Vec<&secateur_cost::latency::Entry> = table
        .entries
        .iter()
        .filter(|e| e.sig.kind == secateur_cost::latency::WHOLE_PLAN)
        .collect();
    assert_eq!(whole.len(), 3, "one per recorded plan");
    let name = prune(0.9).name;
    let layers: f64 = mid
        .iter()
        .map(|s| table.predict_layer(s, 4, 1, &host).0)
        .sum();
    let ratio = table.whole_plan_ratio(&name, layers, 4, 1);
    assert!(ratio > 0.2 && ratio < 5.0, "whole/steps ratio {ratio}");
    assert_eq!(
        table.whole_plan_ratio(&name, layers, 64, 1),
        1.0,
        "no plan at that batch"
    );
    // a recorded plan's own step sum gives its own ratio back
    let first = whole[0];
    let own = table.whole_plan_ratio(&name, first.sig.work, 4, 1);
    assert!((own - first.ms / first.sig.work).abs() < 1e-9);
    let predicted = table.predict(&prune(0.9), 4, 1, &host).unwrap();
    assert!((predicted - layers * ratio).abs() <= 1e-9 * predicted);
}

#[test]
fn int8_layers_are_predicted_from_int8_entries() {
    let g = lenet();
    let mut q = secateur_graph::Quantization::default();
    for w in secateur_prune::weights::prunable_weights(&g).unwrap() {
        q.weights.insert(w.weight, w.out_axis);
        q.activations
            .insert(w.node, secateur_graph::ActQuant::from_range(-1.0, 1.0));
    }
    let mut quantized = g.clone();
    quantized.quantization = Some(q);
    check_reduced_layers(&g, &quantized, |s| s.int8);
}

#[test]
fn bf16_layers_are_predicted_from_bf16_entries() {
    let g = lenet();
    let mut bf16 = g.clone();
    bf16.precision = secateur_graph::Precision::Bf16;
    check_reduced_layers(&g, &bf16, |s| {
        !s.int8 && s.precision == secateur_graph::Precision::Bf16
    });
}

/// In `reduced` (`g` in int8 or bf16, as `is_reduced` tells a signature) exactly the weighted
/// layers are reduced; they are predicted at their f32 time until the reduced plan is
/// recorded, then from their own entries, and the f32 layers keep theirs.
fn check_reduced_layers(g: &Graph, reduced: &Graph, is_reduced: fn(&LayerSig) -> bool) {
    let host = HardwareProfile::load("host").unwrap();
    let sigs = signatures(reduced).unwrap();
    for s in &sigs {
        assert_eq!(
            is_reduced(s),
            s.macs > 0,
            "{}: only weighted layers are reduced",
            s.node
        );
    }
    let conv2 = sigs.iter().find(|s| s.node == "conv2").unwrap();
    let mut table = LatencyTable {
        machine: "test".into(),
        entries: vec![],
    };
    table.record_model(g, 4, 1, 5).unwrap();
    // no reduced entry yet: the layer is predicted at its f32 time
    let f32_sig = signatures(g).unwrap().remove(2);
    assert_eq!(f32_sig.node, "conv2");
    assert_eq!(
        table.predict_layer(conv2, 4, 1, &host),
        table.predict_layer(&f32_sig, 4, 1, &host)
    );
    // with the reduced plan recorded, its own entry
    table.record_model(reduced, 4, 1, 5).unwrap();
    let entry = table
        .entries
        .iter()
        .find(|e| e.sig.node == "conv2" && is_reduced(&e.sig))
        .expect("a reduced entry for conv2");
    assert_eq!(table.predict_layer(conv2, 4, 1, &host), (entry.ms, "table"));
    let f32_entry = table
        .entries
        .iter()
        .find(|e| e.sig.node == "conv2" && !is_reduced(&e.sig))
        .unwrap();
    assert_eq!(
        table.predict_layer(&f32_sig, 4, 1, &host),
        (f32_entry.ms, "table")
    );
}

/// A transformer's linear layers are told apart by their rows (tokens) and sized by their
/// features, so that pruning FFN neurons changes exactly the widths a latency table
/// interpolates over (the token count, once taken for a width, made every layer look alike).
#[test]
fn transformer_layers_are_sized_by_features_not_tokens() {
    use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
    use secateur_prune::structured::{
        ChannelPruneConfig, GroupKind, StructuredTarget, plan_channels,
    };
    let cfg = BertConfig {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        intermediate_size: 40,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: HiddenAct::Gelu,
        position_offset: 0,
    };
    let g = random_bert(&cfg, 12, Pooling::Mean, 1).unwrap();
    let deps = DependencyGraph::build(&g).unwrap();
    let half = ChannelPruneConfig {
        target: StructuredTarget::Ratio(0.5),
        kinds: vec![GroupKind::Neurons, GroupKind::Heads],
        ..Default::default()
    };
    let plan = plan_channels(&g, &deps, &half, &HashMap::new()).unwrap();
    let pruned = apply_plan(&g, &deps, &plan).unwrap();
    let sig = |graph: &Graph, node: &str| {
        latency::signatures(graph)
            .unwrap()
            .into_iter()
            .find(|s| s.node.contains(node))
            .unwrap_or_else(|| panic!("no layer named like {node}"))
    };
    for (graph, neurons, heads) in [(&g, 40, 4), (&pruned, 20, 2)] {
        let up = sig(graph, "intermediate.dense");
        let down = sig(graph, "layer.0.output.dense");
        let query = sig(graph, "self.query");
        let scores = sig(graph, "scores");
        assert_eq!((up.in_ch, up.out_ch), (16, neurons), "{up:?}");
        assert_eq!((down.in_ch, down.out_ch), (neurons, 16), "{down:?}");
        assert_eq!(query.out_ch, 4 * heads, "{query:?}");
        // rows (12 tokens) in the geometry, the same for every width
        assert_eq!(up.geometry, sig(&g, "intermediate.dense").geometry);
        assert!(up.geometry.contains("12"), "{}", up.geometry);
        // attention scores: heads x head size in, tokens out
        assert_eq!((scores.in_ch, scores.out_ch), (4 * heads, 12), "{scores:?}");
    }
}
