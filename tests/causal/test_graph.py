"""Causal DAGs from the spec: reading, parsing, validation and DoWhy backdoor identification."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.graph import (
    BACKDOOR_METHOD,
    GraphError,
    ParsedGraph,
    backdoor_adjustment_set,
    check_graph,
    graph_text,
    parse_graph,
    resolve_graph,
)


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    """Graph and data files must lie under the data root; here the test's tmp folder."""
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))

# Confounder W, mediator M, collider C.
DAG_DOT = """
// confounder, mediator, collider
strict digraph e2i {
  W -> T; W -> Y;
  T -> M -> Y;
  T -> C; Y -> C;
  T -> Y;
}
"""

DAG_GML = """graph [
  directed 1
  node [ id 0 label "W" ]
  node [ id 1 label "T" ]
  node [ id 2 label "M" ]
  node [ id 3 label "C" ]
  node [ id 4 label "Y" ]
  edge [ source 0 target 1 ]
  edge [ source 0 target 4 ]
  edge [ source 1 target 2 ]
  edge [ source 2 target 4 ]
  edge [ source 1 target 3 ]
  edge [ source 4 target 3 ]
  edge [ source 1 target 4 ]
]"""

LATENT_DOT = 'digraph { U [observed="no"]; U -> T; U -> Y; W -> T; W -> Y; T -> Y }'

LATENT_GML = """graph [ directed 1
  node [ id 0 label "U" observed "no" ] node [ id 1 label "T" ] node [ id 2 label "Y" ]
  node [ id 3 label "W" ]
  edge [ source 0 target 1 ] edge [ source 0 target 2 ] edge [ source 3 target 1 ]
  edge [ source 3 target 2 ] edge [ source 1 target 2 ]
]"""


def adjust(dot: str) -> list[str]:
    return backdoor_adjustment_set(parse_graph(dot), "T", "Y")


# --- reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [DAG_DOT, DAG_GML, "digraph{T->Y}", "  /* c */ graph [ ]"])
def test_inline_text_is_returned_as_is(text):
    assert graph_text(text) == text


def test_dot_and_gml_files(tmp_path):
    (tmp_path / "dag.dot").write_text(DAG_DOT)
    (tmp_path / "dag.gml").write_text(DAG_GML)
    assert graph_text(str(tmp_path / "dag.dot")) == DAG_DOT
    assert graph_text("dag.gml", base_dir=tmp_path) == DAG_GML
    assert graph_text("dag.dot", base_dir=str(tmp_path)) == DAG_DOT


def test_missing_file_and_empty_source(tmp_path):
    with pytest.raises(GraphError, match=r"graph file .*nope\.dot' does not exist"):
        graph_text("nope.dot", base_dir=tmp_path)
    with pytest.raises(GraphError, match="empty"):
        graph_text("  \n")
    (tmp_path / "empty.dot").write_text("\n")
    with pytest.raises(GraphError, match="empty"):
        graph_text(str(tmp_path / "empty.dot"))


def test_graph_error_is_a_data_validation_error():
    assert issubclass(GraphError, DataValidationError)


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [DAG_DOT, DAG_GML])
def test_parse_dot_and_gml(text):
    graph = parse_graph(text)
    assert set(graph.nodes) == {"W", "T", "M", "C", "Y"}
    assert set(graph.edges) == {("W", "T"), ("W", "Y"), ("T", "M"), ("M", "Y"),
                                ("T", "C"), ("Y", "C"), ("T", "Y")}
    assert graph.unobserved == ()


@pytest.mark.parametrize("text", [LATENT_DOT, LATENT_GML])
def test_unobserved_nodes(text):
    graph = parse_graph(text)
    assert graph.unobserved == ("U",)
    assert set(graph.observed) == {"T", "Y", "W"}
    dag = graph.to_networkx()
    assert isinstance(dag, nx.DiGraph)
    assert dag.nodes["U"]["observed"] == "no" and dag.nodes["W"]["observed"] == "yes"


def test_dot_quotes_ports_subgraphs_and_defaults():
    graph = parse_graph(
        'digraph { node [shape=box]; "my var" -> T:p1:n; {A B} -> Y; '
        "subgraph cluster { L [observed=no]; L -> A } T -> Y }"
    )
    assert set(graph.nodes) == {"my var", "T", "A", "B", "Y", "L"}
    assert {("my var", "T"), ("A", "Y"), ("B", "Y"), ("L", "A")} <= set(graph.edges)
    assert graph.unobserved == ("L",)


def test_graph_without_edges_is_fine():
    assert parse_graph("digraph { T; Y }") == ParsedGraph(("T", "Y"), (), ())


def test_cycle_is_named():
    with pytest.raises(GraphError, match="graph has a cycle: a -> b -> a"):
        parse_graph("digraph { a -> b; b -> a; T -> Y }")


@pytest.mark.parametrize("text, match", [
    ("digraph { a -> }", "DOT syntax error"),
    ("digraph { a -> b } trailing", "DOT syntax error"),
    ("graph [ directed 1 node [ id 0 label \"a\" ]", "GML syntax error"),
    ("T -> Y", "neither DOT"),
])
def test_syntax_errors_name_the_format(text, match):
    with pytest.raises(GraphError, match=match):
        parse_graph(text)


