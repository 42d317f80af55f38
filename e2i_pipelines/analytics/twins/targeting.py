"""Targeting rules of twin interventions: plain data, evaluated with numpy/pandas comparisons.

A rule is a tree of JSON-like data (never code):

- a condition ``{"column": c, "op": op, "value": v}`` with ``op`` one of ``OPS``: ``==``,
  ``!=``, ``<``, ``<=``, ``>``, ``>=`` take a scalar; ``in`` / ``not_in`` a list of scalars;
  ``between`` ``[low, high]`` (both ends included); ``is_null`` no value;
- a group ``{"all": [rule, ...]}`` (and) or ``{"any": [rule, ...]}`` (or), or ``{"not": rule}``;
- a list of rules means ``all`` of them.

A query string such as ``engagement_score > 0.5 and region in ['Northeast', 'South']`` is
parsed with ``ast`` into the same tree (``parse_query``); only comparisons, ``and``/``or``/
``not`` (or ``&``/``|``/``~``), column names and constants are accepted, anything else is a
TargetingError naming the construct. Columns and value types are checked against the twins'
dtypes (``check_columns``) before any heavy work; ``evaluate`` gives the boolean mask.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "between", "is_null")
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
MAX_CONDITIONS = 64
MAX_DEPTH = 8
MAX_LIST_VALUES = 1_000
MAX_STRING_CHARS = 200
MAX_QUERY_CHARS = 2_000
UPLIFT_SCORE = "uplift"  # top-share targeting by the model's own predicted uplift
HINT = "use column names, constants, comparisons and and/or/not"


class TargetingError(ValueError):
    """The targeting rule is malformed or does not fit the twins (names the problem)."""


@dataclass(frozen=True)
class Condition:
    """``column op value``; ``value`` is a scalar, a tuple (in/not_in/between) or None."""

    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Group:
    """``all`` (and) or ``any`` (or) of its items."""

    kind: str
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The negation of ``item``."""

    item: Node


Node = Condition | Group | Not


def _group(kind: str, items: list[Node]) -> Node:
    """A group with nested groups of the same kind flattened; one item stands alone."""
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Group) and item.kind == kind else [item])
    return flat[0] if len(flat) == 1 else Group(kind, tuple(flat))


# ---------------------------------------------------------------- structured data -> tree

