//! The structured part of a pruning recipe: channel pruning (criterion, target ratio / MACs /
//! parameters, allocation, rounding, exclusions, or a saved plan to replay) or depth pruning
//! (removing residual blocks and shape-preserving layers).

use crate::{Result, bail};
use secateur_prune::structured::{
    Allocation, ChannelPruneConfig, GroupCriterion, GroupKind, Normalizer, Reduction,
    StructuredTarget,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What structured pruning removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StructuredKind {
    /// Every dependency group: convolution channels, linear neurons, attention heads.
    Channels,
    /// Attention heads (Q/K/V rows and output-projection columns of a head, together).
    Heads,
    /// Neurons of linear layers (a transformer's FFN intermediate features).
    Neurons,
    /// Whole residual blocks and shape-preserving layers.
    Layers,
}

/// How the damage of removing a block is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BlockCriterion {
    /// Mean squared change of the logits on a calibration batch.
    #[default]
    OutputChange,
    /// Drop of accuracy on a calibration subset.
    Accuracy,
}

/// How the linear layers reading pruned channels are refitted by least squares (with a text
/// set: the calibration texts are the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reconstruction {
    /// Layer by layer in execution order, each on the inputs the pruned model really gives it
    /// (earlier layers pruned and refitted), against the dense model's output of that layer
    /// plus the residual it is added to; biases refitted too.
    #[default]
    Sequential,
    /// Each layer from the dense model's input statistics alone (one pass, no second look
    /// at the data).
    Dense,
    /// No refit.
    Off,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredRecipe {
    pub kind: StructuredKind,
    /// Further kinds of groups pruned together with `kind` (`kind = "heads"`, `also =
    /// ["neurons"]` is `--structured heads,neurons`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<StructuredKind>,
    /// l1, l2, bn-scale, fpgm, taylor, random
    #[serde(default = "default_criterion")]
    pub criterion: String,
    /// mean, sum, max
    #[serde(default = "default_mean")]
    pub reduction: String,
    /// none, mean, max
    #[serde(default = "default_mean")]
    pub normalizer: String,
    #[serde(default)]
    pub allocation: Allocation,
    /// Fraction of channels to remove.
    pub ratio: Option<f64>,
    /// Fraction of the original MACs to keep.
    pub target_macs: Option<f64>,
    /// Fraction of the original parameters to keep.
    pub target_params: Option<f64>,
    #[serde(default = "default_round")]
    pub round_to: usize,
    #[serde(default = "default_min_keep")]
    pub min_keep: f64,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Replay a saved plan (JSON) instead of computing one.
    pub plan: Option<PathBuf>,
    /// Depth pruning: number of blocks or layers to remove (or use target_macs).
    pub blocks: Option<usize>,
    /// Depth pruning: also consider shape-preserving Conv/Gemm layers, not only residual blocks.
    #[serde(default)]
    pub include_layers: bool,
    #[serde(default)]
    pub block_criterion: BlockCriterion,
    #[serde(default = "default_calibration")]
    pub calibration_batches: usize,
    /// The least-squares refit of the layers reading pruned channels (with a text set).
    #[serde(default)]
    pub reconstruction: Reconstruction,
    /// With the Fisher criterion: Kwon et al.'s mask rearrangement within each group (the
    /// group's Fisher block instead of its diagonal decides which channels go).
    #[serde(default = "default_rearrange")]
    pub rearrange: bool,
}

fn default_rearrange() -> bool {
    true
}

fn default_criterion() -> String {
    "l1".into()
}
fn default_mean() -> String {
    "mean".into()
}
fn default_round() -> usize {
    1
}
fn default_min_keep() -> f64 {
    0.05
}
fn default_calibration() -> usize {
    4
}

