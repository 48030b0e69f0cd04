"""Our parquet <-> verl's: the prompt template, SFT messages in, eval generations out, HF export.

The prompt contract (reasoning360.tasks.prompts): a stored prompt is one user message holding
the exact text fed to the model. verl 0.9.1 always applies a chat template (RL and eval through
the agent loop's token builder, SFT through MultiTurnSFTDataset), so the engine gives verl a
template that renders the stored text verbatim (`VERBATIM_CHAT_TEMPLATE`), preceded by the
tokenizer's BOS where the tokenizer adds one to a plain text (the char tokenizer does, Qwen2.5's
does not): then verl's prompt ids are exactly the local engine's `tokenizer(text)` and its SFT
ids the local engine's `prompt ids + response ids + EOS` (`chat_template_for`).

The data stage already writes verl's RL schema (data_source, prompt, ability,
reward_model.ground_truth as a JSON string, extra_info), which main_ppo reads as is. verl's SFT
trainer reads multi-turn `messages`: the SFT stage writes `sft_messages.parquet`
([user: prompt text, assistant: response]) from the same seeded subsample of the traces as the
local engine (sft.max_examples), counting tokens per turn exactly as verl's dataset renders them
and dropping (sft.truncation: drop) or keeping (right: verl cuts the end) examples longer than
sft.max_len, as the local engine does.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...atomic import atomic_dir, atomic_path

# BOS before a first turn that is not the assistant's: verl's SFT dataset renders each turn on
# its own, so the assistant turn never gets one.
BOS_FIRST = "{% if messages and messages[0]['role'] != 'assistant' %}{{ bos_token }}{% endif %}"


class TemplateError(ValueError):
    """A tokenizer whose plain-text encoding the verbatim template cannot reproduce."""


def load_tokenizer(model_dir: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def chat_template_for(tokenizer) -> str:
    """The chat template verl gets: the stored prompt verbatim, with a leading BOS exactly when
    `tokenizer(text)` adds one (what the local engine and vLLM's completions API feed the
    model). A tokenizer that adds anything else around a text is refused."""
    from reasoning360.tasks.prompts import VERBATIM_CHAT_TEMPLATE

    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b", add_special_tokens=True)["input_ids"]
    if full == plain:
        return VERBATIM_CHAT_TEMPLATE
    bos = tokenizer.bos_token_id
    if bos is not None and full == [bos] + plain:
        return BOS_FIRST + VERBATIM_CHAT_TEMPLATE
    raise TemplateError(f"model.path: its tokenizer encodes a plain text as {full} around {plain}; the verl "
                        "engine renders prompts verbatim with at most a leading BOS")


@lru_cache(maxsize=32)
def _planned(path: str) -> str | None:
    try:
        return chat_template_for(load_tokenizer(path))
    except TemplateError:
        raise
    except Exception:       # not loadable yet / a stand-in directory (plans, dry runs)
        return None


def planned_chat_template(model_cfg: dict[str, Any], start: Path) -> str:
    """The template of a stage that has not run (command lines for dry runs and sbatch
    rendering): from the tokenizer the stage will start from where it exists, else the base
    model's (`model.path`, or the char tokenizer of a from-scratch model). A tokenizer that
    cannot be loaded at planning time shows the plain verbatim template; the stage writes the
    command it really runs to verl_cmd.sh."""
    from reasoning360.tasks.prompts import VERBATIM_CHAT_TEMPLATE

    for src in (start, model_cfg["path"]):
        if src is not None and (Path(src) / "config.json").exists():
            got = _planned(str(Path(src).expanduser()))
            if got is not None:
                return got
    if model_cfg["path"] is None and model_cfg["tokenizer"] == "char":
        from ..local.tokenizer import build_char_tokenizer

        return chat_template_for(build_char_tokenizer())
    return VERBATIM_CHAT_TEMPLATE


def turn_ids(tokenizer, template: str, messages: list[dict[str, str]]) -> list[list[int]]:
    """Each turn's token ids as verl's MultiTurnSFTDataset renders them (one turn at a time)."""
    out = []
    for m in messages:
        ids = tokenizer.apply_chat_template([m], chat_template=template, tokenize=True,
                                            add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


def write_sft_messages(traces_dir: Path, out: Path, tokenizer, template: str, spec: dict[str, Any]) -> dict[str, Any]:
    """traces/sft.parquet (or the spec's `traces_file`: a distill split, the pretrain corpus) ->
    `out` (`messages`: the prompt text as the user turn, the trace as the assistant turn), from
    the local engine's seeded subsample (sft.max_examples). An example longer than sft.max_len
    tokens is dropped (`truncation: drop`) or kept for verl to cut on the right (`right`; one
    whose prompt alone fills max_len is dropped, as the local engine does); both are counted.
    Returns {"rows", "too_long", "dropped"}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reasoning360.tasks.prompts import prompt_text

    from ..context import sft_data_path
    from ..local.data import read_rows, subsample

    sft = spec["sft"]
    max_len, truncation = int(sft["max_len"]), sft["truncation"]
    if truncation not in ("drop", "right"):
        raise ValueError(f"sft.truncation: {truncation!r} (known: drop, right)")
    rows = subsample(read_rows(sft_data_path(spec, traces_dir)), sft["max_examples"], int(spec["seed"]))
    kept, too_long, dropped = [], 0, 0
    for i, row in enumerate(rows):
        messages = [{"role": "user", "content": prompt_text(row["prompt"])},
                    {"role": "assistant", "content": row["response"]}]
        prompt_ids, response_ids = turn_ids(tokenizer, template, messages)
        if len(prompt_ids) + len(response_ids) > max_len:
            too_long += 1
            if truncation == "drop" or len(prompt_ids) >= max_len:
                dropped += 1
                continue
        extra = row.get("extra_info") or {}      # data, not config: a distill split may lack it
        kept.append({"messages": messages, "data_source": row["data_source"],
                     "index": int(extra["index"]) if "index" in extra else i})
    if not kept:
        raise ValueError(f"no SFT example fits sft.max_len={max_len} tokens ({dropped} dropped)")
    schema = pa.schema([
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("data_source", pa.string()), ("index", pa.int64())])
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(kept, schema=schema), tmp)
    return {"rows": len(kept), "too_long": too_long, "dropped": dropped}


