//! Dependency groups, derived from each op's declared axis links and nothing else. Every index
//! of every (value, non-batch axis) is an element; each link unites the elements it relates
//! (identity, concatenation offsets, flatten blocks, depthwise multipliers), so coupled
//! channels end up in one connected component. Components that touch a pinned axis (an axis an
//! op does not link, such as a spatial axis or a softmax axis), a graph input or a graph output
//! are protected. Prunable components touching the same set of axes form one group: removing
//! channel `k` of a group removes component `k` on every member at once.

use crate::error::{PruneError, Result};
use secateur_graph::{AxisRole, Dim, Graph, InputRole, Port, Shape};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One axis of one value that a group spans.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AxisRef {
    pub value: String,
    pub axis: usize,
}

/// What a member axis is, when it belongs to a parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamRole {
    /// The node reading the parameter.
    pub node: String,
    pub input: InputRole,
    pub axis: AxisRole,
}

/// A member of a group: a value axis, and for parameters, their role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub at: AxisRef,
    pub param: Option<ParamRole>,
}

/// What a group's channels are, from the structure around them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Convolution filters (producers with kernel axes).
    #[default]
    Channels,
    /// Neurons of linear layers (an FFN's intermediate features).
    Neurons,
    /// Attention heads: the channels index separate matrix products of activations (Q, K, V
    /// rows and the output projection's columns of one head).
    Heads,
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupKind::Channels => "channels",
            GroupKind::Neurons => "neurons",
            GroupKind::Heads => "heads",
        })
    }
}

/// Channels that must be pruned together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Stable name: the producing nodes, joined by `+`.
    pub name: String,
    pub members: Vec<Member>,
    /// `indices[k][m]`: the indices along member `m`'s axis that channel `k` covers.
    pub indices: Vec<Vec<Vec<usize>>>,
    /// The block of each channel when the group spans an axis that must shrink evenly (the
    /// output channels of a grouped convolution: one block per convolution group); empty
    /// when channels can be kept freely. Every block keeps the same number of channels.
    #[serde(default)]
    pub blocks: Vec<usize>,
    #[serde(default)]
    pub kind: GroupKind,
}

impl Group {
    pub fn channels(&self) -> usize {
        self.indices.len()
    }

    /// Number of blocks that must keep the same number of channels (1: unconstrained).
    pub fn block_count(&self) -> usize {
        self.blocks.iter().max().map_or(1, |&b| b + 1)
    }

    /// Whether keeping `kept` channels respects the blocks (the same count in each).
    pub fn is_balanced(&self, kept: &[usize]) -> bool {
        if self.blocks.is_empty() {
            return true;
        }
        let mut counts = vec![0usize; self.block_count()];
        for &k in kept {
            match self.blocks.get(k) {
                Some(&b) => counts[b] += 1,
                None => return false,
            }
        }
        counts.iter().all(|&c| c == counts[0])
    }

    /// The `k` best channels of `order` (best first) that respect the blocks: `k` is rounded up
    /// to a multiple of the block count and each block keeps its best `k / blocks` channels.
    pub fn best_balanced(&self, order: &[usize], k: usize) -> Vec<usize> {
        let k = k.min(order.len());
        if self.blocks.is_empty() {
            return order[..k].to_vec();
        }
        let nb = self.block_count();
        let per_block = k.div_ceil(nb).clamp(1, self.channels() / nb);
        let mut taken = vec![0usize; nb];
        let mut keep = Vec::with_capacity(per_block * nb);
        for &c in order {
            let b = self.blocks[c];
            if taken[b] < per_block {
                taken[b] += 1;
                keep.push(c);
            }
        }
        keep
    }

    /// Members that are parameters producing the channels (filters, neurons).
    pub fn producers(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| {
            m.param
                .as_ref()
                .is_some_and(|p| p.axis == AxisRole::OutChannels)
        })
    }
}

/// All groups of a graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DependencyGraph {
    pub groups: Vec<Group>,
    /// Producers whose channels cannot be pruned (they reach an output, input or pinned axis).
    pub protected: Vec<String>,
}

struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

/// Element numbering: a contiguous range per (value, axis).
struct Elements {
    base: HashMap<(String, usize), (u32, usize)>,
    owner: Vec<(u32, usize)>, // per range: (start, len) sorted, with its key index
    keys: Vec<AxisRef>,
    total: u32,
}

impl Elements {
    fn build(shapes: &HashMap<String, Shape>) -> Self {
        let mut names: Vec<&String> = shapes.keys().collect();
        names.sort();
        let mut e = Elements {
            base: HashMap::new(),
            owner: Vec::new(),
            keys: Vec::new(),
            total: 0,
        };
        for name in names {
            for (axis, d) in shapes[name].dims().iter().enumerate() {
                if let Dim::Known(n) = d {
                    e.base.insert((name.clone(), axis), (e.total, *n));
                    e.owner.push((e.total, *n));
                    e.keys.push(AxisRef {
                        value: name.clone(),
                        axis,
                    });
                    e.total += *n as u32;
                }
            }
        }
        e
    }

