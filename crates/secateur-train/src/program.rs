//! A graph compiled for the burn interpreter: each node's inputs resolved to the graph input,
//! an earlier node's output slot or a parameter, each output's symbolic shape, and the slots
//! that can be released after each step. Also finds the logits: when a classifier ends in
//! Softmax, training uses the Softmax's input.

use crate::error::{Result, TrainError};
use crate::params::ParamStore;
use secateur_graph::{Graph, Op, Shape};
use std::collections::HashMap;

/// Where a node input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Graph input `k`.
    Input(usize),
    Slot(usize),
    Param(usize),
}

/// One node to execute.
#[derive(Clone, Debug)]
pub struct Step {
    pub node: usize,
    pub sources: Vec<Source>,
    pub out_slot: usize,
    pub out_shape: Shape,
    /// Slots whose last reader is this step.
    pub release: Vec<usize>,
}

/// The executable form of a graph.
#[derive(Clone, Debug)]
pub struct Program {
    pub steps: Vec<Step>,
    pub slots: usize,
    /// Slot (or the input) of the graph output.
    pub output: Source,
    /// Slot of the logits used by the loss (the Softmax input if the graph ends in Softmax).
    pub logits: Source,
    pub input_shape: Shape,
}

impl Program {
    pub fn compile(graph: &Graph, params: &ParamStore) -> Result<Self> {
        if graph.inputs.is_empty() || graph.outputs.len() != 1 {
            return Err(TrainError::Config(format!(
                "training needs a graph with inputs and exactly one output, this one has {} and {}",
                graph.inputs.len(),
                graph.outputs.len()
            )));
        }
        let shapes = graph.infer_shapes()?;
        let input_of = |v: &str| graph.inputs.iter().position(|i| i.name == v);
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for (ni, node) in graph.nodes.iter().enumerate() {
            if node.outputs.len() != 1 {
                return Err(TrainError::Unsupported {
                    node: node.name.clone(),
                    op: node.op.op_type().into(),
                    message: "nodes with several outputs cannot be trained".into(),
                });
            }
            let mut sources = Vec::with_capacity(node.inputs.len());
            for v in &node.inputs {
                let s = if let Some(k) = input_of(v) {
                    Source::Input(k)
                } else if let Some(&s) = slot_of.get(v.as_str()) {
                    Source::Slot(s)
                } else if let Some(p) = params.index_of(v) {
                    Source::Param(p)
                } else {
                    return Err(TrainError::Unsupported {
                        node: node.name.clone(),
                        op: node.op.op_type().into(),
                        message: format!("input '{v}' is not available"),
                    });
                };
                sources.push(s);
            }
            let out = &node.outputs[0];
            slot_of.insert(out, ni);
            steps.push(Step {
                node: ni,
                sources,
                out_slot: ni,
                out_shape: shapes[out].clone(),
                release: Vec::new(),
            });
        }
        let resolve = |v: &str| -> Result<Source> {
            if let Some(k) = input_of(v) {
                Ok(Source::Input(k))
            } else {
                slot_of.get(v).map(|&s| Source::Slot(s)).ok_or_else(|| {
                    TrainError::Config(format!("graph output '{v}' is not produced by a node"))
                })
            }
        };
        let output = resolve(&graph.outputs[0])?;
        let mut logits = output;
        if let Source::Slot(s) = output
            && let Op::Softmax(_) = graph.nodes[s].op
        {
            logits = steps[s].sources[0];
        }
        // release slots after their last use (the output and logits stay alive)
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, st) in steps.iter().enumerate() {
            for s in &st.sources {
                if let Source::Slot(k) = s {
                    last_use.insert(*k, i);
                }
            }
        }
        for (slot, i) in last_use {
            if Source::Slot(slot) != output && Source::Slot(slot) != logits {
                steps[i].release.push(slot);
            }
        }
        Ok(Program {
            slots: steps.len(),
            steps,
            output,
            logits,
            input_shape: graph.inputs[0].shape.clone(),
        })
    }
}
