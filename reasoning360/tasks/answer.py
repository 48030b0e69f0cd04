"""Format checks and answer extraction shared by every task's reward, bounded in size and time.

Model outputs are untrusted: every helper here looks at a bounded prefix, uses only linear
string operations (no backtracking regexes on unbounded input) and never raises on a string.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, TypeVar

MAX_COMPLETION_CHARS = 256 * 1024   # longer completions are malformed (score 0.0), unread
MAX_ANSWER_CHARS = 4096             # an <answer> longer than this is malformed

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# End-of-sequence markers a decoder may leave at the end of a completion.
EOS_MARKERS = ("<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|eot_id|>", "<|end_of_text|>")

T = TypeVar("T")


def strip_trailing(text: str, max_rounds: int = 8) -> str:
    """Drop trailing whitespace and end-of-sequence markers (a few rounds, bounded)."""
    for _ in range(max_rounds):
        new = text.rstrip()
        for eos in EOS_MARKERS:
            if new.endswith(eos):
                new = new[: -len(eos)]
                break
        if new == text:
            break
        text = new
    return text


def split_think_answer(completion: Any, max_chars: int = MAX_COMPLETION_CHARS,
                       max_answer_chars: int = MAX_ANSWER_CHARS) -> tuple[str, str] | None:
    """The strict format: the whole completion is ``<think>T</think>\\n<answer>A</answer>``
    (trailing whitespace / EOS allowed, nothing before ``<think>``), each tag exactly once.
    Returns (T, A) or None when malformed."""
    if not isinstance(completion, str) or len(completion) > max_chars:
        return None
    text = strip_trailing(completion)
    if not text.startswith(THINK_OPEN) or not text.endswith(ANSWER_CLOSE):
        return None
    for tag in _TAGS:
        if text.count(tag) != 1:
            return None
    sep = THINK_CLOSE + "\n" + ANSWER_OPEN
    mid = text.find(sep)
    if mid < 0:
        return None
    think = text[len(THINK_OPEN):mid]
    answer = text[mid + len(sep): -len(ANSWER_CLOSE)]
    if len(answer) > max_answer_chars:
        return None
    return think, answer


def extract_tag(text: Any, tag: str, max_chars: int = MAX_COMPLETION_CHARS,
                max_content: int = MAX_ANSWER_CHARS, last: bool = True) -> str | None:
    """Content of the last (or first) ``<tag>...</tag>`` in a bounded prefix of `text`, or None.
    Lenient (for cross-checks and diagnostics); rewards use `split_think_answer`."""
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