impl StructuredRecipe {
    /// A channel recipe with defaults.
    pub fn channels() -> Self {
        StructuredRecipe {
            kind: StructuredKind::Channels,
            also: Vec::new(),
            criterion: default_criterion(),
            reduction: default_mean(),
            normalizer: default_mean(),
            allocation: Allocation::Uniform,
            ratio: None,
            target_macs: None,
            target_params: None,
            round_to: 1,
            min_keep: default_min_keep(),
            exclude: Vec::new(),
            plan: None,
            blocks: None,
            include_layers: false,
            block_criterion: BlockCriterion::OutputChange,
            calibration_batches: default_calibration(),
            reconstruction: Reconstruction::default(),
            rearrange: true,
        }
    }

    pub fn criterion(&self) -> Result<GroupCriterion> {
        Ok(self.criterion.parse()?)
    }

    pub fn needs_data(&self) -> bool {
        self.is_depth()
            || self.allocation == Allocation::Sensitivity
            || self.criterion().is_ok_and(|c| c.needs_data())
    }

    /// Whether this removes blocks and layers (depth) rather than groups of channels.
    pub fn is_depth(&self) -> bool {
        self.kind == StructuredKind::Layers
    }

    /// Sets the kinds from a list (`--structured heads,neurons`).
    pub fn set_kinds(&mut self, kinds: &[StructuredKind]) -> Result<()> {
        let Some((&first, rest)) = kinds.split_first() else {
            bail!("--structured needs at least one of channels, heads, neurons, layers");
        };
        if kinds.len() > 1 && kinds.contains(&StructuredKind::Layers) {
            bail!(
                "--structured layers removes whole blocks and cannot be combined with other kinds"
            );
        }
        self.kind = first;
        self.also = rest.to_vec();
        Ok(())
    }

    /// The kinds of dependency groups channel pruning touches (empty: all).
    pub fn group_kinds(&self) -> Vec<GroupKind> {
        let mut out = Vec::new();
        for k in std::iter::once(&self.kind).chain(&self.also) {
            match k {
                StructuredKind::Channels | StructuredKind::Layers => return Vec::new(),
                StructuredKind::Heads => out.push(GroupKind::Heads),
                StructuredKind::Neurons => out.push(GroupKind::Neurons),
            }
        }
        out.dedup();
        out
    }

    /// The channel-pruning configuration.
    pub fn channel_config(&self, seed: u64) -> Result<ChannelPruneConfig> {
        let target = match (self.ratio, self.target_macs, self.target_params) {
            (Some(r), None, None) => StructuredTarget::Ratio(r),
            (None, Some(m), None) => StructuredTarget::Macs(m),
            (None, None, Some(p)) => StructuredTarget::Params(p),
            _ => bail!(
                "give exactly one of --ratio, --target-macs, --target-params for channel pruning"
            ),
        };
        let cfg = ChannelPruneConfig {
            criterion: self.criterion()?,
            reduction: self.reduction.parse::<Reduction>()?,
            normalizer: self.normalizer.parse::<Normalizer>()?,
            target,
            allocation: self.allocation,
            round_to: self.round_to,
            min_keep: self.min_keep,
            exclude: self.exclude.clone(),
            kinds: self.group_kinds(),
            seed,
            drop_curves: Default::default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.also.contains(&StructuredKind::Layers) || (self.is_depth() && !self.also.is_empty())
        {
            bail!("structured kind 'layers' cannot be combined with other kinds");
        }
        match self.kind {
            StructuredKind::Channels | StructuredKind::Heads | StructuredKind::Neurons => {
                if self.plan.is_none() {
                    self.channel_config(0)?;
                }
            }
            StructuredKind::Layers => {
                if self.blocks.is_none() == self.target_macs.is_none() {
                    bail!("depth pruning needs exactly one of --blocks N or --target-macs F");
                }
                if let Some(f) = self.target_macs
                    && !(f > 0.0 && f <= 1.0)
                {
                    bail!("--target-macs must be in (0, 1], got {f}");
                }
            }
        }
        Ok(())
    }
}
