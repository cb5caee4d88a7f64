//! Structural fuzzing of every other file a user hands secateur: NumPy arrays, IDX and CIFAR-10
//! batches, pruning recipes, optimize settings and hardware profiles. Valid files are mutated
//! (bytes flipped, cut, header fields and numbers replaced by hostile values) and parsed and
//! validated; each must end in a value or an error naming the file, never a panic.

use proptest::prelude::*;
use secateur::pipeline::optimize::config::{OptimizeConfig, OptimizeFile};
use secateur::recipe::Recipe;
use secateur_cost::profile::HardwareProfile;
use secateur_data::npy::{self, NpyData};
use std::path::Path;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261205),
        ..ProptestConfig::default()
    }
}

/// Replacements for numbers and words inside text formats.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "18446744073709551615",
    "99999999999999999999999",
    "0.0",
    "\"\"",
    "[]",
    "{}",
    "\"x\"",
    "true",
];

/// Byte edits: flip bits, cut, or insert bytes at positions taken modulo the length.
fn byte_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6)
}

fn edit_bytes(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, value, kind) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at % bytes.len();
        match kind {
            0 => bytes[i] ^= value | 1,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, value),
        }
    }
    bytes
}

/// Text edits: a number, word or line replaced by a hostile token, or a line removed.
fn edit_text(text: &str, edits: &[(usize, usize, u8)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &(at, token, kind) in edits {
        if lines.is_empty() {
            break;
        }
        let l = at % lines.len();
        match kind {
            0 => {
                // the value after '=' becomes a hostile token
                if let Some((k, _)) = lines[l].split_once('=') {
                    lines[l] = format!("{k}= {}", HOSTILE[token % HOSTILE.len()]);
                }
            }
            1 => {
                lines.remove(l);
            }
            _ => {
                let line = &mut lines[l];
                let cut = (token % (line.len() + 1)).min(line.len());
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| line.is_char_boundary(c))
                    .unwrap_or(0);
                line.truncate(cut);
            }
        }
    }
    lines.join("\n")
}

fn text_edits() -> impl Strategy<Value = Vec<(usize, usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<usize>(), 0u8..3), 1..5)
}

fn npy_seeds() -> Vec<Vec<u8>> {
    vec![
        npy::encode(&[2, 3], &NpyData::F32(vec![1., 2., 3., 4., 5., 6.])),
        npy::encode(&[4, 1, 2, 2], &NpyData::U8((0..16).collect())),
        npy::encode(&[5], &NpyData::I64(vec![0, 1, 2, 3, 9])),
    ]
}

fn idx_seed(ndims: usize) -> Vec<u8> {
    let dims: Vec<u32> = if ndims == 3 { vec![2, 3, 3] } else { vec![2] };
    let mut b = vec![0, 0, 8, ndims as u8];
    for d in &dims {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..dims.iter().product::<u32>()).map(|v| v as u8));
    b
}

fn bundled(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let mut v: Vec<(String, String)> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no TOML files in {}", root.display());
    v
}

const SETTINGS: &str = r#"objectives = ["accuracy", "latency", "energy", "bytes"]
constraints = ["latency<=2ms", "accuracy>=0.88"]
hardware = "host"
energy_hardware = "mobile"
batch = 64
threads = 1
population = 12
generations = 5
seed = 0
search_samples = 1500
search_epochs = 1
val_samples = 1000
val_from = "auto"
final_epochs = 3
dense_epochs = 8
lr = 0.002
distill = true
int8 = true
remove_blocks = true
ensemble_size = 2
ensemble_pool = 4
baseline = true
max_final = 12
round_to = 1
sensitivity_drop = 0.3
max_accuracy_drop = 0.1
screen_pool = 4"#;

fn named(err: &str, name: &str) {
    assert!(err.contains(name), "error does not name '{name}': {err}");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_npy_arrays(seed in 0usize..3, edits in byte_edits()) {
        let bytes = edit_bytes(npy_seeds()[seed].clone(), &edits);
        if let Err(e) = npy::parse(&bytes, Path::new("x_train.npy")) {
            named(&e.to_string(), "x_train.npy");
        }
    }

    #[test]
    fn mutated_idx_files(three in any::<bool>(), edits in byte_edits()) {
        let ndims = if three { 3 } else { 1 };
        let bytes = edit_bytes(idx_seed(ndims), &edits);
        if let Err(e) = secateur_data::idx::parse(&bytes, Path::new("train-images"), ndims) {
            named(&e.to_string(), "train-images");
        }
    }

    #[test]
    fn mutated_cifar_batches(edits in byte_edits(), records in 1usize..3) {
        let mut seed = Vec::new();
        for r in 0..records {
            seed.push(r as u8);
            seed.extend((0..secateur_data::cifar::RECORD - 1).map(|i| i as u8));
        }
        let bytes = edit_bytes(seed, &edits);
        if let Err(e) = secateur_data::cifar::parse(&bytes, Path::new("data_batch_1.bin")) {
            named(&e.to_string(), "data_batch_1.bin");
        }
    }

    #[test]
    fn mutated_recipes(which in any::<usize>(), edits in text_edits()) {
        let recipes = bundled("recipes");
        let (name, text) = &recipes[which % recipes.len()];
        let text = edit_text(text, &edits);
        match Recipe::from_toml(&text, name) {
            Ok(r) => {
                let _ = r.validate();
                let _ = r.needs_data();
            }
            Err(e) => named(&format!("{e:#}"), name),
        }
    }

    #[test]
    fn mutated_optimize_settings(edits in text_edits()) {
        let text = edit_text(SETTINGS, &edits);
        if let Ok(file) = toml::from_str::<OptimizeFile>(&text) {
            let mut c = OptimizeConfig::default();
            if file.apply(&mut c).is_ok() {
                let _ = c.validate();
            }
        }
    }

    #[test]
    fn mutated_hardware_profiles(which in any::<usize>(), edits in text_edits()) {
        let profiles = bundled("crates/secateur-cost/profiles");
        let (name, text) = &profiles[which % profiles.len()];
        let text = edit_text(text, &edits);
        if let Err(e) = HardwareProfile::from_toml(&text, name) {
            named(&e.to_string(), name);
        }
    }
}

#[test]
fn the_seeds_themselves_parse() {
    for b in npy_seeds() {
        npy::parse(&b, Path::new("a.npy")).unwrap();
    }
    secateur_data::idx::parse(&idx_seed(3), Path::new("i"), 3).unwrap();
    secateur_data::idx::parse(&idx_seed(1), Path::new("l"), 1).unwrap();
    for (name, text) in bundled("recipes") {
        Recipe::from_toml(&text, &name).unwrap().validate().unwrap();
    }
    let file: OptimizeFile = toml::from_str(SETTINGS).unwrap();
    let mut c = OptimizeConfig::default();
    file.apply(&mut c).unwrap();
    c.validate().unwrap();
    for (name, text) in bundled("crates/secateur-cost/profiles") {
        HardwareProfile::from_toml(&text, &name).unwrap();
    }
}
