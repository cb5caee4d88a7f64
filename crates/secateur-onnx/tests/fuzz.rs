//! Truncated and bit-flipped ONNX files must end in an error (or, if the damage happens to
//! leave a valid model, a checked graph), never a panic.

mod common;

use proptest::prelude::*;
use secateur_onnx::{import_bytes, to_bytes};
use std::path::Path;

fn model_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| to_bytes(&common::concat_net()).unwrap())
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = model_bytes();
    let step = (bytes.len() / 300).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        let r = import_bytes(&bytes[..cut], Path::new("cut.onnx"));
        if let Err(e) = &r {
            assert!(!e.to_string().is_empty());
        }
        // truncation can only succeed at a message boundary that still forms a whole model
        if r.is_ok() {
            assert!(
                cut > bytes.len() / 2,
                "a model cut at {cut} of {} imported",
                bytes.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn bit_flips_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6)) {
        let mut bytes = model_bytes().to_vec();
        for (idx, bit) in flips {
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        let _ = import_bytes(&bytes, Path::new("flipped.onnx"));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = import_bytes(&bytes, Path::new("noise.onnx"));
    }
}

#[test]
fn garbage_file_names_the_path() {
    let e = import_bytes(b"this is not onnx at all", Path::new("notes.txt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("notes.txt"), "{e}");
}
