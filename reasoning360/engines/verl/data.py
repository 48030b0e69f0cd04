"""Our parquet <-> verl's: SFT messages in, eval generations out, HF model export.

The data stage already writes verl's RL schema (data_source, prompt chat messages, ability,
reward_model.ground_truth as a JSON string, extra_info), which main_ppo reads as is. verl's SFT
trainer reads multi-turn `messages`; the traces stage writes `prompt` + `response`, so the SFT
stage writes `sft_messages.parquet` (prompt + one assistant turn) and drops examples longer
than sft.max_len tokens, as the local engine does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ...atomic import atomic_dir, atomic_path
from ..eval_items import summarize


def _rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def _n_tokens(tokenizer, messages: list[dict]) -> int:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
    return len(tokenizer("".join(m["content"] for m in messages))["input_ids"]) + 1


def write_sft_messages(traces_dir: Path, out: Path, tokenizer=None, max_len: int | None = None,
                       spec: dict | None = None) -> dict[str, int]:
    """traces/sft.parquet (or the spec's `traces_file`, a distill split) -> out (`messages`: the
    prompt turns + the trace as the assistant turn). Returns {"rows", "dropped_too_long"}."""
    from ..context import sft_data_path

    import pyarrow as pa
    import pyarrow.parquet as pq

    src = sft_data_path(spec or {}, traces_dir)
    kept, dropped = [], 0
    for row in _rows(src):
        messages = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        messages.append({"role": "assistant", "content": row["response"]})
        if tokenizer is not None and max_len and _n_tokens(tokenizer, messages) > max_len:
            dropped += 1
            continue
        kept.append({"messages": messages, "data_source": row["data_source"],
                     "index": int((row.get("extra_info") or {}).get("index", len(kept)))})
    if not kept:
        raise ValueError(f"no SFT example fits sft.max_len={max_len} tokens ({dropped} dropped)")
    schema = pa.schema([
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("data_source", pa.string()), ("index", pa.int64())])
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(kept, schema=schema), tmp)
    return {"rows": len(kept), "dropped_too_long": dropped}


def count_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


# ---------------------------------------------------------------------------- checkpoints

def hf_dir_of(ckpt: Path) -> Path | None:
    """The HuggingFace export inside one verl checkpoint (FSDP: huggingface/, Megatron:
    model/huggingface/; RL: under actor/)."""
    for sub in ("huggingface", "model/huggingface", "actor/huggingface", "actor/model/huggingface"):
        d = Path(ckpt) / sub
        if (d / "config.json").exists() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin"))):
            return d
    return None


def export_model(ckpt_dir: Path, stage_dir: Path, step: int, *, python: str = "python",
                 backend: str = "fsdp") -> Path:
    """`stage_dir/model`, the HF directory of checkpoint `step` that our eval, `r360 serve` and the
    next stage load: verl's model merger (`python -m verl.model_merger merge`) on the sharded actor
    checkpoint; a checkpoint that already holds a full HF export (save_contents with hf_model) is
    used as it is. Atomic: model/ appears whole or not at all."""
    import subprocess

    target = Path(stage_dir) / "model"
    if (target / "config.json").exists():
        return target
    ckpt = Path(ckpt_dir) / f"global_step_{step}"
    src = hf_dir_of(ckpt)
    with atomic_dir(target) as tmp:
        if src is not None:
            for f in src.iterdir():
                dst = Path(tmp) / f.name
                try:
                    os.link(f, dst) if f.is_file() else shutil.copytree(f, dst)
                except OSError:
                    shutil.copy2(f, dst) if f.is_file() else shutil.copytree(f, dst, dirs_exist_ok=True)
        else:
            shards = ckpt / "actor" if (ckpt / "actor").is_dir() else ckpt
            cmd = [python, "-m", "verl.model_merger", "merge", "--backend", backend,
                   "--local_dir", str(shards), "--target_dir", str(tmp)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(stage_dir))
            if r.returncode != 0 or not (Path(tmp) / "config.json").exists():
                raise RuntimeError(f"verl's model merger failed on {shards} (exit {r.returncode}):\n"
                                   + (r.stdout + r.stderr)[-3000:])
        cfg = Path(tmp) / "tokenizer_config.json"
        if cfg.exists():   # transformers 5 writes its own class name; older readers know this one
            data = json.loads(cfg.read_text())
            if data.get("tokenizer_class") == "TokenizersBackend":
                data["tokenizer_class"] = "PreTrainedTokenizerFast"
                cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return target


# ---------------------------------------------------------------------------- eval

def read_generations(gen_dir: Path) -> list[dict[str, Any]]:
    """verl's validation dump (validation_data_dir/<step>.jsonl; the newest step)."""
    files = sorted(Path(gen_dir).glob("*.jsonl"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    if not files:
        raise FileNotFoundError(f"no generations in {gen_dir}")
    out = []
    for line in files[-1].read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def eval_items(test_rows: list[dict], generations: list[dict], tokenizer=None) -> tuple[list[dict], dict]:
    """Items and summary in the local engine's eval format, scored by reasoning360.tasks."""
    from reasoning360.tasks import count_backtracks, score

    by_gt: dict[str, list[int]] = {}
    for i, r in enumerate(test_rows):
        by_gt.setdefault(r["reward_model"]["ground_truth"], []).append(i)
    items = []
    for j, g in enumerate(generations):
        gts = g.get("gts")
        gt_key = gts if isinstance(gts, str) else json.dumps(gts, sort_keys=True)
        idx = by_gt.get(gt_key, [None]).pop(0) if by_gt.get(gt_key) else None
        row = test_rows[idx] if idx is not None else None
        ds = row["data_source"] if row else None
        text = g.get("output") or ""
        sc = float(score(ds, text, row["reward_model"]["ground_truth"])) if row else float(g.get("score", 0.0))
        extra = (row or {}).get("extra_info") or {}
        meta = extra.get("metadata")
        try:
            meta = json.loads(meta) if isinstance(meta, str) else meta
        except ValueError:
            meta = None
        difficulty = meta.get("difficulty") if isinstance(meta, dict) else None
        items.append({
            "index": int(extra.get("index", j)), "question": extra.get("question", ""),
            "prompt": g.get("input", ""), "response": text, "score": sc, "correct": sc == 1.0,
            "format_ok": sc > 0.0,
            "response_tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text),
            "finished": None,
            "backtracks": int(count_backtracks(ds, text)) if ds else 0,
            "difficulty": json.dumps(difficulty, sort_keys=True) if difficulty is not None else None,
            "verl_score": g.get("score"),
        })
    return items, summarize(items)

