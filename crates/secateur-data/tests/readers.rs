//! The readers on real files (the embedded subset, the installed full Fashion-MNIST, and real
//! images rewritten in the CIFAR-10 and NPY layouts) and on corrupted ones.

use secateur_data::npy::{NpyData, encode};
use secateur_data::{DataSource, Samples, idx, load_mini};
use std::path::Path;

#[test]
fn embedded_subset_is_balanced_real_data() {
    let s = load_mini().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (5000, 1000));
    assert_eq!(s.train.class_counts(), vec![500; 10]);
    assert_eq!(s.test.class_counts(), vec![100; 10]);
    assert_eq!(s.train.sample_shape, vec![1, 28, 28]);
    // the first training image of Fashion-MNIST is an ankle boot
    assert_eq!(s.train.labels[0], 9);
    let (x, y) = s.train.batch(&[0, 1], &s.normalization);
    assert_eq!(x.shape(), &[2, 1, 28, 28]);
    assert_eq!(y, vec![9, 0]);
    // normalised background pixels: (0 - 0.286) / 0.353
    assert!((x.data()[0] + 0.286 / 0.353).abs() < 1e-6);
}

#[test]
fn full_fashion_mnist_when_installed() {
    let found = secateur_testkit_like::full_available();
    let Some(()) = secateur_testkit_like::require(
        "full Fashion-MNIST (apt-get install dataset-fashion-mnist)",
        found,
    ) else {
        return;
    };
    let s = DataSource::FashionMnist.load().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
    assert_eq!(s.test.class_counts(), vec![1000; 10]);
    // the embedded subset is a real subset of the full set: same first image
    let mini = load_mini().unwrap();
    let (Samples::U8(a), Samples::U8(b)) = (&s.train.samples, &mini.train.samples) else {
        panic!()
    };
    assert_eq!(&a[..784], &b[..784]);
}

/// Minimal copy of the CI rule (this crate does not depend on the test kit).
mod secateur_testkit_like {
    pub fn full_available() -> Option<()> {
        secateur_data::source::search_dirs("fashion-mnist")
            .iter()
            .any(|d| {
                d.join("train-images-idx3-ubyte.gz").is_file()
                    || d.join("train-images-idx3-ubyte").is_file()
            })
            .then_some(())
    }
    pub fn require<T>(what: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            if std::env::var("CI").is_ok_and(|c| c == "true" || c == "1") {
                panic!("{what} is required under CI=true");
            }
            eprintln!("SKIPPED: {what} missing");
        }
        v
    }
}

fn mini_pixels(n: usize) -> (Vec<u8>, Vec<u32>) {
    let s = load_mini().unwrap();
    let Samples::U8(px) = &s.train.samples else {
        panic!()
    };
    (px[..n * 784].to_vec(), s.train.labels[..n].to_vec())
}

#[test]
fn idx_directory_plain_and_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (px, labels) = mini_pixels(50);
    let lab: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            dir.path().join(format!("{prefix}-images-idx3-ubyte")),
            idx::encode(&[50, 28, 28], &px),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{prefix}-labels-idx1-ubyte")),
            idx::encode(&[50], &lab),
        )
        .unwrap();
    }
    let s = DataSource::Dir(dir.path().to_path_buf()).load().unwrap();
    assert_eq!(s.train.labels, labels);
    // label count mismatch
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx::encode(&[49], &lab[..49]),
    )
    .unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("49 labels for 50 images") && e.contains("t10k-labels"),
        "{e}"
    );
    // truncated images
    let full = idx::encode(&[50, 28, 28], &px);
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        &full[..full.len() - 10],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx::encode(&[50], &lab),
    )
    .unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated") && e.contains("t10k-images"), "{e}");
    // a gzip stream cut short
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz"
    ))
    .unwrap();
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        &gz[..gz.len() / 2],
    )
    .unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("gzip") || e.contains("truncated"), "{e}");
}

#[test]
fn cifar_layout_from_real_images() {
    let dir = tempfile::tempdir().unwrap();
    let (px, labels) = mini_pixels(20);
    // each 28x28 image centred in a 32x32 frame, replicated to 3 channels
    let mut rec = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        rec.push(l as u8);
        for _ in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let v = if (2..30).contains(&y) && (2..30).contains(&x) {
                        px[i * 784 + (y - 2) * 28 + (x - 2)]
                    } else {
                        0
                    };
                    rec.push(v);
                }
            }
        }
    }
    std::fs::write(dir.path().join("data_batch_1.bin"), &rec).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), &rec[..3073 * 5]).unwrap();
    let s = DataSource::Dir(dir.path().to_path_buf()).load().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (20, 5));
    assert_eq!(s.train.sample_shape, vec![3, 32, 32]);
    assert_eq!(s.train.labels, labels);
    std::fs::write(dir.path().join("test_batch.bin"), &rec[..3073 * 5 - 1]).unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("test_batch.bin") && e.contains("3073"), "{e}");
}

#[test]
fn npy_layout_from_real_images_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (px, labels) = mini_pixels(30);
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let xf: Vec<f32> = px.iter().map(|&p| p as f32 / 255.0).collect();
    std::fs::write(
        dir.path().join("x_train.npy"),
        encode(&[30, 28, 28], &NpyData::F32(xf.clone())),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("y_train.npy"),
        encode(&[30], &NpyData::I64(y.clone())),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("x_test.npy"),
        encode(&[30, 784], &NpyData::U8(px.clone())),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("y_test.npy"),
        encode(&[30], &NpyData::I64(y.clone())),
    )
    .unwrap();
    let s = DataSource::Dir(dir.path().to_path_buf()).load().unwrap();
    assert_eq!(s.train.sample_shape, vec![1, 28, 28]);
    assert_eq!(s.test.sample_shape, vec![784]);
    assert_eq!(s.train.labels, labels);
    // a label file that is too short
    std::fs::write(
        dir.path().join("y_test.npy"),
        encode(&[29], &NpyData::I64(y[..29].to_vec())),
    )
    .unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(e.contains("y_test.npy"), "{e}");
}

#[test]
fn unknown_names_and_empty_dirs_explain_themselves() {
    let e = "imagenet".parse::<DataSource>().unwrap_err().to_string();
    assert!(e.contains("fashion-mnist-mini"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = DataSource::Dir(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x_train.npy") && e.contains("data_batch_1.bin"),
        "{e}"
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/fashion-mnist-mini/README.md")
            .is_file()
    );
}
