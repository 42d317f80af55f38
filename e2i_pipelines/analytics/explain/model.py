"""A LightGBM booster flattened into arrays for the TreeSHAP kernels.

Parsed from ``booster.dump_model()``. Every internal node records the *position* of its
feature among the unique features on the root-to-node path (the first occurrence decides),
so all leaves below a node agree on it. Every leaf records its unique path features, the
product of cover fractions per feature (``z``) and its value. Decisions replicate LightGBM's
``Tree::NumericalDecision`` / ``Tree::CategoricalDecision`` (missing types None/Zero/NaN,
default_left, category bitsets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
NUMERICAL, CATEGORICAL = 0, 1
MAX_PATH_FEATURES = 62  # positions live in the bits of an int64 mask


class UnsupportedModelError(ValueError):
    """The booster uses something the fast kernels do not implement (use LightGBM's own)."""


class LinearTreeError(UnsupportedModelError):
    """Linear-tree leaves: no path-dependent TreeSHAP exists (LightGBM refuses them too)."""


@dataclass
class FlatEnsemble:
    """Struct-of-arrays form of all trees. Children < 0 are leaves: leaf index = ~child."""

    n_features: int
    feature_names: list[str]
    base_value: float  # sum of the trees' expected values (LightGBM's contribution bias)
    tree_root: np.ndarray  # int32; >= 0 node, < 0 leaf (single-leaf trees are dropped)
    node_feature: np.ndarray  # int32
    node_threshold: np.ndarray  # float64
    node_kind: np.ndarray  # int8: 0 numerical, 1 categorical
    node_default_left: np.ndarray  # bool
    node_missing: np.ndarray  # int8: 0 None, 1 Zero, 2 NaN
    node_left: np.ndarray  # int32
    node_right: np.ndarray  # int32
    node_pos: np.ndarray  # int32: feature position on the path
    node_cat_offset: np.ndarray  # int32 into cat_words
    node_cat_len: np.ndarray  # int32 words
    cat_words: np.ndarray  # uint32 category bitsets
    leaf_value: np.ndarray  # float64
    leaf_depth: np.ndarray  # int32: number of unique path features d
    leaf_offset: np.ndarray  # int32 into leaf_feature / leaf_z
    leaf_feature: np.ndarray  # int32: feature index per path position
    leaf_z: np.ndarray  # float64: product of cover fractions per path position
    constant_value: float = 0.0  # sum of the single-leaf trees (dropped from the arrays)

    @property
    def n_trees(self) -> int:
        return len(self.tree_root)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_value)


