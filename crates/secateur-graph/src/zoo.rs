//! The built-in model zoo, written with [`GraphBuilder`]: `mlp` (LeNet-300-100), `lenet5-bn`,
//! CIFAR-style `resnet8` / `resnet20`, and a small `mobilenet-v2` (depthwise separable inverted
//! residuals with ReLU6) for 28×28 or 32×32 inputs. Every model is an ordinary graph: it
//! trains, prunes and exports like an imported one.

use crate::builder::{Activation, GraphBuilder};
use crate::error::{GraphError, Result};
use crate::graph::Graph;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A model of the zoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ZooModel {
    Mlp,
    Lenet5Bn,
    Resnet8,
    Resnet20,
    MobilenetV2,
}

impl ZooModel {
    pub const ALL: [ZooModel; 5] = [
        ZooModel::Mlp,
        ZooModel::Lenet5Bn,
        ZooModel::Resnet8,
        ZooModel::Resnet20,
        ZooModel::MobilenetV2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ZooModel::Mlp => "mlp",
            ZooModel::Lenet5Bn => "lenet5-bn",
            ZooModel::Resnet8 => "resnet8",
            ZooModel::Resnet20 => "resnet20",
            ZooModel::MobilenetV2 => "mobilenet-v2",
        }
    }
}

impl fmt::Display for ZooModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ZooModel {
    type Err = GraphError;

    fn from_str(s: &str) -> Result<Self> {
        ZooModel::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ZooModel::ALL.iter().map(|m| m.name()).collect();
                GraphError::Invalid(format!(
                    "unknown model '{s}'; built-in models: {}",
                    names.join(", ")
                ))
            })
    }
}

/// Input geometry and class count a zoo model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZooConfig {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    pub seed: u64,
}

impl Default for ZooConfig {
    /// Fashion-MNIST: 1×28×28, 10 classes.
    fn default() -> Self {
        ZooConfig {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
            seed: 0,
        }
    }
}

/// Builds a zoo model.
///
/// ```
/// use secateur_graph::zoo::{build, ZooModel, ZooConfig};
/// let g = build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
/// assert_eq!(secateur_graph::summarize(&g).unwrap().total_params, 317_258);
/// ```
pub fn build(model: ZooModel, cfg: &ZooConfig) -> Result<Graph> {
    if cfg.channels == 0 || cfg.height < 8 || cfg.width < 8 || cfg.classes < 2 {
        return Err(GraphError::Invalid(format!(
            "zoo model {model} needs at least 1×8×8 inputs and 2 classes, got {cfg:?}"
        )));
    }
    let mut g = match model {
        ZooModel::Mlp => mlp(cfg),
        ZooModel::Lenet5Bn => lenet5_bn(cfg),
        ZooModel::Resnet8 => resnet(cfg, 1, "resnet8"),
        ZooModel::Resnet20 => resnet(cfg, 3, "resnet20"),
        ZooModel::MobilenetV2 => mobilenet_v2(cfg),
    }?;
    g.metadata
        .insert("secateur.zoo".into(), model.name().into());
    Ok(g)
}

fn mlp(cfg: &ZooConfig) -> Result<Graph> {
    let (mut b, x) = GraphBuilder::new("mlp", &[cfg.channels, cfg.height, cfg.width], cfg.seed);
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("fc1", &x, 300)?;
    let x = b.relu("relu1", &x)?;
    let x = b.linear("fc2", &x, 100)?;
    let x = b.relu("relu2", &x)?;
    let x = b.linear("fc3", &x, cfg.classes)?;
    b.finish(&x)
}

fn lenet5_bn(cfg: &ZooConfig) -> Result<Graph> {
    let (mut b, x) = GraphBuilder::new(
        "lenet5-bn",
        &[cfg.channels, cfg.height, cfg.width],
        cfg.seed,
    );
    let x = b.conv("conv1", &x, 32, 5, 1, 0, 1, true)?;
    let x = b.batch_norm("bn1", &x)?;
    let x = b.relu("relu1", &x)?;
    let x = b.max_pool("pool1", &x, 2)?;
    let x = b.conv("conv2", &x, 64, 5, 1, 0, 1, true)?;
    let x = b.batch_norm("bn2", &x)?;
    let x = b.relu("relu2", &x)?;
    let x = b.max_pool("pool2", &x, 2)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("fc1", &x, 256)?;
    let x = b.relu("relu3", &x)?;
    let x = b.linear("fc2", &x, cfg.classes)?;
    b.finish(&x)
}

