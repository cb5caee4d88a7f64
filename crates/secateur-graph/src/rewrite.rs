//! Rewrites of decomposed patterns into the op they spell, applied at import. Exporters before
//! ONNX opset 17 write a layer normalisation as `ReduceMean → Sub → Pow 2 → ReduceMean → Add ε
//! → Sqrt → Div` (then `Mul γ`, `Add β`); [`Graph::fuse_layer_norms`] turns each such chain
//! into one [`LayerNorm`], so the runtime, the cost model and pruning see what it is.
//! SiLU, which exporters write as `Mul(x, Sigmoid(x))`, becomes one element-wise function
//! ([`Graph::fuse_silu`]), so that it fuses into the layer before it like any activation. A
//! channel shuffle (`Reshape [N, g, C/g, H, W] → Transpose (0, 2, 1, 3, 4) → Reshape
//! [N, C, H, W]`, ShuffleNet) becomes one `Gather` of the channels in their shuffled order
//! ([`Graph::fuse_channel_shuffles`]): a permutation the runtime runs in any layout.

use crate::graph::Graph;
use crate::ops::{BinaryFn, LayerNorm, Op, Pointwise, ReduceKind};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A matched decomposed layer normalisation.
struct Chain {
    /// Nodes replaced, the last one producing the output.
    nodes: Vec<usize>,
    x: String,
    axis: usize,
    epsilon: f32,
    scale: Option<String>,
    bias: Option<String>,
    output: String,
}

impl Graph {
    /// The single-element constant `name` holds, if it is one.
    fn scalar_const(&self, name: &str) -> Option<f32> {
        self.initializers
            .get(name)
            .filter(|t| t.len() == 1)
            .map(|t| t.data()[0])
    }

    /// The producing node of `value` if it is `want` and `value` has no other reader than
    /// `readers` allows.
    fn sole_producer(&self, value: &str, readers: usize) -> Option<usize> {
        let p = self.producer(value)?;
        (self.consumers(value).len() == readers && !self.outputs.iter().any(|o| o == value))
            .then_some(p)
    }

    fn binary_of(&self, ni: usize) -> Option<BinaryFn> {
        match &self.nodes[ni].op {
            Op::Binary(b) => Some(b.f),
            _ => None,
        }
    }

    /// The mean over trailing axes from `axis` on (kept as size 1) that node `ni` computes.
    fn trailing_mean(&self, ni: usize, rank: usize) -> Option<usize> {
        let Op::Reduce(r) = &self.nodes[ni].op else {
            return None;
        };
        let first = *r.axes.first()?;
        let trailing = r.axes == (first..rank).collect::<Vec<_>>();
        (r.kind == ReduceKind::Mean && r.keep_dims && trailing && first > 0).then_some(first)
    }

