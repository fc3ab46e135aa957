//! `zoo backends`: what is compiled in and what opens a device here.

use burn_zoo::backends::{self, BackendKind};
use serde_json::json;

use super::{print_json, Context};

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
                json!({"name": kind.name(), "compiled": kind.is_compiled(), "available": available, "detail": detail})
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
    Ok(())
}
