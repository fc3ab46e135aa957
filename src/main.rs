//! `zoo`: run, inspect and compare the models of burn-zoo from the terminal.
//!
//! stdout carries results (text as it is generated, or JSON with `--json`); stderr carries
//! progress, timings and errors. Every error exits non-zero with one clear message.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The burn-zoo command line.
#[derive(Debug, Parser)]
#[command(
    name = "zoo",
    version,
    about = "Run and compare the architectures that shaped open language models, on any Burn backend"
)]
struct Cli {
    /// Backend to run on: auto, flex, ndarray, wgpu, vulkan, webgpu, cuda.
    #[arg(long, global = true, env = "ZOO_BACKEND")]
    backend: Option<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Load weights and word vectors that hold NaN or infinity (refused by default).
    #[arg(long, global = true, env = "ZOO_ALLOW_NAN")]
    allow_nan: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the models of the catalog.
    List,
    /// Put a catalog model's files into the local cache, verified.
    Fetch(commands::fetch::FetchArgs),
    /// Show a model's architecture, sizes and parameter count.
    Info(commands::info::InfoArgs),
    /// Put models side by side from their configs: parameters, FLOPs, weight and KV-cache memory.
    Compare(commands::compare::CompareArgs),
    /// Speed and memory: prefill and decode tokens/s (or sentences/s), median of several runs.
    Bench(commands::bench::BenchArgs),
    /// List the compiled-in backends and whether each opens a device here.
    Backends,
    /// Print the logits (or hidden states) for given token ids.
    Forward(commands::run::ForwardArgs),
    /// Generate text (or ids) with the KV cache, streaming to stdout.
    Generate(commands::run::GenerateArgs),
    /// A conversation in the model's chat template (interactive, or one --message).
    Chat(commands::chat::ChatArgs),
    /// Sentence embeddings (BERT / sentence-transformers).
    Embed(commands::bert::EmbedArgs),
    /// Cosine similarities of sentence embeddings, as a table.
    Similarity(commands::bert::SimilarityArgs),
    /// Masked-token prediction (BERT).
    FillMask(commands::bert::FillMaskArgs),
    /// Write a Hugging Face checkpoint as a GGUF file llama.cpp runs (q8_0, q4_0, q4_1, f16).
    Quantize(commands::quantize::QuantizeArgs),
    /// Internal: measure one model on one backend as JSON (the child of `compare --measure`).
    #[command(name = "__measure", hide = true)]
    Measure(commands::compare::MeasureOneArgs),
    /// Fine-tune a causal LM: LoRA adapters (PEFT format), P-Tuning v2 (ChatGLM-6B, ChatGLM2/3) or every parameter.
    Finetune(commands::finetune::FinetuneArgs),
    /// Fold a LoRA adapter into its base model: a Hugging Face folder.
    MergeAdapter(commands::finetune::MergeAdapterArgs),
    /// An OpenAI-compatible server: chat, completions, embeddings, a chat page at /.
    Serve(commands::serve::ServeArgs),
    /// The zoo in a browser page on WebGPU: serves the page and the models' files.
    Web(commands::web::WebArgs),
    /// Train CBOW or skip-gram word vectors on a text file.
    TrainWord2vec(commands::word2vec::TrainArgs),
    /// Nearest words by cosine similarity.
    Similar(commands::word2vec::SimilarArgs),
    /// Word analogies: positive words minus negative words (3CosAdd, or 3CosMul).
    Analogy(commands::word2vec::AnalogyArgs),
    /// Analogy accuracy and word-similarity correlation, as gensim computes them.
    EvalWord2vec(commands::word2vec::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.allow_nan {
        burn_zoo::nn::weights::allow_non_finite(true);
        burn_zoo::word2vec::allow_non_finite(true);
        eprintln!(
            "warning: --allow-nan: weights and vectors holding NaN or infinity are used as they are; results may be NaN"
        );
    }
    let ctx = commands::Context {
        backend: cli.backend.clone(),
        json: cli.json,
    };
    // Every command but the servers runs on one of rayon's workers rather than on the main
    // thread. The parallel kernels (Burn's gemm, zoo-quant's products and attention) then
    // share their work between this worker and the others, instead of parking the main thread
    // while two workers run, and the serial steps between products run on a core whose cache
    // holds the last product's output: measured +8–14 % LoRA training tokens/s and about
    // +15 % f32 prefill on two cores (docs/finetune.md). `serve` and `web` stay on the main
    // thread: their tokio runtimes would hold a worker for their whole life. The workers get
    // the main thread's usual 8 MiB of stack (rayon's default is 2 MiB).
    let on_pool = !matches!(cli.command, Command::Serve(_) | Command::Web(_))
        && rayon::ThreadPoolBuilder::new()
            .stack_size(8 << 20)
            .build_global()
            .is_ok();
    let result = if on_pool {
        rayon::join(|| run(&ctx, cli.command), || ()).0
    } else {
        run(&ctx, cli.command)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", commands::error_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
fn run(ctx: &commands::Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::List => commands::info::list(ctx),
        Command::Fetch(args) => commands::fetch::fetch(ctx, args),
        Command::Info(args) => commands::info::info(ctx, args),
        Command::Compare(args) => commands::compare::compare(ctx, args),
        Command::Bench(args) => commands::bench::bench(ctx, args),
        Command::Backends => commands::backends::backends(ctx),
        Command::Forward(args) => commands::run::forward(ctx, args),
        Command::Generate(args) => commands::run::generate(ctx, args),
        Command::Chat(args) => commands::chat::chat(ctx, args),
        Command::Embed(args) => commands::bert::embed(ctx, args),
        Command::Similarity(args) => commands::bert::similarity(ctx, args),
        Command::FillMask(args) => commands::bert::fill_mask(ctx, args),
        Command::Quantize(args) => commands::quantize::quantize(ctx, args),
        Command::Measure(args) => commands::compare::measure_one(ctx, args),
        Command::Finetune(args) => commands::finetune::finetune(ctx, args),
        Command::MergeAdapter(args) => commands::finetune::merge_adapter(ctx, args),
        Command::Serve(args) => commands::serve::serve(ctx, args),
        Command::Web(args) => commands::web::web(ctx, args),
        Command::TrainWord2vec(args) => commands::word2vec::train(ctx, args),
        Command::Similar(args) => commands::word2vec::similar(ctx, args),
        Command::Analogy(args) => commands::word2vec::analogy(ctx, args),
        Command::EvalWord2vec(args) => commands::word2vec::eval(ctx, args),
    }
}
