//! Text data sets for sentence encoders: a file of sentences (`.txt`, one per line) or of
//! examples (`.jsonl`, one JSON object per line with `text`, and optionally `pair`, `score` and
//! `label`), and their tokenization with a model's own `tokenizer.json` (the `tokenizers`
//! crate, pure-Rust regex) into the fixed-length token-id, attention-mask and token-type
//! inputs a BERT-family graph reads. Pairs without scores make a retrieval task (each text's
//! nearest pair should be its own), pairs with scores a similarity task (Spearman correlation
//! of cosine similarities with the scores).

use crate::error::{DataError, Result, format_err};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// One example of a text set.
#[derive(Clone, Debug, PartialEq)]
pub struct TextExample {
    pub text: String,
    /// A second text: the positive of a retrieval pair, or the other side of a scored pair.
    pub pair: Option<String>,
    /// A similarity score of `text` and `pair` (e.g. STS, 0–5).
    pub score: Option<f32>,
    pub label: Option<u32>,
}

/// What a text set can measure beyond agreement with a dense model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextTask {
    /// Every example has a pair and no score: top-1 retrieval of each text's own pair.
    Retrieval,
    /// Every example has a pair and a score: Spearman correlation of cosine and score.
    Similarity,
    /// Single sentences: agreement with a reference model only.
    Sentences,
}

/// A text data set.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSet {
    pub name: String,
    pub examples: Vec<TextExample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExample {
    #[serde(alias = "sentence1", alias = "query")]
    text: String,
    #[serde(default, alias = "sentence2", alias = "positive")]
    pair: Option<String>,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default)]
    label: Option<u32>,
}

/// Whether a `--data` argument names a text set (by extension).
pub fn is_text_path(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    lower.ends_with(".txt") || lower.ends_with(".jsonl")
}

impl TextSet {
    /// Reads a `.txt` (one sentence per line, blank lines skipped) or `.jsonl` file.
    pub fn load(path: &Path) -> Result<TextSet> {
        let raw = std::fs::read(path).map_err(|cause| DataError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let text =
            String::from_utf8(raw).map_err(|e| format_err(path, format!("not UTF-8 text: {e}")))?;
        let name = path
            .file_stem()
            .map_or_else(|| "text".to_string(), |s| s.to_string_lossy().into_owned());
        let jsonl = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
        let examples = if jsonl {
            parse_jsonl(path, &text)?
        } else {
            parse_lines(&text)
        };
        let set = TextSet { name, examples };
        set.validate().map_err(|m| format_err(path, m))?;
        Ok(set)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.examples.is_empty() {
            return Err("no examples (expected one sentence or JSON object per line)".into());
        }
        let pairs = self.examples.iter().filter(|e| e.pair.is_some()).count();
        let scores = self.examples.iter().filter(|e| e.score.is_some()).count();
        if pairs != 0 && pairs != self.examples.len() {
            return Err(format!(
                "{pairs} of {} examples have a 'pair': give it on every line or on none",
                self.examples.len()
            ));
        }
        if scores != 0 && (scores != self.examples.len() || pairs == 0) {
            return Err("a 'score' needs a 'pair', on every line".into());
        }
        if let Some(e) = self
            .examples
            .iter()
            .find(|e| !e.score.is_none_or(f32::is_finite))
        {
            return Err(format!("score of '{}' is not a finite number", e.text));
        }
        Ok(())
    }

    /// The task the examples support.
    pub fn task(&self) -> TextTask {
        match self.examples.first() {
            Some(e) if e.score.is_some() => TextTask::Similarity,
            Some(e) if e.pair.is_some() => TextTask::Retrieval,
            _ => TextTask::Sentences,
        }
    }

    /// Splits deterministically: every `k`-th example (k = round(1 / fraction)) goes to the
    /// held-out part, so both parts sample the whole file.
    pub fn split(&self, held_out_fraction: f64) -> Result<(TextSet, TextSet)> {
        if !(held_out_fraction > 0.0 && held_out_fraction < 1.0) {
            return Err(DataError::Invalid(format!(
                "held-out fraction must be in (0, 1), got {held_out_fraction}"
            )));
        }
        let k = ((1.0 / held_out_fraction).round() as usize).max(2);
        let (mut first, mut held) = (Vec::new(), Vec::new());
        for (i, e) in self.examples.iter().enumerate() {
            if i % k == k - 1 {
                held.push(e.clone());
            } else {
                first.push(e.clone());
            }
        }
        if held.is_empty() || first.is_empty() {
            return Err(DataError::Invalid(format!(
                "text set '{}' has {} examples: too few to hold out one in {k}",
                self.name,
                self.examples.len()
            )));
        }
        let part = |examples, suffix: &str| TextSet {
            name: format!("{}-{suffix}", self.name),
            examples,
        };
        Ok((part(first, "train"), part(held, "held-out")))
    }

    /// Every text of the set: the texts, then their pairs.
    pub fn all_texts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.examples.iter().map(|e| e.text.as_str()).collect();
        out.extend(self.examples.iter().filter_map(|e| e.pair.as_deref()));
        out
    }
}

