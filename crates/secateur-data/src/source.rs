//! Where data comes from: the embedded `fashion-mnist-mini`, the full Fashion-MNIST / MNIST /
//! CIFAR-10 found under `$SECATEUR_DATA` or the Debian dataset packages, or a directory of IDX,
//! CIFAR-10 binary or NPY files. A missing data set produces a message saying exactly how to
//! get it.

use crate::dataset::{Dataset, Normalization, Samples, Split};
use crate::error::{DataError, Result, format_err};
use crate::{cifar, idx, npy};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const MINI_TRAIN_IMAGES: &[u8] =
    include_bytes!("../data/fashion-mnist-mini/train-images-idx3-ubyte.gz");
const MINI_TRAIN_LABELS: &[u8] =
    include_bytes!("../data/fashion-mnist-mini/train-labels-idx1-ubyte.gz");
const MINI_TEST_IMAGES: &[u8] =
    include_bytes!("../data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz");
const MINI_TEST_LABELS: &[u8] =
    include_bytes!("../data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz");

/// A data set the user can name on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// 5000 training and 1000 test images of Fashion-MNIST, embedded in the binary.
    FashionMnistMini,
    /// Full Fashion-MNIST (60 000 / 10 000).
    FashionMnist,
    Mnist,
    Cifar10,
    /// A directory holding IDX, CIFAR-10 binary or NPY files.
    Dir(PathBuf),
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::FashionMnistMini => f.write_str("fashion-mnist-mini"),
            DataSource::FashionMnist => f.write_str("fashion-mnist"),
            DataSource::Mnist => f.write_str("mnist"),
            DataSource::Cifar10 => f.write_str("cifar10"),
            DataSource::Dir(p) => write!(f, "{}", p.display()),
        }
    }
}

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "fashion-mnist-mini" => DataSource::FashionMnistMini,
            "fashion-mnist" => DataSource::FashionMnist,
            "mnist" => DataSource::Mnist,
            "cifar10" | "cifar-10" => DataSource::Cifar10,
            path => {
                let p = PathBuf::from(path);
                if !p.is_dir() {
                    return Err(DataError::Missing(format!(
                        "'{path}' is neither a known data set (fashion-mnist-mini, fashion-mnist, mnist, cifar10) nor a directory"
                    )));
                }
                DataSource::Dir(p)
            }
        })
    }
}

fn idx_names(prefix: &str) -> [String; 2] {
    [
        format!("{prefix}-images-idx3-ubyte"),
        format!("{prefix}-labels-idx1-ubyte"),
    ]
}

/// The path of `name` or `name.gz` in `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

fn has_idx(dir: &Path) -> bool {
    idx_names("train")
        .iter()
        .chain(idx_names("t10k").iter())
        .all(|n| find_file(dir, n).is_some())
}

fn idx_split(dir: &Path, name: &str, classes: &[&str], norm: Normalization) -> Result<Split> {
    let load = |prefix: &str| -> Result<Dataset> {
        let [i, l] = idx_names(prefix);
        let ip = find_file(dir, &i)
            .ok_or_else(|| DataError::Missing(format!("{} is missing {i}[.gz]", dir.display())))?;
        let lp = find_file(dir, &l)
            .ok_or_else(|| DataError::Missing(format!("{} is missing {l}[.gz]", dir.display())))?;
        let (shape, px, labels) = idx::read_pair(&ip, &lp)?;
        if let Some(bad) = labels.iter().find(|&&x| x as usize >= classes.len()) {
            return Err(format_err(
                &lp,
                format!("label {bad} is out of range for {} classes", classes.len()),
            ));
        }
        Dataset::new(
            format!("{name}/{prefix}"),
            shape,
            Samples::U8(px),
            labels,
            classes.iter().map(|s| s.to_string()).collect(),
        )
    };
    Ok(Split {
        train: load("train")?,
        test: load("t10k")?,
        normalization: norm,
    })
}

