//! Walking the graph once into steps: each node's inputs resolved to buffers (activations)
//! or constants, a fake-quantization step where the graph quantizes an activation, views
//! aliased to their input's buffer, and every other node lowered by its op. With channels-last
//! execution, each rank-4 activation carries a layout: ops that prefer NHWC (convolutions,
//! pooling) convert their inputs once, ops that work in either layout (element-wise,
//! broadcasting binaries, concatenation) follow their inputs, and everything else — views,
//! the graph output — gets NCHW back through a conversion step made once per value.

use super::lower::{self, ChannelsLast, LowerCx, Lowered};
use super::step::{Step, StepKind};
use super::{LayerChoice, PlanConfig, err};
use crate::error::Result;
use crate::kernels::elementwise::Broadcast;
use secateur_graph::{Graph, OpClass, Shape};
use std::collections::HashMap;

/// The memory order of a rank-4 activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    Nchw,
    Nhwc,
}

/// The steps and logical buffers of a plan being built.
pub(super) struct Builder<'a> {
    graph: &'a Graph,
    shapes: &'a HashMap<String, Shape>,
    config: PlanConfig,
    pub steps: Vec<Step>,
    pub sizes: Vec<usize>,
    pub layers: Vec<LayerChoice>,
    pub input_bufs: Vec<usize>,
    value_buf: HashMap<String, usize>,
    layout: HashMap<String, Layout>,
    /// Converted copies: (value, layout) → buffer.
    converted: HashMap<(String, Layout), usize>,
    absorbed: Vec<bool>,
}

impl<'a> Builder<'a> {
    pub fn new(graph: &'a Graph, shapes: &'a HashMap<String, Shape>, config: PlanConfig) -> Self {
        let mut b = Builder {
            graph,
            shapes,
            config,
            steps: Vec::new(),
            sizes: Vec::new(),
            layers: Vec::new(),
            input_bufs: Vec::new(),
            value_buf: HashMap::new(),
            layout: HashMap::new(),
            converted: HashMap::new(),
            absorbed: vec![false; graph.nodes.len()],
        };
        for input in &graph.inputs {
            let buf = b.new_buf(b.len_of(&input.name));
            b.value_buf.insert(input.name.clone(), buf);
            b.input_bufs.push(buf);
        }
        b
    }

    fn new_buf(&mut self, n: usize) -> usize {
        self.sizes.push(n);
        self.sizes.len() - 1
    }

    fn dims(&self, v: &str) -> Vec<usize> {
        self.shapes[v].resolve(self.config.batch)
    }

    /// Images per sample a step of `kind` producing `v` loops over: the batch factor of `v`'s
    /// leading axis where the step's image is one index of it, else 1.
    fn images(&self, v: &str, kind: &StepKind) -> usize {
        let factor = self
            .shapes
            .get(v)
            .and_then(|s| s.0.first())
            .and_then(|d| d.batch_factor())
            .unwrap_or(1);
        let per_image = self.len_of(v) / (self.config.batch * factor).max(1);
        match kind.per_image_output() {
            Some(n) if factor > 1 && n == per_image => factor,
            _ => 1,
        }
    }

    fn len_of(&self, v: &str) -> usize {
        self.dims(v).iter().product()
    }

    /// Whether the two layouts of `v` differ in memory (rank 4, several channels and pixels).
    fn layout_matters(&self, v: &str) -> bool {
        let d = self.dims(v);
        d.len() == 4 && d[1] > 1 && d[2] * d[3] > 1
    }

    /// The buffer of activation `v` in layout `want`, converting once if needed.
    fn buffer_in(&mut self, v: &str, want: Layout) -> Result<usize> {
        let buf = *self
            .value_buf
            .get(v)
            .ok_or_else(|| err(v, "value is not computed"))?;
        let have = self.layout.get(v).copied().unwrap_or(Layout::Nchw);
        if have == want || !self.layout_matters(v) {
            return Ok(buf);
        }
        if let Some(&b) = self.converted.get(&(v.to_string(), want)) {
            return Ok(b);
        }
        let d = self.dims(v);
        let out = self.new_buf(self.len_of(v));
        let kind = StepKind::Relayout {
            to_nhwc: want == Layout::Nhwc,
            c: d[1],
            p: d[2] * d[3],
        };
        self.steps.push(Step {
            name: format!(
                "{v}.to_{}",
                if want == Layout::Nhwc { "nhwc" } else { "nchw" }
            ),
            images: self.images(v, &kind),
            kind,
            inputs: vec![buf],
            output: out,
            consts: vec![],
        });
        self.converted.insert((v.to_string(), want), out);
        Ok(out)
    }

    /// Lowers every node in order.
    pub fn run(&mut self) -> Result<()> {
        for ni in 0..self.graph.nodes.len() {
            if !self.absorbed[ni] {
                self.node(ni)?;
            }
        }
        Ok(())
    }