    /// Matches the chain ending in the `Div` node `div`.
    fn match_layer_norm(&self, div: usize, shapes: &HashMap<String, Shape>) -> Option<Chain> {
        if self.binary_of(div)? != BinaryFn::Div {
            return None;
        }
        let n = &self.nodes[div];
        let (d, s) = (&n.inputs[0], &n.inputs[1]);
        // d = x - mean(x)
        let sub = self.sole_producer(d, 2)?;
        if self.binary_of(sub)? != BinaryFn::Sub {
            return None;
        }
        let (x, m) = (&self.nodes[sub].inputs[0], &self.nodes[sub].inputs[1]);
        let rank = shapes.get(x)?.rank();
        let mean = self.sole_producer(m, 1)?;
        let axis = self.trailing_mean(mean, rank)?;
        if &self.nodes[mean].inputs[0] != x {
            return None;
        }
        // s = sqrt(mean(d²) + ε)
        let sqrt = self.sole_producer(s, 1)?;
        if !matches!(&self.nodes[sqrt].op, Op::Unary(u) if u.f == Pointwise::Sqrt) {
            return None;
        }
        let add_eps = self.sole_producer(&self.nodes[sqrt].inputs[0], 1)?;
        if self.binary_of(add_eps)? != BinaryFn::Add {
            return None;
        }
        let ins = &self.nodes[add_eps].inputs;
        let (v, epsilon) = match (self.scalar_const(&ins[1]), self.scalar_const(&ins[0])) {
            (Some(e), _) => (&ins[0], e),
            (None, Some(e)) => (&ins[1], e),
            _ => return None,
        };
        let var = self.sole_producer(v, 1)?;
        if self.trailing_mean(var, rank)? != axis {
            return None;
        }
        let sq = self.sole_producer(&self.nodes[var].inputs[0], 1)?;
        let sq_node = &self.nodes[sq];
        let squares_d = match self.binary_of(sq)? {
            BinaryFn::Pow => {
                sq_node.inputs[0] == *d && self.scalar_const(&sq_node.inputs[1]) == Some(2.0)
            }
            BinaryFn::Mul => sq_node.inputs[0] == *d && sq_node.inputs[1] == *d,
            _ => false,
        };
        if !squares_d {
            return None;
        }
        let mut chain = Chain {
            nodes: vec![mean, sub, sq, var, add_eps, sqrt, div],
            x: x.clone(),
            axis,
            epsilon,
            scale: None,
            bias: None,
            output: n.outputs[0].clone(),
        };
        let normalised = Shape(shapes.get(x)?.0[axis..].to_vec());
        // optional affine: · γ, then + β, each a constant of the normalised axes' shape
        for (f, slot) in [(BinaryFn::Mul, 0usize), (BinaryFn::Add, 1)] {
            let Some(next) = self.sole_reader_of(&chain.output) else {
                break;
            };
            if self.binary_of(next) != Some(f) {
                break;
            }
            let other = self.nodes[next]
                .inputs
                .iter()
                .find(|i| **i != chain.output)?
                .clone();
            let fits = self
                .initializers
                .get(&other)
                .is_some_and(|t| Shape::known(t.shape()) == normalised);
            if !fits || (slot == 0 && chain.scale.is_some()) {
                break;
            }
            if slot == 0 {
                chain.scale = Some(other);
            } else {
                chain.bias = Some(other);
            }
            chain.nodes.push(next);
            chain.output = self.nodes[next].outputs[0].clone();
        }
        Some(chain)
    }

    fn sole_reader_of(&self, value: &str) -> Option<usize> {
        let c = self.consumers(value);
        (c.len() == 1 && !self.outputs.iter().any(|o| o == value)).then(|| c[0])
    }

    /// Replaces every decomposed layer normalisation by one `LayerNorm` node; returns how
    /// many were fused.
    pub fn fuse_layer_norms(&mut self) -> crate::error::Result<usize> {
        let mut fused = 0;
        loop {
            let shapes = self.infer_shapes()?;
            let Some(chain) = (0..self.nodes.len()).find_map(|i| self.match_layer_norm(i, &shapes))
            else {
                return Ok(fused);
            };
            let last = *chain.nodes.last().expect("a chain has nodes");
            let name = self.nodes[last].name.clone();
            let normalised: Vec<usize> = shapes[&chain.x].resolve(1)[chain.axis..].to_vec();
            let scale = chain.scale.clone().unwrap_or_else(|| {
                let n = format!("{name}.scale");
                self.add_initializer(n.clone(), Tensor::full(normalised.clone(), 1.0));
                n
            });
            let mut inputs = vec![chain.x.clone(), scale];
            inputs.extend(chain.bias.clone());
            let node = crate::graph::Node {
                name,
                op: Op::LayerNorm(LayerNorm {
                    axis: chain.axis as i64,
                    epsilon: chain.epsilon,
                }),
                inputs,
                outputs: vec![chain.output.clone()],
            };
            // the fused node takes the place of the chain's last node
            self.nodes[last] = node;
            let mut drop: Vec<usize> = chain.nodes[..chain.nodes.len() - 1].to_vec();
            drop.sort_unstable();
            for i in drop.into_iter().rev() {
                self.nodes.remove(i);
            }
            self.drop_unused_initializers();
            fused += 1;
        }
    }
}

