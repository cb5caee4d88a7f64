//! Weight pruning: criteria rank hand-made examples correctly, N:M and block masks satisfy
//! their patterns on random shapes, allocation scopes behave, masks survive an ONNX round trip,
//! and impossible requests are refused with clear messages.

use proptest::prelude::*;
use secateur_graph::zoo::{self, ZooConfig, ZooModel};
use secateur_graph::{Graph, GraphBuilder, MaskPattern, Tensor};
use secateur_prune::weights::*;

fn cfg(
    criterion: Criterion,
    granularity: Granularity,
    sparsity: f64,
    scope: Scope,
) -> WeightPruneConfig {
    WeightPruneConfig {
        criterion,
        granularity,
        sparsity: Some(sparsity),
        scope,
        exclude: vec![],
        seed: 1,
        min_density: None,
    }
}

/// Two linear layers with hand-set weights.
fn two_layers(w1: Vec<f32>, w2: Vec<f32>) -> Graph {
    let (mut b, x) = GraphBuilder::new("t", &[4], 0);
    let h = b.linear("fc1", &x, 2).unwrap();
    let y = b.linear("fc2", &h, 2).unwrap();
    let mut g = b.finish(&y).unwrap();
    g.initializers
        .insert("fc1.weight".into(), Tensor::new(vec![2, 4], w1).unwrap());
    g.initializers
        .insert("fc2.weight".into(), Tensor::new(vec![2, 2], w2).unwrap());
    g
}

#[test]
fn magnitude_prunes_the_smallest_weights() {
    let g = two_layers(
        vec![0.1, -5.0, 0.2, 3.0, -0.05, 1.0, 2.0, -0.3],
        vec![4.0, 0.01, -6.0, 0.02],
    );
    let m = compute_masks(
        &g,
        &cfg(
            Criterion::Magnitude { l2: false },
            Granularity::Unstructured,
            0.5,
            Scope::Global,
        ),
        &CriterionData::default(),
    )
    .unwrap();
    // 12 weights, 6 pruned: 0.01, 0.02, -0.05, 0.1, 0.2, -0.3
    assert_eq!(
        m["fc1.weight"].keep,
        vec![false, true, false, true, false, true, true, false]
    );
    assert_eq!(m["fc2.weight"].keep, vec![true, false, true, false]);
    // per layer: half of each layer
    let m = compute_masks(
        &g,
        &cfg(
            Criterion::Magnitude { l2: false },
            Granularity::Unstructured,
            0.5,
            Scope::PerLayer,
        ),
        &CriterionData::default(),
    )
    .unwrap();
    assert_eq!(m["fc1.weight"].kept(), 4);
    assert_eq!(m["fc2.weight"].kept(), 2);
    // threshold: |w| <= 0.2
    let t = WeightPruneConfig {
        sparsity: None,
        ..cfg(
            Criterion::Threshold { t: 0.2 },
            Granularity::Unstructured,
            0.0,
            Scope::Global,
        )
    };
    let m = compute_masks(&g, &t, &CriterionData::default()).unwrap();
    assert_eq!(
        m["fc1.weight"].keep,
        vec![false, true, false, true, false, true, true, true]
    );
}

