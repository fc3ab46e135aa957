//! `zoo web`: serves the browser page of `examples/web` (the zoo compiled to wasm32 on WebGPU)
//! and the files of the models it runs, on 127.0.0.1.
//!
//! | URL | what |
//! | --- | --- |
//! | `/`, `/app.js` | the page and its driver (built into the binary) |
//! | `/pkg/…` | the wasm module and its JS glue, from `--pkg` (built by `examples/web/build.sh`) |
//! | `/models.json` | the served models' URLs |
//! | `/models/NAME` | a `.gguf` model file, or for a folder its file list as JSON |
//! | `/models/NAME/FILE` | a file of a model folder |

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::{names_a_path, resolve_model, Context};

const INDEX_HTML: &str = include_str!("../../examples/web/index.html");
const APP_JS: &str = include_str!("../../examples/web/app.js");

/// Arguments of `zoo web`.
#[derive(Debug, clap::Args)]
pub struct WebArgs {
    /// Models to serve: catalog ids, model folders or .gguf files. The page finds each at
    /// `/models/NAME`, NAME being the catalog id or the file or folder name of the path.
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Port to listen on, on 127.0.0.1 (0: any free port; the URL is printed).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// The folder of the built wasm module and its JS glue (`zoo_web_bg.wasm`, `zoo_web.js`),
    /// as `examples/web/build.sh` writes it [default: ZOO_CACHE/web/pkg].
    #[arg(long, env = "ZOO_WEB_PKG")]
    pub pkg: Option<PathBuf>,
}

struct Served {
    pkg: PathBuf,
    /// Name → the model's file or folder.
    models: BTreeMap<String, PathBuf>,
}

/// `zoo web`.
pub fn web(_ctx: &Context, args: WebArgs) -> anyhow::Result<()> {
    let pkg = match args.pkg {
        Some(p) => p,
        None => super::fetch::cache_dir()?.join("web").join("pkg"),
    };
    if !pkg.join("zoo_web_bg.wasm").is_file() || !pkg.join("zoo_web.js").is_file() {
        bail!(
            "{} holds no built page (zoo_web_bg.wasm, zoo_web.js): build it with examples/web/build.sh, or pass --pkg",
            pkg.display()
        );
    }
    let mut models = BTreeMap::new();
    for arg in &args.models {
        let (name, path) = if names_a_path(arg) {
            let path = PathBuf::from(arg);
            if !path.exists() {
                bail!("{arg} does not exist");
            }
            let name = path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .with_context(|| format!("{arg} has no file or folder name"))?;
            (name, path)
        } else {
            (arg.clone(), resolve_model(arg)?.path)
        };
        if models.insert(name.clone(), path).is_some() {
            bail!("two models are named {name}: serve them from differently named folders");
        }
    }
    let served = std::sync::Arc::new(Served { pkg, models });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{}", args.port))?;
        let addr = listener.local_addr()?;
        for (name, path) in &served.models {
            eprintln!("serving {} as /models/{name}", path.display());
        }
        let first = served.models.keys().next().cloned().unwrap_or_default();
        eprintln!("zoo web: open http://{addr}/?model=/models/{first}&task=chat");
        println!("http://{addr}/");
        let app = Router::new().fallback(handle).with_state(served);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn reply(status: StatusCode, kind: &str, body: impl Into<Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, kind.to_string())],
        body.into(),
    )
        .into_response()
}

fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, "text/plain", "not found\n")
}

/// `rest` as a relative path of plain components (no `..`, no root), else `None`.
fn relative(rest: &str) -> Option<PathBuf> {
    let path = Path::new(rest);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
}

async fn file(path: &Path) -> Response {
    let owned = path.to_path_buf();
    match tokio::task::spawn_blocking(move || std::fs::read(owned)).await {
        Ok(Ok(bytes)) => reply(StatusCode::OK, content_type(&path.to_string_lossy()), bytes),
        _ => not_found(),
    }
}

/// The files under `dir`, relative, two levels deep (`1_Pooling/config.json`).
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_file() {
            out.push(name);
        } else if let Ok(inner) = std::fs::read_dir(&path) {
            for e in inner.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_file() && !n.starts_with('.') {
                    out.push(format!("{name}/{n}"));
                }
            }
        }
    }
    out.sort();
    out
}

async fn handle(State(served): State<std::sync::Arc<Served>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let path = path.as_str();
    match path {
        "/" | "/index.html" => return reply(StatusCode::OK, content_type(".html"), INDEX_HTML),
        "/app.js" => return reply(StatusCode::OK, content_type(".js"), APP_JS),
        "/models.json" => {
            let urls: Vec<String> = served
                .models
                .keys()
                .map(|n| format!("/models/{n}"))
                .collect();
            return reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&urls).unwrap_or_default(),
            );
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/pkg/") {
        return match relative(rest) {
            Some(rel) => file(&served.pkg.join(rel)).await,
            None => not_found(),
        };
    }
    let Some(rest) = path.strip_prefix("/models/") else {
        return not_found();
    };
    let (name, inner) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(root) = served.models.get(name) else {
        return not_found();
    };
    if inner.is_empty() {
        return if root.is_dir() {
            let list = serde_json::to_string(&listing(root)).unwrap_or_default();
            reply(StatusCode::OK, "application/json", list)
        } else {
            file(root).await
        };
    }
    match (root.is_dir(), relative(inner)) {
        (true, Some(rel)) => file(&root.join(rel)).await,
        _ => not_found(),
    }
}