    fn node(&mut self, ni: usize) -> Result<()> {
        let node = &self.graph.nodes[ni];
        let name = node.name.clone();
        let mut cx = LowerCx {
            graph: self.graph,
            shapes: self.shapes,
            node: ni,
            config: self.config,
            nhwc: false,
            data_nchw: node.inputs.first().is_some_and(|v| {
                self.layout.get(v).is_none_or(|&l| l == Layout::Nchw) || !self.layout_matters(v)
            }),
        };
        let op = lower::lowering(&node.op);
        let view = node.op.class() == OpClass::View;
        let nhwc = !view
            && matches!(
                self.config.layout,
                super::LayoutPolicy::ChannelsLast | super::LayoutPolicy::Mixed
            )
            && match op.channels_last(&cx) {
                ChannelsLast::Prefer => true,
                ChannelsLast::Follow => node
                    .inputs
                    .iter()
                    .any(|v| self.layout.get(v) == Some(&Layout::Nhwc) && self.layout_matters(v)),
                ChannelsLast::No => false,
            };
        cx.nhwc = nhwc;
        let want = if nhwc { Layout::Nhwc } else { Layout::Nchw };
        if let Some(v) = node
            .inputs
            .iter()
            .find(|v| !self.value_buf.contains_key(*v) && !self.graph.initializers.contains_key(*v))
        {
            return Err(err(&name, format!("input '{v}' is not available")));
        }
        // views of activations alias their input's buffer: no data movement
        let aliased = view
            && node
                .inputs
                .first()
                .is_some_and(|v| self.value_buf.contains_key(v));
        let lowered = if aliased { None } else { Some(op.lower(&cx)?) };
        // a node that only relabels its input's memory in another layout
        if let Some(layout) = lowered.as_ref().and_then(|l| l.relabels)
            && self.quantization_of(&name).is_none()
            && let Some(&buf) = node.inputs.first().and_then(|v| self.value_buf.get(v))
        {
            self.value_buf.insert(node.outputs[0].clone(), buf);
            self.layout.insert(node.outputs[0].clone(), layout);
            return Ok(());
        }
        let reads_nchw = lowered.as_ref().is_some_and(|l| l.reads_nchw);
        let mut in_bufs = Vec::new();
        let mut consts = Vec::new();
        for (k, v) in node.inputs.iter().enumerate() {
            // a step that reads only its data input, which is a constant: a buffer holds it
            let data_only = lowered.as_ref().is_some_and(|l| l.data_only);
            if k == 0 && data_only && !self.value_buf.contains_key(v) {
                self.constant_buffer(v);
            }
            if self.value_buf.contains_key(v) {
                let layout = if k == 0 && reads_nchw {
                    Layout::Nchw
                } else {
                    want
                };
                in_bufs.push(self.buffer_in(v, layout)?);
            } else if let Some(t) = self.graph.initializers.get(v) {
                in_bufs.push(usize::MAX);
                consts.push((k, t.data().to_vec()));
            } else {
                return Err(err(&name, format!("input '{v}' is not available")));
            }
        }
        // a quantized activation entering this node, unless its kernel quantizes it
        if let Some(q) = self.quantization_of(&name)
            && in_bufs[0] != usize::MAX
            && !lowered.as_ref().is_some_and(|l| l.quantizes_input)
        {
            let n = self.len_of(&node.inputs[0]);
            let qb = self.new_buf(n);
            self.steps.push(Step {
                name: format!("{name}.quantize_input"),
                kind: StepKind::Quant { q, n },
                inputs: vec![in_bufs[0]],
                output: qb,
                consts: vec![],
                images: 1,
            });
            in_bufs[0] = qb;
        }
        let Some(lowered) = lowered else {
            self.value_buf.insert(node.outputs[0].clone(), in_bufs[0]);
            return Ok(());
        };
        self.push_lowered(name, lowered, in_bufs, consts, want)
    }

    /// Makes constant `v` (a weight read as a layer's data input) an activation: a copy step
    /// fills its buffer on every run, in its logical (channels-first) order.
    fn constant_buffer(&mut self, v: &str) {
        let Some(t) = self.graph.initializers.get(v) else {
            return;
        };
        let dims = self.dims(v);
        let out = self.new_buf(t.len());
        self.steps.push(Step {
            name: format!("{v}.constant"),
            kind: StepKind::Expand {
                bc: Broadcast::new(&dims, &dims, &dims),
                n: t.len(),
            },
            inputs: vec![usize::MAX],
            output: out,
            consts: vec![(0, t.data().to_vec())],
            images: 1,
        });
        self.value_buf.insert(v.to_string(), out);
        self.layout.insert(v.to_string(), Layout::Nchw);
    }

    /// The quantization of the activation entering node `name`, if the graph has one.
    fn quantization_of(&self, name: &str) -> Option<secateur_graph::ActQuant> {
        self.graph
            .quantization
            .as_ref()
            .and_then(|q| q.activations.get(name))
            .copied()
    }

    fn push_lowered(
        &mut self,
        name: String,
        lowered: Lowered,
        in_bufs: Vec<usize>,
        consts: Vec<(usize, Vec<f32>)>,
        layout: Layout,
    ) -> Result<()> {
        for &a in &lowered.absorbed {
            self.absorbed[a] = true;
        }
        self.layers.extend(lowered.choice);
        let (inputs, consts) = if lowered.data_only {
            if in_bufs[0] == usize::MAX {
                return Err(err(
                    &name,
                    "its data input is a constant (a weight): fold the node away or feed it an activation",
                ));
            }
            let mut inputs = vec![in_bufs[0]];
            if let Some(r) = &lowered.residual {
                inputs.push(self.buffer_in(r, layout)?);
            }
            (inputs, vec![])
        } else {
            (in_bufs, consts)
        };
        let ob = self.new_buf(lowered.out_len);
        self.steps.push(Step {
            name,
            images: self.images(&lowered.output, &lowered.kind),
            kind: lowered.kind,
            inputs,
            output: ob,
            consts,
        });
        self.layout.insert(lowered.output.clone(), layout);
        self.value_buf.insert(lowered.output, ob);
        Ok(())
    }

    /// The buffer of the graph output, in NCHW.
    pub fn output(&mut self) -> Result<usize> {
        let out = self.graph.outputs[0].clone();
        self.buffer_in(&out, Layout::Nchw)
    }
}