/// Directories searched for a named data set: `$SECATEUR_DATA/<dir>`, then `/usr/share/datasets/<dir>`.
pub fn search_dirs(dir_name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(root) = std::env::var_os("SECATEUR_DATA") {
        v.push(PathBuf::from(&root).join(dir_name));
        v.push(PathBuf::from(root));
    }
    v.push(PathBuf::from("/usr/share/datasets").join(dir_name));
    v
}

fn locate(dir_name: &str, found: impl Fn(&Path) -> bool, how: &str) -> Result<PathBuf> {
    let dirs = search_dirs(dir_name);
    dirs.iter().find(|d| found(d)).cloned().ok_or_else(|| {
        let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        DataError::Missing(format!(
            "{dir_name} was not found (looked in: {}). {how}",
            tried.join(", ")
        ))
    })
}

impl DataSource {
    /// Loads both splits.
    pub fn load(&self) -> Result<Split> {
        match self {
            DataSource::FashionMnistMini => load_mini(),
            DataSource::FashionMnist => {
                let dir = locate(
                    "fashion-mnist",
                    has_idx,
                    "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from the Fashion-MNIST project (github.com/zalandoresearch/fashion-mnist) into $SECATEUR_DATA/fashion-mnist/. The embedded subset is always available as --data fashion-mnist-mini.",
                )?;
                idx_split(
                    &dir,
                    "fashion-mnist",
                    &FASHION_CLASSES,
                    Normalization::fashion_mnist(),
                )
            }
            DataSource::Mnist => {
                let dir = locate(
                    "mnist",
                    has_idx,
                    "Put the four MNIST IDX files (train-images-idx3-ubyte.gz ... t10k-labels-idx1-ubyte.gz) into $SECATEUR_DATA/mnist/.",
                )?;
                let digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
                idx_split(&dir, "mnist", &digits, Normalization::mnist())
            }
            DataSource::Cifar10 => {
                let dir = locate(
                    "cifar-10-batches-bin",
                    |d| d.join("data_batch_1.bin").is_file(),
                    "Download the CIFAR-10 binary version (cifar-10-binary.tar.gz from the University of Toronto's CIFAR page) and extract it into $SECATEUR_DATA/ (it creates cifar-10-batches-bin/).",
                )?;
                load_cifar_dir(&dir)
            }
            DataSource::Dir(dir) => load_dir(dir),
        }
    }
}

/// The embedded subset of Fashion-MNIST.
pub fn load_mini() -> Result<Split> {
    let path = Path::new("<embedded fashion-mnist-mini>");
    let load = |imgs: &[u8], labs: &[u8], split: &str| -> Result<Dataset> {
        let i = idx::parse(imgs, path, 3)?;
        let l = idx::parse(labs, path, 1)?;
        let (shape, px, labels) = idx::from_arrays(i, l, path)?;
        Dataset::new(
            format!("fashion-mnist-mini/{split}"),
            shape,
            Samples::U8(px),
            labels,
            FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        )
    };
    Ok(Split {
        train: load(MINI_TRAIN_IMAGES, MINI_TRAIN_LABELS, "train")?,
        test: load(MINI_TEST_IMAGES, MINI_TEST_LABELS, "t10k")?,
        normalization: Normalization::fashion_mnist(),
    })
}

fn load_cifar_dir(dir: &Path) -> Result<Split> {
    let train: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    let test = dir.join("test_batch.bin");
    if train.is_empty() || !test.is_file() {
        return Err(DataError::Missing(format!(
            "{} needs data_batch_1.bin..data_batch_5.bin and test_batch.bin",
            dir.display()
        )));
    }
    let names: Vec<String> = cifar::CLASSES.iter().map(|s| s.to_string()).collect();
    let (px, lb) = cifar::read_batches(&train)?;
    let (tpx, tlb) = cifar::read_batches(&[test])?;
    Ok(Split {
        train: Dataset::new(
            "cifar10/train",
            vec![3, 32, 32],
            Samples::U8(px),
            lb,
            names.clone(),
        )?,
        test: Dataset::new(
            "cifar10/test",
            vec![3, 32, 32],
            Samples::U8(tpx),
            tlb,
            names,
        )?,
        normalization: Normalization::cifar10(),
    })
}

