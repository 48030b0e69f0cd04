"""Advanced geometry: the orthocenter, the incircle radius or the angle at B of a triangle with
integer vertices.

Problems come from reasoning-gym's `advanced_geometry`. Traces redo a computation: k full
attempts, each with one distinct injected mistake (a different error kind per attempt, a
different wrong result each), every attempt followed by a check pass that uses another method
and catches the mistake, then an explicit backtrack; then the correct attempt, whose check
passes. The checks:

* orthocenter H: H must lie on both altitudes, (H-A).(C-B) = 0 and (H-B).(A-C) = 0 (exact
  fractions);
* incircle radius r: r*s must equal the area, computed again with the shoelace formula;
* angle at B: the angle again from atan2(|BA x BC|, BA.BC).

An error kind counts for a problem only if it changes the rounded answer and the check
catches it; `min_dead_ends` (ours) keeps problems with at least that many: max_k = min_dead_ends.

* ``compact``: the attempt's values on one line, ``^`` when the check fails::

    <think>u=7,11 v=3,-12 c1=56 c2=78 d=-117 H=13.077,-3.231 chk=88,0^
    u=7,11 v=3,-12 c1=-32 c2=78 d=-117 H=4.051,-5.487 chk=0,0 ok</think>
    <answer>(4.051, -5.487)</answer>

* ``paper``: the authors' wording and structure (reasoning_gym/geometry/advanced_geometry.py:140-
  600 of their fork): the plan of the computation, then per attempt the computation and a double
  check, "I have obtained the answer X. Let's double check it." and one "Let's check if I have
  calculated ... correctly." per step, "I think this step is done correctly." until the faulty
  step: "Oh, I made a mistake here, and X is not the correct answer. Let's try to recalculate
  ..., and obtain a new answer following the same steps as before." (incircle: "..., which leads
  to r being the wrong answer. Let's try to recalculate ..."); the last attempt passes every
  check and the answer stands between blank lines. Theirs perturb a random point per detour
  (unseeded, possibly the same mistake twice); here each dead end is a distinct mistake kind
  with a distinct wrong answer.

An attempt (`attempt`: what the pretrained base writes, no search) is one computation, done
the right way or with one of the mistake kinds above (drawn uniformly among the nine), then its
check pass, then its own answer whatever the check said; a failed check ends the line with
``!`` where a dead end backtracks::

    u=7,11 v=3,-12 c1=56 c2=78 d=-117 H=13.077,-3.231 chk=88,0!

(`paper`: the plan, the computation, and "Check: ... The check fails." or "..., both 0.")

Rewards follow the authors' checks (verl/utils/reward_score/advanced_geometry.py:68-148): the
answer string equals the answer rounded to the places asked (3; 2 and a degree sign for angles),
the orthocenter as "(x, y)". The compact template may leave out the degree sign (ASCII only).
"""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any

from .base import Problem, TaskError
from .gym import COMPACT_BACKTRACK, COMPACT_FAILED, GymTask, finish, finish_paper, gt_error, pick
from .prompts import SYSTEM_THINKS, Prompt, authors_prompt
from .sudoku import check_filter_splits

TYPES = ("orthocenter", "incircle_radius", "angle_measure")
PLACES = {"orthocenter": 3, "incircle_radius": 3, "angle_measure": 2}
MAX_COORD = 10 ** 6

ERRORS = {
    "orthocenter": ["c1_vertex", "c2_vertex", "u_swap", "v_sign", "det_sign", "x_sign", "y_swap", "c1_drop"],
    "incircle_radius": ["taxicab", "b_sum", "s_full", "no_sqrt", "r_perimeter", "r_double", "heron_drop",
                        "c_wrong"],
    "angle_measure": ["ba_reverse", "dot_sign", "ba_square", "bc_point", "bc_swap", "radians", "cos_sum",
                      "ba_point"],
}


def _sub(p, q):
    return (p[0] - q[0], p[1] - q[1])


def _dot(p, q):
    return p[0] * q[0] + p[1] * q[1]


def _cross(p, q):
    return p[0] * q[1] - p[1] * q[0]


