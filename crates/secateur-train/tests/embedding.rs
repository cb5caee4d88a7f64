//! Embedding distillation on a tiny BERT built in the test: a perturbed copy of an encoder
//! trained towards the original's pooled embeddings (cosine distance) and its hidden states
//! (shared sequence features) gets back close to it, and bad sets are refused clearly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secateur_graph::bert::{BertConfig, HiddenAct, Pooling, random_bert};
use secateur_graph::{Graph, Tensor};
use secateur_train::evaluate::forward_inputs;
use secateur_train::*;

const SEQ: usize = 8;

fn tiny() -> BertConfig {
    BertConfig {
        vocab_size: 50,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 12,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: HiddenAct::Gelu,
        position_offset: 0,
    }
}

/// `n` random token sequences of 3 to SEQ tokens: (ids, attention mask).
fn sequences(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let len = rng.random_range(3..=SEQ);
        for t in 0..SEQ {
            ids.push(if t < len {
                rng.random_range(1..50) as f32
            } else {
                0.0
            });
            mask.push(if t < len { 1.0 } else { 0.0 });
        }
    }
    (
        Tensor::new(vec![n, SEQ], ids).unwrap(),
        Tensor::new(vec![n, SEQ], mask).unwrap(),
    )
}

/// The encoder with every weight matrix perturbed by relative noise.
fn perturbed(g: &Graph, scale: f32) -> Graph {
    let mut s = g.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (name, t) in s.initializers.iter_mut() {
        if t.shape().len() == 2 && name.contains("encoder") {
            for v in t.data_mut() {
                *v *= 1.0 + scale * (rng.random::<f32>() * 2.0 - 1.0);
            }
        }
    }
    s
}

fn mean_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let d = a.shape()[1];
    let rows = a.data().chunks(d).zip(b.data().chunks(d));
    let n = a.shape()[0] as f64;
    rows.map(|(x, y)| {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| (*p * *q) as f64).sum();
        let nx: f64 = x.iter().map(|p| (*p * *p) as f64).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|q| (*q * *q) as f64).sum::<f64>().sqrt();
        dot / (nx * ny)
    })
    .sum::<f64>()
        / n
}

fn embed(g: &Graph, (ids, mask): &(Tensor, Tensor)) -> Tensor {
    forward_inputs(g, &[ids.clone(), mask.clone()], &cpu()).unwrap()
}

#[test]
fn distillation_recovers_a_perturbed_encoder() {
    let teacher = random_bert(&tiny(), SEQ, Pooling::Mean, 1).unwrap();
    let student = perturbed(&teacher, 0.8);
    let (train, held_out) = (sequences(96, 5), sequences(48, 6));
    let target = embed(&teacher, &train);
    let set = EmbeddingSet::new(vec![train.0.clone(), train.1.clone()], target)
        .unwrap()
        .with_token_weights(train.1.clone())
        .unwrap();
    let reference = embed(&teacher, &held_out);
    let before = mean_cosine(&embed(&student, &held_out), &reference);
    let cfg = TrainConfig {
        epochs: 30,
        batch_size: 16,
        optimizer: OptimizerConfig::adam(3e-3),
        seed: 1,
        ..Default::default()
    };
    let mut t = Trainer::new(student, cfg, cpu()).unwrap();
    // the embedding LayerNorm and each layer's two LayerNorms feed several readers
    let matched = t.set_feature_teacher(teacher.clone()).unwrap();
    assert!(matched >= 4, "{matched} shared features");
    let mut losses = Vec::new();
    t.fit_embeddings(&set, &mut NoHook, &mut |p| losses.push(p.loss))
        .unwrap();
    let after = mean_cosine(&embed(&t.into_graph().unwrap(), &held_out), &reference);
    assert!(
        after > 0.995 && after - before > 0.5 * (1.0 - before),
        "held-out agreement {before:.4} -> {after:.4}"
    );
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.2 * first, "loss {first} -> {last}");
}

#[test]
fn embedding_sets_are_checked() {
    let (ids, mask) = sequences(4, 1);
    let err = EmbeddingSet::new(
        vec![ids.clone()],
        Tensor::new(vec![3, 16], vec![0.0; 48]).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("3 target embeddings"), "{err}");
    let set =
        EmbeddingSet::new(vec![ids], Tensor::new(vec![4, 16], vec![1.0; 64]).unwrap()).unwrap();
    let err = set.with_token_weights(Tensor::new(vec![2, SEQ], vec![1.0; 16]).unwrap());
    assert!(err.unwrap_err().to_string().contains("token weights"));
    // a model with two inputs given one
    let g = random_bert(&tiny(), SEQ, Pooling::Mean, 1).unwrap();
    let one =
        EmbeddingSet::new(vec![mask], Tensor::new(vec![4, 16], vec![1.0; 64]).unwrap()).unwrap();
    let mut t = Trainer::new(g, TrainConfig::default(), cpu()).unwrap();
    let err = t
        .fit_embeddings(&one, &mut NoHook, &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("2 inputs"), "{err}");
}
