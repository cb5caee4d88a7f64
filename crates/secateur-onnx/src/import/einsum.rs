//! Import of `Einsum`: the equation is lowered at import to IR ops the rest of the stack already
//! knows, so pruning, cost and the runtime need nothing new. Operands are contracted pairwise,
//! left to right: subscripts only one operand has and nothing later needs are summed first
//! (`Reduce`), each operand is transposed to `[batch…, free…, contracted…]` (the right one to
//! `[batch…, contracted…, free…]`), grouped axes are merged by `Reshape`, one `MatMul` takes
//! the product (a weighted layer when the right operand is a constant matrix, as `x·W` is
//! written in attention and MLP blocks), and a final `Reshape`/`Transpose` restores the output
//! order. Ellipses broadcast from the right; implicit outputs follow ONNX (ellipsis axes, then
//! the subscripts used once, in ASCII order). Diagonals and traces (a subscript repeated within
//! one operand) are refused with an error naming the node.

use super::{Importer, node_err};
use crate::attrs::Attrs;
use crate::error::Result;
use crate::proto::NodeProto;
use secateur_graph::{
    BatchMatMul, Dim, Identity, MatMul, Op, OpSemantics, Reduce, ReduceKind, Reshape, Shape,
    Transpose,
};

/// A subscript: a letter's ASCII code, or `ELLIPSIS + j` for the `j`-th ellipsis axis counted
/// from the right (so that ellipses of different ranks broadcast).
type Label = u32;
const ELLIPSIS: Label = 1000;

/// The subscripts of every operand and of the output, one label per axis.
#[derive(Debug, PartialEq)]
struct Equation {
    operands: Vec<Vec<Label>>,
    output: Vec<Label>,
}

/// Parses `equation` for operands of the given ranks.
fn parse_equation(equation: &str, ranks: &[usize]) -> std::result::Result<Equation, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!(
            "equation '{equation}' has {} operand(s), the node has {} input(s)",
            terms.len(),
            ranks.len()
        ));
    }
    let mut operands = Vec::with_capacity(terms.len());
    let mut widest_ellipsis = 0;
    for (k, (term, &rank)) in terms.iter().zip(ranks).enumerate() {
        let (letters, ellipsis) = term_letters(term)?;
        let explicit = letters.iter().filter(|l| l.is_some()).count();
        let spread = match (ellipsis, rank.checked_sub(explicit)) {
            (_, None) => None,
            (false, Some(0)) => Some(0),
            (false, Some(_)) => None,
            (true, Some(n)) => Some(n),
        };
        let Some(spread) = spread else {
            return Err(format!(
                "operand {k} ('{term}') names {explicit} axes, the input has rank {rank}"
            ));
        };
        widest_ellipsis = widest_ellipsis.max(spread);
        let labels: Vec<Label> = letters
            .iter()
            .flat_map(|l| match l {
                Some(c) => vec![*c],
                None => (0..spread).rev().map(|j| ELLIPSIS + j as Label).collect(),
            })
            .collect();
        if let Some(c) = repeated(&labels) {
            return Err(format!(
                "subscript '{}' repeats within operand {k} ('{term}'): diagonals and traces are not supported",
                char::from_u32(c).unwrap_or('?')
            ));
        }
        operands.push(labels);
    }
    let ellipsis_labels: Vec<Label> = (0..widest_ellipsis)
        .rev()
        .map(|j| ELLIPSIS + j as Label)
        .collect();
    let output = match rhs {
        Some(r) => {
            let (letters, _) = term_letters(r)?;
            let out: Vec<Label> = letters
                .iter()
                .flat_map(|l| match l {
                    Some(c) => vec![*c],
                    None => ellipsis_labels.clone(),
                })
                .collect();
            if let Some(c) = repeated(&out) {
                return Err(format!(
                    "subscript '{}' repeats in the output",
                    char::from_u32(c).unwrap_or('?')
                ));
            }
            if let Some(c) = out.iter().find(|l| !operands.iter().any(|o| o.contains(l))) {
                return Err(format!(
                    "output subscript '{}' appears in no operand",
                    char::from_u32(*c).unwrap_or('?')
                ));
            }
            out
        }
        None => {
            let mut once: Vec<Label> = operands
                .iter()
                .flatten()
                .copied()
                .filter(|&l| l < ELLIPSIS)
                .filter(|l| operands.iter().flatten().filter(|m| *m == l).count() == 1)
                .collect();
            once.sort_unstable();
            ellipsis_labels.into_iter().chain(once).collect()
        }
    };
    Ok(Equation { operands, output })
}

