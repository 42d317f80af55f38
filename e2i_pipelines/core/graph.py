"""The optional causal DAG of a dataset spec (``graph:``): read, validate, identify.

A graph is DOT (parsed with pydot) or GML (parsed with networkx), inline or in a file. Nodes
marked ``observed="no"`` (DOT) or ``observed "no"`` (GML) are latent, DoWhy's convention; every
other node must be a column of the data. The backdoor adjustment set is identified by DoWhy from
the graph alone (no data), see :func:`backdoor_adjustment_set`. Reading and validating are cheap;
only identification imports DoWhy (a few seconds on first import).

Every problem raises :class:`GraphError`, whose message names it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pydot
import pydot.dot_parser
import pyparsing

from e2i_pipelines.core.data_root import MAX_SPEC_BYTES, DataPathError, resolve_user_path
from e2i_pipelines.core.errors import DataValidationError

BACKDOOR_METHOD = "maximal-adjustment"
"""DoWhy's backdoor method used (``BackdoorAdjustment.BACKDOOR_MAX``); see
:func:`backdoor_adjustment_set` for why."""

_SKIP = r"(?:\s|//[^\n]*|#[^\n]*|/\*.*?\*/)*"
_DOT_HEAD = re.compile(_SKIP + r"(?:strict\s+)?(?:di)?graph\b(?!\s*\[)", re.IGNORECASE | re.DOTALL)
_GML_HEAD = re.compile(r"\bgraph\s*\[")
_DOT_STRINGS_COMMENTS = re.compile(
    r'"(?:\\.|[^"\\])*"|/\*.*?\*/|//[^\n]*|^\s*#[^\n]*', re.DOTALL | re.MULTILINE
)
_DOT_QUOTED = re.compile(r'"((?:\\.|[^"\\])*)"')
_DOT_DEFAULTS = frozenset({"graph", "node", "edge"})
_PYDOT_LOCK = threading.Lock()  # pydot's pyparsing grammar is not thread-safe
_NO_DIRECTED_PATH = "No directed path from treatment to outcome. Causal Effect is zero."
"""DoWhy's words (identify_effect_auto) for a graph without a causal path."""

Attrs = dict[str, str]


class GraphError(DataValidationError):
    """The causal graph cannot be read, does not fit the data, or does not identify the effect."""


@dataclass(frozen=True)
class ParsedGraph:
    """A causal DAG: nodes in order of appearance, directed edges, latent nodes."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    unobserved: tuple[str, ...] = ()

    @property
    def observed(self) -> tuple[str, ...]:
        """Nodes that must be data columns (all but the ``observed="no"`` ones)."""
        latent = set(self.unobserved)
        return tuple(n for n in self.nodes if n not in latent)

    def to_networkx(self) -> nx.DiGraph:
        """A new DiGraph whose nodes carry DoWhy's ``observed`` attribute ("yes"/"no")."""
        latent = set(self.unobserved)
        dag = nx.DiGraph()
        dag.add_nodes_from((n, {"observed": "no" if n in latent else "yes"}) for n in self.nodes)
        dag.add_edges_from(self.edges)
        return dag


# --- reading -------------------------------------------------------------------------------


def graph_text(source: str, base_dir: str | Path | None = None, *, folder: str = "",
               key: str = "graph", quote: bool = True) -> str:
    """DOT/GML text: ``source`` itself when inline, else the text of the file it names.

    A file must lie under the data folder ``folder`` (see ``core.data_root``); relative paths
    resolve against ``base_dir`` (e.g. the spec file's folder) when given, else that folder.
    ``key`` names the parameter in errors, which never quote the file, nor ``source`` unless
    ``quote`` (false for a path read from a spec file).
    """
    if not isinstance(source, str):
        raise GraphError(f"graph must be DOT/GML text or a file path, not {type(source).__name__}")
    if not source.strip():
        raise GraphError("graph is empty; give DOT/GML text or the path of a DOT/GML file")
    if _graph_format(source) is not None:
        return source
    path = _graph_path(source.strip(), base_dir, folder, key, quote)
    return _read_graph_file(path, source.strip() if quote else None, key)