def fmt(v: Any, places: int = 3) -> str:
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    if isinstance(v, int):
        return str(v)
    out = f"{v:.{places}f}"
    return "0" + out[2:] if out.startswith("-0") and float(out) == 0 else out


def _m(x) -> str:
    """A factor in a product: negative numbers in parentheses."""
    return f"({fmt(x)})" if x < 0 else fmt(x)


def _lin(a: int, b: int) -> str:
    return f"{a}x {'-' if b < 0 else '+'} {abs(b)}y"


def _pt(p) -> str:
    return f"{fmt(p[0])},{fmt(p[1])}"


# ---------------------------------------------------------------- attempts

def orthocenter(A, B, C, err: str | None = None) -> dict | None:
    u = _sub(C, B)
    v = _sub(A, C)
    if err == "u_swap":
        u = (u[1], u[0])
    if err == "v_sign":
        v = (v[0], -v[1])
    c1 = _dot(u, B if err == "c1_vertex" else A)
    if err == "c1_drop":
        c1 = u[0] * A[0]
    c2 = _dot(v, A if err == "c2_vertex" else B)
    det = u[0] * v[1] + u[1] * v[0] if err == "det_sign" else u[0] * v[1] - u[1] * v[0]
    if det == 0:
        return None
    xn = c1 * v[1] + u[1] * c2 if err == "x_sign" else c1 * v[1] - u[1] * c2
    yn = c1 * v[0] - u[0] * c2 if err == "y_swap" else u[0] * c2 - c1 * v[0]
    H = (Fraction(xn, det), Fraction(yn, det))
    chk = (_dot(_sub(H, A), _sub(C, B)), _dot(_sub(H, B), _sub(A, C)))
    return {"u": u, "v": v, "c1": c1, "c2": c2, "det": det, "H": H, "chk": chk,
            "value": H, "ok": chk == (0, 0)}


def _sides(A, B, C):
    return _dot(_sub(C, B), _sub(C, B)), _dot(_sub(A, C), _sub(A, C)), _dot(_sub(B, A), _sub(B, A))


def incircle(A, B, C, err: str | None = None) -> dict | None:
    a2, b2, c2 = _sides(A, B, C)
    a, b, c = math.sqrt(a2), math.sqrt(b2), math.sqrt(c2)
    if err == "taxicab":
        d = _sub(C, B)
        a = float(abs(d[0]) + abs(d[1]))
    if err == "b_sum":
        d = _sub(A, C)
        b = float(abs(d[0] + d[1]))
    if err == "c_wrong":
        c = b
    s = a + b + c if err == "s_full" else (a + b + c) / 2
    prod = s * (s - a) * (s - b) if err == "heron_drop" else s * (s - a) * (s - b) * (s - c)
    if prod <= 0 or s <= 0:
        return None
    K = prod if err == "no_sqrt" else math.sqrt(prod)
    if err == "r_perimeter":
        r = K / (a + b + c)
    elif err == "r_double":
        r = 2 * K / s
    else:
        r = K / s
    area = Fraction(abs(_cross(_sub(B, A), _sub(C, A))), 2)
    rs = r * s
    return {"a2": a2, "b2": b2, "c2": c2, "a": a, "b": b, "c": c, "s": s, "K": K, "r": r,
            "rs": rs, "area": area, "value": r, "ok": abs(rs - float(area)) <= 1e-6 * max(1.0, float(area))}


def angle(A, B, C, err: str | None = None) -> dict | None:
    BA = _sub(B, A) if err == "ba_reverse" else _sub(A, C) if err == "ba_point" else _sub(A, B)
    BC = _sub(C, A) if err == "bc_point" else _sub(C, B)
    if err == "bc_swap":
        BC = (BC[1], BC[0])
    dot = BA[0] * BC[0] - BA[1] * BC[1] if err == "dot_sign" else _dot(BA, BC)
    nba = float(_dot(BA, BA)) if err == "ba_square" else math.sqrt(_dot(BA, BA))
    nbc = math.sqrt(_dot(BC, BC))
    if nba == 0 or nbc == 0:
        return None
    cos = dot / (nba + nbc) if err == "cos_sum" else dot / (nba * nbc)
    if not -1 <= cos <= 1:
        return None
    theta = math.acos(cos) if err == "radians" else math.degrees(math.acos(cos))
    tBA, tBC = _sub(A, B), _sub(C, B)
    cross = _cross(tBA, tBC)
    check = math.degrees(math.atan2(abs(cross), _dot(tBA, tBC)))
    return {"BA": BA, "BC": BC, "dot": dot, "nba": nba, "nbc": nbc, "cos": cos, "theta": theta,
            "cross": cross, "tdot": _dot(tBA, tBC), "check": check, "value": theta,
            "ok": abs(theta - check) < 1e-6}


