//! Command-line options shared by every subcommand that reads data: the data set and the input
//! normalisation (resolved by `secateur_pipeline::data`).

use anyhow::Result;
use secateur_data::{Normalization, Split};
use secateur_graph::Graph;

pub use secateur_pipeline::data::zoo_config_for;

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set: fashion-mnist-mini (embedded), fashion-mnist, mnist, cifar10, or a directory;
    /// for `eval` and `optimize` also a text set (.txt one sentence per line, .jsonl with
    /// "text", optional "pair" and "score") for a sentence encoder.
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
        Ok(secateur_pipeline::data::load(&self.data)?)
    }

    /// The normalisation to use with `graph`: --mean/--std, then the model's, then the data
    /// set's.
    pub fn normalization(&self, split: &Split, graph: Option<&Graph>) -> Result<Normalization> {
        Ok(secateur_pipeline::data::normalization(
            self.mean.as_deref(),
            self.std.as_deref(),
            split,
            graph,
        )?)
    }
}
