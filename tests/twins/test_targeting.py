"""Structured targeting rules: every op against numpy masks, the ast query parser, refusals."""

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.twins.targeting import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    OPS,
    Condition,
    TargetingError,
    check_columns,
    describe,
    evaluate,
    parse_query,
    rule_from_data,
    rule_to_data,
)

N = 5_000


@pytest.fixture(scope="module")
def twins() -> pd.DataFrame:
    """Generated twins: float with NaNs, int, bool, categorical text, categorical ints, text."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=N)
    x[rng.random(N) < 0.05] = np.nan
    region = np.array(["Northeast", "South", "West", "Midwest"])[rng.integers(0, 4, N)]
    return pd.DataFrame({
        "x": x,
        "visits": rng.integers(0, 20, N),
        "flag": rng.random(N) < 0.3,
        "region": pd.Categorical(region),
        "tier": pd.Categorical(rng.integers(1, 4, N)),
        "name": np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, N)],
    })


def numpy_masks(t: pd.DataFrame) -> list[tuple[dict, np.ndarray]]:
    """(condition, hand-computed numpy mask) for every op."""
    x, v, flag = t["x"].to_numpy(), t["visits"].to_numpy(), t["flag"].to_numpy()
    region = np.asarray(t["region"].astype(str))
    tier = np.asarray(t["tier"].astype(int))
    x0 = float(t["x"].dropna().iloc[0])
    with np.errstate(invalid="ignore"):
        return [
            ({"column": "x", "op": ">", "value": 0.5}, x > 0.5),
            ({"column": "x", "op": ">=", "value": 0}, x >= 0),
            ({"column": "x", "op": "<", "value": -1}, x < -1),
            ({"column": "x", "op": "<=", "value": 0.25}, x <= 0.25),
            ({"column": "x", "op": "==", "value": x0}, x == x0),
            ({"column": "x", "op": "!=", "value": x0}, x != x0),  # NaN != x0 is True
            ({"column": "x", "op": "between", "value": [-0.5, 0.5]}, (x >= -0.5) & (x <= 0.5)),
            ({"column": "x", "op": "is_null"}, np.isnan(x)),
            ({"column": "visits", "op": "==", "value": 3}, v == 3),
            ({"column": "visits", "op": "in", "value": [1, 2, 19]}, np.isin(v, [1, 2, 19])),
            ({"column": "visits", "op": "not_in", "value": [0, 5]}, ~np.isin(v, [0, 5])),
            ({"column": "visits", "op": "between", "value": [3, 7]}, (v >= 3) & (v <= 7)),
            ({"column": "flag", "op": "==", "value": True}, flag),
            ({"column": "flag", "op": "!=", "value": True}, ~flag),
            ({"column": "region", "op": "==", "value": "South"}, region == "South"),
            ({"column": "region", "op": "!=", "value": "South"}, region != "South"),
            ({"column": "region", "op": "in", "value": ["West", "Midwest"]},
             np.isin(region, ["West", "Midwest"])),
            ({"column": "region", "op": "not_in", "value": ["West"]}, region != "West"),
            ({"column": "tier", "op": "in", "value": [1, 3]}, np.isin(tier, [1, 3])),
            ({"column": "name", "op": "==", "value": "b"}, np.asarray(t["name"]) == "b"),
        ]


def test_every_op_equals_a_numpy_mask(twins):
    cases = numpy_masks(twins)
    assert {c["op"] for c, _ in cases} == {"==", "!=", "<", "<=", ">", ">=", "in", "not_in",
                                           "between", "is_null"}
    for data, expected in cases:
        rule = rule_from_data([data])
        check_columns(rule, twins.dtypes.to_dict())
        mask = evaluate(rule, twins)
        assert mask.dtype == bool and mask.shape == (N,)
        assert 0 < expected.sum() < N, data  # each case selects some rows, not all
        np.testing.assert_array_equal(mask, expected, err_msg=str(data))


def test_groups_and_not_combine_masks(twins):
    x, region = twins["x"].to_numpy(), np.asarray(twins["region"].astype(str))
    rule = rule_from_data([
        {"column": "x", "op": ">", "value": 0},
        {"any": [{"column": "region", "op": "==", "value": "South"},
                 {"not": {"column": "visits", "op": "<", "value": 15}}]},
    ])
    with np.errstate(invalid="ignore"):
        expected = (x > 0) & ((region == "South") | ~(twins["visits"].to_numpy() < 15))
    np.testing.assert_array_equal(evaluate(rule, twins), expected)
    assert describe(rule) == "x > 0 and (region == 'South' or not (visits < 15))"


QUERY_EQUALS = [
    ("x > 0.5", {"column": "x", "op": ">", "value": 0.5}),
    ("0.5 < x", {"column": "x", "op": ">", "value": 0.5}),
    ("x > -1 and region == 'South'",
     {"all": [{"column": "x", "op": ">", "value": -1},
              {"column": "region", "op": "==", "value": "South"}]}),
    ("(x > 0) & (visits != 3) & (flag == True)",
     {"all": [{"column": "x", "op": ">", "value": 0}, {"column": "visits", "op": "!=", "value": 3},
              {"column": "flag", "op": "==", "value": True}]}),
    ("x < 0 or region in ['West', 'South']",
     {"any": [{"column": "x", "op": "<", "value": 0},
              {"column": "region", "op": "in", "value": ["West", "South"]}]}),
    ("(x < 0) | (visits not in (1, 2))",
     {"any": [{"column": "x", "op": "<", "value": 0},
              {"column": "visits", "op": "not_in", "value": [1, 2]}]}),
    ("1 <= visits <= 5", {"column": "visits", "op": "between", "value": [1, 5]}),
    ("5 >= visits >= 1", {"column": "visits", "op": "between", "value": [1, 5]}),
    ("1 < visits < 5", {"all": [{"column": "visits", "op": ">", "value": 1},
                                {"column": "visits", "op": "<", "value": 5}]}),
    ("x is None", {"column": "x", "op": "is_null"}),
    ("x == None", {"column": "x", "op": "is_null"}),
    ("x is not None", {"not": {"column": "x", "op": "is_null"}}),
    ("not (x > 1 or visits == 2)", {"not": {"any": [{"column": "x", "op": ">", "value": 1},
                                                    {"column": "visits", "op": "==", "value": 2}]}}),
    ("~(x > 1)", {"not": {"column": "x", "op": ">", "value": 1}}),
    ("x > 0 and (visits < 3 or (region == 'West' and flag == False))",
     {"all": [{"column": "x", "op": ">", "value": 0},
              {"any": [{"column": "visits", "op": "<", "value": 3},
                       {"all": [{"column": "region", "op": "==", "value": "West"},
                                {"column": "flag", "op": "==", "value": False}]}]}]}),
]


@pytest.mark.parametrize(("query", "data"), QUERY_EQUALS, ids=[q for q, _ in QUERY_EQUALS])
def test_ast_parse_equals_the_structured_form(query, data, twins):
    parsed = parse_query(query)
    assert parsed == rule_from_data(data)
    assert rule_to_data(parsed) == data
    assert rule_from_data([data]) == parsed  # a one-item list is that item
    check_columns(parsed, twins.dtypes.to_dict())


@pytest.mark.parametrize("query", [q for q, _ in QUERY_EQUALS if "None" not in q
                                   and "is not" not in q])
def test_parsed_queries_select_what_pandas_eval_selected(query, twins):
    """The old path (DataFrame.eval of a fixed test string) and the new masks agree."""
    expected = twins.eval(query).to_numpy(dtype=bool)
    np.testing.assert_array_equal(evaluate(parse_query(query), twins), expected)


FORBIDDEN = [
    ("(a > 0) & (a.to_string.__func__.__globals__.get('sys').modules.get('os').getpid() > 0)",
     "attribute access ('.to_string')"),
    ("x.__class__ == 1", "attribute access ('.__class__')"),
    ("__import__('os').system('id') == 0", "dunder name ('__import__')"),
    ("open('/tmp/canary', 'w') == 1", "function call ('open(...)')"),
    ("(lambda: 1)() == 1", "function call ('lambda(...)')"),
    ("lambda: x", "lambda"),
    ("globals()['os'] == 1", "function call ('globals(...)')"),
    ("x[0] > 1", "subscript ('[...]')"),
    ("@secret > 1", "'@' (local variable reference)"),
    ("x > @secret", "'@' (local variable reference)"),
    ("f'{x}' == 'a'", "f-string"),
    ("'{}'.format(x) == 'a'", "attribute access ('.format')"),
    ("(y := 1) > 0", "assignment expression (':=')"),
    ("[i for i in x] == 1", "comprehension"),
    ("any(i for i in x)", "function call ('any(...)')"),
    ("x + 1 > 2", "operator '+'"),
    ("x @ y", "operator '@'"),
    ("x == (1 if x else 2)", "conditional expression ('x if c else y')"),
    ("x in {1, 2}", "set literal"),
    ("x == {'a': 1}", "dict literal"),
    ("x == b'a'", "bytes constant"),
]


@pytest.mark.parametrize(("query", "construct"), FORBIDDEN, ids=[q for q, _ in FORBIDDEN])
def test_forbidden_constructs_are_refused_by_name(query, construct):
    with pytest.raises(TargetingError) as info:
        parse_query(query)
    message = str(info.value)
    assert f"{construct} is not allowed" in message
    assert "comparisons and and/or/not" in message


@pytest.mark.parametrize(("query", "problem"), [
    ("", "empty"),
    ("x >", "syntax error"),
    ("x > y", "comparing two columns"),
    ("x", "bare column name ('x')"),
    ("1 > 0", "needs a column"),
    ("x == [1, 2]", "only allowed after in / not in"),
    ("x in [y]", "constants only"),
    ("x > None", "None"),
    ("x" + " and x > 1" * 1_000, "at most 2000 characters"),
    (" or ".join(["x > 1"] * (MAX_CONDITIONS + 1)), f"at most {MAX_CONDITIONS} conditions"),
])
def test_malformed_queries_name_the_problem(query, problem):
    with pytest.raises(TargetingError, match="targeting query") as info:
        parse_query(query)
    assert problem in str(info.value)


@pytest.mark.parametrize(("data", "problem"), [
    ([], "empty list"),
    ("x > 1", "must be an object"),
    ([{"column": "x", "op": "=~", "value": 1}], "conditions[0].op: must be one of"),
    ([{"column": "x", "value": 1}], "keys column, op, value"),
    ([{"column": "x", "op": ">", "value": 1, "code": "os.system"}], "keys column, op, value"),
    ([{"column": "", "op": ">", "value": 1}], "column: must be a column name"),
    ([{"column": "x", "op": ">"}], "needs a value"),
    ([{"column": "x", "op": ">", "value": "1"}], "needs a number"),
    ([{"column": "x", "op": ">", "value": [1]}], "single value"),
    ([{"column": "x", "op": ">", "value": {"__class__": 1}}], "single value"),
    ([{"column": "x", "op": ">", "value": float("nan")}], "finite"),
    ([{"column": "x", "op": "between", "value": [2, 1]}], "low <= high"),
    ([{"column": "x", "op": "between", "value": [1]}], "two numbers"),
    ([{"column": "x", "op": "between", "value": ["a", "b"]}], "two numbers"),
    ([{"column": "x", "op": "in", "value": []}], "1 to 1000 values"),
    ([{"column": "x", "op": "in", "value": 1}], "needs a list"),
    ([{"column": "x", "op": "in", "value": [[1]]}], "number, string or boolean"),
    ([{"column": "x", "op": "in", "value": [None]}], "is_null"),
    ([{"column": "x", "op": "is_null", "value": 3}], "takes no value"),
    ([{"column": "x", "op": "is_null", "value": 1}], "takes no value"),
    ([{"any": []}], "non-empty list"),
    ([{"any": [], "all": []}], "keys column, op, value"),
    ([{"column": "x", "op": "==", "value": "a" * 201}], "limited to 200"),
    ([{"column": "x", "op": ">", "value": i} for i in range(MAX_CONDITIONS + 1)],
     f"at most {MAX_CONDITIONS} conditions"),
])
def test_malformed_structured_rules_name_the_problem(data, problem):
    with pytest.raises(TargetingError) as info:
        rule_from_data(data)
    assert problem in str(info.value)


def test_nesting_is_bounded():
    deep: dict = {"column": "x", "op": ">", "value": 0}
    for _ in range(MAX_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(TargetingError, match=f"at most {MAX_DEPTH} levels"):
        rule_from_data(deep)
    with pytest.raises(TargetingError, match="targeting query"):
        parse_query("not " * 500 + "x > 1")


def test_unknown_column_lists_the_twin_columns(twins):
    rule = parse_query("engagment > 0.5")
    with pytest.raises(TargetingError) as info:
        check_columns(rule, twins.dtypes.to_dict())
    message = str(info.value)
    assert "unknown column 'engagment'" in message
    assert all(c in message for c in twins.columns)


@pytest.mark.parametrize(("data", "problem"), [
    ({"column": "region", "op": ">", "value": 1}, "op '>' needs a numeric column; 'region'"),
    ({"column": "tier", "op": "between", "value": [1, 2]}, "needs a numeric column; 'tier'"),
    ({"column": "name", "op": "<=", "value": 1}, "needs a numeric column; 'name'"),
    ({"column": "flag", "op": ">", "value": 0}, "needs a numeric column; 'flag'"),
    ({"column": "x", "op": "==", "value": "1"}, "holds number values; got text '1'"),
    ({"column": "visits", "op": "in", "value": [1, "2"]}, "got text '2'"),
    ({"column": "region", "op": "==", "value": 3}, "holds text values; got number 3"),
    ({"column": "tier", "op": "==", "value": "1"}, "holds number values; got text '1'"),
    ({"column": "flag", "op": "==", "value": 1}, "holds bool values; got number 1"),
    ({"column": "x", "op": "==", "value": True}, "holds number values; got bool True"),
])
def test_type_mismatches_are_refused(data, problem, twins):
    with pytest.raises(TargetingError) as info:
        check_columns(rule_from_data(data), twins.dtypes.to_dict())
    assert problem in str(info.value)


def test_is_null_fits_any_column_and_condition_tuples_are_hashable(twins):
    for column in twins.columns:
        check_columns(Condition(column, "is_null"), twins.dtypes.to_dict())
    rule = rule_from_data({"column": "visits", "op": "in", "value": [1, 2]})
    assert hash(rule) == hash(parse_query("visits in [1, 2]"))


def test_evaluation_never_reaches_eval(twins, monkeypatch):
    """The masks come from comparisons: DataFrame.eval/query and builtins.eval are never used."""
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("eval reached")

    for owner, name in ((pd.DataFrame, "eval"), (pd.DataFrame, "query"), (pd, "eval"),
                        (builtins, "eval"), (builtins, "exec")):
        monkeypatch.setattr(owner, name, refuse)
    for query, _ in QUERY_EQUALS:
        evaluate(parse_query(query), twins)


def test_readme_example_rule_fits_the_demo_data():
    """The README's conditions example parses and fits the synthetic E2I columns."""
    import re
    from pathlib import Path

    import yaml

    from e2i_pipelines.data.synthetic import generate_e2i

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```yaml\n(twin_interventions:\n  targeting: conditions\n.*?)```", readme,
                      re.S).group(1)
    config = yaml.safe_load(block)["twin_interventions"]
    rule = rule_from_data(config["conditions"])
    frame, _ = generate_e2i(2_000, seed=0)
    check_columns(rule, frame.dtypes.to_dict())
    expected = (frame["engagement_score"].to_numpy() > 0.5) & (
        frame["region"].isin(["Northeast", "South"]).to_numpy()
        | frame["prior_rx"].between(1, 5).to_numpy())
    assert 0 < expected.sum() < len(frame)
    np.testing.assert_array_equal(evaluate(rule, frame), expected)


def test_any_json_or_text_is_a_rule_or_a_targeting_error(twins):
    """Fuzz: arbitrary JSON rules and query text never raise anything but TargetingError; a
    rule that passes the column check evaluates to one boolean per twin."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    keys = st.sampled_from(["column", "op", "value", "all", "any", "not", *twins.columns])
    json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys | st.sampled_from(OPS), inner, max_size=4),
                        max_leaves=30)
    text = st.text(alphabet="xy_ ()[]'\"<>=!&|~@.,:0123456789aeinortsdl", max_size=60)
    dtypes = twins.dtypes.to_dict()

    @settings(max_examples=400, deadline=None, database=None)
    @given(json, text)
    def check(data, query):
        for build, arg in ((rule_from_data, data), (parse_query, query)):
            try:
                rule = build(arg)
                check_columns(rule, dtypes)
            except TargetingError:
                continue
            mask = evaluate(rule, twins)
            assert mask.dtype == bool and mask.shape == (N,)

    check()