ATTEMPT = {"orthocenter": orthocenter, "incircle_radius": incircle, "angle_measure": angle}


def rounded(task_type: str, value) -> tuple:
    p = PLACES[task_type]
    if task_type == "orthocenter":
        return tuple(round(x * 10 ** p) for x in value)
    return (round(value * 10 ** p),)


def answer_text(task_type: str, value, style: str = "paper") -> str:
    if task_type == "orthocenter":
        return f"({fmt(float(value[0]))}, {fmt(float(value[1]))})"
    if task_type == "incircle_radius":
        return fmt(value)
    return fmt(value, 2) + ("\u00b0" if style == "paper" else "")


def dead_ends(gt: dict) -> list[tuple[str, dict]]:
    """Error kinds that change the rounded answer and are caught by the check, one per wrong
    result, in ERRORS order."""
    A, B, C, tt = tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"]), gt["task_type"]
    right = ATTEMPT[tt](A, B, C)
    seen = {rounded(tt, right["value"])}
    out = []
    for err in ERRORS[tt]:
        got = ATTEMPT[tt](A, B, C, err)
        if got is None or got["ok"]:
            continue
        key = rounded(tt, got["value"])
        if key in seen:
            continue
        seen.add(key)
        out.append((err, got))
    return out


# ---------------------------------------------------------------- rendering

def cf(v: Any, places: int = 3) -> str:
    """A short number: fractions as p/q, floats without trailing zeros."""
    if isinstance(v, (int, Fraction)):
        return fmt(v)
    out = fmt(v, places)
    return out.rstrip("0").rstrip(".") if "." in out else out


def compact_line(tt: str, at: dict, fail: str = COMPACT_BACKTRACK) -> str:
    if tt == "orthocenter":
        h = at["H"]
        body = (f"u={_pt(at['u'])} v={_pt(at['v'])} c1={at['c1']} c2={at['c2']} d={at['det']} "
                f"H={cf(float(h[0]))},{cf(float(h[1]))} chk={_pt(at['chk'])}")
    elif tt == "incircle_radius":
        body = (f"a={cf(at['a'])} b={cf(at['b'])} c={cf(at['c'])} s={cf(at['s'])} K={cf(at['K'])} "
                f"r={cf(at['r'])} rs={cf(at['rs'])} area={cf(at['area'])}")
    else:
        body = (f"BA={_pt(at['BA'])} BC={_pt(at['BC'])} dot={at['dot']} n={cf(at['nba'])},{cf(at['nbc'])} "
                f"cos={cf(at['cos'], 4)} B={cf(at['theta'], 2)} chk={cf(at['check'], 2)}")
    return body + (" ok" if at["ok"] else fail)


