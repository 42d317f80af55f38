"""Attack inputs for ``tier: auto``'s run tags: ``e2i/input_size``, ``e2i/tier_headroom``,
``e2i/tier_floor``/``e2i/tier_ceiling``. Each is refused naming the tag, before any history is
read or anything launched, without echoing the value; none reaches eval or a number parser that
accepts expressions, exponents or non-ASCII digits."""

from __future__ import annotations

import dagster as dg
import pytest

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.defs.diagnostics.assets import probe_assets
from e2i_pipelines.launcher.run_tier import tier_for_run
from e2i_pipelines.launcher.sizing import (
    HEADROOM_TAG,
    INPUT_SIZE_TAG,
    SizingInputError,
    headroom,
    parse_input_size,
)
from e2i_pipelines.tiers import (
    DEFAULT_PROFILES,
    TIER_CEILING_TAG,
    TIER_FLOOR_TAG,
    TIER_TAG,
    UnknownTierError,
    auto_bounds,
)

BAD_SIZES = ["", "0", "-5", "1e9", "10x10x10", "__import__('os').system('id')", "1" * 40,
             "١٢٣", "100000x0", "9" * 15 + "x" + "9" * 15, "0x1f", "nan", "100 000"]
BAD_HEADROOMS = ["nan", "inf", "-1", "0.5", "4.5", "1e308", "__import__('os')", "1.3" * 200]


@pytest.mark.parametrize("raw", BAD_SIZES)
def test_bad_input_size_is_refused_naming_the_tag(raw):
    with pytest.raises(SizingInputError, match=f"^tag {INPUT_SIZE_TAG}: ") as caught:
        parse_input_size(raw)
    assert len(raw) < 3 or raw not in str(caught.value)


@pytest.mark.parametrize("raw", BAD_HEADROOMS)
def test_bad_headroom_is_refused_from_tag_and_environment(raw):
    with pytest.raises(SizingInputError, match=f"^tag {HEADROOM_TAG}: ") as caught:
        headroom({HEADROOM_TAG: raw}, {})
    assert raw not in str(caught.value)
    with pytest.raises(SizingInputError, match="^environment variable E2I_AUTO_TIER_HEADROOM: "):
        headroom({}, {"E2I_AUTO_TIER_HEADROOM": raw})


@pytest.mark.parametrize(("tags", "match"), [
    ({TIER_FLOOR_TAG: "gpu"}, f"tag {TIER_FLOOR_TAG}: unknown e2i tier"),
    ({TIER_CEILING_TAG: "auto"}, f"tag {TIER_CEILING_TAG}: unknown e2i tier"),
    ({TIER_FLOOR_TAG: "heavy", TIER_CEILING_TAG: "light"}, "is above"),
])
def test_bad_bounds_are_refused(tags, match):
    with pytest.raises(UnknownTierError, match=match):
        auto_bounds({TIER_TAG: "auto", **tags})


def test_a_bad_tag_fails_the_resolution_before_history_is_read(tmp_path, monkeypatch):
    """Through the launcher's entry point on a real instance: the error, and no history query."""
    storage = E2IStorage(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize(probe_assets, instance=instance, selection=["probe_light"],
                                resources={"storage": storage},
                                tags={TIER_TAG: "auto", INPUT_SIZE_TAG: "1;DROP TABLE runs"})
        run = instance.get_run_by_id(result.run_id)
        queried = []
        monkeypatch.setattr(instance, "get_runs", lambda *a, **k: queried.append(1) or [])
        with pytest.raises(SizingInputError, match=f"tag {INPUT_SIZE_TAG}"):
            tier_for_run(instance, run, DEFAULT_PROFILES)
        assert queried == []
