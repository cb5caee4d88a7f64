//! Attention written with heads folded into the batch axis, rewritten at import into the layout
//! where each head is an axis of its own, so that dependency analysis sees heads (and pruning
//! can remove them) and nothing else changes numerically. PyTorch's `nn.MultiheadAttention`
//! (torchvision's ViT, both exporters) computes Q, K and V with one packed projection and
//! splits it through `Reshape [.., 3, E] → Unsqueeze → Transpose → Squeeze → Gather q|k|v`,
//! then views each as `[L, N·H, d]` — heads merged with the batch, which has no fixed size —
//! and the heads' outputs as `[L·N, E]` before the output projection (a `Gemm`). Four rewrites,
//! each an exact identity:
//! - the packed projection becomes three projections, one per Q, K, V (columns of the weight
//!   and bias), so each feeds its own heads;
//! - `Reshape [L, N·H, d] → Transpose (1, 0, 2) → Reshape [N, H, L, d]` becomes
//!   `Reshape [L, N, H, d] → Transpose (1, 2, 0, 3)`;
//! - `Reshape [N·H, A, B] → Transpose (0, 2, 1) → Reshape [N, H, B, A]` (the keys transposed
//!   through the merged axis) becomes `Transpose (0, 1, 3, 2)`;
//! - `Reshape [L·N, E] → Gemm → Reshape [L, N, E']` becomes `Reshape [L, N, E] → MatMul →
//!   Add bias`; the same rewrite applies to `[N, S, E]` flattened to `[N·S, E]` around a
//!   `Gemm`, as GPT-2's `Conv1D` layers (its Q/K/V, output and MLP projections) are exported,
//!   so that their features link to the heads and to the MLP's neurons.
//!
//! The batch `N` is symbolic, or a fixed size where the exporter fixed it (PyTorch's dynamo
//! exporter by default); the keys' rewrite also serves its decomposition of
//! `scaled_dot_product_attention`, which transposes the keys through `[N·H, A, B]` too.

use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::ops::{Binary, MatMul, Op, Reshape, Transpose};
use crate::shape::{Dim, Shape};
use std::collections::HashMap;

type Shapes = HashMap<String, Shape>;

impl Graph {
    /// Applies the rewrites of this module until none matches; returns how many were made.
    pub fn canonicalize_attention(&mut self) -> Result<usize> {
        let mut made = 0;
        loop {
            let shapes = self.infer_shapes()?;
            let changed = self.unpack_projection(&shapes)?
                || self.unmerge_heads(&shapes)
                || self.unmerge_transposed_keys(&shapes)
                || self.unmerge_output_projection(&shapes)?;
            if !changed {
                if made > 0 {
                    self.drop_unused_initializers();
                }
                return Ok(made);
            }
            made += 1;
        }
    }

    /// The only reader of `value` (it must not be a graph output), and that it is `want`.
    fn only_reader(&self, value: &str, want: fn(&Op) -> bool) -> Option<usize> {
        let readers = self.consumers(value);
        let out = self.outputs.iter().any(|o| o == value);
        match readers.as_slice() {
            [r] if !out && want(&self.nodes[*r].op) => Some(*r),
            _ => None,
        }
    }

