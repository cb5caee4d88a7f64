//! In-memory labelled data sets: samples stored compactly (bytes for images, f32 otherwise)
//! with a per-sample shape, labels, class names; subsets and batches with normalisation.

use crate::error::{DataError, Result};
use secateur_graph::Tensor;
use serde::{Deserialize, Serialize};

/// Sample values as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// 8-bit pixels, scaled by 1/255 when batched.
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// A labelled data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    /// Shape of one sample, e.g. `[1, 28, 28]`.
    pub sample_shape: Vec<usize>,
    pub samples: Samples,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

/// A training and a test split of the same data.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
    /// The standard normalisation of this data, when known.
    pub normalization: Normalization,
}

/// Per-channel input normalisation `((x · scale) − mean) / std`, as PyTorch users apply it
/// (`ToTensor` then `Normalize`). `scale` is 1/255 for byte images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// No normalisation beyond byte scaling.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Fashion-MNIST's standard statistics (mean 0.286, std 0.353).
    pub fn fashion_mnist() -> Self {
        Normalization {
            mean: vec![0.286],
            std: vec![0.353],
        }
    }

    /// MNIST's standard statistics.
    pub fn mnist() -> Self {
        Normalization {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// CIFAR-10's standard statistics.
    pub fn cifar10() -> Self {
        Normalization {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// Checks lengths against a channel count and that every std is positive.
    pub fn validate(&self, channels: usize) -> Result<()> {
        let ok_len = |n: usize| n == 1 || n == channels;
        if !ok_len(self.mean.len()) || !ok_len(self.std.len()) {
            return Err(DataError::Invalid(format!(
                "normalisation has {} means and {} stds but the data has {channels} channels (give 1 or {channels} values)",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(**s > 0.0) || !s.is_finite()) {
            return Err(DataError::Invalid(format!(
                "normalisation std must be positive and finite, got {s}"
            )));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(DataError::Invalid(
                "normalisation mean must be finite".into(),
            ));
        }
        Ok(())
    }

    /// Mean and std of channel `c` (one value broadcasts to all channels).
    pub fn channel(&self, c: usize) -> (f32, f32) {
        let pick = |v: &[f32]| if v.len() == 1 { v[0] } else { v[c] };
        (pick(&self.mean), pick(&self.std))
    }

    /// `"m1,m2;s1,s2"`, stored in model metadata.
    pub fn to_metadata(&self) -> String {
        let j = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("{};{}", j(&self.mean), j(&self.std))
    }

    /// Parses [`Normalization::to_metadata`].
    pub fn from_metadata(s: &str) -> Option<Self> {
        let (m, sd) = s.split_once(';')?;
        let p = |t: &str| {
            t.split(',')
                .map(|x| x.trim().parse::<f32>().ok())
                .collect::<Option<Vec<_>>>()
        };
        Some(Normalization {
            mean: p(m)?,
            std: p(sd)?,
        })
    }
}

/// Key under which a model's input normalisation is stored in its metadata.
pub const NORMALIZATION_KEY: &str = "secateur.normalization";

impl Dataset {
    /// Builds a data set, checking that sizes agree.
    pub fn new(
        name: impl Into<String>,
        sample_shape: Vec<usize>,
        samples: Samples,
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let per: usize = sample_shape.iter().product();
        let n = match &samples {
            Samples::U8(v) => v.len(),
            Samples::F32(v) => v.len(),
        };
        let name = name.into();
        if per == 0 || n != per * labels.len() {
            return Err(DataError::Invalid(format!(
                "data set '{name}': {} labels of samples shaped {sample_shape:?} need {} values, got {n}",
                labels.len(),
                per * labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= class_names.len()) {
            return Err(DataError::Invalid(format!(
                "data set '{name}': label {bad} but only {} classes",
                class_names.len()
            )));
        }
        Ok(Dataset {
            name,
            sample_shape,
            samples,
            labels,
            class_names,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Channels of an image sample (first axis), 1 for vectors.
    pub fn channels(&self) -> usize {
        if self.sample_shape.len() == 3 {
            self.sample_shape[0]
        } else {
            1
        }
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let per = self.sample_len();
        let samples = match &self.samples {
            Samples::U8(v) => Samples::U8(
                indices
                    .iter()
                    .flat_map(|&i| v[i * per..(i + 1) * per].iter().copied())
                    .collect(),
            ),
            Samples::F32(v) => Samples::F32(
                indices
                    .iter()
                    .flat_map(|&i| v[i * per..(i + 1) * per].iter().copied())
                    .collect(),
            ),
        };
        Dataset {
            name: self.name.clone(),
            sample_shape: self.sample_shape.clone(),
            samples,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// The first `n` samples (or all).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// Writes normalised sample `i` into `out` (length [`Dataset::sample_len`]).
    pub fn write_sample(&self, i: usize, norm: &Normalization, out: &mut [f32]) {
        let per = self.sample_len();
        let plane = per / self.channels().max(1);
        for (j, o) in out.iter_mut().enumerate().take(per) {
            let (m, s) = norm.channel(j / plane.max(1));
            let raw = match &self.samples {
                Samples::U8(v) => v[i * per + j] as f32 / 255.0,
                Samples::F32(v) => v[i * per + j],
            };
            *o = (raw - m) / s;
        }
    }

    /// A normalised batch `[n, sample_shape...]` and its labels.
    pub fn batch(&self, indices: &[usize], norm: &Normalization) -> (Tensor, Vec<u32>) {
        let per = self.sample_len();
        let mut data = vec![0.0f32; indices.len() * per];
        for (k, &i) in indices.iter().enumerate() {
            self.write_sample(i, norm, &mut data[k * per..(k + 1) * per]);
        }
        let mut shape = vec![indices.len()];
        shape.extend(&self.sample_shape);
        let t = Tensor::new(shape, data).expect("batch size is consistent by construction");
        (t, indices.iter().map(|&i| self.labels[i]).collect())
    }

    /// Number of samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}