fn npy_dataset(x_path: &Path, y_path: &Path, name: &str, classes: usize) -> Result<Dataset> {
    let x = npy::read(x_path)?;
    let y = npy::read(y_path)?;
    if x.shape.is_empty() || y.shape.len() != 1 || x.shape[0] != y.shape[0] {
        return Err(format_err(
            y_path,
            format!(
                "labels of shape {:?} do not match samples of shape {:?} (expected [N] for [N, ...])",
                y.shape, x.shape
            ),
        ));
    }
    let sample_shape = match &x.shape[1..] {
        [h, w] => vec![1, *h, *w],
        rest => rest.to_vec(),
    };
    let labels: Vec<u32> = match y.data {
        npy::NpyData::I64(v) => v
            .iter()
            .map(|&l| {
                u32::try_from(l)
                    .ok()
                    .filter(|&c| (c as usize) < MAX_CLASSES)
                    .ok_or_else(|| {
                        format_err(
                            y_path,
                            format!(
                                "label {l} is not a class index from 0 to {}",
                                MAX_CLASSES - 1
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?,
        npy::NpyData::U8(v) => v.iter().map(|&l| l as u32).collect(),
        npy::NpyData::F32(_) => return Err(format_err(y_path, "labels must be integers")),
    };
    let samples = match x.data {
        npy::NpyData::U8(v) => Samples::U8(v),
        npy::NpyData::F32(v) => Samples::F32(v),
        npy::NpyData::I64(v) => Samples::F32(v.iter().map(|&a| a as f32).collect()),
    };
    let names = (0..classes).map(|c| c.to_string()).collect();
    Dataset::new(name, sample_shape, samples, labels, names)
}

/// Most classes a data set's labels may name (ImageNet-21k has 21 843).
pub const MAX_CLASSES: usize = 1 << 20;

fn load_dir(dir: &Path) -> Result<Split> {
    if has_idx(dir) {
        let ten: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        let refs: Vec<&str> = ten.iter().map(String::as_str).collect();
        let mut s = idx_split(
            dir,
            &dir.display().to_string(),
            &refs,
            Normalization::identity(1),
        )?;
        s.normalization = Normalization {
            mean: vec![0.5],
            std: vec![0.5],
        };
        return Ok(s);
    }
    if dir.join("data_batch_1.bin").is_file() {
        return load_cifar_dir(dir);
    }
    let names = ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy"];
    if names.iter().all(|n| dir.join(n).is_file()) {
        let y_tr = npy::read(&dir.join("y_train.npy"))?;
        let max_label = match &y_tr.data {
            npy::NpyData::I64(v) => v.iter().copied().max().unwrap_or(0).max(0) as usize,
            npy::NpyData::U8(v) => v.iter().copied().max().unwrap_or(0) as usize,
            npy::NpyData::F32(_) => 0,
        };
        if max_label >= MAX_CLASSES {
            return Err(format_err(
                &dir.join("y_train.npy"),
                format!(
                    "label {max_label} is not a class index from 0 to {}",
                    MAX_CLASSES - 1
                ),
            ));
        }
        let classes = max_label + 1;
        let train = npy_dataset(
            &dir.join("x_train.npy"),
            &dir.join("y_train.npy"),
            "npy/train",
            classes,
        )?;
        let test = npy_dataset(
            &dir.join("x_test.npy"),
            &dir.join("y_test.npy"),
            "npy/test",
            classes,
        )?;
        let normalization = Normalization::identity(train.channels());
        return Ok(Split {
            train,
            test,
            normalization,
        });
    }
    Err(DataError::Missing(format!(
        "{} holds no recognised data set: expected IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...), CIFAR-10 binary batches (data_batch_1.bin, test_batch.bin) or NPY arrays (x_train.npy, y_train.npy, x_test.npy, y_test.npy)",
        dir.display()
    )))
}
