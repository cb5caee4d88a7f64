//! Command-line options shared by every subcommand that reads data: the data set and the input
//! normalisation. Normalisation precedence: `--mean/--std` given by the user, then the
//! normalisation stored in the model by secateur, then the data set's standard statistics.

use anyhow::{Context, Result, bail};
use secateur_data::{DataSource, NORMALIZATION_KEY, Normalization, Split};
use secateur_graph::Graph;
use secateur_graph::zoo::ZooConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set: fashion-mnist-mini (embedded), fashion-mnist, mnist, cifar10, or a directory.
    #[arg(long, default_value = "fashion-mnist-mini")]
    pub data: String,
    /// Per-channel input mean after scaling pixels to [0, 1] (one value or one per channel).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel input standard deviation (one value or one per channel).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub std: Option<Vec<f32>>,
}

impl DataArgs {
    /// Loads both splits.
    pub fn load(&self) -> Result<Split> {
        let src: DataSource = self.data.parse()?;
        src.load()
            .with_context(|| format!("loading data set '{}'", self.data))
    }

    /// The normalisation to use with `graph` (see the module documentation).
    pub fn normalization(&self, split: &Split, graph: Option<&Graph>) -> Result<Normalization> {
        let norm = match (&self.mean, &self.std) {
            (Some(m), Some(s)) => Normalization {
                mean: m.clone(),
                std: s.clone(),
            },
            (None, None) => graph
                .and_then(|g| g.metadata.get(NORMALIZATION_KEY))
                .and_then(|s| Normalization::from_metadata(s))
                .unwrap_or_else(|| split.normalization.clone()),
            _ => bail!("give both --mean and --std, or neither"),
        };
        norm.validate(split.train.channels())?;
        Ok(norm)
    }
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
