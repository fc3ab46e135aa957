//! llama.cpp's tensor names (`token_embd.weight`, `blk.{i}.attn_q.weight`) as a checkpoint's.

/// How one architecture names its tensors in GGUF and in its Hugging Face checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct TensorNames {
    /// Whole names outside the blocks: (GGUF, checkpoint).
    pub fixed: &'static [(&'static str, &'static str)],
    /// Block parts: (GGUF part, checkpoint part) in `blk.{i}.{part}.{suffix}`.
    pub blocks: &'static [(&'static str, &'static str)],
    /// The checkpoint's prefix of block `i`: `{layers}.{i}.{part}.{suffix}`.
    pub layers: &'static str,
}

impl TensorNames {
    /// The checkpoint's name of the GGUF tensor `gguf` (`None` for a name the tables lack).
    pub fn checkpoint_name(&self, gguf: &str) -> Option<String> {
        if let Some((_, hf)) = self.fixed.iter().find(|(g, _)| *g == gguf) {
            return Some(hf.to_string());
        }
        let rest = gguf.strip_prefix("blk.")?;
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let (part, suffix) = rest.split_once('.')?;
        let (_, hf) = self.blocks.iter().find(|(g, _)| *g == part)?;
        Some(format!("{}.{i}.{hf}.{suffix}", self.layers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_through_the_tables() {
        let names = TensorNames {
            fixed: &[("token_embd.weight", "wte.weight")],
            blocks: &[("ffn_up", "mlp.c_fc")],
            layers: "h",
        };
        assert_eq!(
            names.checkpoint_name("token_embd.weight").as_deref(),
            Some("wte.weight")
        );
        assert_eq!(
            names.checkpoint_name("blk.3.ffn_up.bias").as_deref(),
            Some("h.3.mlp.c_fc.bias")
        );
        for unknown in [
            "blk.x.ffn_up.weight",
            "blk.3.ffn_gate.weight",
            "blk.3",
            "output.weight",
        ] {
            assert_eq!(names.checkpoint_name(unknown), None, "{unknown}");
        }
    }
}
