//! Load a causal LM (a Hugging Face folder or a `.gguf` file) and generate greedily on the
//! best backend this machine has: the library calls behind `zoo generate`, in one page.
//!
//! ```sh
//! cargo run --release --example generate -- tests/fixtures/gpt2/tiny-a "the" 20
//! ```

use std::path::PathBuf;

use burn_zoo::backends::{self, BackendChoice};
use burn_zoo::nn::{GenerationConfig, WeightFormat};
use burn_zoo::DynLanguageModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: generate MODEL PROMPT [N]")?);
    let prompt = args.next().unwrap_or_else(|| "Hello".to_string());
    let max_new: usize = args.next().map_or(Ok(20), |n| n.parse())?;
    let kind = backends::resolve(BackendChoice::Auto)?;
    let lm = DynLanguageModel::open(kind, &path, WeightFormat::AS_STORED)?;
    let ids = lm.encode(&prompt)?;
    let out = lm.generate(&ids, &GenerationConfig::greedy(max_new), |_| true)?;
    println!("[{kind}] {prompt}{}", out.text.unwrap_or_default());
    Ok(())
}
