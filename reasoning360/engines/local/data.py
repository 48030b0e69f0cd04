"""Reading the verl-schema parquet files, rendering prompts, and seeded batch orders.

Batch orders are pure functions of (seed, step): batch s of an epoch-based shuffle can be
recomputed after a restart without saving the order, which is what makes a resumed run
train on exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


def task_fns() -> tuple[Callable[[str, str, str], float], Callable[[str, str], int]]:
    """(score, count_backtracks) from reasoning360.tasks (imported late: tasks may be heavy)."""
    from reasoning360.tasks import count_backtracks, score

    return score, count_backtracks


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a parquet file as plain Python (lists of dicts, not numpy arrays)."""
    import pandas as pd

    df = pd.read_parquet(path)
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def split_path(data_dir: str | Path, split: str) -> Path:
    p = Path(data_dir) / f"{split}.parquet"
    if not p.exists():
        raise FileNotFoundError(f"{p} missing (data stage outputs: "
                                f"{sorted(x.name for x in Path(data_dir).glob('*.parquet'))})")
    return p


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """A stored prompt's text, verbatim: its one message holds the whole prompt, chat tokens and
    prefill included (`reasoning360.tasks.prompts`). No chat template is applied, whatever the
    tokenizer has: the same text for SFT, GRPO, eval and distillation, as the authors feed it.
    `tokenizer` is unused (kept so every caller reads the same)."""
    from reasoning360.tasks.prompts import prompt_text

    return prompt_text(messages)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Prompt ids: the text tokenized with the tokenizer's own special tokens (a BOS where it has
    one, as vLLM's completions API does; Qwen2.5 adds none)."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def encode_response(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def ground_truth(row: dict[str, Any]) -> str:
    gt = (row.get("reward_model") or {}).get("ground_truth")
    return gt if isinstance(gt, str) else json.dumps(gt)


@dataclass
class SFTExample:
    ids: list[int]
    n_prompt: int


def encode_sft(tokenizer, rows: list[dict], max_len: int, truncation: str) -> tuple[list[SFTExample], int]:
    """Prompt + response + EOS per row. A row longer than max_len is dropped (`truncation: drop`)
    or cut on the right (`right`, as verl's SFT dataset does); either way it is counted."""
    out, long_ = [], 0
    for row in rows:
        p = encode_prompt(tokenizer, render_prompt(tokenizer, row["prompt"]))
        r = encode_response(tokenizer, row["response"])
        if len(p) + len(r) > max_len:
            long_ += 1
            if truncation == "drop" or len(p) >= max_len:
                continue
            r = r[: max_len - len(p)]
        out.append(SFTExample(p + r, len(p)))
    return out, long_


def subsample(rows: list[dict], max_examples: int | None, seed: int) -> list[dict]:
    """At most `max_examples` rows, a seeded draw (null: every row): SFT sets of the same size
    whatever their source, so comparisons between them are not comparisons of sizes."""
    if max_examples is None or len(rows) <= max_examples:
        return rows
    pick = np.sort(np.random.default_rng([seed, 0x5f7]).choice(len(rows), size=max_examples, replace=False))
    return [rows[i] for i in pick]


class BucketedOrder:
    """Batches of `batch_size` indices, batch s a pure function of (seed, s).

    Each epoch is a seeded permutation; windows of `window` batches are sorted by length so a
    batch holds similar lengths (little padding), and the batch order is shuffled again so
    lengths do not trend within an epoch. A remainder smaller than a batch is skipped.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 32):
        if len(lengths) < batch_size:
            raise ValueError(f"{len(lengths)} examples < batch size {batch_size}")
        self.lengths = np.asarray(lengths)
        self.bs, self.seed, self.window = batch_size, seed, window
        self.per_epoch = len(lengths) // batch_size
        self._epoch, self._batches = -1, []

    def batch(self, step: int) -> list[int]:
        epoch, j = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._batches, self._epoch = self._make(epoch), epoch
        return self._batches[j]

    def _make(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))[: self.per_epoch * self.bs]
        batches = []
        span = self.window * self.bs
        for s in range(0, len(perm), span):
            chunk = perm[s:s + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.bs].tolist() for i in range(0, len(chunk), self.bs)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]


class PromptOrder:
    """GRPO prompts: epochs of seeded permutations, `batch_size` prompts per step."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < 1:
            raise ValueError("no RL prompts")
        self.n, self.bs, self.seed = n, batch_size, seed

    def batch(self, step: int) -> list[int]:
        start = step * self.bs
        out = []
        while len(out) < self.bs:
            epoch, pos = divmod(start + len(out), self.n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            take = min(self.bs - len(out), self.n - pos)
            out += perm[pos:pos + take].tolist()
        return out