    fn get(&self, value: &str, axis: usize) -> Option<(u32, usize)> {
        self.base.get(&(value.to_string(), axis)).copied()
    }

    /// The (value, axis) and index of an element.
    fn locate(&self, el: u32) -> (usize, usize) {
        let k = self.owner.partition_point(|(start, _)| *start <= el) - 1;
        (k, (el - self.owner[k].0) as usize)
    }
}

/// The block of each channel of `group` from the evenly-shrinking axes it spans (empty when
/// it spans none), or `None` when the blocks do not all hold the same number of channels.
fn channel_blocks(
    group: &Group,
    even_blocks: &HashMap<(String, usize), usize>,
    shapes: &HashMap<String, Shape>,
) -> Option<Vec<usize>> {
    let mut keys: Vec<Vec<usize>> = vec![Vec::new(); group.channels()];
    for (m, member) in group.members.iter().enumerate() {
        let at = (member.at.value.clone(), member.at.axis);
        let Some(&n) = even_blocks.get(&at) else {
            continue;
        };
        let len = shapes.get(&at.0)?.dim(at.1)?;
        let size = (len / n.max(1)).max(1);
        for (k, key) in keys.iter_mut().enumerate() {
            key.push(group.indices[k][m].first()? / size);
        }
    }
    if keys.first().is_none_or(|k| k.is_empty()) {
        return Some(Vec::new());
    }
    let mut ids: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
    for key in &keys {
        let next = ids.len();
        ids.entry(key.clone()).or_insert(next);
    }
    let blocks: Vec<usize> = keys.iter().map(|k| ids[k]).collect();
    let mut counts = vec![0usize; ids.len()];
    for &b in &blocks {
        counts[b] += 1;
    }
    counts.iter().all(|&c| c == counts[0]).then_some(blocks)
}

/// Heads when a member axis indexes matrix products of activations; neurons when every
/// producing weight is a matrix; channels otherwise.
fn group_kind(
    graph: &Graph,
    members: &[Member],
    product_axes: &BTreeSet<(String, usize)>,
) -> GroupKind {
    if members
        .iter()
        .any(|m| product_axes.contains(&(m.at.value.clone(), m.at.axis)))
    {
        return GroupKind::Heads;
    }
    let mut producers = members
        .iter()
        .filter(|m| {
            m.param
                .as_ref()
                .is_some_and(|p| p.axis == AxisRole::OutChannels)
        })
        .peekable();
    let matrices = producers.peek().is_some()
        && producers.all(|m| {
            graph
                .initializers
                .get(&m.at.value)
                .is_some_and(|t| t.rank() == 2)
        });
    if matrices {
        GroupKind::Neurons
    } else {
        GroupKind::Channels
    }
}

