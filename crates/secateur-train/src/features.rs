//! Intermediate-feature distillation (as TinyBERT and MiniLM's own training do): besides its
//! output, a pruned sequence model is trained to reproduce the dense model's hidden states at
//! the points both graphs share. Matched are the values that both graphs produce under the
//! same name and shape `[N, T, C]` (sequence features) and that fan out to several readers in
//! the teacher — the residual stream between blocks of a transformer, which structured pruning
//! of heads and neurons leaves at full width. The loss of each feature is its relative squared
//! error over real tokens, `Σ w·‖s − t‖² / Σ w·‖t‖²`, averaged over the matched features.

use crate::error::{Result, TrainError};
use crate::forward::{ForwardCtx, Taps, forward};
use crate::trainer::Teacher;
use crate::value::Value;
use burn::tensor::Tensor;
use secateur_graph::Graph;
use std::collections::HashMap;

/// The teacher and the node pairs whose outputs are matched.
pub(crate) struct FeatureTeacher {
    teacher: Teacher,
    pub student_nodes: Vec<usize>,
    teacher_nodes: Vec<usize>,
}

impl FeatureTeacher {
    /// Finds the shared sequence features of `student` and the teacher.
    pub fn new(student: &Graph, teacher: Teacher) -> Result<FeatureTeacher> {
        let t = &teacher.graph;
        let (s_shapes, t_shapes) = (student.infer_shapes()?, t.infer_shapes()?);
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for n in &t.nodes {
            for i in &n.inputs {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        let producer: HashMap<&str, usize> = student
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.outputs.first()?.as_str(), i)))
            .collect();
        let (mut student_nodes, mut teacher_nodes) = (Vec::new(), Vec::new());
        for (ti, n) in t.nodes.iter().enumerate() {
            let Some(v) = n.outputs.first() else { continue };
            let shared = readers.get(v.as_str()).copied().unwrap_or(0) >= 2
                && !t.outputs.contains(v)
                && t_shapes[v].rank() == 3
                && s_shapes.get(v) == Some(&t_shapes[v]);
            if let (true, Some(&si)) = (shared, producer.get(v.as_str())) {
                student_nodes.push(si);
                teacher_nodes.push(ti);
            }
        }
        if student_nodes.is_empty() {
            return Err(TrainError::Config(
                "the model and its teacher share no sequence features [N, T, C] to match".into(),
            ));
        }
        Ok(FeatureTeacher {
            teacher,
            student_nodes,
            teacher_nodes,
        })
    }

    /// The mean relative feature error of the student's tapped values against the teacher's
    /// on the same inputs, with token weights `w` (`[N, T]`).
    pub fn loss(&self, student: Taps, inputs: &[Value], w: Option<Value>) -> Result<Tensor<1>> {
        let t = &self.teacher;
        let mut taps = Taps::new(self.teacher_nodes.clone());
        let mut ctx = ForwardCtx {
            taps: Some(&mut taps),
            ..ForwardCtx::eval()
        };
        forward(
            &t.graph,
            &t.program,
            &t.store.values,
            &t.store.shapes,
            inputs,
            &mut ctx,
        )?;
        let mut total: Option<Tensor<1>> = None;
        let count = student.values.len();
        for (s, tv) in student.values.into_iter().zip(taps.values) {
            let (Some(Value::R3(s)), Some(Value::R3(tv))) = (s, tv) else {
                return Err(TrainError::Config(
                    "a matched feature is missing or not [N, T, C]".into(),
                ));
            };
            let [n, tokens, _] = s.dims();
            let weights = match &w {
                Some(w) => w.clone().reshape(&[n, tokens, 1]).and_then(|v| match v {
                    Value::R3(w) => Some(w),
                    _ => None,
                }),
                None => None,
            }
            .unwrap_or_else(|| Tensor::ones([n, tokens, 1], &s.device()));
            let diff = s - tv.clone();
            let err = ((diff.clone() * diff).sum_dim(2) * weights.clone()).sum();
            let norm = ((tv.clone() * tv).sum_dim(2) * weights).sum();
            let rel = err / (norm + 1e-12);
            total = Some(match total {
                Some(a) => a + rel,
                None => rel,
            });
        }
        total
            .map(|t| t / count as f64)
            .ok_or_else(|| TrainError::Config("no features to match".into()))
    }
}
