//! `zoo backends`: what is compiled in and what opens a device here.

use burn_zoo::backends::{self, BackendKind};
use serde_json::json;

use super::{print_json, Context};

/// How a backend keeps weights stored in f16, bf16 or a block format.
fn stored_formats(kind: BackendKind) -> &'static str {
    if kind.is_gpu() {
        "q8_0/q4_0/q4_1 packed on the device (a fused cubecl kernel for up to 8 rows, unpacked for one matmul above); f16, bf16 and K-quants widened to f32 at load (no memory saving)"
    } else {
        "all kept as stored in host memory (f16/bf16 halve f32; q4_0 ≈ 1/7), fused SIMD products"
    }
}

/// Lists every backend the zoo knows, compiled in or not, and probes the compiled ones.
pub fn backends(ctx: &Context) -> anyhow::Result<()> {
    // The adapter first: asking for it opens wgpu's default device (see `wgpu_adapter`).
    let wgpu_compiled = [BackendKind::Wgpu, BackendKind::Vulkan, BackendKind::WebGpu]
        .iter()
        .any(|k| k.is_compiled());
    let adapter = wgpu_compiled.then(backends::wgpu_adapter);
    let mut rows = Vec::new();
    for kind in BackendKind::ALL {
        let (available, detail) = if !kind.is_compiled() {
            (
                false,
                format!("not compiled in (rebuild with --features {kind})"),
            )
        } else {
            match backends::probe(kind) {
                Ok(device) => match (&adapter, kind) {
                    (
                        Some(Ok(a)),
                        BackendKind::Wgpu | BackendKind::Vulkan | BackendKind::WebGpu,
                    ) => {
                        let what = if a.is_hardware() {
                            "a GPU"
                        } else {
                            "a CPU emulation: `auto` skips it, use it by name"
                        };
                        (true, format!("adapter: {a} — {what}"))
                    }
                    _ => (true, format!("device opened: {device}")),
                },
                Err(err) => (false, err.to_string()),
            }
        };
        rows.push((kind, available, detail));
    }
    let auto = backends::resolve(backends::BackendChoice::Auto);
    let auto_name = auto.as_ref().map(|k| k.name()).unwrap_or("none");
    if ctx.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(kind, available, detail)| {
                json!({
                    "name": kind.name(),
                    "compiled": kind.is_compiled(),
                    "available": available,
                    "detail": detail,
                    "stored_weights": stored_formats(*kind),
                })
            })
            .collect();
        let adapter = match &adapter {
            Some(Ok(a)) => json!({
                "name": a.name,
                "device_type": a.device_type,
                "api": a.api,
                "driver": a.driver,
                "hardware": a.is_hardware(),
            }),
            Some(Err(err)) => json!({ "error": err.to_string() }),
            None => serde_json::Value::Null,
        };
        return print_json(
            &json!({ "backends": list, "wgpu_adapter": adapter, "auto": auto_name }),
        );
    }
    println!(
        "{:<8} {:<9} {:<10} detail",
        "backend", "compiled", "available"
    );
    for (kind, available, detail) in rows {
        println!(
            "{:<8} {:<9} {:<10} {}",
            kind.name(),
            if kind.is_compiled() { "yes" } else { "no" },
            if available { "yes" } else { "no" },
            detail
        );
    }
    println!();
    match &auto {
        Ok(kind) => {
            println!("auto: {kind} (CUDA if it opens a device, then a wgpu GPU adapter, then flex)")
        }
        Err(err) => println!("auto: {err}"),
    }
    println!();
    println!("weights in f16/bf16/block formats (--dtype, --quantize, GGUF files):");
    println!(
        "  CPU (flex, ndarray): {}",
        stored_formats(BackendKind::Flex)
    );
    println!(
        "  GPU (wgpu, vulkan, webgpu, cuda): {}",
        stored_formats(BackendKind::Wgpu)
    );
    println!(
        "  CPU kernels on this machine: {}",
        burn_zoo::nn::quant::cpu_features()
    );
    Ok(())
}
