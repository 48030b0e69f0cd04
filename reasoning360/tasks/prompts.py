"""The prompt contract: what a prompt is, how it is stored, how its prefill reaches the reward.

A prompt is the exact text fed to the model. The paper's templates (`qwen-instruct`, `baseline`,
`base`) are raw strings that carry their own chat tokens, as the authors build them in
`reasoning-gym/<task>.py:make_prefix`; `compact` (the tiny character model) is the bare problem.
No engine applies a chat template on top: the local engine encodes the text as is, and verl is
given a template that renders it verbatim (`VERBATIM_CHAT_TEMPLATE`).

Storage (verl's RL schema): ``prompt = [{"role": "user", "content": TEXT}]``, one message whose
content is the whole prompt (the authors' RL reads ``chat[0]['content']`` as the prompt,
verl/utils/dataset/rl_dataset.py:126-128 of their fork).

The prefill is the prompt's tail from the assistant-turn marker on, e.g.
``"<|im_start|>assistant\\nLet me solve this step by step.\\n<think>"`` ("" for compact). The
authors score the decoded prompt + response cut at that marker (verl/trainer/main_ppo.py:89-98,
reward_score/countdown.py:9-15), so a prefilled ``<think>`` counts: the reward scores
``prefill + completion``. The data stage stores the prefill in the row's ground truth
(``reward_model.ground_truth["prefill"]``), so every caller of
``reasoning360.tasks.score(data_source, completion, ground_truth)`` (local engine, verl's reward
function, distillation) scores prefill-aware without knowing the template.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import TaskError

TEMPLATES = ("compact", "base", "qwen-instruct", "baseline")

# The authors' wording (reasoning-gym/countdown.py:29-40 and every sibling make_prefix).
PREFILL = "Let me solve this step by step.\n<think>"
SYSTEM = ("You are a helpful assistant. You first think about the reasoning process in the mind "
          "and then provides the user with the answer.")
# ... and the variant several of their scripts use (advanced_geometry.py:48, color_cube_rotation.py:37,
# examples/data_preprocess/countdown.py:65).
SYSTEM_THINKS = ("You are a helpful assistant. You first thinks about the reasoning process in the "
                 "mind and then provides the user with the answer.")
BASE_PREAMBLE = ("A conversation between User and Assistant. The user asks a question, and the "
                 "Assistant solves it. The assistant first thinks about the reasoning process in the "
                 "mind and then provides the user with the answer.")

# A Jinja chat template that renders stored prompts verbatim: the one user message is the whole
# prompt; an assistant message (SFT) follows it directly and ends with the EOS token, as the
# authors' SFT dataset appends `tokenizer.eos_token` to the response (verl/utils/dataset/
# sft_dataset.py:128 of their fork). verl: actor_rollout_ref.model.custom_chat_template (RL) and
# model.custom_chat_template (SFT).
VERBATIM_CHAT_TEMPLATE = ("{% for message in messages %}{{ message['content'] }}"
                          "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
                          "{% endfor %}")


@dataclass(frozen=True)
class Prompt:
    text: str       # the whole prompt, verbatim: what the model is fed
    prefill: str    # text's tail from the assistant-turn marker on; scored with the completion

    def __post_init__(self):
        if not self.text.endswith(self.prefill):
            raise TaskError(f"prompt prefill {self.prefill!r} is not the end of its text")


def chatml(system: str, user: str, assistant: str) -> Prompt:
    """Qwen's ChatML written by hand, with the assistant turn opened and prefilled."""
    prefill = f"<|im_start|>assistant\n{assistant}"
    return Prompt(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n{prefill}",
                  prefill)


def base(user_line: str, assistant: str) -> Prompt:
    """The plain-text conversation of the `base` template (no chat tokens)."""
    prefill = f"Assistant: {assistant}"
    return Prompt(f"{BASE_PREAMBLE}\n{user_line}\n{prefill}", prefill)


def compact(text: str) -> Prompt:
    return Prompt(text, "")


def authors_prompt(template: str, question: str, *, think: str, plain: str, sep: str,
                   think_base: str | None = None, base_sep: str | None = None, base_indent: str = "",
                   system: str = SYSTEM, baseline_system: str | None = None,
                   baseline_prefill: str = PREFILL) -> Prompt:
    """One task's make_prefix: `question` + `sep` + the instruction, per template. `think` asks for
    <think> and <answer> (qwen-instruct); `plain` only for <answer> (baseline); the base template
    may word and join them differently (`think_base`, `base_sep`, `base_indent`)."""
    if template == "qwen-instruct":
        return chatml(system, f"{question}{sep}{think}", PREFILL)
    if template == "baseline":
        return chatml(system if baseline_system is None else baseline_system,
                      f"{question}{sep}{plain}", baseline_prefill)
    if template == "base":
        return base(f"{base_indent}User: {question}{sep if base_sep is None else base_sep}"
                    f"{think if think_base is None else think_base}", PREFILL)
    raise TaskError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")


def to_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The stored form: one user message holding the whole prompt."""
    return [{"role": "user", "content": prompt.text}]


def prompt_text(messages) -> str:
    """The prompt a stored row holds (its one message's content), verbatim."""
    if isinstance(messages, str):
        return messages
    msgs = list(messages)
    if len(msgs) != 1 or not isinstance(msgs[0], dict) or not isinstance(msgs[0].get("content"), str):
        raise TaskError(f"a stored prompt is one message holding the whole text, got {str(msgs)[:200]}")
    return msgs[0]["content"]


def continuation(prefill: str, completion: str) -> str:
    """What the model writes after a prompt with this prefill to produce `completion` (a trace
    written from its own ``<think>``): the ``<think>`` the prompt already holds is dropped. The
    reward of prefill + continuation equals the reward of the completion."""
    if prefill.endswith("<think>") and completion.startswith("<think>"):
        return completion[len("<think>"):]
    return completion
