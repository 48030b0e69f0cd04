"""The local engine and verl see the same SFT problem on the same tiny model: same tokens, same
loss. (The GRPO math — advantages, PPO-clip loss, KL, aggregation — is compared tensor for tensor
with verl's core_algos in tests/test_verl_losses.py.)

- Tokens: the from-scratch model verl starts from (reasoning360.engines.verl.init_model: the local
  engine's seeded weights + char tokenizer + a chat template) fed through verl's own SFT dataset
  (MultiTurnSFTDataset, on the sft_messages.parquet the verl engine writes) gives exactly the
  local engine's ids (encode_sft: <bos> prompt, response, <eos>), and verl's loss mask covers
  exactly the local engine's completion tokens.
- Loss: the local engine's SFT loss (sft_step: mean NLL over completion tokens of the batch) equals
  the mean NLL over verl's loss-mask tokens on the same weights (fp32, 1e-5).

What differs between the engines' *training runs*, and why they are not compared step by step:
batch order (verl's seeded DataLoader vs the local BucketedOrder), micro-batching (verl packs by
tokens with use_dynamic_bsz; the local engine by count), and the optimizer's warmup/cosine step
indexing; dropout is 0 in both. verl's GRPO samples with vLLM (its own RNG), the local engine with
its KV-cache sampler, so rollouts — and everything after them — differ by sampling noise.
"""

from __future__ import annotations

import pytest
from test_verl_support import CPU_PARAMS, needs_verl

pytestmark = needs_verl
MAX = 512


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from reasoning360.engines.verl.data import load_tokenizer, write_sft_messages
    from reasoning360.engines.verl.init_model import write_initial_model
    from compose import compose_cfg
    from reasoning360.sweep.main import resolve

    from reasoning360.tasks import build_data, build_traces

    root = tmp_path_factory.mktemp("equiv")
    data, traces = root / "data", root / "traces"
    build_data({"kind": "data", "task": "countdown", "params": CPU_PARAMS, "template": "compact", "seed": 0,
                "sizes": {"sft": 12, "train": 4, "val": 2, "test": 2}}, data, show_progress=False)
    build_traces({"kind": "traces", "task": "countdown", "data": "d", "k": 1, "style": "compact", "seed": 0},
                 data, traces, show_progress=False)
    model_cfg = resolve(compose_cfg())["model"]          # configs/model/tiny.yaml
    init = write_initial_model(model_cfg, 0, root / "stage")
    tok = load_tokenizer(init)
    counts = write_sft_messages(traces, root / "sft_messages.parquet", tok, MAX, {})
    return model_cfg, init, tok, traces, root / "sft_messages.parquet", counts


def _verl_examples(parquet, tok):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    cfg = OmegaConf.create({"pad_mode": "no_padding", "truncation": "error", "max_length": MAX,
                            "messages_key": "messages"})
    ds = MultiTurnSFTDataset(str(parquet), tok, cfg)
    out = []
    for i in range(len(ds)):
        item = ds[i]
        out.append((item["input_ids"].tolist(), item["loss_mask"].tolist()))
    return out


def test_verl_sft_tokens_are_the_local_engines(setup):
    from reasoning360.engines.local.data import encode_sft, read_rows
    from reasoning360.engines.local.tokenizer import build_char_tokenizer

    model_cfg, init, tok, traces, parquet, counts = setup
    local, dropped = encode_sft(build_char_tokenizer(), read_rows(traces / "sft.parquet"), MAX)
    verl = _verl_examples(parquet, tok)
    assert len(local) == len(verl) == counts["rows"] and dropped == counts["dropped_too_long"] == 0
    for ex, (ids, mask) in zip(local, verl):
        assert ids == ex.ids
        assert [i for i, m in enumerate(mask) if m] == list(range(ex.n_prompt, len(ex.ids)))


def test_verl_sft_loss_is_the_local_engines(setup):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from reasoning360.engines.local.data import encode_sft, read_rows
    from reasoning360.engines.local.model import build_model
    from reasoning360.engines.local.sft import sft_step
    from reasoning360.engines.local.tokenizer import build_char_tokenizer

    model_cfg, init, tok, traces, parquet, _ = setup
    ltok = build_char_tokenizer()
    local_model = build_model(model_cfg, ltok, 0)
    verl_model = AutoModelForCausalLM.from_pretrained(str(init), dtype=torch.float32, attn_implementation="sdpa")
    for (n, a), (_, b) in zip(local_model.state_dict().items(), verl_model.state_dict().items()):
        assert torch.equal(a, b), n                       # the very same starting weights
    examples, _ = encode_sft(ltok, read_rows(traces / "sft.parquet"), MAX)
    local_loss, n_target, _ = sft_step(local_model, examples, ltok.pad_token_id, 4, torch.device("cpu"))

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in _verl_examples(parquet, tok):
            x = torch.tensor([ids])
            logits = verl_model(input_ids=x).logits[0, :-1].float()
            targets, m = x[0, 1:], torch.tensor(mask[1:], dtype=torch.bool)   # token t predicted at t-1
            total += F.cross_entropy(logits[m], targets[m], reduction="sum").item()
            count += int(m.sum())
    assert count == n_target
    assert abs(total / count - local_loss) < 1e-5, (total / count, local_loss)