fn parse_lines(text: &str) -> Vec<TextExample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| TextExample {
            text: l.to_string(),
            pair: None,
            score: None,
            label: None,
        })
        .collect()
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<TextExample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: JsonExample = serde_json::from_str(line).map_err(|e| {
            format_err(
                path,
                format!(
                    "line {}: {e} (expected an object with \"text\" and optionally \"pair\", \"score\", \"label\")",
                    i + 1
                ),
            )
        })?;
        out.push(TextExample {
            text: e.text,
            pair: e.pair,
            score: e.score,
            label: e.label,
        });
    }
    Ok(out)
}

/// Token ids, attention mask and token types of a batch, `[batch, seq_len]` row-major, as exact
/// float values (the form graph inputs take).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub ids: Vec<f32>,
    pub attention_mask: Vec<f32>,
    pub type_ids: Vec<f32>,
    /// Texts longer than `seq_len` tokens (cut to it).
    pub truncated: usize,
}

/// Which token tensor a graph input reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenInput {
    Ids,
    AttentionMask,
    TypeIds,
}

impl TokenInput {
    /// From a graph input's name (`input_ids`, `attention_mask`, `token_type_ids`, ...).
    pub fn from_input_name(name: &str) -> Option<TokenInput> {
        use secateur_graph::InputKind;
        match secateur_graph::synthetic::token_kind_of_name(name)? {
            InputKind::Mask => Some(TokenInput::AttentionMask),
            InputKind::Types => Some(TokenInput::TypeIds),
            InputKind::Ids => Some(TokenInput::Ids),
            InputKind::Float => None,
        }
    }
}

impl TokenBatch {
    pub fn get(&self, which: TokenInput) -> &[f32] {
        match which {
            TokenInput::Ids => &self.ids,
            TokenInput::AttentionMask => &self.attention_mask,
            TokenInput::TypeIds => &self.type_ids,
        }
    }
}

/// A model's tokenizer.
pub struct TextEncoder {
    tokenizer: tokenizers::Tokenizer,
    pad_id: u32,
    pub path: PathBuf,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("path", &self.path)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl TextEncoder {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<TextEncoder> {
        if !path.is_file() {
            return Err(DataError::Missing(format!(
                "tokenizer '{}' not found (a Hugging Face tokenizer.json; give it with --tokenizer)",
                path.display()
            )));
        }
        let mut tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| format_err(path, format!("not a tokenizer.json: {e}")))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .unwrap_or(0);
        tokenizer.with_padding(None);
        Ok(TextEncoder {
            tokenizer,
            pad_id,
            path: path.to_path_buf(),
        })
    }

    /// The tokenizer next to a model file or inside a model directory (`tokenizer.json`).
    pub fn find_near(model: &Path) -> Option<PathBuf> {
        let dir = if model.is_dir() {
            model.to_path_buf()
        } else {
            model.parent()?.to_path_buf()
        };
        let candidate = dir.join("tokenizer.json");
        candidate.is_file().then_some(candidate)
    }

