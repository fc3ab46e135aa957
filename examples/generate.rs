//! Load a Hugging Face GPT-2 folder and generate greedily, on any compiled-in backend: the
//! library calls behind `zoo generate`, in one page.
//!
//! ```sh
//! cargo run --release --example generate -- tests/fixtures/gpt2/tiny-a "the" 20
//! ```

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn_zoo::backends::{self, BackendChoice, BackendTask};
use burn_zoo::gpt2;
use burn_zoo::nn::{generate, Sampler, Sampling, TextStream, TextTokenizer};

struct Generate {
    dir: PathBuf,
    prompt: String,
    max_new: usize,
}

impl BackendTask for Generate {
    type Output = Result<String, Box<dyn std::error::Error>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let (config, model) = gpt2::load::<B>(&self.dir, &device)?;
        let tokenizer = TextTokenizer::from_dir(&self.dir)?.ok_or("the folder has no tokenizer")?;
        let prompt = tokenizer.encode(&self.prompt, false)?;
        let mut sampler = Sampler::new(Sampling::greedy());
        let stop: Vec<u32> = config.eos_token_id.into_iter().collect();
        let mut stream = TextStream::new(&prompt);
        let mut text = self.prompt.clone();
        let ids = generate(&model, &prompt, self.max_new, &mut sampler, &stop, |_| true)?;
        for id in ids {
            if let Some(piece) = stream.push(&tokenizer, id)? {
                text.push_str(&piece);
            }
        }
        Ok(text)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: generate MODEL_DIR PROMPT [N]")?);
    let prompt = args.next().unwrap_or_else(|| "Hello".to_string());
    let max_new = args.next().map_or(Ok(20), |n| n.parse())?;
    let kind = backends::resolve(BackendChoice::Auto)?;
    let text = backends::run(
        kind,
        Generate {
            dir,
            prompt,
            max_new,
        },
    )??;
    println!("[{kind}] {text}");
    Ok(())
}
