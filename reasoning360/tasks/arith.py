"""A small, bounded arithmetic parser for model answers (never `eval`, never `ast`).

Grammar (ASCII only, ASCII whitespace ignored between tokens, as the authors' countdown check
allows `\\s` between them: verl/utils/reward_score/countdown.py:75)::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := INT | '(' expr ')'
    INT    := [0-9]{1,MAX_DIGITS}

No unary minus, no exponent, no decimals, no names. Arithmetic is exact (`Fraction`);
division by zero is a parse error. Every input is bounded before any work is done:
length, digits per integer, nesting depth and operator count, so a parse costs
microseconds on any string.
"""

from __future__ import annotations

from fractions import Fraction

MAX_CHARS = 256      # longer answers are rejected unread
MAX_DIGITS = 6       # integers with more digits are rejected (countdown uses <= 4)
MAX_DEPTH = 32       # parenthesis nesting
MAX_NUMBERS = 64     # integer literals in one expression

_DIGITS = frozenset("0123456789")
_OPS = frozenset("+-*/")
_SPACE = frozenset(" \t\n\r\f\v")


class ArithError(ValueError):
    """The text is not a well-formed, bounded expression of the grammar above."""


def tokenize(text: str) -> list[str]:
    if not isinstance(text, str):
        raise ArithError("not a string")
    if len(text) > MAX_CHARS:
        raise ArithError(f"longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    i, n, numbers = 0, len(text), 0
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j - i > MAX_DIGITS:
                raise ArithError(f"integer with more than {MAX_DIGITS} digits")
            numbers += 1
            if numbers > MAX_NUMBERS:
                raise ArithError(f"more than {MAX_NUMBERS} numbers")
            tokens.append(text[i:j])
            i = j
        elif c in _OPS or c in "()":
            if c == "*" and i + 1 < n and text[i + 1] == "*":
                raise ArithError("exponent operator")
            tokens.append(c)
            i += 1
        else:
            raise ArithError(f"unexpected character {c!r}")
    if not tokens:
        raise ArithError("empty expression")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.toks, self.pos, self.numbers = tokens, 0, []

    def peek(self) -> str | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ArithError("unexpected end of expression")
        self.pos += 1
        return tok

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor(depth)
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise ArithError("division by zero")
                value = value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        tok = self.take()
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise ArithError(f"nesting deeper than {MAX_DEPTH}")
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ArithError("expected ')'")
            return value
        if tok[0] in _DIGITS:
            n = int(tok)
            self.numbers.append(n)
            return Fraction(n)
        raise ArithError(f"unexpected token {tok!r}")


def evaluate(text: str) -> tuple[Fraction, list[int]]:
    """(exact value, integer literals in order of appearance); raises ArithError."""
    tokens = tokenize(text)
    # Cheap structural pre-check so a hostile string never reaches the recursion:
    depth = max_depth = 0
    for t in tokens:
        if t == "(":
            depth += 1
            max_depth = max(max_depth, depth)
        elif t == ")":
            depth -= 1
            if depth < 0:
                raise ArithError("unbalanced ')'")
    if depth != 0:
        raise ArithError("unbalanced '('")
    if max_depth > MAX_DEPTH:
        raise ArithError(f"nesting deeper than {MAX_DEPTH}")
    p = _Parser(tokens)
    value = p.expr(0)
    if p.pos != len(tokens):
        raise ArithError(f"unexpected token {tokens[p.pos]!r}")
    return value, p.numbers
