"""Our reward module, called by verl's own reward manager on a batch built from our parquet.

verl loads reasoning360/engines/verl/reward.py through `reward.custom_reward_function.path/name`
(the keys our overrides set), wraps it in its NaiveRewardManager, and scores responses decoded
from token ids exactly as in training. The scores must equal the local engine's verifiers.
"""

from __future__ import annotations

from test_verl_support import needs_verl, small_data, tiny_model, verl_config_dir

pytestmark = needs_verl


def _variants(response: str) -> list[str]:
    wrong = response.replace("<answer>", "<answer>1+").replace("</answer>", "+1</answer>")
    return [response, wrong, "no tags here", response.replace("</answer>", ""), "<answer>" + "9" * 5000]


def test_reward_through_verl_reward_manager(tmp_path):
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from reasoning360.engines.verl import overrides as O
    from reasoning360.tasks import load_rows, score

    model_dir = tiny_model(tmp_path / "model")
    _, traces = small_data(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    parquet = traces / "sft.parquet"          # verl's RL schema + a correct `response` per problem
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[
            f"reward.custom_reward_function.path={O.REWARD_FILE}",
            f"reward.custom_reward_function.name={O.REWARD_FN}", "reward.reward_manager.name=naive",
            "data.max_prompt_length=4096", f"actor_rollout_ref.model.path={model_dir}"])
    ds = RLHFDataset(data_files=[str(parquet)], tokenizer=tok, config=cfg.data)
    items = [ds[i] for i in range(len(ds))]
    batch = collate_fn(items)
    rows = load_rows(parquet)
    assert len(items) == len(rows) == 6

    comps, owner = [], []
    for i, r in enumerate(rows):
        for c in _variants(r["response"]):
            comps.append(c)
            owner.append(i)
    n = len(comps)
    prompts = []
    for i in owner:
        ids = tok.apply_chat_template(list(items[i]["raw_prompt"]), add_generation_prompt=True, tokenize=True)
        prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    responses = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in comps]
    lp, lr = max(map(len, prompts)), max(map(len, responses))
    P = torch.full((n, lp), tok.pad_token_id)
    R = torch.full((n, lr), tok.pad_token_id)
    attn = torch.zeros((n, lp + lr), dtype=torch.long)
    for j, (p, r) in enumerate(zip(prompts, responses)):
        P[j, lp - len(p):] = torch.tensor(p)          # left-padded prompt, right-padded response
        attn[j, lp - len(p):lp] = 1
        R[j, :len(r)] = torch.tensor(r)
        attn[j, lp:lp + len(r)] = 1
    non_tensor = {k: v[np.array(owner)] for k, v in batch.items() if isinstance(v, np.ndarray)}
    data = DataProto.from_single_dict({"prompts": P, "responses": R, "attention_mask": attn, **non_tensor})

    manager = load_reward_manager(cfg, tok)
    assert type(manager).__name__ == "NaiveRewardManager"

    async def run_all():
        return [await manager.run_single(data[j:j + 1]) for j in range(n)]

    out = manager.loop.run_until_complete(run_all())
    got = [o["reward_score"] for o in out]
    want = [score(rows[i]["data_source"], c, rows[i]["reward_model"]["ground_truth"]) for i, c in zip(owner, comps)]
    assert got == want
    assert set(got) == {0.0, 0.1, 1.0}
    assert got[0::5] == [1.0] * 6 and got[1::5] == [0.1] * 6 and got[2::5] == [0.0] * 6
    for o, s in zip(out, got):
        assert o["reward_extra_info"] == {"score": s, "acc": float(s == 1.0), "format_ok": float(s > 0)}
    # verl's rm_scores: the score sits on the last response token
    rm = manager.assemble_rm_scores(data, got)
    assert torch.allclose(rm.sum(-1), torch.tensor(got))


def test_reward_module_loads_by_path_like_verl():
    """verl imports the reward file by path (no package context)."""
    from verl.utils.import_utils import load_extern_object

    from reasoning360.engines.verl import overrides as O

    fn = load_extern_object(module_path=str(O.REWARD_FILE), object_name=O.REWARD_FN)
    gt = '{"numbers": [3, 5, 7], "target": 22}'
    out = fn(data_source="countdown", solution_str="<think>x</think>\n<answer>3*5+7</answer>", ground_truth=gt,
             extra_info={"index": 0}, reward_router_address=None)
    from reasoning360.tasks import score

    assert out["score"] == score("countdown", "<think>x</think>\n<answer>3*5+7</answer>", gt) == 1.0
    assert out["acc"] == 1.0 and out["format_ok"] == 1.0
