//! BERT-family sentence encoders (BERT, MiniLM, the sentence-transformers models) built
//! directly as IR graphs from a configuration and named weights (Hugging Face names:
//! `embeddings.word_embeddings.weight`, `encoder.layer.{i}.attention.self.query.weight`, ...),
//! with the same operators an ONNX export of the model imports to: word-embedding gather,
//! position and token-type rows added as one constant, LayerNorm, per-layer self-attention
//! (Q/K/V projections reshaped to `[batch, heads, seq, head_dim]`, scaled scores plus the
//! additive attention mask, softmax, product with V), GELU feed-forward, residuals, and the
//! pooling of sentence-transformers (attention-masked mean) or the `[CLS]` row. Pruning finds
//! heads and neurons in these graphs through the ops' axis links, like in imported ones.

use crate::error::{GraphError, Result};
use crate::graph::{ElemType, Graph, Node};
use crate::ops::*;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenAct {
    Gelu,
    GeluTanh,
    Relu,
}

/// How token states become one sentence embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps (sentence-transformers).
    Mean,
    /// The first token's state.
    Cls,
}

/// The geometry of a BERT encoder (the fields of a Hugging Face `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: HiddenAct,
    /// Row of the position table read by the first token: 0 for BERT, `pad_token_id + 1` for
    /// RoBERTa (its positions count from after the padding index; right padding assumed, the
    /// padded rows being masked out of attention and pooling).
    pub position_offset: usize,
}

impl BertConfig {
    /// Checks that the sizes are consistent.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Where the builder takes weights from: by Hugging Face name and expected shape.
pub trait WeightSource {
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
}

impl WeightSource for HashMap<String, Tensor> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .remove(name)
            .ok_or_else(|| GraphError::Invalid(format!("weight '{name}' is missing")))?;
        if t.shape() != shape {
            return Err(GraphError::Invalid(format!(
                "weight '{name}' has shape {:?}, the configuration needs {shape:?}",
                t.shape()
            )));
        }
        Ok(t)
    }
}

/// Adds nodes while tracking value shapes.
struct Builder {
    graph: Graph,
    shapes: HashMap<String, Shape>,
}

impl Builder {
    fn constant(&mut self, name: &str, t: Tensor) -> String {
        self.shapes
            .insert(name.to_string(), Shape::known(t.shape()));
        self.graph.add_initializer(name, t);
        name.to_string()
    }

    fn node(&mut self, name: &str, op: Op, inputs: &[&str]) -> Result<String> {
        let node = Node {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![format!("{name}_output")],
        };
        crate::builder::push_node(&mut self.graph, &mut self.shapes, node)
    }

    fn binary(&mut self, name: &str, f: BinaryFn, a: &str, b: &str) -> Result<String> {
        self.node(name, Op::Binary(Binary { f }), &[a, b])
    }

    /// `x · Wᵀ + b` for a Hugging Face `Linear` (`weight [out, in]`), as MatMul by the
    /// transposed weight and Add of the bias.
    fn linear(
        &mut self,
        w: &mut dyn WeightSource,
        name: &str,
        x: &str,
        dims: (usize, usize),
    ) -> Result<String> {
        let (d_in, d_out) = dims;
        let weight = w
            .weight(&format!("{name}.weight"), &[d_out, d_in])?
            .transpose2()?;
        let bias = w.weight(&format!("{name}.bias"), &[d_out])?;
        let wn = self.constant(&format!("{name}.weight"), weight);
        let bn = self.constant(&format!("{name}.bias"), bias);
        let y = self.node(&format!("{name}/MatMul"), Op::MatMul(MatMul), &[x, &wn])?;
        self.binary(&format!("{name}/Add"), BinaryFn::Add, &y, &bn)
    }