impl Graph {
    /// Replaces every `Mul(x, Sigmoid(x))` whose sigmoid has no other reader by one
    /// `Unary(Silu)`; returns how many were fused.
    pub fn fuse_silu(&mut self) -> usize {
        let mut fused = 0;
        let mut i = 0;
        while i < self.nodes.len() {
            let Some(sig) = self.silu_sigmoid(i) else {
                i += 1;
                continue;
            };
            let x = self.nodes[sig].inputs[0].clone();
            let mul = &mut self.nodes[i];
            mul.op = Op::Unary(crate::ops::Unary { f: Pointwise::Silu });
            mul.inputs = vec![x];
            self.nodes.remove(sig);
            fused += 1;
            i = i.min(sig);
        }
        fused
    }

    /// Replaces every exact GELU spelled out in elementary ops (Div, Erf, Add, Mul, Mul: how
    /// the TorchScript exporter writes `nn.GELU`) by one `Unary(Gelu)`, which the runtime
    /// fuses into the layer before it; returns how many were fused.
    pub fn fuse_gelu(&mut self) -> usize {
        let mut fused = 0;
        let mut i = 0;
        while i < self.nodes.len() {
            let Some((x, chain)) = self.match_gelu(i) else {
                i += 1;
                continue;
            };
            let last = &mut self.nodes[i];
            last.op = Op::Unary(crate::ops::Unary {
                f: Pointwise::Gelu { tanh: false },
            });
            last.inputs = vec![x];
            let mut drop = chain;
            drop.sort_unstable();
            let before = drop.iter().filter(|&&d| d < i).count();
            for d in drop.into_iter().rev() {
                self.nodes.remove(d);
            }
            i -= before;
            fused += 1;
        }
        self.drop_unused_initializers();
        fused
    }

    /// Replaces every channel shuffle by a `Gather` along axis 1 at the shuffled channel
    /// order; returns how many were replaced.
    pub fn fuse_channel_shuffles(&mut self) -> crate::error::Result<usize> {
        let mut fused = 0;
        loop {
            let shapes = self.infer_shapes()?;
            let Some((r1, t, r2, perm)) =
                (0..self.nodes.len()).find_map(|i| self.match_channel_shuffle(i, &shapes))
            else {
                return Ok(fused);
            };
            let x = self.nodes[r1].inputs[0].clone();
            let name = self.nodes[r2].name.clone();
            let indices = self.fresh_initializer_name(&format!("{name}.channel_order"));
            let order = Tensor::new(vec![perm.len()], perm.iter().map(|&p| p as f32).collect())
                .map_err(|e| crate::error::GraphError::Invalid(e.to_string()))?;
            self.add_initializer(indices.clone(), order);
            self.integer_constants.insert(indices.clone());
            let out = self.nodes[r2].outputs.clone();
            self.nodes[r2] = crate::graph::Node {
                name,
                op: Op::Gather(crate::ops::Gather { axis: 1 }),
                inputs: vec![x, indices],
                outputs: out,
            };
            let mut drop = [r1, t];
            drop.sort_unstable();
            for i in drop.into_iter().rev() {
                self.nodes.remove(i);
            }
            fused += 1;
        }
    }