/// CIFAR-style ResNet (He et al. 2016, §4.2) with `n` basic blocks per stage (16, 32, 64
/// channels) and 1×1 convolution + BN shortcuts where the shape changes.
fn resnet(cfg: &ZooConfig, n: usize, name: &str) -> Result<Graph> {
    let (mut b, x) = GraphBuilder::new(name, &[cfg.channels, cfg.height, cfg.width], cfg.seed);
    let mut x = b.conv_bn("stem", &x, 16, 3, 1, 1, Activation::Relu)?;
    for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
        for block in 0..n {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let p = format!("layer{}.{}", stage + 1, block);
            let y = b.conv_bn(&format!("{p}.a"), &x, width, 3, stride, 1, Activation::Relu)?;
            let y = b.conv_bn(&format!("{p}.b"), &y, width, 3, 1, 1, Activation::None)?;
            let shortcut = if stride != 1 || b.channels(&x) != width {
                b.conv_bn(
                    &format!("{p}.shortcut"),
                    &x,
                    width,
                    1,
                    stride,
                    1,
                    Activation::None,
                )?
            } else {
                x.clone()
            };
            let s = b.add(&format!("{p}.add"), &y, &shortcut)?;
            x = b.relu(&format!("{p}.relu"), &s)?;
        }
    }
    let x = b.global_avg_pool("pool", &x)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("fc", &x, cfg.classes)?;
    b.finish(&x)
}

/// A small MobileNet-V2 (Sandler et al. 2018) for 28×28 / 32×32 inputs: stem 3×3 conv to 16
/// channels, inverted residual stages `(expansion, channels, blocks, stride)` =
/// (1,16,1,1), (4,24,2,2), (4,32,2,2), (4,64,2,1), a 1×1 conv to 128, global pooling, linear.
fn mobilenet_v2(cfg: &ZooConfig) -> Result<Graph> {
    let (mut b, x) = GraphBuilder::new(
        "mobilenet-v2",
        &[cfg.channels, cfg.height, cfg.width],
        cfg.seed,
    );
    let mut x = b.conv_bn("stem", &x, 16, 3, 1, 1, Activation::Relu6)?;
    let stages = [
        (1usize, 16usize, 1usize, 1usize),
        (4, 24, 2, 2),
        (4, 32, 2, 2),
        (4, 64, 2, 1),
    ];
    for (si, (t, c, n, s)) in stages.into_iter().enumerate() {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let p = format!("block{}.{}", si + 1, i);
            let c_in = b.channels(&x);
            let hidden = c_in * t;
            let mut y = x.clone();
            if t != 1 {
                y = b.conv_bn(
                    &format!("{p}.expand"),
                    &y,
                    hidden,
                    1,
                    1,
                    1,
                    Activation::Relu6,
                )?;
            }
            y = b.conv_bn(
                &format!("{p}.dw"),
                &y,
                hidden,
                3,
                stride,
                hidden,
                Activation::Relu6,
            )?;
            y = b.conv_bn(&format!("{p}.project"), &y, c, 1, 1, 1, Activation::None)?;
            x = if stride == 1 && c_in == c {
                b.add(&format!("{p}.add"), &y, &x)?
            } else {
                y
            };
        }
    }
    let x = b.conv_bn("head", &x, 128, 1, 1, 1, Activation::Relu6)?;
    let x = b.global_avg_pool("pool", &x)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("fc", &x, cfg.classes)?;
    b.finish(&x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summarize;

    #[test]
    fn lenet5_bn_hand_count() {
        let g = build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
        let s = summarize(&g).unwrap();
        // conv1: 32·1·5·5 + 32 = 832; bn1: 2·32 = 64 (running stats are buffers, not params);
        // conv2: 64·32·5·5 + 64 = 51 264; bn2: 128; fc1: 1024·256 + 256 = 262 400;
        // fc2: 256·10 + 10 = 2 570.
        assert_eq!(s.total_params, 832 + 64 + 51_264 + 128 + 262_400 + 2_570);
        // MACs: conv1 32·24·24·25 = 460 800; conv2 64·8·8·800 = 3 276 800;
        // fc1 1024·256 = 262 144; fc2 2 560.
        assert_eq!(s.total_macs, 460_800 + 3_276_800 + 262_144 + 2_560);
    }

    #[test]
    fn mlp_hand_count() {
        let g = build(ZooModel::Mlp, &ZooConfig::default()).unwrap();
        let s = summarize(&g).unwrap();
        assert_eq!(
            s.total_params,
            784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
        );
        assert_eq!(s.total_macs, 784 * 300 + 300 * 100 + 100 * 10);
    }

    #[test]
    fn every_zoo_model_builds_for_both_geometries() {
        for m in ZooModel::ALL {
            for cfg in [
                ZooConfig::default(),
                ZooConfig {
                    channels: 3,
                    height: 32,
                    width: 32,
                    ..Default::default()
                },
            ] {
                let g = build(m, &cfg).unwrap();
                let shapes = g.infer_shapes().unwrap();
                assert_eq!(shapes["logits"], crate::Shape::batched(&[10]), "{m}");
            }
        }
        assert!("resnet9".parse::<ZooModel>().is_err());
    }

    #[test]
    fn resnet20_has_twenty_weighted_layers() {
        let g = build(
            ZooModel::Resnet20,
            &ZooConfig {
                channels: 3,
                height: 32,
                width: 32,
                ..Default::default()
            },
        )
        .unwrap();
        let convs = g
            .nodes
            .iter()
            .filter(|n| n.name.ends_with(".conv") && !n.name.contains("shortcut"))
            .count();
        let fcs = g.nodes.iter().filter(|n| n.op.op_type() == "Gemm").count();
        assert_eq!(convs + fcs, 20);
    }
}