/// The letters of one term (`None` where the ellipsis stands) and whether it has one.
fn term_letters(term: &str) -> std::result::Result<(Vec<Option<Label>>, bool), String> {
    let mut out = Vec::new();
    let mut ellipsis = false;
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("...") {
            if ellipsis {
                return Err(format!("term '{term}' has more than one ellipsis"));
            }
            ellipsis = true;
            out.push(None);
            rest = after;
        } else if c.is_ascii_alphabetic() {
            out.push(Some(c as Label));
            rest = &rest[1..];
        } else {
            return Err(format!(
                "term '{term}' holds '{c}': subscripts are letters and '...'"
            ));
        }
    }
    Ok((out, ellipsis))
}

fn repeated(labels: &[Label]) -> Option<Label> {
    labels
        .iter()
        .enumerate()
        .find(|(i, l)| labels[..*i].contains(l))
        .map(|(_, l)| *l)
}

/// Where a planned step reads a value from.
#[derive(Clone, Debug)]
enum Source {
    Input(usize),
    Step(usize),
}

/// One IR op of the lowering; `Product` becomes a weighted `MatMul` or a `BatchMatMul` once it
/// is known whether its right operand is a constant matrix.
#[derive(Debug)]
enum StepOp {
    Op(Op),
    Product,
}

/// A value during planning: where it comes from, its subscripts and its shape.
#[derive(Clone, Debug)]
struct Value {
    source: Source,
    labels: Vec<Label>,
    shape: Shape,
}

type PlanResult<T> = std::result::Result<T, String>;

/// The ops computing an equation, in order; the last one writes the node's output.
#[derive(Debug, Default)]
struct Plan {
    steps: Vec<(StepOp, Vec<Source>)>,
}

impl Plan {
    /// Appends `op` reading `inputs`; the value it computes, named by `labels`.
    fn push(&mut self, op: StepOp, inputs: &[&Value], labels: Vec<Label>) -> PlanResult<Value> {
        let shapes: Vec<Shape> = inputs.iter().map(|v| v.shape.clone()).collect();
        let inferred = match &op {
            StepOp::Op(op) => op.sem().infer(&shapes),
            StepOp::Product => BatchMatMul.infer(&shapes),
        };
        let shape = inferred.map_err(|e| e.to_string())?.remove(0);
        let sources = inputs.iter().map(|v| v.source.clone()).collect();
        self.steps.push((op, sources));
        Ok(Value {
            source: Source::Step(self.steps.len() - 1),
            labels,
            shape,
        })
    }