impl DependencyGraph {
    /// Derives the dependency groups of a graph from its ops' axis links.
    pub fn build(graph: &Graph) -> Result<Self> {
        let shapes = graph.infer_shapes()?;
        let elems = Elements::build(&shapes);
        let mut uf = UnionFind::new(elems.total as usize);
        let mut pinned: BTreeSet<(String, usize)> = BTreeSet::new();
        let mut param_roles: HashMap<(String, usize), ParamRole> = HashMap::new();
        let mut even_blocks: HashMap<(String, usize), usize> = HashMap::new();
        let mut product_axes: BTreeSet<(String, usize)> = BTreeSet::new();
        for i in &graph.inputs {
            for ax in 0..i.shape.rank() {
                pinned.insert((i.name.clone(), ax));
            }
        }
        for o in &graph.outputs {
            for ax in 0..shapes.get(o).map_or(0, Shape::rank) {
                pinned.insert((o.clone(), ax));
            }
        }
        for node in &graph.nodes {
            let ins: Vec<Shape> = node.inputs.iter().map(|v| shapes[v].clone()).collect();
            let outs: Vec<Shape> = node.outputs.iter().map(|v| shapes[v].clone()).collect();
            let sem = node.op.sem();
            let value_of = |p: Port| match p {
                Port::Input(i) => &node.inputs[i],
                Port::Output(i) => &node.outputs[i],
            };
            for (p, ax, n) in sem.axis_blocks(&ins, &outs) {
                even_blocks.insert((value_of(p).clone(), ax), n);
            }
            for (i, ax) in sem.product_axes(&ins) {
                product_axes.insert((node.inputs[i].clone(), ax));
            }
            let links = sem.axis_links(&ins, &outs);
            // free axes are neither linked nor pinned: their indices stay independent
            let mut linked: BTreeSet<(Port, usize)> =
                sem.free_axes(&ins, &outs).into_iter().collect();
            for l in &links {
                linked.insert(l.a);
                linked.insert(l.b);
                let (va, vb) = (value_of(l.a.0), value_of(l.b.0));
                let (Some((ba, na)), Some((bb, nb))) = (elems.get(va, l.a.1), elems.get(vb, l.b.1))
                else {
                    continue; // a batch axis
                };
                for i in 0..na {
                    let img = l.map.image(i);
                    if img.end > nb {
                        return Err(PruneError::Invalid(format!(
                            "node '{}' links axis {} of '{va}' to axis {} of '{vb}' beyond its size {nb}",
                            node.name, l.a.1, l.b.1
                        )));
                    }
                    for j in img {
                        uf.union(ba + i as u32, bb + j as u32);
                    }
                }
            }
            let ports = (0..node.inputs.len())
                .map(Port::Input)
                .chain((0..node.outputs.len()).map(Port::Output));
            for p in ports {
                let v = value_of(p);
                let rank = shapes[v].rank();
                for ax in 0..rank {
                    if !linked.contains(&(p, ax)) {
                        pinned.insert((v.clone(), ax));
                    }
                }
            }
            let roles = sem.input_roles(node.inputs.len());
            for (idx, axes) in sem.param_axes(&ins) {
                let v = &node.inputs[idx];
                if !graph.initializers.contains_key(v) {
                    continue;
                }
                for (ax, r) in axes.into_iter().enumerate() {
                    param_roles.entry((v.clone(), ax)).or_insert(ParamRole {
                        node: node.name.clone(),
                        input: roles[idx],
                        axis: r,
                    });
                }
            }
        }
        // components: root -> elements
        let mut comps: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for el in 0..elems.total {
            let r = uf.find(el);
            comps.entry(r).or_default().push(el);
        }
        // signature of a component: the sorted set of axis keys it touches
        let mut by_sig: BTreeMap<Vec<usize>, Vec<BTreeMap<usize, Vec<usize>>>> = BTreeMap::new();
        let mut protected_producers: BTreeSet<String> = BTreeSet::new();
        for els in comps.values() {
            let mut per_key: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &el in els {
                let (k, idx) = elems.locate(el);
                per_key.entry(k).or_default().push(idx);
            }
            let keys: Vec<&AxisRef> = per_key.keys().map(|&k| &elems.keys[k]).collect();
            let touches_param = keys
                .iter()
                .any(|a| param_roles.contains_key(&(a.value.clone(), a.axis)));
            if !touches_param {
                continue;
            }
            let is_pinned = keys
                .iter()
                .any(|a| pinned.contains(&(a.value.clone(), a.axis)));
            if is_pinned {
                for a in keys {
                    if let Some(r) = param_roles.get(&(a.value.clone(), a.axis))
                        && r.axis == AxisRole::OutChannels
                    {
                        protected_producers.insert(r.node.clone());
                    }
                }
                continue;
            }
            by_sig
                .entry(per_key.keys().copied().collect())
                .or_default()
                .push(per_key);
        }
        let mut groups = Vec::new();
        for (sig, mut chans) in by_sig {
            chans.sort_by_key(|c| c.values().next().and_then(|v| v.first().copied()));
            let members: Vec<Member> = sig
                .iter()
                .map(|&k| {
                    let at = elems.keys[k].clone();
                    let param = param_roles.get(&(at.value.clone(), at.axis)).cloned();
                    Member { at, param }
                })
                .collect();
            let mut producers: Vec<String> = members
                .iter()
                .filter_map(|m| {
                    m.param
                        .as_ref()
                        .filter(|p| p.axis == AxisRole::OutChannels)
                        .map(|p| p.node.clone())
                })
                .collect();
            producers.sort_by_key(|n| graph.node_index(n));
            producers.dedup();
            let name = if producers.is_empty() {
                members[0].at.value.clone()
            } else {
                producers.join("+")
            };
            let indices = chans
                .into_iter()
                .map(|c| sig.iter().map(|k| c[k].clone()).collect())
                .collect();
            let kind = group_kind(graph, &members, &product_axes);
            let mut group = Group {
                name,
                members,
                indices,
                blocks: Vec::new(),
                kind,
            };
            match channel_blocks(&group, &even_blocks, &shapes) {
                Some(blocks) => group.blocks = blocks,
                None => {
                    // blocks of unequal size cannot all shrink evenly: keep the group whole
                    protected_producers.extend(
                        group
                            .producers()
                            .filter_map(|(_, m)| m.param.as_ref().map(|p| p.node.clone())),
                    );
                    continue;
                }
            }
            groups.push(group);
        }
        groups.sort_by(|a, b| {
            let pos = |g: &Group| {
                g.producers()
                    .filter_map(|(_, m)| m.param.as_ref().and_then(|p| graph.node_index(&p.node)))
                    .min()
                    .unwrap_or(usize::MAX)
            };
            pos(a).cmp(&pos(b)).then(a.name.cmp(&b.name))
        });
        // keep names unique
        let mut seen: HashMap<String, usize> = HashMap::new();
        for g in &mut groups {
            let n = seen.entry(g.name.clone()).or_insert(0);
            if *n > 0 {
                g.name = format!("{}#{n}", g.name);
            }
            *n += 1;
        }
        Ok(DependencyGraph {
            groups,
            protected: protected_producers.into_iter().collect(),
        })
    }

    /// A group by name.
    pub fn group(&self, name: &str) -> Result<&Group> {
        self.groups.iter().find(|g| g.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
            PruneError::Invalid(format!(
                "no prunable group '{name}'; groups: {}",
                names.join(", ")
            ))
        })
    }
}
