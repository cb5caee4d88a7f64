//! Fisher importance of attention heads (Kwon et al. 2022) on a tiny BERT built in the test:
//! per-sample slice sensitivities from the training engine, summed over each head's consumer
//! slices and squared, give a dead head (all its weights zero) exactly zero and every live
//! head a positive score, so a Fisher plan removes the dead head first.

use secateur_graph::Tensor;
use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
use secateur_prune::structured::*;
use secateur_train::cpu;
use secateur_train::sensitivity::slice_sensitivities;

const SEQ: usize = 8;

fn tiny_bert() -> secateur_graph::Graph {
    let cfg = BertConfig {
        vocab_size: 60,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 24,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: HiddenAct::Gelu,
        position_offset: 0,
    };
    random_bert(&cfg, SEQ, Pooling::Mean, 3).unwrap()
}

/// Single-sample token inputs (ids, mask) of random lengths.
fn samples(n: usize) -> Vec<Vec<Tensor>> {
    // a small linear congruential generator: deterministic, no dependency
    let mut state = 4u64;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..n)
        .map(|_| {
            let len = 3 + next((SEQ - 2) as u64) as usize;
            let ids = (0..SEQ)
                .map(|t| if t < len { (1 + next(59)) as f32 } else { 0.0 })
                .collect();
            let mask = (0..SEQ).map(|t| if t < len { 1.0 } else { 0.0 }).collect();
            vec![
                Tensor::new(vec![1, SEQ], ids).unwrap(),
                Tensor::new(vec![1, SEQ], mask).unwrap(),
            ]
        })
        .collect()
}

#[test]
fn fisher_scores_a_dead_head_zero_and_plans_remove_it_first() {
    let mut g = tiny_bert();
    let deps = DependencyGraph::build(&g).unwrap();
    let heads = deps.groups[0].clone();
    assert_eq!(heads.kind, GroupKind::Heads);
    zero_channels(&mut g, &heads, &[2]).unwrap();
    let s = samples(12);
    let sens = slice_sensitivities(&g, &s, 0, &cpu()).unwrap();
    let data = fisher_importance(&g, &deps, &sens, s.len(), &[GroupKind::Heads]).unwrap();
    let scores = group_scores(
        &g,
        &heads,
        GroupCriterion::Fisher,
        Reduction::Mean,
        Normalizer::None,
        &data,
        0,
    )
    .unwrap();
    assert_eq!(scores[2], 0.0, "{scores:?}");
    assert!(
        scores.iter().enumerate().all(|(k, v)| k == 2 || *v > 0.0),
        "{scores:?}"
    );
    let cfg = ChannelPruneConfig {
        criterion: GroupCriterion::Fisher,
        normalizer: Normalizer::None,
        target: StructuredTarget::Ratio(0.25),
        kinds: vec![GroupKind::Heads],
        ..Default::default()
    };
    let plan = plan_channels(&g, &deps, &cfg, &data).unwrap();
    let kept = &plan
        .entries
        .iter()
        .find(|e| e.group == heads.name)
        .unwrap()
        .keep;
    assert_eq!(kept.len(), 3);
    assert!(!kept.contains(&2), "{kept:?}");
    // the per-sample mask gradients behind the scores: the dead head's are zero, and each
    // head's squares sum to its score up to one factor shared by the group
    let grads = fisher_gradients(&deps, &sens, s.len(), &[GroupKind::Heads]);
    let hg = &grads[&heads.name];
    assert!(hg.column(2).all(|v| v == 0.0));
    let diag: Vec<f64> = (0..4).map(|k| hg.column(k).map(|v| v * v).sum()).collect();
    let factor = scores[0] as f64 / diag[0];
    for k in [1, 3] {
        let rel = (scores[k] as f64 - factor * diag[k]).abs() / (scores[k] as f64);
        assert!(
            rel < 1e-4,
            "head {k}: {} vs {}",
            scores[k],
            factor * diag[k]
        );
    }
    // rearranging never raises a group's estimated loss, and cannot beat removing a dead
    // head alone (cost zero): that group's plan stays
    let mut rearranged = plan.clone();
    let report = rearrange_plan(&mut rearranged, &grads);
    assert_eq!(
        report.len(),
        2,
        "both layers' head groups are partly pruned"
    );
    assert!(
        report.iter().all(|r| r.after <= r.before + 1e-12),
        "{report:?}"
    );
    let dead = report.iter().find(|r| r.group == heads.name).unwrap();
    assert!(dead.before.abs() < 1e-12 && dead.swaps == 0, "{dead:?}");
    let entry = |p: &Plan| p.entries.iter().find(|e| e.group == heads.name).cloned();
    assert_eq!(entry(&rearranged), entry(&plan));
}