    fn layer_norm(
        &mut self,
        w: &mut dyn WeightSource,
        name: &str,
        x: &str,
        h: usize,
        eps: f32,
    ) -> Result<String> {
        let g = w.weight(&format!("{name}.weight"), &[h])?;
        let b = w.weight(&format!("{name}.bias"), &[h])?;
        let gn = self.constant(&format!("{name}.weight"), g);
        let bn = self.constant(&format!("{name}.bias"), b);
        self.node(
            &format!("{name}/LayerNormalization"),
            Op::LayerNorm(LayerNorm {
                axis: -1,
                epsilon: eps,
            }),
            &[x, &gn, &bn],
        )
    }
}

/// Builds the encoder for sequences of `seq_len` tokens. Inputs: `input_ids` and
/// `attention_mask` (`[batch, seq_len]`, integers; token types are all 0, as sentence
/// encoders feed them); output: `sentence_embedding` `[batch, hidden]`.
pub fn build_bert(
    cfg: &BertConfig,
    seq_len: usize,
    pooling: Pooling,
    w: &mut dyn WeightSource,
) -> Result<Graph> {
    cfg.validate().map_err(GraphError::Invalid)?;
    let positions = cfg
        .max_position_embeddings
        .saturating_sub(cfg.position_offset);
    if seq_len == 0 || seq_len > positions {
        return Err(GraphError::Invalid(format!(
            "sequence length {seq_len} must be in 1..={positions} (max_position_embeddings {} less the position offset {})",
            cfg.max_position_embeddings, cfg.position_offset
        )));
    }
    let (h, heads, dh) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
    let mut b = Builder {
        graph: Graph::new("bert"),
        shapes: HashMap::new(),
    };
    for input in ["input_ids", "attention_mask"] {
        let shape = Shape::batched(&[seq_len]);
        b.graph.add_input(input, shape.clone());
        if let Some(v) = b.graph.inputs.last_mut() {
            v.dtype = ElemType::Int64;
        }
        b.shapes.insert(input.to_string(), shape);
    }
    // embeddings: word rows + (position rows + token type 0), LayerNorm
    let word = w.weight("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
    let pos = w.weight(
        "embeddings.position_embeddings.weight",
        &[cfg.max_position_embeddings, h],
    )?;
    let types = w.weight(
        "embeddings.token_type_embeddings.weight",
        &[cfg.type_vocab_size, h],
    )?;
    let word = b.constant("embeddings.word_embeddings.weight", word);
    let first = cfg.position_offset * h;
    let pos_type = Tensor::from_fn(vec![seq_len, h], |i| {
        pos.data()[first + i] + types.data()[i % h]
    });
    let pos_type = b.constant("embeddings.position_and_type", pos_type);
    let x = b.node(
        "embeddings/word_embeddings/Gather",
        Op::Gather(Gather { axis: 0 }),
        &[&word, "input_ids"],
    )?;
    let x = b.binary("embeddings/Add", BinaryFn::Add, &x, &pos_type)?;
    let mut x = b.layer_norm(w, "embeddings.LayerNorm", &x, h, cfg.layer_norm_eps)?;
    // additive mask [batch, 1, 1, seq]: 0 where kept, the lowest float where masked
    let mask4 = b.node(
        "mask/Reshape",
        Op::Reshape(Reshape {
            shape: vec![0, 1, 1, seq_len as i64],
            allowzero: false,
        }),
        &["attention_mask"],
    )?;
    let one = b.constant("mask.one", Tensor::scalar(1.0));
    let lowest = b.constant("mask.lowest", Tensor::scalar(f32::MIN));
    let inverted = b.binary("mask/Sub", BinaryFn::Sub, &one, &mask4)?;
    let additive = b.binary("mask/Mul", BinaryFn::Mul, &inverted, &lowest)?;
    let scale = b.constant("attention.scale", Tensor::scalar(1.0 / (dh as f32).sqrt()));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let split = |b: &mut Builder, name: &str, v: &str, perm: Vec<usize>| -> Result<String> {
            let r = b.node(
                &format!("{p}.attention.self/{name}/Reshape"),
                Op::Reshape(Reshape {
                    shape: vec![0, 0, heads as i64, dh as i64],
                    allowzero: false,
                }),
                &[v],
            )?;
            b.node(
                &format!("{p}.attention.self/{name}/Transpose"),
                Op::Transpose(Transpose { perm }),
                &[&r],
            )
        };
        let q = b.linear(w, &format!("{p}.attention.self.query"), &x, (h, h))?;
        let k = b.linear(w, &format!("{p}.attention.self.key"), &x, (h, h))?;
        let v = b.linear(w, &format!("{p}.attention.self.value"), &x, (h, h))?;
        let q = split(&mut b, "query", &q, vec![0, 2, 1, 3])?;
        let k = split(&mut b, "key", &k, vec![0, 2, 3, 1])?;
        let v = split(&mut b, "value", &v, vec![0, 2, 1, 3])?;
        let s = b.node(
            &format!("{p}.attention.self/scores/MatMul"),
            Op::BatchMatMul(BatchMatMul),
            &[&q, &k],
        )?;
        let s = b.binary(
            &format!("{p}.attention.self/scores/Mul"),
            BinaryFn::Mul,
            &s,
            &scale,
        )?;
        let s = b.binary(
            &format!("{p}.attention.self/scores/Add"),
            BinaryFn::Add,
            &s,
            &additive,
        )?;
        let probs = b.node(
            &format!("{p}.attention.self/Softmax"),
            Op::Softmax(Softmax {
                axis: -1,
                legacy: false,
            }),
            &[&s],
        )?;
        let ctx = b.node(
            &format!("{p}.attention.self/context/MatMul"),
            Op::BatchMatMul(BatchMatMul),
            &[&probs, &v],
        )?;
        let ctx = b.node(
            &format!("{p}.attention.self/context/Transpose"),
            Op::Transpose(Transpose {
                perm: vec![0, 2, 1, 3],
            }),
            &[&ctx],
        )?;
        let ctx = b.node(
            &format!("{p}.attention.self/context/Reshape"),
            Op::Reshape(Reshape {
                shape: vec![0, 0, h as i64],
                allowzero: false,
            }),
            &[&ctx],
        )?;
        let o = b.linear(w, &format!("{p}.attention.output.dense"), &ctx, (h, h))?;
        let o = b.binary(&format!("{p}.attention.output/Add"), BinaryFn::Add, &o, &x)?;
        x = b.layer_norm(
            w,
            &format!("{p}.attention.output.LayerNorm"),
            &o,
            h,
            cfg.layer_norm_eps,
        )?;
        let i = cfg.intermediate_size;
        let f = b.linear(w, &format!("{p}.intermediate.dense"), &x, (h, i))?;
        let act = match cfg.hidden_act {
            HiddenAct::Gelu => Pointwise::Gelu { tanh: false },
            HiddenAct::GeluTanh => Pointwise::Gelu { tanh: true },
            HiddenAct::Relu => Pointwise::Relu,
        };
        let f = b.node(
            &format!("{p}.intermediate/act"),
            Op::Unary(Unary { f: act }),
            &[&f],
        )?;
        let o = b.linear(w, &format!("{p}.output.dense"), &f, (i, h))?;
        let o = b.binary(&format!("{p}.output/Add"), BinaryFn::Add, &o, &x)?;
        x = b.layer_norm(
            w,
            &format!("{p}.output.LayerNorm"),
            &o,
            h,
            cfg.layer_norm_eps,
        )?;
    }
    let pooled = match pooling {
        Pooling::Mean => mean_pool(&mut b, &x, seq_len)?,
        Pooling::Cls => {
            let first = b.constant("pooling.first", Tensor::scalar(0.0));
            b.node(
                "pooling/Gather",
                Op::Gather(Gather { axis: 1 }),
                &[&x, &first],
            )?
        }
    };
    let mut graph = b.graph;
    for node in &mut graph.nodes {
        for o in &mut node.outputs {
            if *o == pooled {
                *o = "sentence_embedding".into();
            }
        }
    }
    graph.outputs = vec!["sentence_embedding".into()];
    graph.integer_constants.insert("pooling.first".into());
    graph.check()?;
    Ok(graph)
}