    /// The reshape, transpose and reshape of a channel shuffle ending at node `r2`, and the
    /// input channel each output channel reads.
    fn match_channel_shuffle(
        &self,
        r2: usize,
        shapes: &HashMap<String, Shape>,
    ) -> Option<(usize, usize, usize, Vec<usize>)> {
        if !matches!(self.nodes[r2].op, Op::Reshape(_)) {
            return None;
        }
        let t = self.sole_producer(&self.nodes[r2].inputs[0], 1)?;
        let Op::Transpose(tr) = &self.nodes[t].op else {
            return None;
        };
        let r1 = self.sole_producer(&self.nodes[t].inputs[0], 1)?;
        if !matches!(self.nodes[r1].op, Op::Reshape(_)) || tr.perm != [0, 2, 1, 3, 4] {
            return None;
        }
        let x = shapes.get(&self.nodes[r1].inputs[0])?;
        let mid = shapes.get(&self.nodes[r1].outputs[0])?;
        let out = shapes.get(&self.nodes[r2].outputs[0])?;
        let (xd, md) = (x.dims(), mid.dims());
        if x != out || xd.len() != 4 || md.len() != 5 || md[0] != xd[0] || md[3..] != xd[2..] {
            return None;
        }
        let (c, g, per) = (xd[1].known()?, md[1].known()?, md[2].known()?);
        if g * per != c {
            return None;
        }
        let perm = (0..c).map(|o| (o % g) * per + o / g).collect();
        Some((r1, t, r2, perm))
    }

    /// The sigmoid node of a `Mul(x, Sigmoid(x))` at node `mul`, if it is one.
    /// The value of a one-element initializer.
    fn scalar(&self, value: &str) -> Option<f32> {
        self.initializers
            .get(value)
            .filter(|t| t.len() == 1)
            .map(|t| t.data()[0])
    }

    /// For a binary node with one scalar-constant operand: the other operand and the scalar.
    fn with_scalar(&self, ni: usize, f: BinaryFn) -> Option<(String, f32)> {
        if self.binary_of(ni)? != f {
            return None;
        }
        let ins = &self.nodes[ni].inputs;
        (0..2).find_map(|k| Some((ins[1 - k].clone(), self.scalar(&ins[k])?)))
    }

    /// The exact GELU `x·½(1 + erf(x/√2))` ending at node `last`, as exporters spell it
    /// (`Div(x, √2)` or `Mul(x, 1/√2)`, `Erf`, `Add 1`, then `Mul x` and `Mul ½` in either
    /// order): the input `x` and the chain's other nodes.
    fn match_gelu(&self, last: usize) -> Option<(String, Vec<usize>)> {
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs();
        let erf_chain = |v: &str| -> Option<(String, Vec<usize>)> {
            let add = self.sole_producer(v, 1)?;
            let (e, one) = self.with_scalar(add, BinaryFn::Add)?;
            let erf = self.sole_producer(&e, 1)?;
            if !close(one, 1.0)
                || !matches!(&self.nodes[erf].op, Op::Unary(u) if u.f == Pointwise::Erf)
            {
                return None;
            }
            let scaled = self.sole_producer(&self.nodes[erf].inputs[0], 1)?;
            let x = match (
                self.with_scalar(scaled, BinaryFn::Div),
                self.with_scalar(scaled, BinaryFn::Mul),
            ) {
                (Some((x, c)), _) if close(c, std::f32::consts::SQRT_2) => x,
                (_, Some((x, c))) if close(c, std::f32::consts::FRAC_1_SQRT_2) => x,
                _ => return None,
            };
            Some((x, vec![scaled, erf, add]))
        };
        // Mul(Mul(x, 1 + erf), ½) or Mul(Mul(x, ½), 1 + erf)
        if let Some((inner, half)) = self.with_scalar(last, BinaryFn::Mul)
            && close(half, 0.5)
        {
            let m = self.sole_producer(&inner, 1)?;
            if self.binary_of(m)? != BinaryFn::Mul {
                return None;
            }
            let ins = self.nodes[m].inputs.clone();
            return (0..2).find_map(|k| {
                let (x, mut chain) = erf_chain(&ins[k])?;
                (ins[1 - k] == x).then(|| {
                    chain.push(m);
                    (x, chain)
                })
            });
        }
        if self.binary_of(last)? != BinaryFn::Mul {
            return None;
        }
        let ins = self.nodes[last].inputs.clone();
        (0..2).find_map(|k| {
            let (x, mut chain) = erf_chain(&ins[k])?;
            let h = self.sole_producer(&ins[1 - k], 1)?;
            let (hx, half) = self.with_scalar(h, BinaryFn::Mul)?;
            (hx == x && close(half, 0.5)).then(|| {
                chain.push(h);
                (x, chain)
            })
        })
    }