def paper_attempt(tt: str, at: dict, A, B, C) -> list[str]:
    if tt == "orthocenter":
        u, v, h = at["u"], at["v"], at["H"]
        return [
            f"The altitude from A is perpendicular to BC. C - B = ({fmt(u[0])}, {fmt(u[1])}), so the "
            f"altitude from A is {_lin(*u)} = {_m(u[0])}*{_m(A[0])} + {_m(u[1])}*{_m(A[1])} = {at['c1']}.",
            f"The altitude from B is perpendicular to CA. A - C = ({fmt(v[0])}, {fmt(v[1])}), so the "
            f"altitude from B is {_lin(*v)} = {_m(v[0])}*{_m(B[0])} + {_m(v[1])}*{_m(B[1])} = {at['c2']}.",
            f"Solving the two equations: determinant = {_m(u[0])}*{_m(v[1])} - {_m(u[1])}*{_m(v[0])} = {at['det']}, "
            f"x = ({_m(at['c1'])}*{_m(v[1])} - {_m(u[1])}*{_m(at['c2'])})/{_m(at['det'])} = {fmt(h[0])} = "
            f"{fmt(float(h[0]))}, y = ({_m(u[0])}*{_m(at['c2'])} - {_m(at['c1'])}*{_m(v[0])})/{_m(at['det'])} = "
            f"{fmt(h[1])} = {fmt(float(h[1]))}.",
            f"Check: H must lie on both altitudes. (H - A).(C - B) = {fmt(at['chk'][0])} and "
            f"(H - B).(A - C) = {fmt(at['chk'][1])}"
            + (", both 0." if at["ok"] else ", but both must be 0. The check fails."),
        ]
    if tt == "incircle_radius":
        return [
            f"Side lengths: a = |BC| = sqrt({at['a2']}) = {fmt(at['a'])}, b = |CA| = sqrt({at['b2']}) = "
            f"{fmt(at['b'])}, c = |AB| = sqrt({at['c2']}) = {fmt(at['c'])}.",
            f"Semi-perimeter s = (a + b + c)/2 = {fmt(at['s'])}.",
            f"Heron: area = sqrt(s(s - a)(s - b)(s - c)) = {fmt(at['K'])}.",
            f"Radius r = area/s = {fmt(at['r'])}.",
            f"Check: the shoelace formula gives area = |(B - A) x (C - A)|/2 = {fmt(at['area'])}, and "
            f"r*s = {fmt(at['rs'])}"
            + (", the same." if at["ok"] else f", not {fmt(at['area'])}. The check fails."),
        ]
    ba, bc = at["BA"], at["BC"]
    return [
        f"Vectors from B: BA = A - B = ({ba[0]}, {ba[1]}), BC = C - B = ({bc[0]}, {bc[1]}).",
        f"BA.BC = {_m(ba[0])}*{_m(bc[0])} + {_m(ba[1])}*{_m(bc[1])} = {at['dot']}; |BA| = {fmt(at['nba'])}, "
        f"|BC| = {fmt(at['nbc'])}.",
        f"cos B = BA.BC/(|BA||BC|) = {fmt(at['cos'], 4)}, so B = arccos({fmt(at['cos'], 4)}) = "
        f"{fmt(at['theta'], 2)} degrees.",
        f"Check: BA x BC = {at['cross']} and BA.BC = {at['tdot']}, so B = atan2(|BA x BC|, BA.BC) = "
        f"{fmt(at['check'], 2)} degrees"
        + (", the same." if at["ok"] else f", not {fmt(at['theta'], 2)}. The check fails."),
    ]


# ---------------------------------------------------------------- the authors' wording

# Which step of the computation each mistake kind breaks (the review finds it there).
STAGE = {
    "orthocenter": {"u_swap": 0, "v_sign": 1, "c1_vertex": 2, "c1_drop": 2, "c2_vertex": 3,
                    "det_sign": 4, "x_sign": 4, "y_swap": 4},
    "incircle_radius": {"taxicab": 0, "b_sum": 0, "c_wrong": 0, "s_full": 1, "no_sqrt": 2,
                        "heron_drop": 2, "r_perimeter": 3, "r_double": 3},
    "angle_measure": {"ba_reverse": 0, "ba_point": 0, "bc_point": 1, "bc_swap": 1, "dot_sign": 2,
                      "ba_square": 3, "cos_sum": 3, "radians": 3},
}
SIDE = {"taxicab": "from B to C", "b_sum": "from C to A", "c_wrong": "from A to B"}
PAPER_MARKER = "Oh, I made a mistake here"


def _P(name: str, p) -> str:
    return f"{name}({p[0]}, {p[1]})"


