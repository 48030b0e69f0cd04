"""Tokenizers for the local engine.

`char` builds a character-level tokenizer with the `tokenizers` library (no download, ~100
ids, so a ~1M-parameter model can learn the tasks in minutes) and wraps it as a
`PreTrainedTokenizerFast`, so every checkpoint saved with it is an ordinary HF directory that
AutoTokenizer, vLLM and verl load. `path` uses the checkpoint's own tokenizer.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]   # printable ASCII + "\n"


def build_char_tokenizer():
    """A fresh character tokenizer; the same every time (ids depend on nothing else)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    # BPE with an empty merge list splits any string into single characters; no
    # pre-tokenizer, so spaces and newlines are ordinary characters.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    tok.add_tokens(TAGS)          # whole-tag tokens, kept when decoding with skip_special_tokens
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False, model_max_length=1 << 30)


def load_tokenizer(model_cfg: dict[str, Any], model_dir: str | Path | None = None):
    """The tokenizer of a stage: the checkpoint's own when there is one (an upstream stage or
    model.path), else a fresh char tokenizer (or AutoTokenizer for `tokenizer: path`)."""
    from transformers import AutoTokenizer

    src = model_dir if model_dir is not None else model_cfg["path"]
    if src is not None and (Path(src) / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(str(src))
    elif model_cfg["tokenizer"] == "char":
        tok = build_char_tokenizer()
    else:
        if src is None:
            raise ValueError("model.tokenizer=path needs model.path (a local checkpoint directory)")
        tok = AutoTokenizer.from_pretrained(str(src))
    if tok.pad_token_id is None:           # e.g. Llama-style tokenizers: pad with EOS
        tok.pad_token = tok.eos_token
    return tok