def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise TargetingError(f"{where}: value must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise TargetingError(f"{where}: string values are limited to {MAX_STRING_CHARS} chars")
        return value
    raise TargetingError(f"{where}: value must be a number, string or boolean, "
                         f"got {type(value).__name__}")


def _condition_value(op: str, value: Any, where: str) -> Any:
    """The checked value of ``op``: scalar, tuple of scalars, (low, high) or None."""
    if op == "is_null":
        if value is not None and value is not True:
            raise TargetingError(f"{where}: op 'is_null' takes no value (use not for not-null)")
        return None
    if op in ("in", "not_in", "between"):
        if not isinstance(value, list | tuple):
            raise TargetingError(f"{where}: op {op!r} needs a list value")
        if op == "between":
            if len(value) != 2 or not all(_is_number(v) for v in value):
                raise TargetingError(f"{where}: op 'between' needs [low, high], two numbers")
            low, high = (_scalar(v, where) for v in value)
            if low > high:
                raise TargetingError(f"{where}: between needs low <= high, got [{low}, {high}]")
            return (low, high)
        if not 0 < len(value) <= MAX_LIST_VALUES:
            raise TargetingError(f"{where}: op {op!r} needs 1 to {MAX_LIST_VALUES} values")
        values = tuple(_scalar(v, where) for v in value)
        if any(v is None for v in values):
            raise TargetingError(f"{where}: null in a list; use op 'is_null'")
        return values
    if value is None:
        raise TargetingError(f"{where}: op {op!r} needs a value (for null use op 'is_null')")
    if isinstance(value, list | tuple | dict):
        raise TargetingError(f"{where}: op {op!r} needs a single value, not a list")
    value = _scalar(value, where)
    if op in ORDER_OPS and not _is_number(value):
        raise TargetingError(f"{where}: op {op!r} needs a number, got {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rule_from_data(data: Any, where: str = "conditions") -> Node:
    """The rule tree of plain data (see the module docstring); raises TargetingError."""
    count = [0]

    def node(item: Any, path: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise TargetingError(f"{path}: rules nest at most {MAX_DEPTH} levels deep")
        if isinstance(item, list | tuple):
            if not item:
                raise TargetingError(f"{path}: an empty list of conditions")
            return _group("all", [node(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(item)])
        if not isinstance(item, Mapping):
            raise TargetingError(f"{path}: a condition must be an object "
                                 "{column, op, value} or a group {all|any|not: ...}")
        keys = set(item)
        for kind in ("all", "any"):
            if keys == {kind}:
                inner = item[kind]
                if not isinstance(inner, list | tuple) or not inner:
                    raise TargetingError(f"{path}.{kind}: needs a non-empty list of conditions")
                return _group(kind, [node(x, f"{path}.{kind}[{i}]", depth + 1)
                                     for i, x in enumerate(inner)])
        if keys == {"not"}:
            return Not(node(item["not"], f"{path}.not", depth + 1))
        unknown = keys - {"column", "op", "value"}
        if unknown or not {"column", "op"} <= keys:
            raise TargetingError(
                f"{path}: a condition has keys column, op, value (or one of all, any, not); "
                f"got {sorted(map(str, keys))}")
        column, op = item["column"], item["op"]
        if not isinstance(column, str) or not column:
            raise TargetingError(f"{path}.column: must be a column name")
        if op not in OPS:
            raise TargetingError(f"{path}.op: must be one of {', '.join(OPS)}")
        count[0] += 1
        if count[0] > MAX_CONDITIONS:
            raise TargetingError(f"{where}: at most {MAX_CONDITIONS} conditions")
        return Condition(column, op, _condition_value(op, item.get("value"), path))

    return node(data, where, 0)


def rule_to_data(rule: Node) -> Any:
    """Plain data of a rule tree (``rule_from_data`` of it gives the same tree)."""
    if isinstance(rule, Condition):
        out: dict[str, Any] = {"column": rule.column, "op": rule.op}
        if rule.op != "is_null":
            out["value"] = list(rule.value) if isinstance(rule.value, tuple) else rule.value
        return out
    if isinstance(rule, Not):
        return {"not": rule_to_data(rule.item)}
    return {rule.kind: [rule_to_data(x) for x in rule.items]}


def describe(rule: Node) -> str:
    """A readable one-line form, e.g. ``x > 0.5 and (region == 'a' or y is null)``."""
    if isinstance(rule, Condition):
        if rule.op == "is_null":
            return f"{rule.column} is null"
        if rule.op == "between":
            return f"{rule.value[0]!r} <= {rule.column} <= {rule.value[1]!r}"
        op = {"in": "in", "not_in": "not in"}.get(rule.op, rule.op)
        value = list(rule.value) if isinstance(rule.value, tuple) else rule.value
        return f"{rule.column} {op} {value!r}"
    if isinstance(rule, Not):
        return f"not ({describe(rule.item)})"
    joiner = " and " if rule.kind == "all" else " or "
    return joiner.join(f"({describe(x)})" if isinstance(x, Group) else describe(x)
                       for x in rule.items)


# ---------------------------------------------------------------- query string -> tree

_COMPARE = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.In: "in", ast.NotIn: "not_in", ast.Is: "is", ast.IsNot: "is_not"}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!=",
            "is": "is", "is_not": "is_not"}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
            ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitXor: "^",
            ast.MatMult: "@"}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name,
            ast.Constant, ast.List, ast.Tuple, ast.Load, ast.boolop, ast.operator, ast.unaryop,
            ast.cmpop)