#[test]
fn lamp_spares_small_layers_that_global_magnitude_would_wipe_out() {
    // fc2's weights are all small in absolute terms but they are its most important ones
    let g = two_layers(
        vec![1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
        vec![0.01, 0.02, 0.03, 0.04],
    );
    let mag = compute_masks(
        &g,
        &cfg(
            Criterion::Magnitude { l2: false },
            Granularity::Unstructured,
            0.4,
            Scope::GlobalRaw,
        ),
        &CriterionData::default(),
    )
    .unwrap();
    assert_eq!(
        mag["fc2.weight"].kept(),
        1,
        "a raw global magnitude ranking empties fc2 (down to the one-unit guard)"
    );
    let lamp = compute_masks(
        &g,
        &cfg(
            Criterion::Lamp,
            Granularity::Unstructured,
            0.4,
            Scope::Global,
        ),
        &CriterionData::default(),
    )
    .unwrap();
    assert!(
        lamp["fc2.weight"].kept() >= 2,
        "LAMP keeps fc2 alive: {:?}",
        lamp["fc2.weight"].keep
    );
    assert_eq!(lamp["fc1.weight"].kept() + lamp["fc2.weight"].kept(), 7);
}

#[test]
fn taylor_and_random_follow_their_scores() {
    let g = two_layers(vec![1.0; 8], vec![1.0; 4]);
    let mut d = CriterionData::default();
    d.taylor.insert(
        "fc1.weight".into(),
        vec![8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
    );
    d.taylor
        .insert("fc2.weight".into(), vec![0.5, 9.0, 9.0, 9.0]);
    let m = compute_masks(
        &g,
        &cfg(
            Criterion::Taylor,
            Granularity::Unstructured,
            0.25,
            Scope::Global,
        ),
        &d,
    )
    .unwrap();
    assert_eq!(
        m["fc1.weight"].keep,
        vec![true, true, true, true, true, true, false, false]
    );
    assert_eq!(m["fc2.weight"].keep, vec![false, true, true, true]);
    let r1 = compute_masks(
        &g,
        &cfg(
            Criterion::Random,
            Granularity::Unstructured,
            0.5,
            Scope::Global,
        ),
        &d,
    )
    .unwrap();
    let r2 = compute_masks(
        &g,
        &cfg(
            Criterion::Random,
            Granularity::Unstructured,
            0.5,
            Scope::Global,
        ),
        &d,
    )
    .unwrap();
    assert_eq!(r1, r2, "random is seeded");
    let mut other = cfg(
        Criterion::Random,
        Granularity::Unstructured,
        0.5,
        Scope::Global,
    );
    other.seed = 2;
    assert_ne!(compute_masks(&g, &other, &d).unwrap(), r1);
}

#[test]
fn masks_accumulate_and_exclusions_hold() {
    let mut g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let mut c = cfg(
        Criterion::Magnitude { l2: false },
        Granularity::Unstructured,
        0.5,
        Scope::Global,
    );
    c.exclude = vec!["conv1".into(), "fc2.weight".into()];
    let m = compute_masks(&g, &c, &CriterionData::default()).unwrap();
    assert!(!m.contains_key("conv1.weight") && !m.contains_key("fc2.weight"));
    apply_masks(&mut g, m.clone()).unwrap();
    c.sparsity = Some(0.8);
    let m2 = compute_masks(&g, &c, &CriterionData::default()).unwrap();
    for (w, mask) in &m2 {
        for (a, b) in m[w].keep.iter().zip(&mask.keep) {
            assert!(*a || !*b, "a pruned weight of {w} came back");
        }
    }
    apply_masks(&mut g, m2).unwrap();
    let rep = sparsity_report(&g).unwrap();
    let pruned: usize = rep
        .iter()
        .filter(|r| r.layer != "conv1" && r.layer != "fc2")
        .map(|r| r.params - r.nonzero)
        .sum();
    let total: usize = rep
        .iter()
        .filter(|r| r.layer != "conv1" && r.layer != "fc2")
        .map(|r| r.params)
        .sum();
    assert!((pruned as f64 / total as f64 - 0.8).abs() < 1e-3);
}

#[test]
fn masks_survive_save_load_export_import() {
    let mut g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let mut c = cfg(
        Criterion::Magnitude { l2: false },
        Granularity::NM { n: 2, m: 4 },
        0.5,
        Scope::Global,
    );
    c.exclude = vec!["conv1".into()];
    let m = compute_masks(&g, &c, &CriterionData::default()).unwrap();
    apply_masks(&mut g, m).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.onnx");
    secateur_onnx::save_model(&g, &p).unwrap();
    let back = secateur_onnx::load_model(&p).unwrap();
    assert_eq!(back.masks, g.masks);
    assert!(
        back.masks
            .values()
            .all(|m| m.pattern == MaskPattern::NM { n: 2, m: 4 })
    );
    back.check().unwrap();
}

#[test]
fn impossible_requests_are_refused() {
    let g = zoo::build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let d = CriterionData::default();
    let err = |c: WeightPruneConfig| compute_masks(&g, &c, &d).unwrap_err().to_string();
    let e = err(cfg(
        Criterion::Magnitude { l2: false },
        Granularity::Unstructured,
        1.0,
        Scope::Global,
    ));
    assert!(e.contains("[0, 1)"), "{e}");
    let e = err(cfg(
        Criterion::Magnitude { l2: false },
        Granularity::Block { rows: 3, cols: 1 },
        0.5,
        Scope::Global,
    ));
    assert!(e.contains("conv1") && e.contains("block 3x1"), "{e}");
    let e = err(cfg(
        Criterion::Magnitude { l2: false },
        Granularity::NM { n: 2, m: 4 },
        0.5,
        Scope::Global,
    ));
    assert!(e.contains("conv1") && e.contains("M=4"), "{e}");
    let mut c = cfg(
        Criterion::Magnitude { l2: false },
        Granularity::Unstructured,
        0.5,
        Scope::Global,
    );
    c.exclude = vec!["conv9".into()];
    let e = err(c);
    assert!(e.contains("conv9") && e.contains("fc1"), "{e}");
    let e = err(cfg(
        Criterion::Magnitude { l2: false },
        Granularity::NM { n: 2, m: 4 },
        0.9,
        Scope::Global,
    ));
    assert!(e.contains("fixed"), "{e}");
    assert!("4:4".parse::<Granularity>().is_err());
    let e = err(cfg(
        Criterion::Wanda,
        Granularity::Unstructured,
        0.5,
        Scope::Global,
    ));
    assert!(e.contains("--data"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn nm_masks_keep_exactly_n_of_m(rows in 1usize..12, groups in 1usize..8, m in 2usize..9, n_frac in 0.0f64..1.0, seed in 0u64..1000, transposed in any::<bool>()) {
        let n = ((m - 1) as f64 * n_frac) as usize + 1;
        let cols = groups * m;
        let (mut b, x) = GraphBuilder::new("p", &[cols], seed);
        let y = if transposed {
            let w = secateur_testkit::random_tensor(&[cols, rows], seed);
            b.node("mm", secateur_graph::Op::MatMul(secateur_graph::MatMul), &[&x], vec![("weight", w)]).unwrap()
        } else {
            b.linear("fc", &x, rows).unwrap()
        };
        let g = b.finish(&y).unwrap();
        let c = cfg(Criterion::Magnitude { l2: false }, Granularity::NM { n, m }, 0.0, Scope::Global);
        let masks = compute_masks(&g, &c, &CriterionData::default()).unwrap();
        let mask = masks.values().next().unwrap();
        let shape = g.initializers[masks.keys().next().unwrap()].shape().to_vec();
        let view = secateur_graph::MatrixView::new(&shape, mask.out_axis).unwrap();
        for r in 0..view.rows {
            for gi in 0..groups {
                let kept = (0..m).filter(|j| mask.keep[view.index(r, gi * m + j)]).count();
                prop_assert_eq!(kept, n);
            }
        }
    }

    #[test]
    fn block_masks_cover_whole_blocks(br in 1usize..5, bc in 1usize..5, rb in 1usize..6, cb in 1usize..6, s in 0.05f64..0.95, seed in 0u64..1000) {
        let (rows, cols) = (br * rb, bc * cb);
        let (mut b, x) = GraphBuilder::new("p", &[cols], seed);
        let y = b.linear("fc", &x, rows).unwrap();
        let g = b.finish(&y).unwrap();
        let c = cfg(Criterion::Magnitude { l2: true }, Granularity::Block { rows: br, cols: bc }, s, Scope::PerLayer);
        let masks = compute_masks(&g, &c, &CriterionData::default()).unwrap();
        let mask = &masks["fc.weight"];
        prop_assert!(mask.check_pattern("fc.weight", &[rows, cols]).is_ok());
        let pruned_blocks = mask.keep.iter().filter(|k| !**k).count() / (br * bc);
        let expect = ((s * (rows * cols) as f64).round() as usize).div_ceil(br * bc).min(rb * cb - 1);
        prop_assert_eq!(pruned_blocks, expect);
    }
}

/// A wide layer of large weights feeding a narrow one of small weights.
fn big_and_small() -> Graph {
    let (mut b, x) = GraphBuilder::new("t", &[100], 0);
    let h = b.linear("wide", &x, 100).unwrap();
    let y = b.linear("head", &h, 10).unwrap();
    let mut g = b.finish(&y).unwrap();
    g.initializers.insert(
        "wide.weight".into(),
        Tensor::from_fn(vec![100, 100], |i| 1.0 + (i % 7) as f32),
    );
    g.initializers.insert(
        "head.weight".into(),
        Tensor::from_fn(vec![10, 100], |i| 0.01 + 0.001 * (i % 5) as f32),
    );
    g
}

#[test]
fn a_global_ranking_leaves_every_layer_its_density_floor() {
    let g = big_and_small();
    let global = |min_density| WeightPruneConfig {
        min_density,
        ..cfg(
            Criterion::Magnitude { l2: false },
            Granularity::Unstructured,
            0.9,
            Scope::GlobalRaw,
        )
    };
    let kept = |c: &WeightPruneConfig| {
        let m = compute_masks(&g, c, &CriterionData::default()).unwrap();
        (m["wide.weight"].kept(), m["head.weight"].kept())
    };
    // the head's weights are all smaller than the wide layer's: without a floor it keeps one
    assert_eq!(kept(&global(Some(0.0))), (10000 + 1000 - 9900 - 1, 1));
    // by default it keeps 2 % (20 of 1000) and the wide layer gives up the difference
    let (wide, head) = kept(&global(None));
    assert_eq!(head, 20);
    assert_eq!(wide + head, 11000 - 9900);
    assert_eq!(kept(&global(Some(0.1))).1, 100);
    let bad = global(Some(1.5));
    let e = compute_masks(&g, &bad, &CriterionData::default()).unwrap_err();
    assert!(e.to_string().contains("min-density"), "{e}");
}

#[test]
fn the_global_ranking_of_magnitudes_ignores_a_per_layer_scale() {
    // a batch norm folded into a layer multiplies its weights by a constant per channel; the
    // default global ranking (magnitudes normalised per layer) allocates the same, the raw one
    // does not
    let w1: Vec<f32> = (0..8).map(|i| 0.3 + 0.1 * i as f32).collect();
    let w2 = vec![0.25, 0.5, 0.75, 1.0];
    let scaled: Vec<f32> = w2.iter().map(|v| v * 0.05).collect();
    let masks = |w2: Vec<f32>, scope: Scope| {
        let g = two_layers(w1.clone(), w2);
        let c = WeightPruneConfig {
            min_density: Some(0.0),
            ..cfg(
                Criterion::Magnitude { l2: false },
                Granularity::Unstructured,
                0.5,
                scope,
            )
        };
        let m = compute_masks(&g, &c, &CriterionData::default()).unwrap();
        (m["fc1.weight"].kept(), m["fc2.weight"].kept())
    };
    assert_eq!(
        masks(w2.clone(), Scope::Global),
        masks(scaled.clone(), Scope::Global)
    );
    assert_ne!(masks(w2, Scope::GlobalRaw), masks(scaled, Scope::GlobalRaw));
}
