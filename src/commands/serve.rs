//! `zoo serve`: an OpenAI-compatible server (the library's `burn_zoo::serve`), its URL and a
//! line per request on stderr.

use anyhow::{bail, Context as _};
use burn_zoo::nn::Template;
use burn_zoo::resolve::Family;
use burn_zoo::serve::{ModelKind, ModelSpec, ServeOptions, Server};

use super::{fetch, names_a_path, resolve_model, Context, WeightArgs};

/// Arguments of `zoo serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Models to serve: catalog ids, model folders or .gguf files (causal LMs for chat and
    /// completions, BERT / sentence-transformers encoders for embeddings). Clients name each by
    /// its catalog id, or by the file or folder name of its path.
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences of one model decoded together (slots).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests per model that may wait for a slot; more get 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// New tokens for a request that gives no max_tokens.
    #[arg(long, default_value_t = 512)]
    pub default_max_tokens: usize,
    /// Largest request body in bytes; larger get 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Chat format for every causal LM: chatml, alpaca, vicuna-v1.1, llama-2-chat, zephyr
    /// (default: each checkpoint's own, else the catalog's).
    #[arg(long)]
    pub template: Option<String>,
    #[command(flatten)]
    pub weights: WeightArgs,
}

/// `zoo serve`.
pub fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    let forced = args.template.as_deref().map(Template::named).transpose()?;
    let format = args.weights.format()?;
    let kind = ctx.backend()?;
    let mut specs = Vec::new();
    for arg in &args.models {
        let model = resolve_model(arg)?;
        let id = if names_a_path(arg) {
            model
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| arg.clone())
        } else {
            arg.clone()
        };
        let model_kind = match model.family {
            Family::Bert => ModelKind::Encoder,
            Family::T5 => bail!(
                "{arg} is an encoder-decoder (T5): zoo serve serves causal LMs and BERT encoders"
            ),
            _ => ModelKind::Causal,
        };
        let mut spec = ModelSpec::new(&id, &model.path, model_kind);
        spec.format = format;
        match &forced {
            Some(t) => {
                spec.template = Some(t.clone());
                spec.template_overrides = true;
            }
            // The catalog's format, for checkpoints that bring none of their own.
            None if !names_a_path(arg) && model_kind == ModelKind::Causal => {
                spec.template = fetch::catalog()
                    .ok()
                    .and_then(|c| c.get(arg).ok().map(|e| e.template.clone()))
                    .filter(|t| t != "none")
                    .and_then(|name| Template::named(&name).ok());
            }
            None => {}
        }
        specs.push(spec);
    }
    let options = ServeOptions {
        backend: kind,
        parallel: args.parallel,
        queue: args.queue,
        default_max_tokens: args.default_max_tokens,
        max_body_bytes: args.max_body,
        ..ServeOptions::new(kind)
    };
    let mut server = Server::load(options, specs)?;
    server.on_request(|r| eprintln!("{} {} {} {:.3}s", r.method, r.path, r.status, r.seconds));
    let models = server.models();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        for (id, model_kind) in &models {
            eprintln!("serving {id} ({}) on {kind}", model_kind.name());
        }
        eprintln!("zoo serve: listening on http://{addr} (chat page at /, OpenAI API at /v1)");
        server.run(listener, shutdown_signal()).await?;
        eprintln!("zoo serve: stopped");
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
