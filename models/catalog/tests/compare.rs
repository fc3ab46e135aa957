//! `docs/compare.md` and `docs/memory.svg` are what the code produces today.
//!
//! Regenerate with `cargo run --release -p zoo-catalog --example compare -- --doc docs`.

use zoo_catalog::compare::{compare, memory_svg, to_markdown, DOC_MODELS, SURVEY_MODELS};
use zoo_catalog::{Catalog, EMBEDDED_CATALOG};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs");

#[test]
fn docs_are_current() {
    let catalog = Catalog::parse(EMBEDDED_CATALOG).unwrap();
    let models: Vec<_> = DOC_MODELS
        .iter()
        .map(|id| compare(catalog.get(id).unwrap()).unwrap())
        .collect();
    let doc = std::fs::read_to_string(format!("{DOCS}/compare.md")).unwrap();
    let command = format!("zoo compare {} --markdown", DOC_MODELS.join(" "));
    assert!(doc.contains(&command), "docs/compare.md lacks `{command}`");
    assert!(
        doc.contains(&to_markdown(&models)),
        "docs/compare.md is stale: regenerate it (see this file's header)"
    );
    let survey: Vec<_> = SURVEY_MODELS
        .iter()
        .map(|id| compare(catalog.get(id).unwrap()).unwrap())
        .collect();
    let command = format!("zoo compare {} --markdown", SURVEY_MODELS.join(" "));
    assert!(doc.contains(&command), "docs/compare.md lacks `{command}`");
    assert!(
        doc.contains(&to_markdown(&survey)),
        "docs/compare.md's survey table is stale: regenerate it"
    );
    let svg = std::fs::read_to_string(format!("{DOCS}/memory.svg")).unwrap();
    assert_eq!(svg, memory_svg(&models, 0), "docs/memory.svg is stale");
    // The survey's numbers, as the doc states them.
    for needle in [
        "| fp16 | 12.35 GB | 13.29 GB | 13 GB |",
        "| INT8 | 6.71 GB | 7.65 GB | 8 GB |",
        "| INT4 | 3.89 GB | 4.83 GB | 6 GB |",
        "| parameters | 6,738,415,616 | 13,015,864,320 | 1.93× |",
        "| KV cache per token | 512 KiB | 800 KiB | 1.56× |",
        "| block matrices | 84,934,656 | 84,934,656 |",
    ] {
        assert!(doc.contains(needle), "docs/compare.md lacks `{needle}`");
    }
}
