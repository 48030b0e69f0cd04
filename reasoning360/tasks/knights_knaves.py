"""Knights and knaves: who always tells the truth and who always lies.

Problems come from reasoning-gym's `knights_knaves` (a unique solution by construction), so an
instance with n people has exactly 2^n - 1 wrong assignments: max_k = 2^n - 1.

Traces assume and check: k distinct wrong assignments, each checked statement by statement
until one contradicts its speaker's role (a knight saying something false, or a knave saying
something true), abandoned with an explicit backtrack, then the consistent assignment with every
statement checked.

* ``compact``: people are letters A, B, C...; an assignment is a string over K (knight) and
  N (knave); a statement is a formula (``B`` = B is a knight, ``~B``, ``(X&Y)``, ``(X|Y)``,
  ``(X>Y)`` if-then, ``(X=Y)`` iff)::

    <think>KN A:F^
    KK A:T B:T</think>
    <answer>KK</answer>

  (``KN A:F^``: under KN, A's statement is false, but A is a knight: back.)
* ``paper``: not among the authors' tasks (knights_knaves is our addition), so its wording is
  ours, in the spirit of theirs: "Let's assume ...", one sentence per statement checked, a dead
  end ending "Wait, this assignment leads to a contradiction. ... Let me go back and try another
  assignment.", the solution ending "Every statement is consistent with this assignment. This is
  the solution." and the answer between blank lines.

An attempt (`attempt`: what the pretrained base writes, no search) is one assignment drawn at
random, checked statement by statement up to the first contradiction (compact: that check
marked ``!`` where a dead end backtracks), answered as is::

    <think>KN A:F!</think>
    <answer>KN</answer>

The answer is the sentence ``Amelia is a hero, and Elizabeth is a hero.``; the compact template
also accepts the code ``KK``.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from .base import Problem, TaskError
from .gym import COMPACT_BACKTRACK, COMPACT_FAILED, GymTask, finish, finish_paper, gt_error, pick

PAPER_MARKER = "Wait, this assignment leads to a contradiction."

ATOMS = ("telling-truth", "lying")
OPS = ("not", "and", "or", "->", "<=>")
MAX_PEOPLE = 10
_PUNCT = str.maketrans({c: " " for c in ".,;:!?\"'()"})


def _valid_stmt(s: Any, n: int, depth: int = 0) -> bool:
    if depth > 32 or not isinstance(s, list) or not s:
        return False
    if s[0] in ATOMS:
        return len(s) == 2 and type(s[1]) is int and 0 <= s[1] < n
    if s[0] == "not":
        return len(s) == 2 and _valid_stmt(s[1], n, depth + 1)
    if s[0] in ("and", "or"):
        return len(s) >= 3 and all(_valid_stmt(x, n, depth + 1) for x in s[1:])
    if s[0] in ("->", "<=>"):
        return len(s) == 3 and all(_valid_stmt(x, n, depth + 1) for x in s[1:])
    return False


def evaluate(s: list, assign: tuple[bool, ...]) -> bool:
    op = s[0]
    if op == "telling-truth":
        return assign[s[1]]
    if op == "lying":
        return not assign[s[1]]
    if op == "not":
        return not evaluate(s[1], assign)
    if op == "and":
        return all(evaluate(x, assign) for x in s[1:])
    if op == "or":
        return any(evaluate(x, assign) for x in s[1:])
    a, b = evaluate(s[1], assign), evaluate(s[2], assign)
    return (not a or b) if op == "->" else a == b


def consistent(statements: list, assign: tuple[bool, ...]) -> int | None:
    """Index of the first person whose statement contradicts their role, or None."""
    for i, s in enumerate(statements):
        if evaluate(s, assign) != assign[i]:
            return i
    return None


def letter(i: int) -> str:
    return chr(ord("A") + i)


def formula(s: list, top: bool = True) -> str:
    op = s[0]
    if op == "telling-truth":
        return letter(s[1])
    if op == "lying":
        return "~" + letter(s[1])
    if op == "not":
        if s[1][0] in ATOMS:         # "not B is a knight" is "B is a knave"
            return formula(["lying" if s[1][0] == "telling-truth" else "telling-truth", s[1][1]], top)
        return "~" + _paren(formula(s[1], True))
    sym = {"and": "&", "or": "|", "->": ">", "<=>": "="}[op]
    body = sym.join(formula(x, top=False) for x in s[1:])
    return body if top else _paren(body)


def _paren(text: str) -> str:
    return f"({text})"


def sentence(s: list, names: list[str], a_knight: str, a_knave: str) -> str:
    """The statement in words (reasoning-gym's wording)."""
    op = s[0]
    if op in ATOMS:
        return f"{names[s[1]]} is {a_knight if op == 'telling-truth' else a_knave}"

    def sub(x: list) -> str:
        text = sentence(x, names, a_knight, a_knave)
        return text if x[0] in ATOMS else f"({text})"

    if op == "not":
        if s[1][0] in ATOMS:
            flip = "lying" if s[1][0] == "telling-truth" else "telling-truth"
            return sentence([flip, s[1][1]], names, a_knight, a_knave)
        return f"it is not the case that {sub(s[1])}"
    if op in ("and", "or"):
        return f" {op} ".join(sub(x) for x in s[1:])
    if op == "->":
        return f"if {sub(s[1])} then {sub(s[2])}"
    return f"{sub(s[1])} if and only if {sub(s[2])}"


def _to_list(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_to_list(v) for v in x]
    if hasattr(x, "item"):          # numpy scalars
        return x.item()
    return x


def _code(a: tuple[bool, ...]) -> str:
    return "".join("K" if v else "N" for v in a)


def _checks(statements: list, a: tuple[bool, ...], upto: int) -> list[str]:
    """The compact checks of the first `upto` statements under assignment `a`."""
    return [f"{letter(j)}:{'T' if evaluate(statements[j], a) else 'F'}" for j in range(upto)]


def _role(gt: dict, knight: bool) -> str:
    return gt["a_knight"] if knight else gt["a_knave"]


def _assume(gt: dict, a: tuple[bool, ...]) -> str:
    return "Let's assume " + ", ".join(f"{nm} is {_role(gt, v)}" for nm, v in zip(gt["names"], a)) + "."


def _check(gt: dict, a: tuple[bool, ...], j: int) -> str:
    """One statement checked under `a`, in words (paper)."""
    names = gt["names"]
    said = sentence(gt["statements"][j], names, gt["a_knight"], gt["a_knave"])
    val = evaluate(gt["statements"][j], a)
    head = f'{names[j]} says "{said}". Under this assumption that is {"true" if val else "false"}'
    if val == a[j]:
        why = f"{gt['knight']}s tell the truth" if a[j] else f"{gt['knave']}s lie"
        return f"{head}, and {names[j]} is {_role(gt, a[j])}: {why}, so this is consistent."
    return head + "."


class KnightsKnavesTask(GymTask):
    name = "knights_knaves"
    dataset = "knights_knaves"
    backtrack_sft = True
    ANSWER_EXAMPLE = "Alice is a knight, and Bob is a knave."
    PAPER_MARKERS = (PAPER_MARKER,)

    def check_own(self, params: dict[str, Any]) -> None:
        n = params.get("n_people", 2)
        if n > MAX_PEOPLE:
            raise TaskError(f"knights_knaves: n_people must be <= {MAX_PEOPLE}, got {n}")

    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        md = item["metadata"]
        terms = md["knight_knave_terms"]
        gt = {"statements": _to_list(md["statements"]), "solution": [bool(x) for x in md["solution"]],
              "names": [str(n) for n in md["names"]], "knight": terms["knight"],
              "knave": terms["knave"], "a_knight": terms["a_knight"], "a_knave": terms["a_knave"]}
        self.parse_gt(gt)
        return Problem(question=item["question"], answer=self.natural_answer(gt, tuple(gt["solution"])),
                       ground_truth=gt, metadata={"difficulty": md.get("difficulty")})

    def key(self, problem: Problem) -> str:
        from .gym import digest
        return digest(problem.ground_truth["statements"])

    def parse_gt(self, gt: Any) -> dict:
        try:
            n = len(gt["names"])
            ok = (1 <= n <= MAX_PEOPLE and len(gt["statements"]) == n and len(gt["solution"]) == n
                  and all(isinstance(x, bool) for x in gt["solution"])
                  and all(isinstance(x, str) and x and " " not in x for x in gt["names"])
                  and all(isinstance(gt[t], str) for t in ("knight", "knave", "a_knight", "a_knave"))
                  and all(_valid_stmt(s, n) for s in gt["statements"]))
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise gt_error(self.name, gt)
        return gt

    # ---- prompts
    def answer_example(self, problem: Problem) -> str:
        gt = problem.ground_truth
        return f"Alice is {gt['a_knight']}, and Bob is {gt['a_knave']}."

    def compact_prompt(self, problem: Problem) -> str:
        st = problem.ground_truth["statements"]
        return "\n".join(f"{letter(i)}:{formula(s)}" for i, s in enumerate(st)) + "\n"

    @staticmethod
    def natural_answer(gt: dict, assign: tuple[bool, ...]) -> str:
        parts = [f"{n} is {gt['a_knight'] if v else gt['a_knave']}" for n, v in zip(gt["names"], assign)]
        if len(parts) == 1:
            return parts[0] + "."
        return ", ".join(parts[:-1]) + ", and " + parts[-1] + "."

    # ---- traces
    def max_backtracks(self, problem: Problem) -> int:
        return 2 ** len(problem.ground_truth["names"]) - 1

    def max_k(self, params: dict[str, Any]) -> int:
        """Unique solution (reasoning-gym skips the rest): 2^n - 1 wrong assignments."""
        self.validate_params(params)
        return 2 ** int(params.get("n_people", 2)) - 1

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        gt = self.parse_gt(problem.ground_truth)
        st, sol = gt["statements"], tuple(gt["solution"])
        n = len(sol)
        wrong = [a for a in itertools.product((True, False), repeat=n) if a != sol]
        chosen = pick(self.name, wrong, k, rng)
        if consistent(st, sol) is not None:
            raise TaskError(f"{self.name}: the recorded solution is inconsistent: {gt}")
        if style == "compact":
            lines = [f"{_code(a)} {' '.join(_checks(st, a, consistent(st, a) + 1))}{COMPACT_BACKTRACK}"
                     for a in chosen]
            lines.append(_code(sol) + " " + " ".join(_checks(st, sol, n)))
            return finish("\n".join(lines), _code(sol))
        kn, kv, names = gt["knight"], gt["knave"], gt["names"]
        lines = []
        for a in chosen:
            i = consistent(st, a)
            lines.append(" ".join([_assume(gt, a)] + [_check(gt, a, j) for j in range(i + 1)]))
            lines[-1] += (f" {PAPER_MARKER} {names[i]} is {_role(gt, a[i])}, and "
                          + (f"{kn}s always tell the truth" if a[i] else f"{kv}s always lie")
                          + ". Let me go back and try another assignment.")
        lines.append(" ".join([_assume(gt, sol)] + [_check(gt, sol, j) for j in range(n)])
                     + " Every statement is consistent with this assignment. This is the solution.")
        return finish_paper("\n".join(lines) + "\n", self.natural_answer(gt, sol))

    # ---- attempts
    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """One assignment drawn uniformly (each person a knight or a knave), its statements
        checked as a trace checks them, stopping at the first contradiction (compact: the check
        marked `!`), then the assignment as the answer whatever the checks said."""
        gt = self.parse_gt(problem.ground_truth)
        st, n = gt["statements"], len(gt["names"])
        a = tuple(rng.random() < 0.5 for _ in range(n))
        i = consistent(st, a)
        upto = n if i is None else i + 1
        if style == "compact":
            return finish(_code(a) + " " + " ".join(_checks(st, a, upto)) + ("" if i is None else COMPACT_FAILED),
                          _code(a))
        text = " ".join([_assume(gt, a)] + [_check(gt, a, j) for j in range(upto)])
        if i is None:
            text += " Every statement is consistent with this assignment."
        else:
            text += (f" So this assignment is not consistent: {gt['names'][i]} is {_role(gt, a[i])}, and "
                     + (f"{gt['knight']}s always tell the truth." if a[i] else f"{gt['knave']}s always lie."))
        return finish_paper(text + "\n", self.natural_answer(gt, a))

    # ---- reward
    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        names, sol = gt["names"], gt["solution"]
        n = len(names)
        if compact and len(answer) == n and set(answer) <= {"K", "N"}:
            return all((c == "K") == v for c, v in zip(answer, sol))
        if len(answer) > 64 * n + 64:
            return False
        words = [w for w in answer.lower().translate(_PUNCT).split()
                 if w not in ("and", "is", "a", "an")]
        if len(words) != 2 * n:
            return False
        lower = {nm.lower(): i for i, nm in enumerate(names)}
        roles = {gt["knight"].lower(): True, gt["knave"].lower(): False}
        got: dict[int, bool] = {}
        for w_name, w_role in zip(words[0::2], words[1::2]):
            if w_name not in lower or w_role not in roles or lower[w_name] in got:
                return False
            got[lower[w_name]] = roles[w_role]
        return len(got) == n and all(got[i] == sol[i] for i in range(n))
