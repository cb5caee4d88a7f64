//! The final stage: every selected front member fine-tuned with the full budget and evaluated
//! on the test split (in parallel), exported to ONNX, its latency measured on the host one model
//! at a time (nothing else running), and ensembles of 2–3 of the most accurate members built as
//! single graphs averaging their logits, costed as the sum of their members. Each finished
//! model is recorded in `finals.jsonl` at once, so a resumed run redoes none of them.

use super::candidate::EvalContext;
use super::parallel::parallel_map;
use super::store::{Evaluation, FinalRecord, RunDir};
use super::task::Part;
use crate::{Context, Result};
use secateur_graph::{Graph, ensemble};
use std::collections::{BTreeMap, HashMap};

/// Quantities that add up when models run one after the other.
const ADDITIVE: [&str; 8] = [
    "latency_ms",
    "energy_mj",
    "model_kib",
    "peak_memory_kib",
    "macs",
    "sparse_macs",
    "params",
    "nonzero_params",
];

/// A short stable id from a key.
pub fn point_id(prefix: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}{:08x}", h >> 32)
}

/// Loads the exported model of a record.
pub fn load_final(dir: &RunDir, r: &FinalRecord) -> Result<Graph> {
    secateur_onnx::load_model(dir.path(&r.model_path))
        .with_context(|| format!("reloading front member {}", r.id))
}

/// Exports a final model, records the size of the file written (`file_kib`, next to the
/// `model_kib` storage estimate) and appends the record.
fn save(dir: &RunDir, rec: &mut FinalRecord, g: &Graph) -> Result<()> {
    let path = dir.path(&rec.model_path);
    secateur_onnx::save_model(g, &path).with_context(|| format!("exporting {}", rec.model_path))?;
    let bytes = std::fs::metadata(&path)
        .with_context(|| format!("reading back {}", path.display()))?
        .len();
    rec.values.insert("file_kib".into(), bytes as f64 / 1024.0);
    dir.append("finals.jsonl", rec)
}

/// Re-trains `chosen`, measures them and forms ensembles; returns every final record.
pub fn run(
    ctx: &EvalContext,
    dir: &RunDir,
    chosen: &[&Evaluation],
    workers: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<FinalRecord>> {
    let mut cache: HashMap<String, FinalRecord> =
        dir.read_lines("finals.jsonl", |r: &FinalRecord| r.key.clone())?;
    let todo: Vec<&Evaluation> = chosen
        .iter()
        .filter(|e| !cache.contains_key(&e.key))
        .copied()
        .collect();
    let total = todo.len();
    let mut done = 0;
    progress("final fine-tune", 0, total);
    let mut fresh: Vec<FinalRecord> = Vec::new();
    parallel_map(
        &todo,
        workers,
        &|_, e| ctx.final_train(&e.genome),
        &mut |i, (g, values)| {
            let e = todo[i];
            let id = point_id("f-", &e.key);
            let mut rec = FinalRecord {
                key: e.key.clone(),
                id: id.clone(),
                values: values.clone(),
                description: e.description.clone(),
                layer_keep: e.layer_keep.clone(),
                model_path: format!("models/{id}.onnx"),
                members: vec![],
                measured: false,
            };
            save(dir, &mut rec, g)?;
            fresh.push(rec);
            done += 1;
            progress("final fine-tune", done, total);
            Ok(())
        },
    )?;
    for r in fresh {
        cache.insert(r.key.clone(), r);
    }
    let mut members: Vec<FinalRecord> = chosen
        .iter()
        .filter_map(|e| cache.get(&e.key).cloned())
        .collect();
    // latency measured on a quiet machine, one model at a time
    if ctx.config.latency_on_host() {
        let n = members.len();
        for (k, r) in members.iter_mut().enumerate() {
            progress("measuring latency", k, n);
            if r.measured {
                continue;
            }
            let g = load_final(dir, r)?;
            let ms = ctx.costing.measure_latency(&g)?;
            r.values.insert("latency_ms".into(), ms);
            r.values.insert(
                "fps".into(),
                ctx.config.batch as f64 / (ms / 1e3).max(1e-12),
            );
            r.measured = true;
            dir.append("finals.jsonl", r)?;
        }
    }
    let mut out = members.clone();
    if ctx.config.ensemble_size >= 2 {
        out.extend(ensembles(ctx, dir, &members, &cache, progress)?);
    }
    Ok(out)
}

/// All combinations of `k` of `n` indices, in lexicographic order.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut c: Vec<usize> = (0..k).collect();
    if k == 0 || k > n {
        return out;
    }
    loop {
        out.push(c.clone());
        let mut i = k;
        while i > 0 && c[i - 1] == n - k + i - 1 {
            i -= 1;
        }
        if i == 0 {
            return out;
        }
        c[i - 1] += 1;
        for j in i..k {
            c[j] = c[j - 1] + 1;
        }
    }
}

fn ensembles(
    ctx: &EvalContext,
    dir: &RunDir,
    members: &[FinalRecord],
    cache: &HashMap<String, FinalRecord>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<FinalRecord>> {
    let mut pool: Vec<&FinalRecord> = members.iter().collect();
    pool.sort_by(|a, b| {
        b.values["accuracy"]
            .total_cmp(&a.values["accuracy"])
            .then(a.key.cmp(&b.key))
    });
    pool.truncate(ctx.config.ensemble_pool);
    let mut combos = Vec::new();
    for k in 2..=ctx.config.ensemble_size {
        combos.extend(combinations(pool.len(), k));
    }
    let mut out = Vec::new();
    for (n, combo) in combos.iter().enumerate() {
        progress("ensembles", n, combos.len());
        let parts: Vec<&FinalRecord> = combo.iter().map(|&i| pool[i]).collect();
        let key = format!(
            "ensemble:{}",
            parts
                .iter()
                .map(|p| p.key.as_str())
                .collect::<Vec<_>>()
                .join("+")
        );
        if let Some(r) = cache.get(&key) {
            out.push(r.clone());
            continue;
        }
        let graphs: Vec<Graph> = parts
            .iter()
            .map(|p| load_final(dir, p))
            .collect::<Result<_>>()?;
        let refs: Vec<&Graph> = graphs.iter().collect();
        let id = point_id("e-", &key);
        let g = ensemble(&id, &refs)?;
        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for q in ADDITIVE {
            values.insert(
                q.to_string(),
                parts
                    .iter()
                    .map(|p| p.values.get(q).copied().unwrap_or(0.0))
                    .sum(),
            );
        }
        let ms: f64 = values["latency_ms"];
        values.insert(
            "fps".into(),
            ctx.config.batch as f64 / (ms / 1e3).max(1e-12),
        );
        values.extend(ctx.task.scores(&g, Part::Final, ctx.device)?);
        let mut description = BTreeMap::new();
        description.insert(
            "ensemble".into(),
            parts
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
        );
        let mut rec = FinalRecord {
            key,
            id: id.clone(),
            values,
            description,
            layer_keep: vec![],
            model_path: format!("models/{id}.onnx"),
            members: parts.iter().map(|p| p.id.clone()).collect(),
            measured: parts.iter().all(|p| p.measured),
        };
        save(dir, &mut rec, &g)?;
        out.push(rec);
    }
    progress("ensembles", combos.len(), combos.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_complete() {
        assert_eq!(combinations(4, 2).len(), 6);
        assert_eq!(combinations(4, 3).len(), 4);
        assert_eq!(combinations(3, 3), vec![vec![0, 1, 2]]);
        assert!(combinations(2, 3).is_empty());
    }
}
