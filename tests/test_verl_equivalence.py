"""The local engine and verl see the same SFT problem on the same tiny model: same tokens, same
loss; and the prompt contract holds in verl: a stored prompt reaches the model verbatim.
(The GRPO math — advantages, PPO-clip loss, KL, aggregation — is compared tensor for tensor
with verl's core_algos in tests/test_verl_losses.py.)

- Tokens: the from-scratch model verl starts from (reasoning360.engines.verl.init_model: the local
  engine's seeded weights + char tokenizer) fed through verl's own SFT dataset (MultiTurnSFTDataset,
  on the sft_messages.parquet the verl engine writes, with the chat template the engine gives
  verl) gives exactly the local engine's ids (encode_sft: <bos> prompt, response, <eos>), and
  verl's loss mask covers exactly the local engine's completion tokens.
- Prompts: with the engine's template (`custom_chat_template`), verl's agent-loop token builder
  (RL, eval) turns a stored prompt into exactly the local engine's prompt ids, and its SFT dataset
  into exactly encode_sft's, for the char tokenizer (a BOS) and for a Qwen-style ChatML tokenizer
  (byte-level BPE, no BOS, its own chat template with a default system prompt, which must not be
  applied), on the paper's raw ChatML prompts with the prefill.
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
    from reasoning360.engines.verl.data import chat_template_for, load_tokenizer, write_sft_messages
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
    counts = write_sft_messages(traces, root / "sft_messages.parquet", tok, chat_template_for(tok),
                                {"seed": 0, "sft": {"max_len": MAX, "truncation": "drop", "max_examples": None}})
    return model_cfg, init, tok, traces, root / "sft_messages.parquet", counts


def _verl_examples(parquet, tok):
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from reasoning360.engines.verl.data import chat_template_for

    tok.chat_template = chat_template_for(tok)       # verl's HFModelConfig with custom_chat_template
    cfg = OmegaConf.create({"pad_mode": "no_padding", "truncation": "error", "max_length": MAX,
                            "messages_key": "messages", "ignore_input_ids_mismatch": True})
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
    local, dropped = encode_sft(build_char_tokenizer(), read_rows(traces / "sft.parquet"), MAX, "drop")
    verl = _verl_examples(parquet, tok)
    assert len(local) == len(verl) == counts["rows"] and dropped == counts["dropped"] == 0
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
    examples, _ = encode_sft(ltok, read_rows(traces / "sft.parquet"), MAX, "drop")
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


# ------------------------------------------------------------------------- the prompt contract in verl

QWEN_TEMPLATE = (   # Qwen2.5's ChatML template in short: a default system prompt when none is given
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are Qwen, "
    "created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _qwen_style_tokenizer(corpus: list[str]):
    """A small byte-level BPE with Qwen's special tokens (no BOS, EOS <|im_end|>) and a ChatML
    chat template, trained here on `corpus` (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = QWEN_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def paper_rows(tmp_path_factory):
    """The paper's prompts (qwen-instruct: raw ChatML + the prefill) and traces."""
    from test_verl_support import small_data

    from reasoning360.engines.local.data import read_rows

    _, traces = small_data(tmp_path_factory.mktemp("paper-rows"))
    return read_rows(traces / "sft.parquet")


@pytest.mark.parametrize("kind", ["char", "qwen"])
def test_verl_renders_stored_prompts_verbatim(kind, paper_rows, tmp_path):
    import copy

    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from reasoning360.engines.local.data import encode_prompt, encode_sft
    from reasoning360.engines.local.tokenizer import build_char_tokenizer
    from reasoning360.engines.verl.data import chat_template_for, write_sft_messages
    from reasoning360.tasks.prompts import VERBATIM_CHAT_TEMPLATE, prompt_text

    texts = [prompt_text(r["prompt"]) for r in paper_rows]
    assert all(t.startswith("<|im_start|>system") and t.endswith("<think>") for t in texts)   # raw ChatML + prefill
    local_tok = build_char_tokenizer() if kind == "char" else _qwen_style_tokenizer(
        texts + [r["response"] for r in paper_rows])
    template = chat_template_for(local_tok)
    assert (template == VERBATIM_CHAT_TEMPLATE) is (kind == "qwen")       # a BOS only where the tokenizer adds one
    verl_tok = copy.deepcopy(local_tok)
    verl_tok.chat_template = template          # actor_rollout_ref.model.custom_chat_template / model.custom_...

    # RL and eval: the agent loop's token builder on the stored messages = the local engine's prompt ids
    builder = create_continuous_token_builder(verl_tok, hf_model_type="qwen2" if kind == "qwen" else "llama")
    for r, text in zip(paper_rows, texts):
        ids = builder.build_initial_tokens(list(r["prompt"]))
        assert ids == encode_prompt(local_tok, text)
        assert local_tok.decode(ids, skip_special_tokens=False).endswith(text)
    if kind == "qwen":       # the tokenizer's own template would add a system turn and an assistant header
        own = local_tok.apply_chat_template(list(paper_rows[0]["prompt"]), tokenize=True, add_generation_prompt=True)
        own = own["input_ids"] if hasattr(own, "keys") else own
        assert own != encode_prompt(local_tok, texts[0])

    # SFT: verl's dataset on the messages the engine writes = encode_sft (prompt ids, response ids + EOS)
    traces = tmp_path / "traces"
    traces.mkdir()
    import pandas as pd

    pd.DataFrame(paper_rows).to_parquet(traces / "sft.parquet")
    out = tmp_path / "sft_messages.parquet"
    write_sft_messages(traces, out, local_tok, template,
                       {"seed": 0, "sft": {"max_len": 100_000, "truncation": "drop", "max_examples": None}})
    cfg = OmegaConf.create({"pad_mode": "no_padding", "truncation": "error", "max_length": 100_000,
                            "messages_key": "messages", "ignore_input_ids_mismatch": True})
    ds = MultiTurnSFTDataset(str(out), verl_tok, cfg)
    local, _ = encode_sft(local_tok, paper_rows, 100_000, "drop")
    assert len(ds) == len(local) == len(paper_rows)
    for i, ex in enumerate(local):
        ids, mask = ds[i]["input_ids"].tolist(), ds[i]["loss_mask"].tolist()
        assert ids == ex.ids
        assert [j for j, m in enumerate(mask) if m] == list(range(ex.n_prompt, len(ex.ids)))