@pytest.mark.parametrize("text", [
    "graph { T -- Y }",
    "digraph { T -- Y }",
    'graph [ node [ id 0 label "T" ] node [ id 1 label "Y" ] edge [ source 0 target 1 ] ]',
])
def test_undirected_graphs_are_rejected(text):
    with pytest.raises(GraphError, match="undirected"):
        parse_graph(text)


# --- validation ----------------------------------------------------------------------------


def test_treatment_or_outcome_not_in_graph():
    graph = parse_graph(DAG_DOT)
    with pytest.raises(GraphError, match="treatment 'X' is not a node of the graph"):
        check_graph(graph, "X", "Y")
    with pytest.raises(GraphError, match="outcome 'Z' is not a node of the graph"):
        check_graph(graph, "T", "Z")
    with pytest.raises(GraphError, match="observed=\"no\""):
        check_graph(parse_graph(LATENT_DOT), "U", "Y")


def test_unknown_node_names_it_and_the_columns():
    graph = parse_graph(DAG_DOT)
    columns = ["T", "Y", "W", "M"]
    with pytest.raises(GraphError) as err:
        check_graph(graph, "T", "Y", columns)
    message = str(err.value)
    assert "graph node 'C' is not a column of the data" in message
    assert 'observed="no"' in message and str(columns) in message
    check_graph(graph, "T", "Y", [*columns, "C"])
    check_graph(parse_graph(LATENT_DOT), "T", "Y", ["T", "Y", "W"])  # U is latent


# --- identification ------------------------------------------------------------------------


def test_confounder_only_mediator_and_collider_excluded():
    assert BACKDOOR_METHOD == "maximal-adjustment"
    assert adjust(DAG_DOT) == ["W"]
    assert backdoor_adjustment_set(parse_graph(DAG_GML), "T", "Y") == ["W"]


def test_instrument_is_left_out():
    assert adjust(DAG_DOT.replace("T -> Y;", "T -> Y; Z -> T;")) == ["W"]
    assert adjust("digraph { Z -> T -> Y }") == []


def test_outcome_predictor_is_kept_for_precision():
    assert adjust(DAG_DOT.replace("T -> Y;", "T -> Y; P -> Y;")) == ["P", "W"]


def test_m_bias_collider_is_not_adjusted_for():
    dot = ('digraph { U1 [observed="no"]; U2 [observed="no"]; '
           "U1 -> T; U1 -> C; U2 -> C; U2 -> Y; T -> Y }")
    assert adjust(dot) == []


@pytest.mark.parametrize("text", [LATENT_DOT, LATENT_GML])
def test_unobserved_confounder_is_not_identifiable(text):
    with pytest.raises(GraphError) as err:
        backdoor_adjustment_set(parse_graph(text), "T", "Y")
    message = str(err.value)
    assert "not identifiable by backdoor adjustment" in message
    assert "An adjustment set formed by observable variables does not exist" in message
    assert "['U']" in message


def test_observed_blocker_makes_it_identifiable():
    assert adjust('digraph { U [observed="no"]; U -> V -> T; U -> Y; T -> Y }') == ["V"]


def test_front_door_graph_gives_a_clear_error():
    with pytest.raises(GraphError, match="front-door"):
        adjust('digraph { U [observed="no"]; U -> T; U -> Y; T -> M -> Y }')


def test_no_directed_path_is_an_error():
    with pytest.raises(GraphError, match="no directed path from treatment 'T' to outcome 'Y'"):
        adjust("digraph { W -> T; W -> Y }")


def test_resolve_graph(tmp_path):
    (tmp_path / "dag.dot").write_text(DAG_DOT)
    text, graph, adjustment = resolve_graph("dag.dot", "T", "Y", base_dir=tmp_path,
                                            columns=["T", "Y", "W", "M", "C"])
    assert text == DAG_DOT and "M" in graph.nodes and adjustment == ["W"]
    with pytest.raises(GraphError, match="graph node 'C' is not a column"):
        resolve_graph("dag.dot", "T", "Y", base_dir=tmp_path, columns=["T", "Y", "W", "M"])


def random_dag_dot(seed: int, p: float, n: int = 40, latent: int = 0) -> str:
    rng = random.Random(seed)
    names = [f"x{i}" for i in range(n)]
    names[12], names[30] = "T", "Y"
    edges = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if rng.random() < p]
    hidden = rng.sample([v for v in names if v not in ("T", "Y")], latent)
    lines = [f'{v} [observed="no"];' for v in hidden]
    lines += [f"{a} -> {b};" for a, b in [*edges, ("T", "Y")]]
    return "digraph {\n" + "\n".join(lines) + "\n}"


@pytest.mark.parametrize("seed, p, latent", [(0, 0.1, 0), (1, 0.15, 0), (2, 0.3, 0),
                                             (3, 0.15, 4), (4, 0.3, 6)])
def test_forty_node_random_dag(seed, p, latent):
    """Exhaustive DoWhy searches take seconds to minutes here; this must not hang."""
    graph = parse_graph(random_dag_dot(seed, p, latent=latent))
    dag = graph.to_networkx()
    try:
        adjustment = backdoor_adjustment_set(graph, "T", "Y")
    except GraphError as err:
        assert latent and "not identifiable" in str(err)
        return
    assert not set(adjustment) & (nx.descendants(dag, "T") | set(graph.unobserved))
    cut = dag.copy()
    cut.remove_edges_from(list(dag.out_edges("T")))
    assert nx.is_d_separator(cut, {"T"}, {"Y"}, set(adjustment))
