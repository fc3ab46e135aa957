"""transformers' perplexity of a GGUF causal model on a text file, computed as `zoo compare
--measure --text` computes it (one string; BOS first when the tokenizer adds one; a single
window when the text fits the context): the cross-check quoted in docs/measure.md. By hand.

    python tests/bench/perplexity_torch.py PATH/TO/model.gguf TEXT_FILE

Pinned: torch 2.15.0, transformers 5.23.0, gguf 0.19.0.
"""
import json
import math
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

path = Path(sys.argv[1])
text = Path(sys.argv[2]).read_text(encoding="utf8")
tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32)
ids = tok(text, return_tensors="pt").input_ids
if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False) and ids[0, 0] != tok.bos_token_id:
    ids = torch.cat([torch.tensor([[tok.bos_token_id]]), ids], dim=1)
assert ids.shape[1] <= model.config.max_position_embeddings, "this script scores one window"
with torch.inference_mode():
    logits = model(ids).logits[0, :-1].float()
nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="mean").item()
print(json.dumps({"perplexity": math.exp(nll), "mean_nll": nll, "text_tokens": ids.shape[1]}))