def count_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None


# ---------------------------------------------------------------------------- checkpoints -> HF

def hf_dir_of(ckpt: Path) -> Path | None:
    """The HuggingFace export inside one verl checkpoint (FSDP: huggingface/, Megatron:
    model/huggingface/; RL: under actor/), when it holds weights."""
    for sub in ("huggingface", "model/huggingface", "actor/huggingface", "actor/model/huggingface"):
        d = Path(ckpt) / sub
        if (d / "config.json").exists() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin"))):
            return d
    return None


def merge_checkpoint(ckpt: Path, target: Path, *, python: str = "python", backend: str = "fsdp") -> Path:
    """`target` (an HF directory that our eval, `r360 serve` and the next stage load) from one
    verl checkpoint directory (global_step_N, or a kept snapshot of one): verl's model merger
    (`python -m verl.model_merger merge`) on the sharded actor; a checkpoint that already holds
    a full HF export (save_contents with hf_model) is used as it is. Atomic: `target` appears
    whole or not at all; kept when already there."""
    import subprocess

    target = Path(target)
    if (target / "config.json").exists():
        return target
    ckpt = Path(ckpt)
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
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(target.parent))
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


def export_model(ckpt_dir: Path, stage_dir: Path, step: int, *, python: str = "python",
                 backend: str = "fsdp") -> Path:
    """`stage_dir/model` from verl's checkpoint `step` (merge_checkpoint)."""
    return merge_checkpoint(Path(ckpt_dir) / f"global_step_{step}", Path(stage_dir) / "model",
                            python=python, backend=backend)


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


def _groups(generations: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """verl's dump lines grouped by prompt: its `uid` is `<prompt uid>_<session>_<index>`, the
    n samples of one prompt share the prompt uid (a line without one is its own group)."""
    groups: dict[str, list[tuple[tuple, dict]]] = {}
    for j, g in enumerate(generations):
        uid = str(g.get("uid") or f"line-{j}")
        parts = uid.rsplit("_", 2)
        key, order = (parts[0], (int(parts[1]), int(parts[2]))) if len(parts) == 3 and parts[1].isdigit() \
            and parts[2].isdigit() else (uid, (0, 0))
        groups.setdefault(key, []).append((order, g))
    return [[g for _, g in sorted(v, key=lambda x: x[0])] for v in groups.values()]


def eval_items(test_rows: list[dict], generations: list[dict], tokenizer, n: int) -> list[dict]:
    """verl's answers as the local engine's items (engines.eval_items.make_item): each test row
    answered `n` times, in row then sample order, scored by reasoning360.tasks. Rows are found by
    their ground truth (verl's dump carries `gts`); every row must have exactly n answers."""
    from reasoning360.tasks import count_backtracks, score
    from reasoning360.tasks.prompts import prompt_text

    from ..eval_items import make_item
    from ..local.data import ground_truth

    by_gt: dict[str, list[int]] = {}
    for i, r in enumerate(test_rows):
        by_gt.setdefault(ground_truth(r), []).append(i)
    answers: dict[int, list[dict]] = {}
    for group in _groups(generations):
        gts = group[0].get("gts")
        key = gts if isinstance(gts, str) else json.dumps(gts)
        free = by_gt.get(key)
        if not free:
            raise ValueError(f"verl answered a prompt that is not in the split (ground truth {str(key)[:120]})")
        answers[free.pop(0)] = group
    missing = [i for i in range(len(test_rows)) if len(answers.get(i, [])) != n]
    if missing:
        raise ValueError(f"verl's generations: {len(missing)} of {len(test_rows)} test items without exactly "
                         f"{n} answer(s) (first: row {missing[0]}, {len(answers.get(missing[0], []))} answers)")
    items = []
    for i, row in enumerate(test_rows):
        text = prompt_text(row["prompt"])
        for j, g in enumerate(answers[i]):
            out = g.get("output") or ""
            items.append(make_item(row, i, j, text, out, len(tokenizer(out, add_special_tokens=False)["input_ids"]),
                                   None, score, count_backtracks, ground_truth(row)))
    return items