    /// Token ids of one text with the model's special tokens, untruncated.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| DataError::Invalid(format!("tokenizing '{text}': {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of token ids (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| DataError::Invalid(format!("decoding {ids:?}: {e}")))
    }

    /// Encodes texts to `seq_len` tokens each: longer ones are truncated (keeping the closing
    /// special token), shorter ones padded with the model's pad id and a zero attention mask.
    pub fn encode(&self, texts: &[&str], seq_len: usize) -> Result<TokenBatch> {
        if seq_len < 2 {
            return Err(DataError::Invalid(format!(
                "sequence length {seq_len} leaves no room for a token between the special tokens"
            )));
        }
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(tokenizers::TruncationParams {
            max_length: seq_len,
            ..Default::default()
        }))
        .map_err(|e| DataError::Invalid(format!("truncation to {seq_len}: {e}")))?;
        let n = texts.len();
        let mut batch = TokenBatch {
            batch: n,
            seq_len,
            ids: vec![self.pad_id as f32; n * seq_len],
            attention_mask: vec![0.0; n * seq_len],
            type_ids: vec![0.0; n * seq_len],
            truncated: 0,
        };
        for (row, text) in texts.iter().enumerate() {
            let enc = tok
                .encode(*text, true)
                .map_err(|e| DataError::Invalid(format!("tokenizing '{text}': {e}")))?;
            if !enc.get_overflowing().is_empty() {
                batch.truncated += 1;
            }
            let base = row * seq_len;
            for (i, ((&id, &ty), &m)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_type_ids())
                .zip(enc.get_attention_mask())
                .enumerate()
                .take(seq_len)
            {
                batch.ids[base + i] = id as f32;
                batch.type_ids[base + i] = ty as f32;
                batch.attention_mask[base + i] = m as f32;
            }
        }
        Ok(batch)
    }
}

