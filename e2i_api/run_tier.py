"""``tier: auto`` in a run request: the bounds the key allows, as the run tags the launcher reads.

A request may not set ``e2i/*`` tags itself (:data:`e2i_api.models.CLIENT_TAG_PREFIX`); the API
writes them from the validated request fields. The ceiling defaults to the key's max tier; an
explicit ceiling above it is refused like a job above it (403, :meth:`Principal.check_launch`).
"""

from __future__ import annotations

from fastapi import HTTPException

from e2i_api.core.security import Principal
from e2i_api.models import RunCreate
from e2i_pipelines.catalog import CatalogEntry
from e2i_pipelines.launcher.sizing import INPUT_SIZE_TAG
from e2i_pipelines.tiers import TIER_CEILING_TAG, TIER_FLOOR_TAG, TIER_TAG, Tier


def launch_tier(body: RunCreate, entry: CatalogEntry, principal: Principal) -> tuple[Tier, dict[str, str]]:
    """The tier the key is checked against (the job's, or auto's ceiling) and the run tags that
    request auto sizing (none for a declared tier). Raises the 403 of ``check_launch``."""
    if body.tier is None:
        principal.check_launch(entry.name, entry.tier)
        return entry.tier, {}
    ceiling = body.tier_ceiling or principal.max_tier
    floor = body.tier_floor or Tier.LIGHT
    principal.check_launch(entry.name, ceiling)
    if floor.rank > ceiling.rank:
        # only reachable with the key's default ceiling; the model refuses explicit pairs
        raise HTTPException(422, f"tier_floor {floor.value} is above the ceiling {ceiling.value} "
                                 f"(the max tier of API key {principal.name!r})")
    tags = {TIER_TAG: "auto", TIER_FLOOR_TAG: floor.value, TIER_CEILING_TAG: ceiling.value}
    if body.input_size is not None:
        tags[INPUT_SIZE_TAG] = body.input_size
    return ceiling, tags