def _plan(tt: str, A, B, C) -> list[str]:
    """The computation's plan as their trace states it first (orthocenter: lines 146-151;
    angle: lines 494-500; incircle has none)."""
    if tt == "orthocenter":
        return [f"Let's first create the lines of the triangle. First, let's create a line from point {_P('B', B)} "
                f"to point {_P('C', C)}.",
                f"Next, create a line from point {_P('C', C)} to point {_P('A', A)}.",
                f"Now, let's find the altitudes of the triangle. First, find the altitude from point {_P('A', A)} by "
                "creating a line perpendicular to BC passing through A.",
                f"Next, find the altitude from point {_P('B', B)} by creating a line perpendicular to CA passing "
                "through B.",
                "The orthocenter is the intersection point of the two altitudes we found.",
                "Now, let's calculate the exact coordinates of the intersection point."]
    if tt == "angle_measure":
        return [f"Let's first compute the vectors that form the angle at B. Vector BA is {_P('A', A)} minus "
                f"{_P('B', B)}.",
                f"Vector BC is {_P('C', C)} minus {_P('B', B)}.",
                "Now, we'll take the dot product of BA and BC.",
                "Next, we'll compute the magnitudes |BA| and |BC|.",
                "Finally, we use the formula \u03b8 = arccos( dot / (|BA|\u00b7|BC|) ) and convert to degrees."]
    return []


def _incircle_steps(at: dict) -> list[str]:
    """Their incircle computation (lines 305-342), with this attempt's numbers."""
    a, b, c, s_, K, r = (fmt(at[x]) for x in ("a", "b", "c", "s", "K", "r"))
    return [f"First, compute the three side lengths of the triangle. We have a = {a}, b = {b}, and c = {c}.",
            f"Next, find the semiperimeter s = ({a} + {b} + {c}) / 2. We have s = {s_}.",
            f"Use Heron's formula to compute the area: \u0394 = \u221a[{s_} * ({s_} \u2212 {a}) * ({s_} \u2212 {b}) * "
            f"({s_} \u2212 {c})]. We have \u0394 = {K}.",
            f"The in\u2011circle radius is r = {K} / {s_}. We have r = {r}."]


def _review(tt: str, at: dict, err: str | None, A, B, C) -> str:
    """Their double check (orthocenter lines 186-224, incircle 305-409, angle 536-558): every
    step passes, or the steps before the faulty one pass and the faulty one is the mistake."""
    x = answer_text(tt, at["value"])
    stage = None if err is None else STAGE[tt][err]
    head = f"I have obtained the answer {x}. Let's double check it."
    if tt == "orthocenter":
        checks = [f"Let's first check if I have calculated the line from point {_P('B', B)} to point {_P('C', C)} correctly.",
                  f"Let's check if I have calculated the line from point {_P('C', C)} to point {_P('A', A)} correctly.",
                  f"Let's check if I have calculated the altitude from point {_P('A', A)} correctly.",
                  f"Let's check if I have calculated the altitude from point {_P('B', B)} correctly.",
                  "Lastly, let's check if I have calculated the intersection of the two altitudes correctly."]
        what = ["the line from B to C", "the line from C to A", "the altitude from A", "the altitude from B",
                "the intersection of the two altitudes"]
        if stage is None:
            return "\n".join([head] + [c + " I think this step is done correctly." for c in checks[:-1]]
                             + [checks[-1] + " And I think this step is done correctly, so the answer is correct"])
        return "\n".join([head] + [c + " I think this step is done correctly." for c in checks[:stage]]
                         + [checks[stage] + f" {PAPER_MARKER}, and {x} is not the correct answer. Let's try to "
                            f"recalculate {what[stage]}, and obtain a new answer following the same steps as before."])
    if tt == "incircle_radius":
        checks = ["Let's first check if I have calculated the side lengths of the triangle correctly.",
                  "Let's check if I have calculated the semiperimeter correctly.",
                  "Let's check if I have calculated the area correctly.",
                  "Let's check if I have calculated the in-circle radius correctly."]
        passed = [f" {fmt(at['a'])}, {fmt(at['b'])}, {fmt(at['c'])} all look corrrect", f" {fmt(at['s'])} looks correct",
                  f" {fmt(at['K'])} looks correct", f" {fmt(at['r'])} looks correct"]
        if stage is None:
            return "\n".join([head] + [c + p for c, p in zip(checks, passed)])
        what = [f"the side length {SIDE.get(err, '')}", "the semiperimeter", "the area", "the in-circle radius"]
        redo = ["the side lengths", "the semiperimeter", "the area", "the in-circle radius"]
        return "\n".join([head] + [c + p for c, p in zip(checks[:stage], passed[:stage])]
                         + [checks[stage] + f" {PAPER_MARKER}, I have calculated {what[stage]} incorrectly, which "
                            f"leads to {x} being the wrong answer. Let's try to recalculate {redo[stage]}, and "
                            "obtain a new answer."])
    checks = [f"Let's verify that vector BA was computed correctly from {_P('A', A)} and {_P('B', B)}.",
              f"Let's verify that vector BC was computed correctly from {_P('B', B)} and {_P('C', C)}.",
              "Let's verify the dot product calculation.",
              "Let's verify the magnitude calculations and the arccos step."]
    if stage is None:
        return "\n".join([head] + [c + " I think this step is done correctly." for c in checks]
                         + ["Everything checks out, so the answer is correct."])
    return "\n".join([head] + checks[:stage + 1]) + (
        f" {PAPER_MARKER}, and {x} is not the correct answer. Let's recompute this step and follow through "
        "the same pipeline.")


