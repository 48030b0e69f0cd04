"""Format checks and answer extraction shared by every task's reward, bounded in size and time.

The format rule is the authors' (`extract_answer`); what is scored is the prefill (the assistant
part of the prompt) followed by the completion, so a `<think>` prefilled by the prompt counts.

Model outputs are untrusted: every helper here looks at a bounded prefix, uses only linear
string operations (no backtracking regexes on unbounded input) and never raises on a string.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, TypeVar

MAX_COMPLETION_CHARS = 256 * 1024   # longer completions are malformed (score 0.0), unread
MAX_ANSWER_CHARS = 4096             # a longer answer is never correct (score 0.1), unparsed

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# The turn markers their scorer cuts at (verl/utils/reward_score/countdown.py:9-15 and every
# sibling): "Assistant:" first (the `base` template), then "<|im_start|>assistant" (ChatML).
ASSISTANT_MARKERS = ("Assistant:", "<|im_start|>assistant")


def assistant_turn(text: str) -> str:
    """The text after the first assistant-turn marker, as the authors' scorer cuts it; the whole
    text when there is none (a `compact` prompt has no marker: the completion is the turn)."""
    for marker in ASSISTANT_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[i + len(marker):]
    return text


def extract_answer(completion: Any, prefill: str = "", max_chars: int = MAX_COMPLETION_CHARS) -> str | None:
    """The authors' format rule on `prefill + completion` (the prefill is the assistant part of
    the prompt, marker included, so a prefilled ``<think>`` counts). After the first assistant
    marker: exactly one ``<think>`` and one ``</think>``, in that order, with non-blank text
    between; exactly one ``<answer>`` and one ``</answer>``, in that order, the answer after
    ``</think>``. Anything else (text before ``<think>``, between ``</think>`` and ``<answer>``,
    after ``</answer>``) is free. Returns the stripped answer text, or None when malformed.
    Linear in the input; inputs longer than `max_chars` are malformed unread."""
    if not isinstance(completion, str) or not isinstance(prefill, str):
        return None
    if len(completion) + len(prefill) > max_chars:
        return None
    text = assistant_turn(prefill + completion)
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return None
    t0, t1 = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if t0 > t1 or not text[t0 + len(THINK_OPEN):t1].strip():
        return None
    if text.count(ANSWER_OPEN) != 1 or text.count(ANSWER_CLOSE) != 1:
        return None
    a0, a1 = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if a0 > a1 or t1 > a0:
        return None
    return text[a0 + len(ANSWER_OPEN):a1].strip()


def extract_tag(text: Any, tag: str, max_chars: int = MAX_COMPLETION_CHARS,
                max_content: int = MAX_ANSWER_CHARS, last: bool = True) -> str | None:
    """Content of the last (or first) ``<tag>...</tag>`` in a bounded prefix of `text`, or None.
    Lenient (for cross-checks and diagnostics); rewards use `extract_answer`."""
    if not isinstance(text, str):
        return None
    text = text[:max_chars]
    open_, close = f"<{tag}>", f"</{tag}>"
    if last:
        end = text.rfind(close)
        start = text.rfind(open_, 0, end) if end >= 0 else -1
    else:
        start = text.find(open_)
        end = text.find(close, start + len(open_)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    content = text[start + len(open_): end]
    return content if len(content) <= max_content else None


def count_markers(text: Any, marker: str, max_chars: int = MAX_COMPLETION_CHARS) -> int:
    """Non-overlapping occurrences of `marker` in a bounded prefix (0 for non-strings)."""
    if not isinstance(text, str) or not marker:
        return 0
    return text[:max_chars].count(marker)


def call_with_timeout(fn: Callable[..., T], *args, seconds: float = 1.0, default: T,
                      **kwargs) -> T:
    """`fn(*args, **kwargs)`, or `default` if it raises or (in the main thread, where SIGALRM is
    available) runs longer than `seconds`. An alarm already set by the caller (e.g. pytest-timeout)
    is suspended and re-armed with its remaining time afterwards. Off the main thread the call
    runs unbounded in time, so `fn` must be bounded by construction: this is a second line of
    defence, not the first."""
    if not (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")):
        try:
            return fn(*args, **kwargs)
        except Exception:
            return default

    def _alarm(signum, frame):
        raise TimeoutError("call timed out")

    t0 = time.monotonic()
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds if outer_left <= 0 else min(seconds, outer_left))
    try:
        return fn(*args, **kwargs)
    except Exception:
        return default
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer_left > 0:
            left = max(outer_left - (time.monotonic() - t0), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)