_NAMED = {ast.Subscript: "subscript ('[...]')", ast.Lambda: "lambda",
          ast.ListComp: "comprehension", ast.SetComp: "comprehension",
          ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension",
          ast.Starred: "starred expression ('*')", ast.JoinedStr: "f-string",
          ast.FormattedValue: "f-string", ast.NamedExpr: "assignment expression (':=')",
          ast.IfExp: "conditional expression ('x if c else y')", ast.Dict: "dict literal",
          ast.Set: "set literal", ast.Await: "await", ast.Yield: "yield",
          ast.YieldFrom: "yield", ast.Slice: "slice"}


def _construct(node: ast.AST) -> str | None:
    """What is not allowed about ``node``, or None when its own kind is allowed."""
    if isinstance(node, ast.Attribute):
        return f"attribute access ('.{node.attr}')"
    if isinstance(node, ast.Call):
        func = node.func
        name = (func.id if isinstance(func, ast.Name) else f".{func.attr}"
                if isinstance(func, ast.Attribute) else "lambda"
                if isinstance(func, ast.Lambda) else "")
        return f"function call ('{name}(...)')"
    if type(node) in _NAMED:
        return _NAMED[type(node)]
    if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitAnd | ast.BitOr):
        symbol = _SYMBOLS.get(type(node.op), type(node.op).__name__)
        return f"operator '{symbol}'"
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        return f"dunder name ('{node.id}')"
    if isinstance(node, ast.Constant) and not (node.value is None or isinstance(
            node.value, bool | int | float | str)):
        return f"{type(node.value).__name__} constant"
    if not isinstance(node, _ALLOWED):
        return f"{type(node).__name__} expression"
    return None


def _first_forbidden(tree: ast.AST) -> str | None:
    """The forbidden construct that comes first in the text (innermost on a tie)."""
    found = []
    for node in ast.walk(tree):
        what = _construct(node)  # unpositioned nodes (arguments, ...) sit in a refused parent
        if what is not None and hasattr(node, "lineno"):
            start = (node.lineno, node.col_offset)
            end = (node.end_lineno or 0, node.end_col_offset or 0)
            found.append((start, end, what))
    return min(found)[2] if found else None


def _fail(what: str) -> TargetingError:
    return TargetingError(f"targeting query: {what} is not allowed; {HINT}")