    /// Sums the axes of `v` whose labels are not in `keep`.
    fn sum_out(&mut self, v: Value, keep: &[Label]) -> PlanResult<Value> {
        let axes: Vec<usize> = (0..v.labels.len())
            .filter(|&i| !keep.contains(&v.labels[i]))
            .collect();
        if axes.is_empty() {
            return Ok(v);
        }
        let labels = v
            .labels
            .iter()
            .copied()
            .filter(|l| keep.contains(l))
            .collect();
        let op = Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes,
            keep_dims: false,
        });
        self.push(StepOp::Op(op), &[&v], labels)
    }

    /// Transposes `v` to the label order `order` (a permutation of its labels).
    fn arrange(&mut self, v: Value, order: &[Label]) -> PlanResult<Value> {
        let perm: Vec<usize> = order
            .iter()
            .filter_map(|l| v.labels.iter().position(|m| m == l))
            .collect();
        if perm.len() != v.labels.len() {
            return Err("internal: an Einsum transpose is not a permutation".into());
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(v);
        }
        self.push(
            StepOp::Op(Op::Transpose(Transpose { perm })),
            &[&v],
            order.to_vec(),
        )
    }

    /// Reshapes `v`, keeping its leading `lead` axes, to the sizes `dims` (one known size or
    /// one run of dimensions holding the batch, which becomes `-1`).
    fn reshape(
        &mut self,
        v: Value,
        lead: usize,
        dims: &[Vec<Dim>],
        labels: Vec<Label>,
    ) -> PlanResult<Value> {
        let mut target: Vec<i64> = vec![0; lead];
        for run in dims {
            match run.iter().map(|d| d.known()).collect::<Option<Vec<_>>>() {
                Some(d) => target.push(d.iter().product::<usize>() as i64),
                None if !target.contains(&-1) => target.push(-1),
                None => {
                    return Err(format!(
                        "cannot lower: two merged axis groups of {} hold the batch",
                        v.shape
                    ));
                }
            }
        }
        let op = Op::Reshape(Reshape {
            shape: target,
            allowzero: false,
        });
        self.push(StepOp::Op(op), &[&v], labels)
    }

    /// Merges the axes after the leading `lead` of `v` into runs of the lengths in `runs`
    /// (an empty run is an axis of size 1); `labels` names the result.
    fn merge(
        &mut self,
        v: Value,
        lead: usize,
        runs: [usize; 2],
        labels: Vec<Label>,
    ) -> PlanResult<Value> {
        if runs == [1, 1] {
            return Ok(Value { labels, ..v });
        }
        let first = v.shape.0[lead..lead + runs[0]].to_vec();
        let second = v.shape.0[lead + runs[0]..].to_vec();
        self.reshape(v, lead, &[first, second], labels)
    }

    /// Contracts `a` with `b`, keeping the labels in `keep`; the result's labels are
    /// `[batch…, a's free…, b's free…]`.
    fn contract(&mut self, a: Value, b: Value, keep: &[Label]) -> PlanResult<Value> {
        let needed = |own: &Value, other: &Value| -> Vec<Label> {
            own.labels
                .iter()
                .copied()
                .filter(|l| keep.contains(l) || other.labels.contains(l))
                .collect()
        };
        let (ka, kb) = (needed(&a, &b), needed(&b, &a));
        let a = self.sum_out(a, &ka)?;
        let b = self.sum_out(b, &kb)?;
        let in_b = |l: &Label| b.labels.contains(l);
        let pick = |from: &[Label], f: &dyn Fn(&Label) -> bool| -> Vec<Label> {
            from.iter().copied().filter(|l| f(l)).collect()
        };
        let batch = pick(&a.labels, &|l| in_b(l) && keep.contains(l));
        let summed = pick(&a.labels, &|l| in_b(l) && !keep.contains(l));
        let a_free = pick(&a.labels, &|l| !in_b(l));
        let b_free = pick(&b.labels, &|l| !a.labels.contains(l));
        let (nb, na, ns, nf) = (batch.len(), a_free.len(), summed.len(), b_free.len());
        let a = self.arrange(a, &[&batch[..], &a_free, &summed].concat())?;
        let b = self.arrange(b, &[&batch[..], &summed, &b_free].concat())?;
        let free_dims: Vec<Vec<Dim>> = a.shape.0[nb..nb + na]
            .iter()
            .chain(&b.shape.0[nb + ns..])
            .map(|d| vec![*d])
            .collect();
        // labels of the merged rows, sums and columns: never letters or ellipsis axes
        let (m, k, n) = (2 * ELLIPSIS, 2 * ELLIPSIS + 1, 2 * ELLIPSIS + 2);
        let lead = |tail: &[Label]| [&batch[..], tail].concat();
        let a = self.merge(a, nb, [na, ns], lead(&[m, k]))?;
        let b = self.merge(b, nb, [ns, nf], lead(&[k, n]))?;
        let product = self.push(StepOp::Product, &[&a, &b], lead(&[m, n]))?;
        let labels = [&batch[..], &a_free, &b_free].concat();
        if na == 1 && nf == 1 {
            return Ok(Value { labels, ..product });
        }
        self.reshape(product, nb, &free_dims, labels)
    }
}

/// The ops computing `eq` for operands of `shapes`, contracted left to right; `constant` marks
/// the operands that are constants (moved to the right, where a matrix is a weighted layer).
fn plan_equation(eq: &Equation, shapes: &[Shape], constant: &[bool]) -> PlanResult<Plan> {
    let mut plan = Plan::default();
    let mut operands = eq
        .operands
        .iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (labels, shape))| Value {
            source: Source::Input(i),
            labels: labels.clone(),
            shape: shape.clone(),
        });
    let Some(mut acc) = operands.next() else {
        return Err("Einsum needs at least one input".into());
    };
    let rest: Vec<Value> = operands.collect();
    for (j, next) in rest.iter().enumerate() {
        let keep: Vec<Label> = rest[j + 1..]
            .iter()
            .flat_map(|v| v.labels.iter().copied())
            .chain(eq.output.iter().copied())
            .collect();
        let is_constant = |v: &Value| matches!(v.source, Source::Input(i) if constant[i]);
        // a constant on the left goes right, where a constant matrix is a weighted layer
        acc = if is_constant(&acc) && !is_constant(next) {
            plan.contract(next.clone(), acc, &keep)?
        } else {
            plan.contract(acc, next.clone(), &keep)?
        };
    }
    let acc = plan.sum_out(acc, &eq.output)?;
    let acc = plan.arrange(acc, &eq.output)?;
    if plan.steps.is_empty() {
        plan.push(
            StepOp::Op(Op::Identity(Identity)),
            &[&acc],
            acc.labels.clone(),
        )?;
    }
    Ok(plan)
}

