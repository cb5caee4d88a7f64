//! Genomes chosen by rule rather than by the search: seeds of the initial population (the dense
//! model and uniform-ratio models of each method), and the uniform-ratio baseline the search is
//! compared with — the same pruning methods with one global ratio swept, as a user without a
//! search would do.

use super::space::{Arithmetic, SearchSpace};
use secateur_search::Gene;
use std::collections::HashMap;

/// A pruning method for uniform-ratio genomes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Method {
    pub channels: bool,
    /// Index into [`super::space::GRANULARITIES`], or `None` for no weight pruning.
    pub granularity: Option<usize>,
    pub arithmetic: Arithmetic,
}

/// The genome that applies one global level `t` ∈ [0, 1] of the space's range with `method`:
/// every group loses the same fraction of its channels and every weight gets the same sparsity
/// (each clamped to its sensitivity bound); residual blocks are kept.
pub fn uniform_ratio(space: &SearchSpace, t: f64, method: Method) -> Vec<f64> {
    let mut g = space.dense_genome();
    for (i, gene) in space.space.genes.iter().enumerate() {
        let Gene::Real { name, hi, .. } = gene else {
            continue;
        };
        if (name == "channels" && method.channels)
            || (name == "weights" && method.granularity.is_some())
        {
            g[i] = t.clamp(0.0, 1.0) * hi;
        }
    }
    if let (Some(k), Some(gr)) = (space.index("granularity"), method.granularity) {
        g[k] = gr as f64;
    }
    if let Some(k) = space.index("precision") {
        let options = space.arithmetics();
        g[k] = options
            .iter()
            .position(|&a| a == method.arithmetic)
            .unwrap_or(0) as f64;
    }
    g
}

/// The methods of the baseline (int8 and bf16 variants only when the space has them), without
/// those
/// the space cannot express (weight sparsity in a space of channels only, and the reverse).
pub fn baseline_methods(space: &SearchSpace) -> Vec<Method> {
    let (channels, weights) = (
        space.index("channels").is_some(),
        space.index("weights").is_some(),
    );
    let mut m = all_methods(space);
    m.retain(|x| (channels || !x.channels) && (weights || x.granularity.is_none()));
    if m.is_empty() {
        // a space of the arithmetic alone: its other arithmetics (f32 when it has none)
        let options = space.arithmetics();
        let others = if options.len() > 1 {
            &options[1..]
        } else {
            &options[..]
        };
        m.extend(others.iter().map(|&arithmetic| Method {
            channels: false,
            granularity: None,
            arithmetic,
        }));
    }
    m
}

fn all_methods(space: &SearchSpace) -> Vec<Method> {
    let mut m = vec![
        Method {
            channels: true,
            granularity: None,
            arithmetic: Arithmetic::F32,
        },
        Method {
            channels: false,
            granularity: Some(0),
            arithmetic: Arithmetic::F32,
        },
        Method {
            channels: false,
            granularity: Some(1),
            arithmetic: Arithmetic::F32,
        },
        Method {
            channels: true,
            granularity: Some(0),
            arithmetic: Arithmetic::F32,
        },
    ];
    for a in space.arithmetics().into_iter().skip(1) {
        m.push(Method {
            channels: true,
            granularity: None,
            arithmetic: a,
        });
        m.push(Method {
            channels: false,
            granularity: Some(0),
            arithmetic: a,
        });
    }
    m
}

/// The `i`-th level of a coarse-to-fine sweep of (0, 1]: 1, 1/2, 1/4, 3/4, 1/8, 5/8, ...
/// (the van der Corput sequence after 1), so that any prefix covers the range evenly.
pub fn level(i: usize) -> f64 {
    if i == 0 {
        return 1.0;
    }
    let (mut k, mut t, mut f) = (i, 0.0, 0.5);
    while k > 0 {
        if k & 1 == 1 {
            t += f;
        }
        k >>= 1;
        f /= 2.0;
    }
    t
}

/// `n` baseline genomes: every method at the levels of a coarse-to-fine sweep.
pub fn baseline_genomes(space: &SearchSpace, n: usize) -> Vec<Vec<f64>> {
    let methods = baseline_methods(space);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        for m in &methods {
            if out.len() == n {
                break;
            }
            out.push(uniform_ratio(space, level(i), *m));
        }
        i += 1;
    }
    out
}

/// Seeds of the initial population: the dense model, then uniform-ratio models, each seed a
/// different method at a level from a golden-ratio sequence over [0.15, 0.95] (every method at
/// a different level: a coarse, stratified cover of the space the search then refines).
pub fn seeds(space: &SearchSpace, population: usize, extra: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let methods = baseline_methods(space);
    let mut out = vec![space.dense_genome()];
    // the task's own allocations fill at most half of the population
    out.extend(extra.iter().take(population / 2).cloned());
    let uniform = population.saturating_sub(out.len());
    for j in 0..uniform {
        let t = 0.15 + 0.8 * ((j as f64 + 0.5) * 0.618_033_988_75).fract();
        out.push(uniform_ratio(space, t, methods[j % methods.len()]));
    }
    out
}

