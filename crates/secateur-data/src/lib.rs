//! Data for secateur: readers for IDX (MNIST family, gzipped or not), CIFAR-10 binary and NPY
//! arrays; the embedded `fashion-mnist-mini`; lookup of full data sets with instructions when
//! missing; normalisation, batching, seeded epoch order and light augmentation; text sets
//! (sentences, pairs, scored pairs) tokenized with a model's own tokenizer.

pub mod cifar;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod io;
pub mod loader;
pub mod npy;
pub mod source;
pub mod text;

pub use dataset::{Dataset, NORMALIZATION_KEY, Normalization, Samples, Split};
pub use error::{DataError, Result};
pub use loader::{Augment, batches, epoch_order};
pub use source::{DataSource, load_mini};
pub use text::{
    TextEncoder, TextExample, TextSet, TextTask, TokenBatch, TokenInput, is_text_path, span_views,
};
