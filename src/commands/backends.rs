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
    let mut rows = Vec::new();
    for kind in BackendKind::ALL {
        let (available, detail) = if !kind.is_compiled() {
            (
                false,
                format!("not compiled in (rebuild with --features {kind})"),
            )
        } else {
            match backends::probe(kind) {
                Ok(device) => (true, format!("device opened: {device}")),
                Err(err) => (false, err.to_string()),
            }
        };
        rows.push((kind, available, detail));
    }
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
        return print_json(&json!({ "backends": list }));
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
