"""``--where``: conditions on the fields of JSON messages, their grammar, and their evaluation in bulk.

Grammar (one condition per ``--where``; several are ANDed)::

    condition := path op value | "has:" path | "!has:" path
    path      := segment ("." segment)*       user.id, req.headers.x-request-id
    segment   := 1+ characters other than . = ! < > ~ " and blanks, or a "JSON string" ("a.b")
    op        := = (or ==) | != | < | <= | > | >= | ~ | !~
    value     := the rest, blanks around it dropped; a "JSON string" keeps blanks and escapes
                 (and must be used for a value starting with < > = or ~)

A value that is a JSON number (``500``, ``-1.5``, ``2e3``), unquoted, is a
number: where the field holds a JSON number the comparison is numeric (as
doubles); everywhere else it compares text: the field's string, a number's
shortest text (``500``, ``1.5``) or ``true``/``false``, byte by byte (code
point order). ``~`` and ``!~`` match an RE2 regular expression anywhere in that
text. A field that is missing, null, an object or an array matches no
comparison (``!=`` and ``!~`` included); ``has:`` asks for a value other than
null, ``!has:`` for a JSON object without one. A message that is not a JSON
object matches no condition and is not an error.

Evaluation never parses a message in Python row by row (see
:mod:`query.jsonfields`): the rows the other filters keep are narrowed by
literal pre-checks on the raw text (a JSON object; each key of the path, as
JSON writes it; for ``=`` on text, the value), and only the survivors are
parsed, one field at a time, each condition narrowing the next one's rows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pyarrow as pa

from archiver.errors import UsageError
from query import kernels as pc  # not pyarrow.compute: see query.kernels

OPERATORS = ("==", "!=", "<=", ">=", "!~", "=", "<", ">", "~")
_KERNELS = {
    "=": "equal",
    "!=": "not_equal",
    "<": "less",
    "<=": "less_equal",
    ">": "greater",
    ">=": "greater_equal",
}
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
_SEGMENT = re.compile(r'[^.=!<>~"\s]+')
#: A JSON string literal (the whole of it, escapes included) at the start of the text.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
GRAMMAR_HELP = "FIELD OP VALUE (OP: = != < <= > >= ~ !~) or has:FIELD / !has:FIELD; FIELD a dotted path"


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``--where`` condition."""

    path: tuple[str, ...]
    op: str  # one of OPERATORS, or "has" / "!has"
    value: str = ""
    number: float | None = None  # the value as a number, when it is an unquoted JSON number

    def prechecks(self) -> list[tuple[str, ...]]:
        """Checks on the raw text each message must pass to possibly satisfy the condition (cheap):
        each a tuple of RE2 patterns, one of which must match."""
        if self.op == "!has":
            return []  # a message without the key satisfies it
        checks = [_spelled(segment) for segment in self.path]
        if self.op == "=" and self.number is None:
            # The value's text appears as JSON writes it (or escaped some other way).
            inner = orjson.dumps(self.value).decode()[1:-1]
            checks.append((pc.literal_pattern(inner), _ESCAPE_U, _ESCAPE_SLASH))
        return checks

    def test(self, number: pa.Array, text: pa.Array, present: pa.Array, valid: pa.Array) -> pa.Array:
        """Which rows satisfy the condition, given their field (see :class:`query.jsonfields.Values`)."""
        false = pa.scalar(False, pa.bool_())
        if self.op == "has":
            return present
        if self.op == "!has":
            return pc.and_kleene(valid, pc.invert(present))
        if self.op in ("~", "!~"):
            found = pc.match_substring_regex(text, self.value)
            return pc.fill_null(found if self.op == "~" else pc.invert(found), false)
        kernel = _KERNELS[self.op]
        by_text = pc.compare(kernel, text, pa.scalar(self.value, pa.string()))
        if self.number is None:
            return pc.fill_null(by_text, false)
        by_number = pc.compare(kernel, number, pa.scalar(self.number, pa.float64()))
        return pc.fill_null(pc.fill_null(by_number, by_text), false)


#: A JSON text may spell any character \\uXXXX, and "/" as \\/: then the usual spelling is not there.
_ESCAPE_U, _ESCAPE_SLASH = "\\\\u", "\\\\/"


def _spelled(segment: str) -> tuple[str, ...]:
    """RE2 patterns for a key as JSON may write it: its usual spelling, or any spelling with an escape."""
    usual = pc.literal_pattern(orjson.dumps(segment).decode())
    return (usual, _ESCAPE_U, _ESCAPE_SLASH) if "/" in segment else (usual, _ESCAPE_U)


