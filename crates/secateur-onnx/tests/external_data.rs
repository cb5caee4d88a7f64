//! External data, as PyTorch's dynamo exporter writes it: a model whose initializers live in a
//! data file next to it (several tensors per file, at offsets) loads from its path to the same
//! graph as the embedded model; a location outside the model's directory, a range past the
//! end of the file or a missing file is refused with the tensor or the file named.

use secateur_graph::Graph;
use secateur_graph::zoo::{ZooConfig, ZooModel, build};
use secateur_onnx::proto::{ModelProto, StringStringEntryProto};
use secateur_onnx::{export_model, load_model};
use std::path::Path;

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    }
}

/// LeNet with every initializer moved into `weights.bin` (one after the other, the last one
/// without a length); returns the model and the data file's bytes.
fn externalised() -> (Graph, ModelProto, Vec<u8>) {
    let g = build(ZooModel::Lenet5Bn, &ZooConfig::default()).unwrap();
    let mut m = export_model(&g).unwrap();
    let mut data = Vec::new();
    let inits = &mut m.graph.as_mut().unwrap().initializer;
    let last = inits.len() - 1;
    for (i, t) in inits.iter_mut().enumerate() {
        assert!(!t.raw_data.is_empty(), "{}: exported as raw bytes", t.name);
        // 16-byte alignment padding, as exporters write
        data.resize(data.len().next_multiple_of(16), 0);
        let offset = data.len();
        data.extend_from_slice(&t.raw_data);
        let mut fields = vec![
            entry("location", "weights.bin"),
            entry("offset", &offset.to_string()),
        ];
        if i != last {
            fields.push(entry("length", &t.raw_data.len().to_string()));
        }
        t.external_data = fields;
        t.data_location = 1;
        t.raw_data.clear();
    }
    (g, m, data)
}

fn write(dir: &Path, m: &ModelProto, data: &[u8]) -> std::path::PathBuf {
    use prost::Message;
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    std::fs::write(dir.join("weights.bin"), data).unwrap();
    path
}

#[test]
fn external_data_loads_to_the_same_weights() {
    let (g, m, data) = externalised();
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_model(write(dir.path(), &m, &data)).unwrap();
    assert!(!loaded.initializers.is_empty());
    for (name, t) in &g.initializers {
        assert_eq!(loaded.initializers.get(name), Some(t), "{name}");
    }
    // from bytes alone the data file cannot be found: the tensor is named
    use prost::Message;
    let e = secateur_onnx::import_bytes(&m.encode_to_vec(), Path::new("m.onnx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("external file"), "{e}");
}

#[test]
fn bad_external_data_is_refused_with_the_tensor_or_file_named() {
    let (_, m, data) = externalised();
    let first = m.graph.as_ref().unwrap().initializer[0].name.clone();
    let with_field = |key: &str, value: &str| {
        let mut m = m.clone();
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        t.external_data.retain(|e| e.key != key);
        t.external_data.push(entry(key, value));
        m
    };
    let cases = [
        (
            with_field("location", "../weights.bin"),
            "inside the model's directory",
        ),
        (
            with_field("location", "/etc/passwd"),
            "inside the model's directory",
        ),
        (with_field("offset", "99999999"), "past the end"),
        (with_field("length", "-4"), "not a non-negative integer"),
        (with_field("location", "missing.bin"), "missing.bin"),
    ];
    for (bad, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let e = load_model(write(dir.path(), &bad, &data))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
        if needle != "missing.bin" {
            assert!(e.contains(&first), "the tensor is named: {e}");
        }
    }
}