def _graph_format(text: str) -> str | None:
    """Return "DOT", "GML" or None (not inline graph text)."""
    if _DOT_HEAD.match(text):
        return "DOT"
    if _GML_HEAD.search(text):
        return "GML"
    return None


def _graph_path(source: str, base_dir: str | Path | None, folder: str, key: str,
                quote: bool = True) -> Path:
    """The resolved graph file under the data folder; GraphError when it resolves outside."""
    try:
        return resolve_user_path(source, key, folder, base_dir, quote)
    except DataPathError as exc:
        raise GraphError(
            f"{exc} (inline graphs must be DOT 'digraph {{ ... }}' or GML 'graph [ ... ]')"
        ) from None


def _read_graph_file(path: Path, source: str | None, key: str = "graph") -> str:
    """The text of a graph file, or GraphError naming the key, the file (``source``, when it
    may be quoted) and the problem."""
    shown = f"{key}: graph file {_shorten(source)!r}" if source else f"{key}: the graph file"
    if not _exists(path):
        raise GraphError(
            f"{shown} does not exist (inline graphs must be DOT "
            "'digraph { ... }' or GML 'graph [ ... ]')"
        )
    if not path.is_file():
        raise GraphError(f"{shown} is not a file")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise GraphError(f"{shown} is larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GraphError(f"{shown} is not UTF-8 text") from None
    except OSError:
        raise GraphError(f"{shown} cannot be read") from None
    if not text.strip():
        raise GraphError(f"{shown} is empty")
    return text


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # name too long, NUL byte: mistyped inline text, not a file
        return False


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- parsing -------------------------------------------------------------------------------


def parse_graph(text: str) -> ParsedGraph:
    """Parse DOT (pydot) or GML (networkx) text into a directed acyclic :class:`ParsedGraph`."""
    fmt = _graph_format(text) if isinstance(text, str) else None
    if fmt == "DOT":
        graph = _parse_dot(text)
    elif fmt == "GML":
        graph = _parse_gml(text)
    else:
        raise GraphError(
            "graph text is neither DOT ('digraph { a -> b }') nor GML ('graph [ directed 1 ... ]')"
        )
    _check_acyclic(graph)
    return graph


def _parse_dot(text: str) -> ParsedGraph:
    dot = _single_dot_graph(text)
    if dot.get_type() != "digraph":
        raise GraphError(
            "graph is undirected (DOT 'graph { ... }'); a causal DAG is a 'digraph' with '->' edges"
        )
    if "--" in _DOT_STRINGS_COMMENTS.sub(" ", text):
        raise GraphError("DOT digraph has an undirected edge '--'; causal edges are '->'")
    nodes: dict[str, Attrs] = {}
    edges: list[tuple[str, str]] = []
    _collect_dot(dot, nodes, edges)
    return _build_graph(nodes, edges)


def _single_dot_graph(text: str) -> pydot.Dot:
    with _PYDOT_LOCK:
        try:
            graphs = list(pydot.dot_parser.GraphParser.parser.parse_string(text, parse_all=True))
        except pyparsing.ParseBaseException as exc:
            raise GraphError(
                f"DOT syntax error: {exc}; line {exc.lineno}: {_shorten(exc.line.strip())!r}"
            ) from exc
    if len(graphs) != 1:
        raise GraphError(f"DOT text holds {len(graphs)} graphs; give exactly one digraph")
    return graphs[0]


def _collect_dot(graph: pydot.Graph, nodes: dict[str, Attrs], edges: list[tuple[str, str]]
                 ) -> None:
    """Add the nodes (with attributes) and edges of a pydot graph and its subgraphs."""
    for node in graph.get_nodes():
        if node.get_name() not in _DOT_DEFAULTS:  # 'node [...]' etc. are default statements
            _add_dot_node(nodes, node.get_name(), node.get_attributes())
    for edge in graph.get_edges():
        tails = _dot_endpoint(edge.get_source(), nodes)
        heads = _dot_endpoint(edge.get_destination(), nodes)
        edges.extend((u, v) for u in tails for v in heads)
    for sub in graph.get_subgraphs():
        _collect_dot(sub, nodes, edges)


def _add_dot_node(nodes: dict[str, Attrs], raw: str, attrs: dict[str, Any]) -> str:
    name = _dot_id(raw)
    nodes.setdefault(name, {}).update({k: _unquote(str(v)) for k, v in attrs.items()})
    return name


def _dot_endpoint(endpoint: Any, nodes: dict[str, Attrs]) -> list[str]:
    """Node names of an edge end: a node id (port dropped) or an anonymous ``{a b}`` group."""
    if isinstance(endpoint, str):
        return [_add_dot_node(nodes, endpoint, {})]
    if endpoint.get("edges") or endpoint.get("subgraphs"):
        raise GraphError("DOT edges to subgraphs that hold edges are not supported; list each edge")
    return [
        _add_dot_node(nodes, raw, dict(entries[0].get("attributes", {})) if entries else {})
        for raw, entries in endpoint.get("nodes", {}).items()
    ]


def _dot_id(raw: str) -> str:
    """A DOT node id without quotes and without its port (``a:p1:n`` -> ``a``)."""
    quoted = _DOT_QUOTED.match(raw)
    if quoted:
        return quoted.group(1).replace('\\"', '"').replace("\\\n", "")
    return raw.split(":", 1)[0]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _parse_gml(text: str) -> ParsedGraph:
    try:
        graph = _read_gml(text)
    except (nx.NetworkXError, ValueError) as exc:
        raise GraphError(f"GML syntax error: {exc}") from exc
    if not graph.is_directed():
        raise GraphError(
            "graph is undirected (GML without 'directed 1'); a causal DAG must be directed"
        )
    nodes = {str(n): {k: str(v) for k, v in attrs.items()} for n, attrs in graph.nodes(data=True)}
    return _build_graph(nodes, [(str(u), str(v)) for u, v in graph.edges()])


def _read_gml(text: str) -> nx.Graph:
    """networkx's GML graph, nodes named by ``label`` (or by ``id`` when no node has one)."""
    try:
        return nx.parse_gml(text)
    except nx.NetworkXError as exc:
        if "has no 'label' attribute" not in str(exc):
            raise
        return nx.parse_gml(text, label="id")


def _build_graph(nodes: dict[str, Attrs], edges: list[tuple[str, str]]) -> ParsedGraph:
    unobserved = tuple(n for n, attrs in nodes.items() if _is_latent(attrs))
    return ParsedGraph(tuple(nodes), tuple(dict.fromkeys(edges)), unobserved)


def _is_latent(attrs: Attrs) -> bool:
    return attrs.get("observed", "yes").strip().lower() == "no"


def _check_acyclic(graph: ParsedGraph) -> None:
    try:
        cycle = nx.find_cycle(graph.to_networkx())
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join([cycle[0][0], *(v for _, v in cycle)])
    raise GraphError(f"graph has a cycle: {path}; a causal graph must be acyclic")


# --- validation ----------------------------------------------------------------------------


def check_graph(graph: ParsedGraph, treatment: str, outcome: str,
                columns: Iterable[str] | None = None) -> None:
    """Raise unless treatment and outcome are distinct observed nodes and, when the data's
    ``columns`` are given, every observed node is one of them."""
    if treatment == outcome:
        raise GraphError(f"treatment and outcome are both {treatment!r}")
    for role, name in (("treatment", treatment), ("outcome", outcome)):
        _check_role(graph, role, name)
    if columns is not None:
        _check_columns(graph, list(dict.fromkeys(columns)))


def _check_role(graph: ParsedGraph, role: str, name: str) -> None:
    if name not in graph.nodes:
        raise GraphError(f"{role} {name!r} is not a node of the graph; nodes: {list(graph.nodes)}")
    if name in graph.unobserved:
        raise GraphError(f'{role} {name!r} is marked observed="no" in the graph; it must be '
                         "an observed column")


def _check_columns(graph: ParsedGraph, columns: list[Any]) -> None:
    known = set(columns)
    missing = [n for n in graph.observed if n not in known]
    if not missing:
        return
    also = f"; also missing: {missing[1:]}" if len(missing) > 1 else ""
    raise GraphError(
        f"graph node {missing[0]!r} is not a column of the data; mark unobserved variables "
        f'with observed="no"; columns: {columns}{also}'
    )


# --- identification ------------------------------------------------------------------------


def backdoor_adjustment_set(graph: ParsedGraph, treatment: str, outcome: str) -> list[str]:
    """The backdoor adjustment set (sorted names) DoWhy identifies from the graph alone.

    Method: DoWhy's ``maximal-adjustment`` (:data:`BACKDOOR_METHOD`) through its backdoor
    identifier ``identify_backdoor``, on the subgraph of ancestors of treatment and outcome;
    parents of the treatment that DoWhy's ``get_instruments`` calls instruments are then
    dropped while the set stays valid (DoWhy's backdoor check). Why, measured with DoWhy 0.14
    on random 40-node DAGs:

    * ``default`` / ``minimal-adjustment`` try subsets smallest first (>5 s on some graphs)
      and return a minimal set, leaving out outcome predictors that add precision.
    * ``efficient-adjustment`` (the precision-optimal set) enumerates simple paths (>5 s on 3
      of 12 graphs) and raises NetworkXError once two causal paths share a first edge (DoWhy
      issue #1360); ``identify_effect_auto`` adds an exhaustive front-door search (>5 s).
    * ``maximal-adjustment`` keeps every observed non-descendant of the treatment: outcome
      predictors are in, mediators and colliders (descendants) never are. Among ancestors its
      first candidate is valid whenever any backdoor set is (van der Zander et al. 2014), so
      DoWhy decides with one d-separation test (10-30 ms). A failing candidate means "not
      identifiable"; that is checked first, as DoWhy would then try every subset (3 to >30 s).
    * Instruments are dropped because, like DoWhy's default (fewest instruments), they only
      add variance and amplify bias. Other treatment-only predictors may remain (no bias).

    Raises GraphError when there is no directed path or no valid backdoor set (DoWhy's reason).
    """
    check_graph(graph, treatment, outcome)
    dag = graph.to_networkx()
    if not nx.has_path(dag, treatment, outcome):
        raise GraphError(
            f"graph has no directed path from treatment {treatment!r} to outcome {outcome!r} "
            f"(DoWhy: {_NO_DIRECTED_PATH!r}); add the edges through which it acts"
        )
    dag = _ancestral_subgraph(dag, treatment, outcome)
    observed = [n for n, seen in dag.nodes(data="observed") if seen == "yes"]
    candidate = _largest_candidate(dag, treatment, outcome, observed)
    if not _is_backdoor_set(dag, treatment, outcome, candidate):
        raise _not_identifiable(dag, treatment, outcome, candidate)
    adjustment = _dowhy_maximal_set(dag, treatment, outcome, observed)
    return sorted(_drop_instruments(dag, treatment, outcome, adjustment))


def _ancestral_subgraph(dag: nx.DiGraph, treatment: str, outcome: str) -> nx.DiGraph:
    """Treatment, outcome and their ancestors: all that d-separation between them needs."""
    keep = nx.ancestors(dag, treatment) | nx.ancestors(dag, outcome) | {treatment, outcome}
    return dag.subgraph(keep).copy()


def _largest_candidate(dag: nx.DiGraph, treatment: str, outcome: str, observed: list[str]
                       ) -> list[str]:
    """DoWhy's first maximal-adjustment candidate: observed non-descendants of the treatment."""
    banned = nx.descendants(dag, treatment) | {treatment, outcome}
    return [n for n in observed if n not in banned]


def _is_backdoor_set(dag: nx.DiGraph, treatment: str, outcome: str, nodes: Iterable[str]
                     ) -> bool:
    """DoWhy's backdoor test: ``nodes`` d-separate T and Y once T's out-edges are cut."""
    from dowhy.graph import check_valid_backdoor_set

    check = check_valid_backdoor_set(dag, [treatment], [outcome], set(nodes))
    return bool(check["is_dseparated"])


def _dowhy_maximal_set(dag: nx.DiGraph, treatment: str, outcome: str, observed: list[str]
                       ) -> set[str]:
    """The largest observed set among DoWhy's ``maximal-adjustment`` backdoor sets."""
    from dowhy.causal_identifier.auto_identifier import BackdoorAdjustment, identify_backdoor

    found = identify_backdoor(dag, [treatment], [outcome], observed,
                              BackdoorAdjustment(BACKDOOR_METHOD))
    usable = [set(s.get_adjustment_variables()) for s in found]
    usable = [s for s in usable if s <= set(observed)]
    if not usable:  # not expected once the largest candidate passed
        raise _not_identifiable(dag, treatment, outcome, _largest_candidate(
            dag, treatment, outcome, observed))
    return max(usable, key=len)


def _drop_instruments(dag: nx.DiGraph, treatment: str, outcome: str, adjustment: set[str]
                      ) -> set[str]:
    """``adjustment`` without DoWhy's instruments of the treatment, where still valid."""
    from dowhy.graph import get_instruments

    kept = set(adjustment)
    for node in sorted(set(get_instruments(dag, [treatment], [outcome])) & kept):
        if _is_backdoor_set(dag, treatment, outcome, kept - {node}):
            kept.discard(node)
    return kept


def _not_identifiable(dag: nx.DiGraph, treatment: str, outcome: str, candidate: list[str]
                      ) -> GraphError:
    from dowhy.causal_identifier.efficient_backdoor import EXCEPTION_NO_ADJ

    latent = _confounding_latents(dag, treatment, outcome, candidate)
    through = f"; backdoor paths stay open through unobserved {latent}" if latent else ""
    return GraphError(
        f"the effect of {treatment!r} on {outcome!r} is not identifiable by backdoor adjustment: "
        f"DoWhy's backdoor criterion fails even for the largest eligible set {sorted(candidate)} "
        f"({EXCEPTION_NO_ADJ}){through}. Only backdoor adjustment is supported (not front-door "
        "or instrumental variables); observe a variable that blocks these paths"
    )


def _confounding_latents(dag: nx.DiGraph, treatment: str, outcome: str, given: list[str]
                         ) -> list[str]:
    """Latent nodes d-connected to both T and Y given ``given`` once T's out-edges are cut."""
    from dowhy.graph import check_dseparation, do_surgery

    cut = do_surgery(dag, [treatment], remove_outgoing_edges=True)
    latent = [n for n, seen in dag.nodes(data="observed") if seen != "yes"]
    return [
        n for n in latent
        if not check_dseparation(cut, [n], [treatment], set(given))
        and not check_dseparation(cut, [n], [outcome], set(given))
    ]


def resolve_graph(source: str, treatment: str, outcome: str, base_dir: str | Path | None = None,
                  columns: Iterable[str] | None = None, folder: str = ""
                  ) -> tuple[str, ParsedGraph, list[str]]:
    """Read (a file only under the data folder ``folder``), parse, check (against ``columns``
    when given) and identify, in that order.

    Returns (graph text, parsed graph, backdoor adjustment set).
    """
    text = graph_text(source, base_dir, folder=folder)
    graph = parse_graph(text)
    check_graph(graph, treatment, outcome, columns)
    return text, graph, backdoor_adjustment_set(graph, treatment, outcome)