/// `Σ_t x[t]·mask[t] / max(Σ_t mask[t], 1e-9)`.
fn mean_pool(b: &mut Builder, x: &str, seq_len: usize) -> Result<String> {
    let m3 = b.node(
        "pooling/mask/Reshape",
        Op::Reshape(Reshape {
            shape: vec![0, seq_len as i64, 1],
            allowzero: false,
        }),
        &["attention_mask"],
    )?;
    let masked = b.binary("pooling/Mul", BinaryFn::Mul, x, &m3)?;
    let sum = b.node(
        "pooling/ReduceSum",
        Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keep_dims: false,
        }),
        &[&masked],
    )?;
    let count = b.node(
        "pooling/count/ReduceSum",
        Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keep_dims: false,
        }),
        &[&m3],
    )?;
    let count = b.node(
        "pooling/count/Clip",
        Op::Unary(Unary {
            f: Pointwise::Clip {
                min: 1e-9,
                max: f32::INFINITY,
            },
        }),
        &[&count],
    )?;
    b.binary("pooling/Div", BinaryFn::Div, &sum, &count)
}

/// A small encoder with seeded random weights (`std` 0.2, LayerNorm near identity), for tests
/// and examples that need a real BERT structure without a download.
pub fn random_bert(cfg: &BertConfig, seq_len: usize, pooling: Pooling, seed: u64) -> Result<Graph> {
    struct Random(u64);
    impl WeightSource for Random {
        fn weight(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
            let norm_scale = name.ends_with("LayerNorm.weight");
            Ok(Tensor::from_fn(shape.to_vec(), |_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if norm_scale { 1.0 + 0.2 * u } else { 0.7 * u }
            }))
        }
    }
    build_bert(cfg, seq_len, pooling, &mut Random(seed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::eval::evaluate;

    pub(crate) fn tiny() -> BertConfig {
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

    fn feeds(ids: Vec<f32>, mask: Vec<f32>, seq: usize) -> Vec<(&'static str, Tensor)> {
        let b = ids.len() / seq;
        vec![
            ("input_ids", Tensor::new(vec![b, seq], ids).unwrap()),
            ("attention_mask", Tensor::new(vec![b, seq], mask).unwrap()),
        ]
    }

    #[test]
    fn padding_does_not_change_the_mean_pooled_embedding() {
        let g = random_bert(&tiny(), 6, Pooling::Mean, 1).unwrap();
        let short = evaluate(
            &g,
            &feeds(
                vec![2., 7., 9., 3., 0., 0.],
                vec![1., 1., 1., 1., 0., 0.],
                6,
            ),
        )
        .unwrap()
        .remove(0);
        let other_pad = evaluate(
            &g,
            &feeds(
                vec![2., 7., 9., 3., 11., 40.],
                vec![1., 1., 1., 1., 0., 0.],
                6,
            ),
        )
        .unwrap()
        .remove(0);
        assert_eq!(short.shape(), &[1, 16]);
        assert!(short.max_abs_diff(&other_pad) < 1e-5);
        let unmasked = evaluate(&g, &feeds(vec![2., 7., 9., 3., 11., 40.], vec![1.; 6], 6))
            .unwrap()
            .remove(0);
        assert!(short.max_abs_diff(&unmasked) > 1e-3);
    }

    #[test]
    fn configuration_and_weights_are_checked() {
        let mut cfg = tiny();
        cfg.num_attention_heads = 5;
        assert!(random_bert(&cfg, 6, Pooling::Mean, 1).is_err());
        assert!(random_bert(&tiny(), 13, Pooling::Cls, 1).is_err());
        let mut empty: HashMap<String, Tensor> = HashMap::new();
        let e = build_bert(&tiny(), 4, Pooling::Mean, &mut empty).unwrap_err();
        assert!(
            e.to_string().contains("embeddings.word_embeddings.weight"),
            "{e}"
        );
    }
}