def _computation(tt: str, at: dict, A, B, C) -> str:
    comp = _incircle_steps(at) if tt == "incircle_radius" else paper_attempt(tt, at, A, B, C)[:-1]
    return "\n".join(comp)


def _plan_text(tt: str, A, B, C) -> str:
    plan = _plan(tt, A, B, C)
    return ("\n".join(plan) + "\n\n") if plan else ""


def paper_trace(tt: str, A, B, C, chosen: list[tuple[str, dict]], right: dict) -> str:
    def attempt(at: dict, err: str | None) -> str:
        return _computation(tt, at, A, B, C) + "\n\n" + _review(tt, at, err, A, B, C) + "\n\n"

    think = _plan_text(tt, A, B, C)
    think += "".join(attempt(at, err) for err, at in chosen) + attempt(right, None)
    return finish_paper(think, "\n" + answer_text(tt, right["value"]) + "\n")


def draw_attempt(tt: str, A, B, C, rng: random.Random) -> dict:
    """One way of computing, drawn uniformly among the right one and the ERRORS kinds (a kind
    that cannot be carried out on this triangle is dropped and another drawn)."""
    ways: list[str | None] = [None, *ERRORS[tt]]
    while ways:
        err = ways.pop(rng.randrange(len(ways)))
        at = ATTEMPT[tt](A, B, C, err)
        if at is not None:
            return at
    raise TaskError(f"advanced_geometry: no attempt can be computed for {tt} at {A}, {B}, {C}")


# ---------------------------------------------------------------- exact answers

def _decimal(text: str) -> Decimal | None:
    t = text.strip()
    if not 0 < len(t) <= 40:
        return None
    body = t[1:] if t[0] in "+-" else t
    whole, dot, frac = body.partition(".")
    if not (whole or frac) or not all(ch in "0123456789" for ch in whole + frac) or (dot and not frac):
        return None
    try:
        return Decimal(t)
    except InvalidOperation:
        return None


def _close(model: Decimal, exact, places: int) -> bool:
    """The model's value rounded to `places` equals the exact value rounded the same way
    (either rounding at an exact tie)."""
    unit = Decimal(1).scaleb(-places)
    with localcontext() as ctx:
        ctx.prec = 60
        qs = {int(model.quantize(unit, rounding=r).scaleb(places)) for r in (ROUND_HALF_EVEN, ROUND_HALF_UP)}
    if isinstance(exact, Fraction):
        x = exact * 10 ** places
        return any(abs(q - x) <= Fraction(1, 2) for q in qs)
    x = exact * Decimal(10) ** places
    return any(abs(Decimal(q) - x) <= Decimal("0.5") + Decimal("1e-9") for q in qs)