    fn dims<'a>(shapes: &'a Shapes, value: &str) -> Option<&'a [Dim]> {
        shapes.get(value).map(Shape::dims)
    }

    /// The size of a batch axis `n` (symbolic or fixed) with `k` other indices merged into it.
    fn merged_with(n: Dim, k: usize) -> Option<Dim> {
        match n {
            Dim::Batch => Some(Dim::batch_times(k)),
            Dim::Known(b) => b.checked_mul(k).map(Dim::Known),
            Dim::BatchTimes(_) => None,
        }
    }

    /// Splits one packed Q/K/V projection; returns whether one was split.
    fn unpack_projection(&mut self, shapes: &Shapes) -> Result<bool> {
        let Some(m) = (0..self.nodes.len()).find_map(|i| {
            self.match_packed(i, shapes)
                .or_else(|| self.match_sliced(i, shapes))
        }) else {
            return Ok(false);
        };
        let (x, weight) = (
            self.nodes[m.matmul].inputs[0].clone(),
            self.nodes[m.matmul].inputs[1].clone(),
        );
        let w = self.initializers[&weight].clone();
        let b = m.bias.as_ref().map(|(_, v)| self.initializers[v].clone());
        let mut replacement = Vec::new();
        for (part, (_, output)) in m.parts.iter().enumerate() {
            let cols: Vec<usize> = m.columns[part].clone().collect();
            let label = match m.parts.len() {
                3 => ["q", "k", "v"][part].to_string(),
                _ => format!("part{part}"),
            };
            let name = format!("{}.{label}", self.nodes[m.matmul].name);
            let w_name = self.fresh_initializer_name(&format!("{weight}.{label}"));
            self.add_initializer(w_name.clone(), w.select_axis(1, &cols)?);
            match &b {
                Some(bias) => {
                    let b_name = self.fresh_initializer_name(&format!("{w_name}.bias"));
                    self.add_initializer(b_name.clone(), bias.select_axis(0, &cols)?);
                    let product = format!("{output}.projection");
                    replacement.push(node(
                        &name,
                        Op::MatMul(MatMul),
                        vec![x.clone(), w_name],
                        &product,
                    ));
                    replacement.push(node(
                        &format!("{name}.bias"),
                        Op::Binary(Binary::ADD),
                        vec![product, b_name],
                        output,
                    ));
                }
                None => replacement.push(node(
                    &name,
                    Op::MatMul(MatMul),
                    vec![x.clone(), w_name],
                    output,
                )),
            }
        }
        let at = m.matmul;
        let mut drop = m.chain.clone();
        drop.sort_unstable();
        for &i in drop.iter().rev() {
            self.nodes.remove(i);
        }
        let at = at - drop.iter().filter(|&&i| i < at).count();
        for (k, n) in replacement.into_iter().enumerate() {
            self.nodes.insert(at + k, n);
        }
        Ok(true)
    }

    /// A packed projection read by `Reshape [.., 3, E] → Reshape [1, .., 3, E] → Transpose →
    /// Reshape [3, .., E] → 3 × (Slice i → Reshape [.., E])`, from the first reshape `r1`.
    fn match_packed(&self, r1: usize, shapes: &Shapes) -> Option<Packed> {
        let is_reshape = |op: &Op| matches!(op, Op::Reshape(_));
        if !is_reshape(&self.nodes[r1].op) {
            return None;
        }
        let p = &self.nodes[r1].inputs[0];
        let (pd, r1d) = (
            Self::dims(shapes, p)?,
            Self::dims(shapes, &self.nodes[r1].outputs[0])?,
        );
        let a = pd.len() - 1;
        let width = r1d.get(a + 1)?.known()?;
        if r1d.len() != a + 2
            || r1d[..a] != pd[..a]
            || r1d[a] != Dim::Known(3)
            || pd[a] != Dim::Known(3 * width)
        {
            return None;
        }
        // the producer: MatMul with a constant weight, then maybe Add of a constant bias
        let producer = self.producer(p)?;
        let (matmul, bias) = match &self.nodes[producer].op {
            Op::MatMul(_) => (producer, None),
            Op::Binary(b) if *b == Binary::ADD => {
                let ins = &self.nodes[producer].inputs;
                let k = (0..2).find(|&k| {
                    self.initializers
                        .get(&ins[k])
                        .is_some_and(|t| t.shape() == [3 * width])
                })?;
                let mm = self.producer(&ins[1 - k])?;
                if self.consumers(&ins[1 - k]).len() != 1 {
                    return None;
                }
                (mm, Some((producer, ins[k].clone())))
            }
            _ => return None,
        };
        if !matches!(self.nodes[matmul].op, Op::MatMul(_))
            || self.consumers(p).len() != 1
            || !self
                .initializers
                .get(&self.nodes[matmul].inputs[1])
                .is_some_and(|t| t.shape().len() == 2 && t.shape()[1] == 3 * width)
        {
            return None;
        }
        let u = self.only_reader(&self.nodes[r1].outputs[0], is_reshape)?;
        let ud = Self::dims(shapes, &self.nodes[u].outputs[0])?;
        if ud.len() != a + 3 || ud[0] != Dim::Known(1) || ud[1..] != *r1d {
            return None;
        }
        let t = self.only_reader(&self.nodes[u].outputs[0], |op| {
            matches!(op, Op::Transpose(_))
        })?;
        let Op::Transpose(tr) = &self.nodes[t].op else {
            return None;
        };
        let want: Vec<usize> = std::iter::once(a + 1)
            .chain(1..=a)
            .chain([0, a + 2])
            .collect();
        if tr.perm != want {
            return None;
        }
        let s = self.only_reader(&self.nodes[t].outputs[0], is_reshape)?;
        let sd = Self::dims(shapes, &self.nodes[s].outputs[0])?;
        let expect: Vec<Dim> = std::iter::once(Dim::Known(3))
            .chain(pd[..a].iter().copied())
            .chain([Dim::Known(width)])
            .collect();
        if sd != expect.as_slice() || self.outputs.contains(&self.nodes[s].outputs[0]) {
            return None;
        }
        let mut parts: Vec<Option<(usize, String)>> = vec![None, None, None];
        let mut chain = vec![matmul, r1, u, t, s];
        chain.extend(bias.as_ref().map(|(n, _)| *n));
        for slice in self.consumers(&self.nodes[s].outputs[0]) {
            let Op::Slice(sl) = &self.nodes[slice].op else {
                return None;
            };
            let i = *sl.starts.first()?;
            let one_step = sl.steps.iter().all(|&st| st == 1);
            if sl.axes != [0]
                || !(0..3).contains(&i)
                || sl.ends.first() != Some(&(i + 1))
                || !one_step
            {
                return None;
            }
            let squeeze = self.only_reader(&self.nodes[slice].outputs[0], is_reshape)?;
            let qd = Self::dims(shapes, &self.nodes[squeeze].outputs[0])?;
            if qd != &expect[1..] || parts[i as usize].is_some() {
                return None;
            }
            parts[i as usize] = Some((squeeze, self.nodes[squeeze].outputs[0].clone()));
            chain.extend([slice, squeeze]);
        }
        let parts: Vec<(usize, String)> = parts.into_iter().collect::<Option<_>>()?;
        Some(Packed {
            matmul,
            bias,
            columns: (0..3).map(|i| i * width..(i + 1) * width).collect(),
            parts,
            chain,
        })
    }

    /// A projection (`MatMul` by a constant `[K, P]` weight, maybe then `Add` of a constant
    /// `[P]` bias) read only by slices of its last axis that cut it into contiguous ranges
    /// covering all `P` columns, from the `MatMul` node: GPT-2's `c_attn` split into Q, K and
    /// V (an ONNX `Split` imports as slices), or a gate and an up projection packed in one.
    fn match_sliced(&self, matmul: usize, shapes: &Shapes) -> Option<Packed> {
        if !matches!(self.nodes[matmul].op, Op::MatMul(_)) {
            return None;
        }
        let &[_, p] = self
            .initializers
            .get(self.nodes[matmul].inputs.get(1)?)?
            .shape()
        else {
            return None;
        };
        let mut out = self.nodes[matmul].outputs[0].clone();
        let mut chain = vec![matmul];
        let bias = self.constant_bias_of(&out, p);
        if let Some((add, _)) = &bias {
            out = self.nodes[*add].outputs[0].clone();
            chain.push(*add);
        }
        let last = Self::dims(shapes, &out)?.len().checked_sub(1)?;
        let mut cuts = Vec::new();
        for s in self.consumers(&out) {
            let Op::Slice(sl) = &self.nodes[s].op else {
                return None;
            };
            let whole: Vec<usize> = (0..last).map(|_| 1).chain([p]).collect();
            let (start, step, len) = *sl.resolved(&whole).ok()?.get(last)?;
            if sl.axes != [last] || step != 1 || len == 0 {
                return None;
            }
            let start = start as usize;
            cuts.push((start..start + len, s, self.nodes[s].outputs[0].clone()));
        }
        cuts.sort_by_key(|(r, _, _)| r.start);
        let contiguous = cuts.windows(2).all(|w| w[0].0.end == w[1].0.start);
        if cuts.len() < 2
            || !contiguous
            || cuts.first()?.0.start != 0
            || cuts.last()?.0.end != p
            || self.outputs.contains(&out)
        {
            return None;
        }
        chain.extend(cuts.iter().map(|(_, s, _)| *s));
        Some(Packed {
            matmul,
            bias,
            columns: cuts.iter().map(|(r, _, _)| r.clone()).collect(),
            parts: cuts.into_iter().map(|(_, s, o)| (s, o)).collect(),
            chain,
        })
    }

    /// The `Add` that is the only reader of `value` (not a graph output) and adds a constant
    /// vector of `width` values to it, with that constant's name.
    fn constant_bias_of(&self, value: &str, width: usize) -> Option<(usize, String)> {
        let add = self.only_reader(value, |op| matches!(op, Op::Binary(b) if *b == Binary::ADD))?;
        let other = self.nodes[add].inputs.iter().find(|v| *v != value)?;
        self.initializers
            .get(other)
            .is_some_and(|t| t.shape() == [width])
            .then(|| (add, other.clone()))
    }

    /// `Reshape [L, N·H, d] → Transpose (1, 0, 2) → Reshape [N, H, L, d]` from an input
    /// `[L, N, E]`; returns whether one was rewritten.
    fn unmerge_heads(&mut self, shapes: &Shapes) -> bool {
        let found = (0..self.nodes.len()).find_map(|ra| {
            let Op::Reshape(_) = &self.nodes[ra].op else {
                return None;
            };
            let xd = Self::dims(shapes, &self.nodes[ra].inputs[0])?;
            let md = Self::dims(shapes, &self.nodes[ra].outputs[0])?;
            let [l, n, e] = *xd else { return None };
            let [l2, nh, d] = *md else {
                return None;
            };
            let (e, d) = (e.known()?, d.known()?);
            let h = e.checked_div(d).filter(|h| h * d == e && *h >= 2)?;
            if l2 != l || l.known().is_none() || Some(nh) != Self::merged_with(n, h) {
                return None;
            }
            let t = self.only_reader(
                &self.nodes[ra].outputs[0],
                |op| matches!(op, Op::Transpose(t) if t.perm == [1, 0, 2]),
            )?;
            let rb =
                self.only_reader(&self.nodes[t].outputs[0], |op| matches!(op, Op::Reshape(_)))?;
            let od = Self::dims(shapes, &self.nodes[rb].outputs[0])?;
            (od == [n, Dim::Known(h), l, Dim::Known(d)]).then_some((ra, t, rb, h, d))
        });
        let Some((ra, t, rb, h, d)) = found else {
            return false;
        };
        self.nodes[ra].op = Op::Reshape(Reshape {
            shape: vec![0, 0, h as i64, d as i64],
            allowzero: false,
        });
        let out = self.nodes[rb].outputs.clone();
        self.nodes[t].op = Op::Transpose(Transpose {
            perm: vec![1, 2, 0, 3],
        });
        self.nodes[t].outputs = out;
        self.nodes.remove(rb);
        true
    }

    /// `Reshape [N·H, A, B] → Transpose (0, 2, 1) → Reshape [N, H, B, A]` from an input
    /// `[N, H, A, B]`; returns whether one was rewritten.
    fn unmerge_transposed_keys(&mut self, shapes: &Shapes) -> bool {
        let found = (0..self.nodes.len()).find_map(|ra| {
            let Op::Reshape(_) = &self.nodes[ra].op else {
                return None;
            };
            let xd = Self::dims(shapes, &self.nodes[ra].inputs[0])?;
            let md = Self::dims(shapes, &self.nodes[ra].outputs[0])?;
            let [n, h, a, b] = *xd else {
                return None;
            };
            let h = h.known()?;
            let merged = Self::merged_with(n, h)?;
            if *md != [merged, a, b] || a.known().is_none() || b.known().is_none() {
                return None;
            }
            let t = self.only_reader(
                &self.nodes[ra].outputs[0],
                |op| matches!(op, Op::Transpose(t) if t.perm == [0, 2, 1]),
            )?;
            let rb =
                self.only_reader(&self.nodes[t].outputs[0], |op| matches!(op, Op::Reshape(_)))?;
            let od = Self::dims(shapes, &self.nodes[rb].outputs[0])?;
            (*od == [n, Dim::Known(h), b, a]).then_some((ra, t, rb))
        });
        let Some((ra, t, rb)) = found else {
            return false;
        };
        let input = self.nodes[ra].inputs[0].clone();
        let out = self.nodes[rb].outputs.clone();
        self.nodes[t].op = Op::Transpose(Transpose {
            perm: vec![0, 1, 3, 2],
        });
        self.nodes[t].inputs = vec![input];
        self.nodes[t].outputs = out;
        self.nodes.remove(rb);
        self.nodes.remove(ra);
        true
    }

    /// `Reshape [A·B, E] → Gemm (constant weight) → Reshape [A, B, E']` from an input
    /// `[A, B, ..]` (one of `A`, `B` the batch or both known: `[L, N, ..]` in torchvision's ViT,
    /// `[N, S, ..]` in GPT-2's `Conv1D` layers); returns whether one was rewritten.
    fn unmerge_output_projection(&mut self, shapes: &Shapes) -> Result<bool> {
        let found = (0..self.nodes.len()).find_map(|r| {
            let Op::Reshape(_) = &self.nodes[r].op else {
                return None;
            };
            let xd = Self::dims(shapes, &self.nodes[r].inputs[0])?;
            let md = Self::dims(shapes, &self.nodes[r].outputs[0])?;
            let [a, b, feats @ ..] = xd else {
                return None;
            };
            let merged = match (a.known(), b.known()) {
                (Some(a), _) if a >= 2 => Self::merged_with(*b, a)?,
                (None, Some(b)) if b >= 2 => Self::merged_with(*a, b)?,
                _ => return None,
            };
            let e: usize = feats.iter().map(|d| d.known()).product::<Option<usize>>()?;
            if *md != [merged, Dim::Known(e)] {
                return None;
            }
            let g = self.only_reader(
                &self.nodes[r].outputs[0],
                |op| matches!(op, Op::Gemm(gm) if !gm.trans_a && gm.alpha == 1.0 && gm.beta == 1.0),
            )?;
            let w = self.initializers.get(self.nodes[g].inputs.get(1)?)?;
            if w.shape().len() != 2
                || self.nodes[g]
                    .inputs
                    .get(2)
                    .is_some_and(|c| !self.initializers.contains_key(c))
            {
                return None;
            }
            let r2 =
                self.only_reader(&self.nodes[g].outputs[0], |op| matches!(op, Op::Reshape(_)))?;
            let gd = Self::dims(shapes, &self.nodes[g].outputs[0])?;
            let od = Self::dims(shapes, &self.nodes[r2].outputs[0])?;
            (*od == [*a, *b, *gd.get(1)?]).then_some((r, g, r2, e))
        });
        let Some((r, g, r2, e)) = found else {
            return Ok(false);
        };
        let Op::Gemm(gemm) = self.nodes[g].op.clone() else {
            return Ok(false);
        };
        self.nodes[r].op = Op::Reshape(Reshape {
            shape: vec![0, 0, e as i64],
            allowzero: false,
        });
        let weight = self.nodes[g].inputs[1].clone();
        let w = &self.initializers[&weight];
        let w = if gemm.trans_b {
            w.transpose2()?
        } else {
            w.clone()
        };
        let w_name = self.fresh_initializer_name(&format!("{weight}.matmul"));
        self.add_initializer(w_name.clone(), w);
        let name = self.nodes[g].name.clone();
        let x = self.nodes[g].inputs[0].clone();
        let out = self.nodes[r2].outputs[0].clone();
        let bias = self.nodes[g].inputs.get(2).cloned();
        let mut replacement = Vec::new();
        match bias {
            Some(b) => {
                let product = format!("{out}.projection");
                replacement.push(node(&name, Op::MatMul(MatMul), vec![x, w_name], &product));
                replacement.push(node(
                    &format!("{name}.bias"),
                    Op::Binary(Binary::ADD),
                    vec![product, b],
                    &out,
                ));
            }
            None => replacement.push(node(&name, Op::MatMul(MatMul), vec![x, w_name], &out)),
        }
        self.nodes.remove(r2);
        self.nodes.remove(g);
        for (k, n) in replacement.into_iter().enumerate() {
            self.nodes.insert(g + k, n);
        }
        Ok(true)
    }
}

/// A matched packed Q/K/V projection.
struct Packed {
    matmul: usize,
    /// The bias node and initializer.
    bias: Option<(usize, String)>,
    /// The weight's columns each part takes (Q, K and V: `E` each).
    columns: Vec<std::ops::Range<usize>>,
    /// Per part (Q, K, V): the node that ends its pattern and its output value (which the
    /// part's projection produces after the rewrite).
    parts: Vec<(usize, String)>,
    /// Every node of the pattern (removed when it is rewritten).
    chain: Vec<usize>,
}

fn node(name: &str, op: Op, inputs: Vec<String>, output: &str) -> Node {
    Node {
        name: name.to_string(),
        op,
        inputs,
        outputs: vec![output.to_string()],
    }
}