def parse_query(text: str) -> Node:
    """The rule tree of a query string, parsed with ``ast`` (never evaluated)."""
    if not isinstance(text, str) or not text.strip():
        raise TargetingError("targeting query: the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise TargetingError(f"targeting query: at most {MAX_QUERY_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if "@" in text:
            raise _fail("'@' (local variable reference)") from None
        raise TargetingError(f"targeting query: not a valid expression (syntax error at "
                             f"character {exc.offset or 0})") from None
    except (RecursionError, MemoryError, ValueError):
        raise TargetingError("targeting query: too deeply nested or not text") from None
    what = _first_forbidden(tree)
    if what is not None:
        raise _fail(what)
    count = [0]
    rule = _tree(tree.body, count, 0)
    if count[0] > MAX_CONDITIONS:
        raise TargetingError(f"targeting query: at most {MAX_CONDITIONS} conditions")
    return rule


def _tree(node: ast.AST, count: list[int], depth: int) -> Node:
    if depth > 2 * MAX_DEPTH:
        raise TargetingError(f"targeting query: rules nest at most {MAX_DEPTH} levels deep")
    if isinstance(node, ast.BoolOp):
        kind = "all" if isinstance(node.op, ast.And) else "any"
        return _group(kind, [_tree(v, count, depth + 1) for v in node.values])
    if isinstance(node, ast.BinOp):  # & and | (pandas style); other operators were refused
        kind = "all" if isinstance(node.op, ast.BitAnd) else "any"
        return _group(kind, [_tree(node.left, count, depth + 1),
                             _tree(node.right, count, depth + 1)])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
        return Not(_tree(node.operand, count, depth + 1))
    if isinstance(node, ast.Compare):
        return _compare(node, count)
    if isinstance(node, ast.Name):
        raise TargetingError(f"targeting query: a bare column name ('{node.id}') is not a "
                             f"condition; compare it, e.g. {node.id} == True")
    raise TargetingError("targeting query: a constant or list alone is not a condition; "
                         "compare a column with it")


def _constant(node: ast.AST) -> tuple[bool, Any]:
    """(True, value) for a constant (negative numbers included), else (False, None)."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant) and _is_number(node.operand.value)):
        value = node.operand.value
        return True, -value if isinstance(node.op, ast.USub) else value
    return False, None


def _pair(left: ast.AST, op: str, right: ast.AST) -> Node:
    """One comparison ``left op right`` between a column and a constant."""
    if isinstance(left, ast.Name) and isinstance(right, ast.Name):
        raise TargetingError(f"targeting query: comparing two columns ('{left.id}' and "
                             f"'{right.id}') is not supported; compare a column with a constant")
    if not isinstance(left, ast.Name):
        if op in ("in", "not_in") or not isinstance(right, ast.Name):
            raise TargetingError("targeting query: a comparison needs a column on one side "
                                 "(left of in / not in) and a constant on the other")
        left, right, op = right, left, _FLIPPED[op]
    where = f"targeting query: {left.id}"
    if op in ("in", "not_in"):
        if not isinstance(right, ast.List | ast.Tuple):
            raise TargetingError(f"{where}: in / not in need a list of constants, e.g. "
                                 f"{left.id} in ['a', 'b']")
        values = []
        for element in right.elts:
            ok, value = _constant(element)
            if not ok:
                raise TargetingError(f"{where}: a list after in / not in may hold constants only")
            values.append(value)
        return Condition(left.id, op, _condition_value(op, values, where))
    ok, value = _constant(right)
    if not ok:
        raise TargetingError(f"{where}: a list is only allowed after in / not in")
    if op in ("is", "is_not") or value is None:
        if value is not None or op not in ("is", "is_not", "==", "!="):
            raise TargetingError(f"{where}: 'is' / 'is not' compare with None only, and None "
                                 "only with ==, !=, is, is not")
        null = Condition(left.id, "is_null")
        return null if op in ("is", "==") else Not(null)
    return Condition(left.id, op, _condition_value(op, value, where))


def _compare(node: ast.Compare, count: list[int]) -> Node:
    operands = [node.left, *node.comparators]
    ops = [_COMPARE[type(op)] for op in node.ops]
    parts = [_pair(operands[i], op, operands[i + 1]) for i, op in enumerate(ops)]
    count[0] += len(parts)
    bounds = {p.op: p.value for p in parts if isinstance(p, Condition)}
    if (len(parts) == 2 and set(bounds) == {">=", "<="} and parts[0].column == parts[1].column
            and bounds[">="] <= bounds["<="]):  # low <= x <= high (or high >= x >= low)
        return Condition(parts[0].column, "between", (bounds[">="], bounds["<="]))
    return _group("all", parts)


# ---------------------------------------------------------------- columns and evaluation

def conditions(rule: Node) -> list[Condition]:
    """Every condition of the tree, in order."""
    if isinstance(rule, Condition):
        return [rule]
    if isinstance(rule, Not):
        return conditions(rule.item)
    return [c for item in rule.items for c in conditions(item)]


def _kind(dtype: Any) -> str:
    """'bool', 'number', 'text' or 'other' (for a categorical: the kind of its categories)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(dtype.categories.dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "text"
    return "other"


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if _is_number(value) else "text"


def check_columns(rule: Node, dtypes: Mapping[str, Any]) -> None:
    """Columns exist and values fit their dtypes (numeric ops on numeric columns ...)."""
    names = list(dtypes)
    for c in conditions(rule):
        if c.column not in dtypes:
            raise TargetingError(f"targeting rule uses unknown column {c.column!r}; "
                                 f"twin columns: {names}")
        if c.op == "is_null":
            continue
        dtype = dtypes[c.column]
        kind = _kind(dtype)
        ordered = kind == "number" and not isinstance(dtype, pd.CategoricalDtype)
        if (c.op in ORDER_OPS or c.op == "between") and not ordered:
            raise TargetingError(f"targeting rule: op {c.op!r} needs a numeric column; "
                                 f"{c.column!r} is {dtype}")
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        wrong = [v for v in values if _value_kind(v) != kind]
        if wrong:
            raise TargetingError(f"targeting rule: column {c.column!r} ({dtype}) holds "
                                 f"{kind} values; got {_value_kind(wrong[0])} {wrong[0]!r}")


def _as_mask(result: Any) -> np.ndarray:
    if isinstance(result, pd.Series) and result.dtype != bool:
        result = result.fillna(False)
    return np.asarray(result, dtype=bool)


def _condition_mask(c: Condition, chunk: pd.DataFrame) -> np.ndarray:
    s = chunk[c.column]
    if c.op == "is_null":
        return s.isna().to_numpy()
    if c.op in ("in", "not_in"):
        found = s.isin(list(c.value)).to_numpy(dtype=bool)
        return found if c.op == "in" else ~found
    if c.op == "between":
        return _as_mask(s >= c.value[0]) & _as_mask(s <= c.value[1])
    compare = {"==": s.__eq__, "!=": s.__ne__, "<": s.__lt__, "<=": s.__le__,
               ">": s.__gt__, ">=": s.__ge__}[c.op]
    return _as_mask(compare(c.value))


def evaluate(rule: Node, chunk: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows of ``chunk`` the rule selects (numpy/pandas comparisons)."""
    if isinstance(rule, Condition):
        return _condition_mask(rule, chunk)
    if isinstance(rule, Not):
        return ~evaluate(rule.item, chunk)
    masks = [evaluate(item, chunk) for item in rule.items]
    combine = np.logical_and if rule.kind == "all" else np.logical_or
    return combine.reduce(masks) if masks else np.ones(len(chunk), dtype=bool)


@dataclass(frozen=True)
class TargetingRule:
    """A structured rule over twin columns, or the top ``top_share`` by ``score_column``.

    ``conditions`` is plain data (see the module doc) or a parsed tree; ``query`` is a string
    parsed with ``ast`` into the same tree. Neither is ever evaluated as code.
    """

    query: str | None = None
    top_share: float | None = None
    score_column: str | None = None
    descending: bool = True
    conditions: Any = None
    tree: Node | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        given = [self.query is not None, self.conditions is not None, self.top_share is not None]
        if sum(given) != 1:
            raise TargetingError("give exactly one of conditions, a query or a top_share "
                                 "targeting rule")
        if self.query is not None:
            object.__setattr__(self, "tree", parse_query(self.query))
        elif self.conditions is not None:
            tree = (self.conditions if isinstance(self.conditions, Condition | Group | Not)
                    else rule_from_data(self.conditions))
            object.__setattr__(self, "tree", tree)
        else:
            if not 0.0 < self.top_share <= 1.0:
                raise TargetingError(f"top_share must be in (0, 1], got {self.top_share}")
            if not self.score_column:
                raise TargetingError("a top_share rule needs a score_column (a twin column or "
                                     f"{UPLIFT_SCORE!r})")

    def describe(self) -> str:
        if self.tree is not None:
            return f"rule: {describe(self.tree)}"
        order = "highest" if self.descending else "lowest"
        return f"top {100 * self.top_share:g}% by {order} {self.score_column}"

    def needs_uplift(self) -> bool:
        return self.score_column == UPLIFT_SCORE