/// Augmented views of texts for distillation on little data: each text, then for each text of
/// at least six words `extra` contiguous word spans of half to all-but-one of its words, cut at
/// seeded random places. Spans of real text are still text the encoder will meet, and give
/// the student more distinct inputs to match the teacher on.
pub fn span_views(texts: &[&str], extra: usize, seed: u64) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    for _ in 0..extra {
        for t in texts {
            let words: Vec<&str> = t.split_whitespace().collect();
            let n = words.len();
            if n < 6 {
                continue;
            }
            let len = rng.random_range(n.div_ceil(2)..n);
            let start = rng.random_range(0..=n - len);
            out.push(words[start..start + len].join(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn span_views_are_seeded_contiguous_spans() {
        let texts = ["one two three four five six seven eight", "too short here"];
        let v = span_views(&texts, 2, 9);
        // the originals first, then two spans of the long text (the short one has none)
        assert_eq!(v.len(), 4);
        assert_eq!(v[..2], texts.map(String::from));
        for span in &v[2..] {
            let n = span.split_whitespace().count();
            assert!((4..8).contains(&n), "{span}");
            assert!(texts[0].contains(span.as_str()), "{span}");
        }
        assert_eq!(v, span_views(&texts, 2, 9));
        assert_ne!(v, span_views(&texts, 2, 10));
    }

    #[test]
    fn sentence_file_skips_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let set = TextSet::load(&write(d.path(), "s.txt", "a cat\n\n  a dog \n")).unwrap();
        assert_eq!(set.examples.len(), 2);
        assert_eq!(set.examples[1].text, "a dog");
        assert_eq!(set.task(), TextTask::Sentences);
    }

    #[test]
    fn jsonl_pairs_and_scores() {
        let d = tempfile::tempdir().unwrap();
        let body =
            "{\"text\": \"a\", \"pair\": \"b\"}\n{\"sentence1\": \"c\", \"sentence2\": \"d\"}\n";
        let set = TextSet::load(&write(d.path(), "p.jsonl", body)).unwrap();
        assert_eq!(set.task(), TextTask::Retrieval);
        assert_eq!(set.all_texts(), vec!["a", "c", "b", "d"]);
        let body = "{\"text\": \"a\", \"pair\": \"b\", \"score\": 4.5}\n";
        let set = TextSet::load(&write(d.path(), "s.jsonl", body)).unwrap();
        assert_eq!(set.task(), TextTask::Similarity);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "bad.jsonl", "{\"text\": \"a\"}\n{\"txt\": 1}\n");
        let e = TextSet::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");
        let p = write(
            d.path(),
            "mixed.jsonl",
            "{\"text\": \"a\"}\n{\"text\": \"b\", \"pair\": \"c\"}\n",
        );
        let e = TextSet::load(&p).unwrap_err().to_string();
        assert!(e.contains("pair"), "{e}");
        let p = write(d.path(), "empty.txt", "\n\n");
        assert!(TextSet::load(&p).is_err());
    }

    #[test]
    fn split_holds_out_every_kth() {
        let set = TextSet {
            name: "t".into(),
            examples: (0..10)
                .map(|i| TextExample {
                    text: i.to_string(),
                    pair: None,
                    score: None,
                    label: None,
                })
                .collect(),
        };
        let (a, b) = set.split(0.2).unwrap();
        assert_eq!((a.examples.len(), b.examples.len()), (8, 2));
        assert_eq!(b.examples[0].text, "4");
    }

    /// A BERT-style WordPiece tokenizer (the structure of all-MiniLM-L6-v2's) over a tiny vocabulary.
    fn tiny_tokenizer(dir: &Path) -> PathBuf {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "on", "mat", "##s", "a", ".",
        ];
        let vocab: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("\"{w}\": {i}"))
            .collect();
        let special = |id: usize, t: &str| {
            format!(
                "{{\"id\": {id}, \"content\": \"{t}\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}}"
            )
        };
        let json = format!(
            r###"{{"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{}, {}, {}, {}],
            "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
            "pre_tokenizer": {{"type": "BertPreTokenizer"}},
            "post_processor": {{"type": "TemplateProcessing",
              "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
              "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
              "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
            "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
            "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{{}}}}}}}"###,
            special(0, "[PAD]"),
            special(1, "[UNK]"),
            special(2, "[CLS]"),
            special(3, "[SEP]"),
            vocab.join(", ")
        );
        write(dir, "tokenizer.json", &json)
    }

    #[test]
    fn tokenizer_round_trip_pads_and_truncates() {
        let d = tempfile::tempdir().unwrap();
        let enc = TextEncoder::from_file(&tiny_tokenizer(d.path())).unwrap();
        assert_eq!(
            enc.ids("The cats sat.").unwrap(),
            vec![2, 4, 5, 9, 6, 11, 3]
        );
        assert_eq!(
            enc.decode(&enc.ids("The cats sat.").unwrap()).unwrap(),
            "the cats sat."
        );
        assert_eq!(enc.ids("the dog").unwrap(), vec![2, 4, 1, 3]);
        let b = enc
            .encode(&["the cat", "the cat sat on the mat"], 5)
            .unwrap();
        assert_eq!(b.ids, vec![2., 4., 5., 3., 0., 2., 4., 5., 6., 3.]);
        assert_eq!(
            b.attention_mask,
            vec![1., 1., 1., 1., 0., 1., 1., 1., 1., 1.]
        );
        assert_eq!(b.truncated, 1);
        assert!(enc.encode(&["a"], 1).is_err());
        assert_eq!(
            TextEncoder::find_near(&d.path().join("model.onnx")),
            Some(d.path().join("tokenizer.json"))
        );
        let e = TextEncoder::from_file(&d.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("missing.json"), "{e}");
    }

    #[test]
    fn input_names_map_to_token_tensors() {
        assert_eq!(
            TokenInput::from_input_name("attention_mask"),
            Some(TokenInput::AttentionMask)
        );
        assert_eq!(
            TokenInput::from_input_name("token_type_ids"),
            Some(TokenInput::TypeIds)
        );
        assert_eq!(
            TokenInput::from_input_name("input_ids"),
            Some(TokenInput::Ids)
        );
        assert_eq!(TokenInput::from_input_name("pixel_values"), None);
    }
}