def exact_value(gt: dict):
    A, B, C, tt = tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"]), gt["task_type"]
    if tt == "orthocenter":
        return orthocenter(A, B, C)["H"]
    if tt == "incircle_radius":
        a2, b2, c2 = _sides(A, B, C)
        with localcontext() as ctx:
            ctx.prec = 50
            per = Decimal(a2).sqrt() + Decimal(b2).sqrt() + Decimal(c2).sqrt()
            return Decimal(abs(_cross(_sub(B, A), _sub(C, A)))) / per
    tBA, tBC = _sub(A, B), _sub(C, B)
    return Decimal(repr(math.degrees(math.atan2(abs(_cross(tBA, tBC)), _dot(tBA, tBC)))))


class AdvancedGeometryTask(GymTask):
    name = "advanced_geometry"
    dataset = "advanced_geometry"
    backtrack_sft = True
    OWN_PARAMS = {"min_dead_ends": 4, "filter_splits": ["sft", "train", "val", "test"]}
    FILTER_PARAMS = {"min_dead_ends": 0}
    PAPER_MARKERS = (PAPER_MARKER,)
    ANSWER_EXAMPLE = "(1.234, -5.678)"
    ANSWER_EXTRA_CHARS = "\u00b0"            # the degree sign

    def check_own(self, params: dict[str, Any]) -> None:
        if params.get("min_dead_ends", 4) < 0:
            raise TaskError(f"advanced_geometry: parameter min_dead_ends must be >= 0, got {params['min_dead_ends']}")
        bad = [t for t in params.get("task_types", TYPES) if t not in TYPES]
        if bad:
            raise TaskError(f"advanced_geometry: unknown task_types {bad} (known: {', '.join(TYPES)})")
        for key in ("min_coord", "max_coord"):
            if abs(params.get(key, 0)) > MAX_COORD:
                raise TaskError(f"advanced_geometry: parameter {key} must be within +-{MAX_COORD}")
        check_filter_splits(self.name, params)

    def max_k(self, params: dict[str, Any]) -> int:
        self.validate_params(params)
        return self.own(params)["min_dead_ends"]

    def answer_example(self, problem: Problem) -> str:
        return {"orthocenter": "(1.234, -5.678)", "incircle_radius": "1.234",
                "angle_measure": "12.34\u00b0"}[problem.ground_truth["task_type"]]

    def make_problem(self, item: dict, params: dict[str, Any]) -> Problem | None:
        md = item["metadata"]
        gt = {"task_type": md["task_type"], "A": [int(x) for x in md["A"]], "B": [int(x) for x in md["B"]],
              "C": [int(x) for x in md["C"]]}
        self.parse_gt(gt)
        dead = len(dead_ends(gt))
        if dead < self.own(params)["min_dead_ends"]:
            return None
        right = ATTEMPT[gt["task_type"]](tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"]))
        if not right["ok"]:
            return None
        # their fork's question has no format instructions after the sentence (lines 70-83)
        question = item["question"].split(" For all geometry problems:")[0]
        return Problem(question=question, answer=answer_text(gt["task_type"], right["value"]),
                       ground_truth=gt, metadata={"task_type": gt["task_type"], "dead_ends": dead,
                                                  "difficulty": md.get("difficulty")})

    def parse_gt(self, gt: Any) -> dict:
        try:
            pts = [gt["A"], gt["B"], gt["C"]]
            ok = (gt["task_type"] in TYPES and all(
                isinstance(p, list) and len(p) == 2 and all(type(x) is int and abs(x) <= MAX_COORD for x in p)
                for p in pts) and _cross(_sub(pts[1], pts[0]), _sub(pts[2], pts[0])) != 0)
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise gt_error(self.name, gt)
        return gt

    def authors_prompt(self, problem: Problem, template: str) -> Prompt:
        """reasoning-gym/advanced_geometry.py:25-64 of their fork: the instruction per task type;
        its baseline prefill has no <think>."""
        rest = {"incircle_radius": "Round the radius to 3 decimal places and return it in <answer> </answer> tags, "
                                   "for example <answer> 2.176 </answer>.",
                "orthocenter": "Round the coordinates to 3 decimal places and return them inside parenthesis in "
                               "<answer> </answer>, for example <answer> (0.304, 1.217) </answer>.",
                "angle_measure": "Round the angle degrees to 2 decimal places, append a degree symbol, and return "
                                 "it in <answer> </answer> tags, for example <answer> 17.10\u00b0 </answer>."
                }[problem.ground_truth["task_type"]]
        return authors_prompt(template, problem.question, sep=" ", think=f"Show your work in <think> </think> tags. {rest}",
                              plain=rest, system=SYSTEM_THINKS, baseline_prefill="Let me solve this step by step.")

    def compact_prompt(self, problem: Problem) -> str:
        gt = problem.ground_truth
        head = {"orthocenter": "orth", "incircle_radius": "inr", "angle_measure": "angB"}[gt["task_type"]]
        return f"{head} A={_pt(gt['A'])} B={_pt(gt['B'])} C={_pt(gt['C'])}\n"

    # ---- traces
    def max_backtracks(self, problem: Problem) -> int:
        return len(dead_ends(self.parse_gt(problem.ground_truth)))

    def make_trace(self, problem: Problem, k: int, style: str, rng: random.Random) -> str:
        gt = self.parse_gt(problem.ground_truth)
        tt = gt["task_type"]
        A, B, C = tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"])
        chosen = pick(self.name, dead_ends(gt), k, rng)
        rng.shuffle(chosen)
        right = ATTEMPT[tt](A, B, C)
        answer = answer_text(tt, right["value"], style)
        if style == "compact":
            lines = [compact_line(tt, at) for _, at in chosen] + [compact_line(tt, right)]
            return finish("\n".join(lines), answer)
        return paper_trace(tt, A, B, C, chosen, right)

    # ---- attempts
    def make_attempt(self, problem: Problem, style: str, rng: random.Random) -> str:
        """One computation (`draw_attempt`), its check pass (the trace's other method), and its
        own answer: a failed check ends the line with `!` (compact) or the check's sentence says
        so (paper), where a trace's dead end would backtrack."""
        gt = self.parse_gt(problem.ground_truth)
        tt = gt["task_type"]
        A, B, C = tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"])
        at = draw_attempt(tt, A, B, C, rng)
        if style == "compact":
            return finish(compact_line(tt, at, fail=COMPACT_FAILED), answer_text(tt, at["value"], style))
        think = _plan_text(tt, A, B, C) + _computation(tt, at, A, B, C) + "\n\n" + paper_attempt(tt, at, A, B, C)[-1]
        return finish_paper(think + "\n", "\n" + answer_text(tt, at["value"]) + "\n")

    # ---- reward
    def is_correct(self, answer: str, gt: dict, compact: bool = False) -> bool:
        """The authors' exact string checks (advanced_geometry.py:68-148 of their reward): the
        orthocenter's two coordinates inside parentheses, split on a comma (or whitespace), each
        equal to the rounded value; the radius and the angle (with its degree sign; optional for
        `compact`) equal to the rounded value. The rounded value is the trace's, or the exact
        one's float rounding where they differ."""
        tt = gt["task_type"]
        A, B, C = tuple(gt["A"]), tuple(gt["B"]), tuple(gt["C"])
        ours, exact = ATTEMPT[tt](A, B, C)["value"], exact_value(gt)
        if tt == "orthocenter":
            got = _two_numbers(answer)
            if got is None:
                return False
            return any(got[0] in _fixed(float(e[0]), 3) and got[1] in _fixed(float(e[1]), 3) for e in (ours, exact))
        p = PLACES[tt]
        text = answer
        if tt == "angle_measure":
            if text.endswith("\u00b0"):
                text = text[:-1]
            elif not compact:
                return False
        return any(text in _fixed(float(v), p) for v in (ours, exact))


def _fixed(x: float, places: int) -> set[str]:
    """x rounded to `places` as the authors format it (f"{x:.3f}"), and without a minus on zero."""
    t = f"{x:.{places}f}"
    return {t, t[1:]} if t.startswith("-") and float(t) == 0 else {t}


def _two_numbers(text: str) -> tuple[str, str] | None:
    """Their parse_two_numbers: "(x, y)" -> ("x", "y") as stripped strings."""
    if not (text.startswith("(") and text.endswith(")")) or len(text) > 80:
        return None
    inner = text[1:-1]
    parts = inner.split(",") if "," in inner else inner.split()
    if len(parts) != 2:
        return None
    return parts[0].strip(), parts[1].strip()
