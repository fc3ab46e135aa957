//! The largest sizes the loaders accept, checked before anything is allocated from them.
//!
//! A `config.json` or GGUF header is untrusted input: a layer count of 10⁹ must be an error,
//! not a `Vec` reserved for 10⁹ layers. Every family's config validation passes its sizes
//! through [`check_sizes`]; each limit is far above every published checkpoint (the README's
//! limit table gives the reasons), and small enough that products of a few of them
//! (parameter counts, table sizes) cannot overflow 64 bits.

/// Layers (encoder, decoder or transformer blocks): the largest published models have ~130.
pub const MAX_LAYERS: usize = 1 << 10;
/// Attention heads (query or key/value): published models use at most a few hundred.
pub const MAX_HEADS: usize = 1 << 12;
/// Any width: hidden size, MLP inner size, head size, embedding projections (≤ 73 728 published).
pub const MAX_WIDTH: usize = 1 << 18;
/// Vocabulary entries (published vocabularies stay below 300 000).
pub const MAX_VOCAB: usize = 1 << 22;
/// Positions of the context (published contexts reach 10⁷ tokens; position tables are built
/// only for the positions a pass uses, so this bounds arithmetic, not memory).
pub const MAX_CONTEXT: usize = 1 << 26;

/// What a size counts, and so which limit it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeKind {
    /// Layers.
    Layers,
    /// Attention heads.
    Heads,
    /// A width (hidden size, inner size, head size, buckets …).
    Width,
    /// A vocabulary size.
    Vocab,
    /// A number of positions.
    Context,
}

impl SizeKind {
    /// The largest value accepted.
    pub fn limit(self) -> usize {
        match self {
            SizeKind::Layers => MAX_LAYERS,
            SizeKind::Heads => MAX_HEADS,
            SizeKind::Width => MAX_WIDTH,
            SizeKind::Vocab => MAX_VOCAB,
            SizeKind::Context => MAX_CONTEXT,
        }
    }

    /// The kind of a config field, from its name as Hugging Face configs and GGUF keys spell
    /// it: `*layer*` / `block_count` count layers, `*head*` (but not `head_dim`) heads,
    /// `*vocab*` vocabulary entries, `*position*` / `*seq*` / `*ctx*` / `context*` positions;
    /// everything else is a width.
    pub fn of(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if n.contains("layer") || n.contains("block_count") {
            SizeKind::Layers
        } else if n.contains("head") && !n.contains("head_dim") && !n.contains("head_size") {
            SizeKind::Heads
        } else if n.contains("vocab") {
            SizeKind::Vocab
        } else if n.contains("position")
            || n.contains("seq")
            || n.contains("ctx")
            || n.contains("context")
        {
            SizeKind::Context
        } else {
            SizeKind::Width
        }
    }
}

/// Checks one size: positive and at most its kind's limit.
pub fn check_size(name: &str, value: usize) -> Result<(), String> {
    let kind = SizeKind::of(name);
    if value == 0 {
        return Err(format!("{name} must be positive"));
    }
    if value > kind.limit() {
        return Err(format!(
            "{name} is {value}, above the largest the zoo accepts ({}; see the README's limit table)",
            kind.limit()
        ));
    }
    Ok(())
}

/// [`check_size`] for each `(name, value)`, in order.
pub fn check_sizes(sizes: &[(&str, usize)]) -> Result<(), String> {
    sizes.iter().try_for_each(|&(name, v)| check_size(name, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(SizeKind::of("num_hidden_layers"), SizeKind::Layers);
        assert_eq!(SizeKind::of("n_layer"), SizeKind::Layers);
        assert_eq!(SizeKind::of("llama.block_count"), SizeKind::Layers);
        assert_eq!(SizeKind::of("num_key_value_heads"), SizeKind::Heads);
        assert_eq!(SizeKind::of("head_dim"), SizeKind::Width);
        assert_eq!(SizeKind::of("vocab_size"), SizeKind::Vocab);
        assert_eq!(SizeKind::of("max_position_embeddings"), SizeKind::Context);
        assert_eq!(SizeKind::of("seq_length"), SizeKind::Context);
        assert_eq!(SizeKind::of("intermediate_size"), SizeKind::Width);
    }

    #[test]
    fn zero_and_absurd_sizes_are_errors() {
        assert!(check_size("n_layer", 0).unwrap_err().contains("positive"));
        let e = check_size("n_layer", 1_000_000_000).unwrap_err();
        assert!(e.contains("1000000000") && e.contains("1024"), "{e}");
        check_sizes(&[("n_layer", 126), ("vocab_size", 262_144)]).unwrap();
        // The products the zoo computes from accepted sizes fit in 64 bits.
        let params = (MAX_WIDTH as u128).pow(2) * MAX_LAYERS as u128 * 16;
        assert!(params < u64::MAX as u128);
        assert!((MAX_VOCAB as u128) * (MAX_WIDTH as u128) < u64::MAX as u128);
    }
}
