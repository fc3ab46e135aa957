//! Chat with SmolLM2-135M-Instruct (or any chat model) through the library alone: the model's
//! own chat template, streaming, stop ids and the conversation's history come from the
//! library; the weights stay in the GGUF file's Q4_1 / Q8_0 blocks. Messages are read from
//! stdin, one per line.
//!
//! ```sh
//! path=$(cargo run --release -- fetch smollm2-135m-instruct)
//! echo "What is the capital of France?" | cargo run --release --example chat -- "$path"
//! ```

use std::io::{BufRead, Write};
use std::path::PathBuf;

use burn_zoo::backends::{self, BackendChoice};
use burn_zoo::nn::{Conversation, GenerationConfig, WeightFormat};
use burn_zoo::DynLanguageModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: chat MODEL (a .gguf file or a model folder)")?,
    );
    let kind = backends::resolve(BackendChoice::Auto)?;
    let lm = DynLanguageModel::open(kind, &path, WeightFormat::AS_STORED)?;
    let mut conversation = Conversation::new(None);
    let config = GenerationConfig::greedy(128);
    for line in std::io::stdin().lock().lines() {
        conversation.push_user(&line?);
        let out = lm.reply(&mut conversation, &config, |piece| {
            print!("{piece}");
            std::io::stdout().flush().is_ok()
        })?;
        println!("\n[{kind}: {}]", out.stats.summary());
    }
    Ok(())
}