def _category_bitset(threshold: Any) -> list[int]:
    """'1||4||7' -> uint32 words with those bits set."""
    cats = [int(c) for c in str(threshold).split("||") if c != ""]
    if not cats:
        return [0]
    if min(cats) < 0:
        raise UnsupportedModelError(f"negative category in split {threshold!r}")
    words = [0] * (max(cats) // 32 + 1)
    for c in cats:
        words[c // 32] |= 1 << (c % 32)
    return words


class _Builder:
    """Accumulates nodes and leaves of all trees while walking the dump."""

    def __init__(self) -> None:
        self.nodes: dict[str, list] = {k: [] for k in (
            "feature", "threshold", "kind", "default_left", "missing", "left", "right", "pos",
            "cat_offset", "cat_len")}
        self.cat_words: list[int] = []
        self.leaf_value: list[float] = []
        self.leaf_depth: list[int] = []
        self.leaf_offset: list[int] = []
        self.leaf_feature: list[int] = []
        self.leaf_z: list[float] = []

    def add_tree(self, root: dict[str, Any]) -> tuple[int, float]:
        """Append one tree; returns (root reference, expected value of the tree)."""
        total = float(root.get("internal_count", 0))
        if total <= 0:
            raise UnsupportedModelError("a tree has no data counts (internal_count 0)")
        expected = 0.0

        def walk(node: dict[str, Any], path_feats: list[int], path_z: list[float]) -> int:
            nonlocal expected
            if "leaf_value" in node:
                if "leaf_coeff" in node:
                    raise LinearTreeError("linear trees (linear_tree=true) have no exact "
                                          "TreeSHAP; LightGBM's pred_contrib refuses them too")
                leaf = len(self.leaf_value)
                value = float(node["leaf_value"])
                count = float(node.get("leaf_count", 0))
                expected += value * count / total
                self.leaf_value.append(value)
                self.leaf_depth.append(len(path_feats))
                self.leaf_offset.append(len(self.leaf_feature))
                self.leaf_feature.extend(path_feats)
                self.leaf_z.extend(path_z)
                return ~leaf
            return self._add_node(node, path_feats, path_z, walk)

        ref = walk(root, [], [])
        return ref, expected

    def _add_node(self, node: dict[str, Any], path_feats: list[int], path_z: list[float],
                  walk: Callable[..., int]) -> int:
        """Append one internal node, then walk both children with extended path data."""
        if node.get("decision_type") not in ("<=", "=="):
            raise UnsupportedModelError(f"decision type {node.get('decision_type')!r}")
        missing = node.get("missing_type", "None")
        if missing not in MISSING_TYPES:
            raise UnsupportedModelError(f"missing type {missing!r}")
        feature = int(node["split_feature"])
        if feature in path_feats:
            pos = path_feats.index(feature)
        else:
            pos = len(path_feats)
            if pos >= MAX_PATH_FEATURES:
                raise UnsupportedModelError(f"a path uses more than {MAX_PATH_FEATURES} features")
        idx = len(self.nodes["feature"])
        nd = self.nodes
        nd["feature"].append(feature)
        nd["pos"].append(pos)
        nd["default_left"].append(bool(node.get("default_left", False)))
        nd["missing"].append(MISSING_TYPES[missing])
        if node["decision_type"] == "==":
            words = _category_bitset(node["threshold"])
            nd["kind"].append(CATEGORICAL)
            nd["threshold"].append(0.0)
            nd["cat_offset"].append(len(self.cat_words))
            nd["cat_len"].append(len(words))
            self.cat_words.extend(words)
        else:
            nd["kind"].append(NUMERICAL)
            nd["threshold"].append(float(node["threshold"]))
            nd["cat_offset"].append(0)
            nd["cat_len"].append(0)
        nd["left"].append(0)
        nd["right"].append(0)
        parent_count = float(node["internal_count"])
        for side in ("left", "right"):
            child = node[f"{side}_child"]
            child_count = float(child.get("internal_count", child.get("leaf_count", 0)))
            frac = child_count / parent_count if parent_count > 0 else 0.0
            feats, zs = list(path_feats), list(path_z)
            if pos < len(feats):
                zs[pos] *= frac
            else:
                feats.append(feature)
                zs.append(frac)
            nd[side][idx] = walk(child, feats, zs)
        return idx


def flatten_booster(booster: Any) -> FlatEnsemble:
    """Parse a LightGBM booster (single-output regression/binary raw score) into arrays."""
    dump = booster.dump_model()
    if int(dump.get("num_tree_per_iteration", 1)) != 1:
        raise UnsupportedModelError("multi-output (multiclass) models are not supported")
    builder = _Builder()
    roots: list[int] = []
    base = constant = 0.0
    for tree in dump["tree_info"]:
        structure = tree["tree_structure"]
        if "leaf_coeff" in structure:
            raise LinearTreeError("linear trees (linear_tree=true) have no exact TreeSHAP")
        if "leaf_value" in structure:  # single-leaf tree: a constant, all in the base value
            base += float(structure["leaf_value"])
            constant += float(structure["leaf_value"])
            continue
        ref, expected = builder.add_tree(structure)
        roots.append(ref)
        base += expected
    nd = builder.nodes
    return FlatEnsemble(
        n_features=int(dump["max_feature_idx"]) + 1,
        feature_names=list(dump["feature_names"]),
        base_value=base,
        tree_root=np.asarray(roots, dtype=np.int32),
        node_feature=np.asarray(nd["feature"], dtype=np.int32),
        node_threshold=np.asarray(nd["threshold"], dtype=np.float64),
        node_kind=np.asarray(nd["kind"], dtype=np.int8),
        node_default_left=np.asarray(nd["default_left"], dtype=np.bool_),
        node_missing=np.asarray(nd["missing"], dtype=np.int8),
        node_left=np.asarray(nd["left"], dtype=np.int32),
        node_right=np.asarray(nd["right"], dtype=np.int32),
        node_pos=np.asarray(nd["pos"], dtype=np.int32),
        node_cat_offset=np.asarray(nd["cat_offset"], dtype=np.int32),
        node_cat_len=np.asarray(nd["cat_len"], dtype=np.int32),
        cat_words=np.asarray(builder.cat_words or [0], dtype=np.uint32),
        leaf_value=np.asarray(builder.leaf_value, dtype=np.float64),
        leaf_depth=np.asarray(builder.leaf_depth, dtype=np.int32),
        leaf_offset=np.asarray(builder.leaf_offset, dtype=np.int32),
        leaf_feature=np.asarray(builder.leaf_feature or [0], dtype=np.int32),
        leaf_z=np.asarray(builder.leaf_z or [0.0], dtype=np.float64),
        constant_value=constant,
    )


def tree_slots(flat: FlatEnsemble) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tree its node and leaf ranges; per node and leaf the slot its parent writes.

    Trees are stored in pre-order, each as one contiguous run of nodes (root first) and of
    leaves. Node ``nd`` of a tree starting at ``n0`` writes its left child's slot
    ``1 + 2 (nd - n0)`` and its right child's the next one; slot 0 is the root's.
    Returns (tree_range (T, 4): n0, n1, l0, l1; node_slot; leaf_slot).
    """
    n_nodes = len(flat.node_feature)
    roots = flat.tree_root.astype(np.int64)
    if len(roots) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, 4), dtype=np.int64), empty, empty
    node_end = np.append(roots[1:], n_nodes)
    if np.any(roots < 0) or np.any(np.diff(roots) <= 0):
        raise ValueError("trees are not stored as contiguous pre-order node runs")
    tree_of = np.repeat(np.arange(len(roots)), node_end - roots)
    local = np.arange(n_nodes) - roots[tree_of]
    node_slot = np.zeros(n_nodes, dtype=np.int64)
    leaf_slot = np.zeros(len(flat.leaf_value), dtype=np.int64)
    leaf_tree = np.full(len(flat.leaf_value), -1, dtype=np.int64)
    for side, child in enumerate((flat.node_left.astype(np.int64),
                                  flat.node_right.astype(np.int64))):
        slot = 1 + 2 * local + side
        inner = child >= 0
        node_slot[child[inner]] = slot[inner]
        leaf_slot[~child[~inner]] = slot[~inner]
        leaf_tree[~child[~inner]] = tree_of[~inner]
    first_leaf = np.searchsorted(leaf_tree, np.arange(len(roots)))
    last_leaf = np.searchsorted(leaf_tree, np.arange(len(roots)), side="right")
    if np.any(np.diff(leaf_tree) < 0) or np.any(leaf_tree < 0):
        raise ValueError("leaves are not stored as contiguous runs per tree")
    tree_range = np.stack([roots, node_end, first_leaf, last_leaf], axis=1).astype(np.int64)
    return tree_range, node_slot, leaf_slot
