//! Resolving a data argument (a built-in name such as `fashion-mnist-mini`, a directory, a text
//! set) into splits, the input normalisation to use with a model, and the zoo geometry that
//! matches a data set. Normalisation precedence: mean/std given by the user, then the
//! normalisation stored in the model by secateur, then the data set's standard statistics.

use crate::{Context, Result, bail};
use secateur_data::{DataSource, NORMALIZATION_KEY, Normalization, Split};
use secateur_graph::Graph;
use secateur_graph::zoo::ZooConfig;

/// Loads both splits of the data set named `spec`.
pub fn load(spec: &str) -> Result<Split> {
    let src: DataSource = spec.parse()?;
    src.load()
        .with_context(|| format!("loading data set '{spec}'"))
}

/// The normalisation to use with `graph` (see the module documentation).
pub fn normalization(
    mean: Option<&[f32]>,
    std: Option<&[f32]>,
    split: &Split,
    graph: Option<&Graph>,
) -> Result<Normalization> {
    let norm = match (mean, std) {
        (Some(m), Some(s)) => Normalization {
            mean: m.to_vec(),
            std: s.to_vec(),
        },
        (None, None) => graph
            .and_then(|g| g.metadata.get(NORMALIZATION_KEY))
            .and_then(|s| Normalization::from_metadata(s))
            .unwrap_or_else(|| split.normalization.clone()),
        _ => bail!("give both mean and std, or neither"),
    };
    norm.validate(split.train.channels())?;
    Ok(norm)
}

/// Zoo geometry matching a data set.
pub fn zoo_config_for(split: &Split, seed: u64) -> ZooConfig {
    let s = &split.train.sample_shape;
    let (c, h, w) = match s.as_slice() {
        [c, h, w] => (*c, *h, *w),
        [n] => (1, *n, 1),
        _ => (1, 28, 28),
    };
    ZooConfig {
        channels: c,
        height: h,
        width: w,
        classes: split.train.classes(),
        seed,
    }
}