    fn silu_sigmoid(&self, mul: usize) -> Option<usize> {
        if self.binary_of(mul)? != BinaryFn::Mul {
            return None;
        }
        let ins = &self.nodes[mul].inputs;
        (0..2).find_map(|k| {
            let s = self.sole_producer(&ins[k], 1)?;
            let sig = matches!(&self.nodes[s].op, Op::Unary(u) if u.f == Pointwise::Sigmoid);
            (sig && self.nodes[s].inputs[0] == ins[1 - k]).then_some(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::eval::evaluate;
    use crate::graph::Graph;
    use crate::ops::{Binary, BinaryFn, Op, Pointwise, Reduce, ReduceKind, Unary};
    use crate::shape::Shape;
    use crate::tensor::Tensor;

    /// `x [N, 3, 4]` → the opset-14 spelling of `LayerNorm(x) · γ + β` over the last axis.
    fn decomposed(squares: BinaryFn) -> Graph {
        let mut g = Graph::new("ln");
        g.add_input("x", Shape::batched(&[3, 4]));
        let mean = || {
            Op::Reduce(Reduce {
                kind: ReduceKind::Mean,
                axes: vec![2],
                keep_dims: true,
            })
        };
        let bin = |f| Op::Binary(Binary { f });
        g.add_initializer("two", Tensor::scalar(2.0));
        g.add_initializer("eps", Tensor::scalar(1e-5));
        g.add_initializer("gamma", Tensor::new(vec![4], vec![1., 2., 3., 4.]).unwrap());
        g.add_initializer(
            "beta",
            Tensor::new(vec![4], vec![0.5, 0., -0.5, 1.]).unwrap(),
        );
        g.add_node("m", mean(), &["x"], &["m"]);
        g.add_node("d", bin(BinaryFn::Sub), &["x", "m"], &["d"]);
        if squares == BinaryFn::Pow {
            g.add_node("p", bin(BinaryFn::Pow), &["d", "two"], &["p"]);
        } else {
            g.add_node("p", bin(BinaryFn::Mul), &["d", "d"], &["p"]);
        }
        g.add_node("v", mean(), &["p"], &["v"]);
        g.add_node("ve", bin(BinaryFn::Add), &["v", "eps"], &["ve"]);
        let sqrt = Op::Unary(Unary { f: Pointwise::Sqrt });
        g.add_node("s", sqrt, &["ve"], &["s"]);
        g.add_node("n", bin(BinaryFn::Div), &["d", "s"], &["n"]);
        g.add_node("g", bin(BinaryFn::Mul), &["n", "gamma"], &["gn"]);
        g.add_node("b", bin(BinaryFn::Add), &["gn", "beta"], &["y"]);
        g.outputs = vec!["y".into()];
        g
    }

    #[test]
    fn decomposed_layer_norms_become_one_op_with_the_same_outputs() {
        for squares in [BinaryFn::Pow, BinaryFn::Mul] {
            let g = decomposed(squares);
            let mut fused = g.clone();
            assert_eq!(fused.fuse_layer_norms().unwrap(), 1);
            fused.check().unwrap();
            assert_eq!(fused.nodes.len(), 1);
            assert!(matches!(&fused.nodes[0].op, Op::LayerNorm(ln) if ln.axis == 2));
            assert_eq!(fused.nodes[0].inputs, ["x", "gamma", "beta"]);
            let x = Tensor::from_fn(vec![2, 3, 4], |i| ((i * 7) % 11) as f32 - 5.0);
            let a = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
            let b = evaluate(&fused, &[("x", x)]).unwrap().remove(0);
            assert!(a.max_abs_diff(&b) < 1e-5, "{squares:?}");
        }
    }

    #[test]
    fn a_chain_whose_values_are_read_elsewhere_stays() {
        let mut g = decomposed(BinaryFn::Pow);
        // the variance is also a graph output: fusing would lose it
        g.outputs.push("v".into());
        assert_eq!(g.fuse_layer_norms().unwrap(), 0);
        assert_eq!(g.nodes.len(), 9);
    }

    #[test]
    fn x_times_its_sigmoid_becomes_one_silu_unless_the_sigmoid_is_read_elsewhere() {
        let build = |swap: bool, extra_reader: bool| {
            let mut g = Graph::new("silu");
            g.add_input("x", Shape::batched(&[5]));
            g.add_node("s", Op::Unary(Unary::SIGMOID), &["x"], &["s"]);
            let ins: [&str; 2] = if swap { ["x", "s"] } else { ["s", "x"] };
            g.add_node("m", Op::Binary(Binary { f: BinaryFn::Mul }), &ins, &["y"]);
            g.outputs = vec!["y".into()];
            if extra_reader {
                g.outputs.push("s".into());
            }
            g
        };
        let x = Tensor::from_fn(vec![2, 5], |i| i as f32 - 4.5);
        for swap in [false, true] {
            let g = build(swap, false);
            let mut fused = g.clone();
            assert_eq!(fused.fuse_silu(), 1);
            fused.check().unwrap();
            assert_eq!(fused.nodes.len(), 1);
            assert!(matches!(&fused.nodes[0].op, Op::Unary(u) if u.f == Pointwise::Silu));
            let a = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
            let b = evaluate(&fused, &[("x", x.clone())]).unwrap().remove(0);
            assert!(a.max_abs_diff(&b) < 1e-6);
        }
        let mut kept = build(false, true);
        assert_eq!(kept.fuse_silu(), 0);
    }

    /// TorchScript's spelling of `nn.GELU` (both orders of the two final products) becomes one
    /// `Gelu` node with the same outputs.
    #[test]
    fn exact_gelu_chains_fuse_into_one_node() {
        for half_first in [false, true] {
            let mut g = Graph::new("gelu");
            g.add_input("x", Shape::batched(&[5]));
            for (n, v) in [
                ("sqrt2", std::f32::consts::SQRT_2),
                ("one", 1.0),
                ("half", 0.5),
            ] {
                g.add_initializer(n, Tensor::scalar(v));
            }
            let bin = |f| Op::Binary(Binary { f });
            g.add_node("div", bin(BinaryFn::Div), &["x", "sqrt2"], &["d"]);
            g.add_node(
                "erf",
                Op::Unary(Unary { f: Pointwise::Erf }),
                &["d"],
                &["e"],
            );
            g.add_node("add", bin(BinaryFn::Add), &["e", "one"], &["a"]);
            if half_first {
                g.add_node("h", bin(BinaryFn::Mul), &["x", "half"], &["hx"]);
                g.add_node("m", bin(BinaryFn::Mul), &["hx", "a"], &["y"]);
            } else {
                g.add_node("m", bin(BinaryFn::Mul), &["x", "a"], &["xa"]);
                g.add_node("h", bin(BinaryFn::Mul), &["xa", "half"], &["y"]);
            }
            g.outputs.push("y".into());
            let x = Tensor::new(vec![1, 5], vec![-3.0, -0.5, 0.0, 0.7, 2.5]).unwrap();
            let want = evaluate(&g, &[("x", x.clone())]).unwrap().remove(0);
            let mut fused = g.clone();
            assert_eq!(fused.fuse_gelu(), 1);
            assert_eq!(fused.nodes.len(), 1);
            assert!(fused.initializers.is_empty());
            let got = evaluate(&fused, &[("x", x)]).unwrap().remove(0);
            assert!(got.max_abs_diff(&want) < 1e-6);
        }
    }
}