impl Importer {
    /// Lowers an `Einsum` node (see the module paragraph).
    pub(super) fn import_einsum(
        &mut self,
        node: &NodeProto,
        inputs: &[String],
        index: usize,
    ) -> Result<()> {
        let equation = Attrs::new(node)
            .string("equation", "")
            .map_err(|m| node_err(node, m))?;
        let mut shapes = Vec::with_capacity(inputs.len());
        for i in inputs {
            let s = self.shapes.get(i).ok_or_else(|| {
                node_err(
                    node,
                    format!("input '{i}' is not a float tensor defined before this node"),
                )
            })?;
            shapes.push(s.clone());
        }
        let ranks: Vec<usize> = shapes.iter().map(Shape::rank).collect();
        let eq = parse_equation(&equation, &ranks).map_err(|m| node_err(node, m))?;
        let constant: Vec<bool> = inputs
            .iter()
            .map(|i| self.float_consts.contains_key(i))
            .collect();
        let plan = plan_equation(&eq, &shapes, &constant)
            .map_err(|m| node_err(node, format!("equation '{equation}': {m}")))?;
        let out = node
            .output
            .first()
            .cloned()
            .ok_or_else(|| node_err(node, "Einsum has no output"))?;
        let base = self.unique_name(node, index);
        let last = plan.steps.len() - 1;
        let mut names: Vec<String> = Vec::with_capacity(plan.steps.len());
        for (k, (op, sources)) in plan.steps.into_iter().enumerate() {
            let args: Vec<String> = sources
                .iter()
                .map(|s| match s {
                    Source::Input(i) => inputs[*i].clone(),
                    Source::Step(j) => names[*j].clone(),
                })
                .collect();
            let op = match op {
                StepOp::Op(op) => op,
                StepOp::Product
                    if self
                        .float_consts
                        .get(&args[1])
                        .is_some_and(|w| w.rank() == 2) =>
                {
                    Op::MatMul(MatMul)
                }
                StepOp::Product => Op::BatchMatMul(BatchMatMul),
            };
            let value = if k == last {
                out.clone()
            } else {
                format!("{out}__einsum{k}")
            };
            let folded = args.iter().all(|a| self.float_consts.contains_key(a))
                && !self.graph.outputs.contains(&value);
            if folded {
                let tensors: Vec<&secateur_graph::Tensor> =
                    args.iter().map(|a| &self.float_consts[a]).collect();
                let y = op
                    .sem()
                    .eval(&tensors)
                    .map_err(|e| node_err(node, e.to_string()))?
                    .remove(0);
                self.add_folded_const(&value, y, &args);
            } else {
                self.push_node(format!("{base}.{k}"), op, args, vec![value.clone()])?;
            }
            names.push(value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(s: &str) -> Vec<Label> {
        s.chars().map(|c| c as Label).collect()
    }

    #[test]
    fn equations_parse_with_spaces_ellipses_and_implicit_outputs() {
        let e = parse_equation("B G H I D, B G H J D -> B G H I J", &[5, 5]).unwrap();
        assert_eq!(e.operands, vec![letters("BGHID"), letters("BGHJD")]);
        assert_eq!(e.output, letters("BGHIJ"));
        // implicit: letters used once, in ASCII order
        let e = parse_equation("ij,jk", &[2, 2]).unwrap();
        assert_eq!(e.output, letters("ik"));
        let e = parse_equation("...ij,...jk->...ik", &[4, 3]).unwrap();
        let (e1, e0) = (ELLIPSIS + 1, ELLIPSIS);
        assert_eq!(e.operands[0][..2], [e1, e0]);
        assert_eq!(e.operands[1][..1], [e0]);
        assert_eq!(e.output[..2], [e1, e0]);
    }

    #[test]
    fn bad_equations_are_refused_with_the_reason() {
        for (eq, ranks, needle) in [
            ("ii->i", &[2usize][..], "diagonals"),
            ("ij,jk->ik", &[2], "operand"),
            ("ijk->ij", &[2], "rank 2"),
            ("ij->iz", &[2], "appears in no operand"),
            ("i1->i", &[2], "letters"),
            ("...i...->i", &[3], "more than one ellipsis"),
        ] {
            let err = parse_equation(eq, ranks).unwrap_err();
            assert!(err.contains(needle), "{eq}: {err}");
        }
    }
}