def parse_condition(text: str) -> Condition:
    """A ``--where`` condition; UsageError naming the problem otherwise."""
    stripped = text.strip()
    for prefix, op in (("has:", "has"), ("!has:", "!has")):
        if stripped.startswith(prefix):
            path, rest = _path(stripped[len(prefix) :].strip(), text)
            if rest.strip():
                raise _bad(text, f"unexpected {rest.strip()!r} after the field")
            return Condition(path, op)
    path, rest = _path(stripped, text)
    rest = rest.lstrip()
    found = next((o for o in OPERATORS if rest.startswith(o)), None)
    if found is None:
        raise _bad(text, "no operator after the field" if not rest else f"unknown operator at {rest[:8]!r}")
    op = "=" if found == "==" else found
    raw = rest[len(found) :].strip()
    if raw[:1] in ("<", ">", "=", "~"):
        raise _bad(text, "a value starting with an operator character must be quoted")
    number = None
    if raw.startswith('"'):
        match = _JSON_STRING.match(raw)
        if match is None or match.end() != len(raw):
            raise _bad(text, "a quoted value must be one JSON string")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad(text, "a quoted value must be one JSON string") from None
    else:
        value = raw
        if _NUMBER.match(raw) and op not in ("~", "!~"):
            number = float(raw)
    if op in ("~", "!~"):
        try:
            pc.match_substring_regex(pa.array([""]), value)
        except pa.ArrowInvalid as exc:
            raise _bad(text, f"invalid regular expression: {str(exc).split(':', 1)[-1].strip()}") from None
    return Condition(path, op, value, number)


def _path(text: str, whole: str) -> tuple[tuple[str, ...], str]:
    """The dotted path at the start of ``text``, and what follows it."""
    segments: list[str] = []
    position = 0
    while True:
        if text.startswith('"', position):
            match = _JSON_STRING.match(text, position)
            if match is None:
                raise _bad(whole, "unterminated quoted field name")
            segments.append(orjson.loads(match[0]))
        else:
            match = _SEGMENT.match(text, position)
            if match is None:
                raise _bad(whole, "expected a field name" if not segments else "empty field name after '.'")
            segments.append(match[0])
        position = match.end()
        if not text.startswith(".", position):
            return tuple(segments), text[position:]
        position += 1


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"--where: {why} in {text!r}; expected {GRAMMAR_HELP}")


def where_mask(
    messages: pa.ChunkedArray | pa.Array, conditions: tuple[Condition, ...], prior: pa.Array | None
) -> pa.Array:
    """Which messages satisfy every condition (and ``prior``, the other filters' mask, when given)."""
    from query.jsonfields import extract, object_candidates

    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    false = pa.scalar(False, pa.bool_())
    keep = None if prior is None else pc.fill_null(prior, false)
    if isinstance(keep, pa.ChunkedArray):
        keep = keep.combine_chunks()
    keep = _narrow(keep, messages, object_candidates)
    checks = list(dict.fromkeys(pattern for condition in conditions for pattern in condition.prechecks()))
    for alternatives in checks:
        keep = _narrow(keep, messages, functools.partial(_any_of, patterns=alternatives))
    for condition in sorted(conditions, key=lambda c: c.op == "!has"):
        rows = pc.filter(messages, keep)
        if not len(rows):
            break
        values = extract(rows, condition.path)
        passed = condition.test(values.number, values.text, values.present, values.valid)
        keep = pc.replace_with_mask(keep, keep, passed)
    return keep


#: Below this share of rows kept, a check runs on a copy of those rows rather than on every row.
_COPY_BELOW = 0.25


def _any_of(rows: pa.Array, patterns: tuple[str, ...]) -> pa.Array:
    # Each alternative alone: RE2 finds one literal much faster than an alternation of several.
    found = pc.match_substring_regex(rows, patterns[0])
    for pattern in patterns[1:]:
        found = pc.or_kleene(found, pc.match_substring_regex(rows, pattern))
    return found


def _narrow(keep: pa.Array | None, messages: pa.Array, check: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """``keep`` and ``check``: on every row, or on a copy of the kept rows when they are few."""
    false = pa.scalar(False, pa.bool_())
    if keep is None:
        return pc.fill_null(check(messages), false)
    kept = keep.true_count
    if kept >= _COPY_BELOW * len(keep):
        return pc.and_kleene(keep, pc.fill_null(check(messages), false))
    rows = pc.filter(messages, keep)
    return pc.replace_with_mask(keep, keep, pc.fill_null(check(rows), false))