/// The channel genome closest to removing `removed[group]` of each group (others kept): the
/// level is the mean fraction removed, each group's scale its fraction over the level (within
/// the scales' range; the sensitivity bounds still apply when decoding).
pub fn genome_of_allocation(space: &SearchSpace, removed: &HashMap<String, f64>) -> Vec<f64> {
    let mut g = space.dense_genome();
    let fractions: Vec<f64> = space
        .groups
        .iter()
        .map(|gr| removed.get(&gr.name).copied().unwrap_or(0.0))
        .collect();
    let level = fractions.iter().sum::<f64>() / fractions.len().max(1) as f64;
    let Some(k) = space.index("channels") else {
        return g;
    };
    if let Gene::Real { hi, .. } = &space.space.genes[k] {
        g[k] = level.min(*hi);
    }
    for (gr, f) in space.groups.iter().zip(fractions) {
        if let Some(i) = space.index(&format!("channels:{}", gr.name))
            && let Gene::Real { lo, hi, .. } = &space.space.genes[i]
        {
            g[i] = if level > 0.0 {
                (f / level).clamp(*lo, *hi)
            } else {
                1.0
            };
        }
    }
    g
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::space::SpaceShape;
    use crate::optimize::task::GroupRanking;
    use secateur_graph::Graph;
    use secateur_graph::zoo::{ZooConfig, ZooModel, build};
    use secateur_prune::structured::GroupCriterion;

    /// LeNet's space by L2 ranking, with weights, scales within `scale_range`, with or
    /// without int8 and bf16.
    fn lenet_space(scale_range: (f64, f64), int8: bool, bf16: bool) -> (Graph, SearchSpace) {
        let g = build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
        let ranking = GroupRanking {
            criterion: GroupCriterion::L2,
            data: None,
            kinds: Vec::new(),
            weights: true,
            scale_range,
        };
        let shape = SpaceShape {
            int8,
            bf16,
            blocks: false,
            round_to: 1,
        };
        let none = HashMap::new();
        let space = SearchSpace::derive(&g, &shape, &ranking, &none, &none).unwrap();
        (g, space)
    }

    #[test]
    fn an_allocation_becomes_a_genome_that_decodes_to_it() {
        let (_, space) = lenet_space((0.0, 2.5), false, false);
        assert!(space.groups.len() >= 2);
        let wanted: HashMap<String, f64> = space
            .groups
            .iter()
            .enumerate()
            .map(|(i, gr)| (gr.name.clone(), [0.2, 0.6, 0.05][i % 3]))
            .collect();
        let genome = genome_of_allocation(&space, &wanted);
        let r = space.ratios(&genome);
        for (name, want) in &wanted {
            assert!(
                (r.removed[name] - want).abs() < 1e-9,
                "{name}: {} vs {want}",
                r.removed[name]
            );
        }
        assert!(r.sparsity.values().all(|&s| s == 0.0), "weights stay dense");
        // seeds: the dense model, then the task's allocations (at most half), then uniform ones
        let s = seeds(
            &space,
            6,
            &[
                genome.clone(),
                genome.clone(),
                genome.clone(),
                genome.clone(),
            ],
        );
        assert_eq!(s.len(), 6);
        assert_eq!(s[0], space.dense_genome());
        assert_eq!(&s[1..4], &[genome.clone(), genome.clone(), genome.clone()]);
        assert_ne!(s[4], genome);
    }

    #[test]
    fn every_arithmetic_of_the_space_decodes_and_has_its_baseline_methods() {
        for (int8, bf16) in [(false, false), (true, false), (false, true), (true, true)] {
            let (g, space) = lenet_space((0.4, 1.6), int8, bf16);
            let options = space.arithmetics();
            // int8 keeps its option index of the spaces before bf16
            assert_eq!(options.len(), 1 + int8 as usize + bf16 as usize);
            assert_eq!(space.index("precision").is_some(), int8 || bf16);
            if int8 {
                assert_eq!(options[1], Arithmetic::Int8);
            }
            for &arithmetic in &options {
                let method = Method {
                    channels: true,
                    granularity: None,
                    arithmetic,
                };
                let d = space
                    .decode(&g, &uniform_ratio(&space, 0.5, method))
                    .unwrap();
                assert_eq!(d.arithmetic, arithmetic);
                assert_eq!(d.description["precision"], arithmetic.name());
                let bf16_graph = d.graph.precision == secateur_graph::Precision::Bf16;
                assert_eq!(bf16_graph, arithmetic == Arithmetic::Bf16);
            }
            // the baseline sweeps every arithmetic of the space
            let methods = baseline_methods(&space);
            for a in &options {
                assert!(methods.iter().any(|m| m.arithmetic == *a), "{a:?}");
            }
        }
    }

    #[test]
    fn levels_go_coarse_to_fine() {
        let l: Vec<f64> = (0..6).map(level).collect();
        assert_eq!(l, vec![1.0, 0.5, 0.25, 0.75, 0.125, 0.625]);
    }
}
