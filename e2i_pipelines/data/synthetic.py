"""Synthetic E2I data: HCPs with engagement, a field-force programme and prescribing outcome.

The data generating process is known, so the data carries its own answer key:

* confounders (drive both who is enrolled and prescribing): region, specialty, patient_volume,
  prior_rx, engagement_score, academic_affiliation, years_experience;
* effect modifiers: digital_engagement and specialty change how much the programme helps;
* outcome ``rx_volume`` is linear in the confounders plus ``tau(x) * treatment`` plus noise,
  so a regression with the confounders and centred treatment x modifier interactions is
  correctly specified and recovers the average treatment effect.

``truth["ate"]`` is the sample mean of the individual effects tau(x) over the rows generated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.core.spec import CausalSpec

REGIONS = ["Northeast", "Southeast", "Midwest", "Southwest", "West"]
SPECIALTIES = ["Primary Care", "Cardiology", "Oncology", "Endocrinology", "Neurology", "Rheumatology"]
_SPECIALTY_VOLUME = np.array([1.00, 0.80, 0.55, 0.70, 0.50, 0.45])
_SPECIALTY_PROPENSITY = np.array([0.0, 0.35, 0.60, 0.45, -0.20, 0.10])
_SPECIALTY_OUTCOME = np.array([0.0, 4.0, 9.0, 6.0, -2.0, 1.5])
_SPECIALTY_EFFECT = np.array([0.0, 1.5, 3.0, 2.0, -1.0, 0.5])  # added to the base effect
_REGION_PROPENSITY = np.array([0.25, 0.0, -0.15, -0.25, 0.10])
_REGION_OUTCOME = np.array([3.0, 0.0, -1.5, -2.0, 1.0])

BASE_EFFECT = 6.0
DIGITAL_EFFECT = 8.0  # extra effect per unit of (digital_engagement - 0.4)
MIN_ROWS, MAX_ROWS = 1_000, 50_000_000

COMMON_CAUSES = [
    "region", "specialty", "years_experience", "patient_volume", "prior_rx",
    "engagement_score", "academic_affiliation",
]
EFFECT_MODIFIERS = ["digital_engagement", "specialty"]
PROGNOSTIC_COVARIATES = ["formulary_access", "competitor_share"]  # outcome only
NOISE_COVARIATES = ["payer_mix_commercial", "rep_contacts_last_q"]  # neither

SPEC = CausalSpec(
    treatment="treatment",
    outcome="rx_volume",
    common_causes=COMMON_CAUSES,
    effect_modifiers=[*EFFECT_MODIFIERS, *PROGNOSTIC_COVARIATES, *NOISE_COVARIATES],
    id_column="hcp_id",
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_e2i(n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Generate ``n_rows`` HCPs; returns the frame and the truth (ATE, roles, coefficients)."""
    if not MIN_ROWS <= n_rows <= MAX_ROWS:
        raise ValueError(f"n_rows must be between {MIN_ROWS:,} and {MAX_ROWS:,}, got {n_rows:,}")
    rng = np.random.default_rng(seed)
    n = n_rows
    region = rng.integers(0, len(REGIONS), n, dtype=np.int8)
    specialty = rng.choice(len(SPECIALTIES), n, p=[0.35, 0.15, 0.15, 0.15, 0.1, 0.1]).astype(np.int8)
    years = rng.gamma(4.0, 4.0, n).clip(0.5, 45.0)
    academic = (rng.random(n) < _sigmoid(-1.2 + 0.6 * (specialty == 2))).astype(np.int8)
    volume = rng.lognormal(np.log(120.0) + np.log(_SPECIALTY_VOLUME[specialty]) + 0.01 * years, 0.5)
    prior_rx = rng.poisson(0.08 * volume + 0.3 * academic).astype(np.float64)
    engagement = rng.beta(2.0 + 0.8 * academic, 3.0, n)
    digital = np.clip(0.6 * engagement + 0.4 * rng.beta(2.0, 2.5, n), 0.0, 1.0)
    payer = rng.beta(3.0, 2.0, n)
    formulary = rng.beta(4.0, 2.0, n)
    competitor = rng.beta(2.0, 4.0, n)
    contacts = rng.poisson(3.0 + 4.0 * engagement).astype(np.float64)

    logit = (
        -1.1 + 0.9 * (engagement - 0.4) + 0.012 * (prior_rx - 10.0) + 0.003 * (volume - 120.0)
        + 0.35 * academic - 0.01 * (years - 16.0)
        + _SPECIALTY_PROPENSITY[specialty] + _REGION_PROPENSITY[region]
    )
    propensity = _sigmoid(logit)
    treatment = (rng.random(n) < propensity).astype(np.int8)

    tau = BASE_EFFECT + DIGITAL_EFFECT * (digital - 0.4) + _SPECIALTY_EFFECT[specialty]
    baseline = (
        20.0 + 0.15 * volume + 1.2 * prior_rx + 10.0 * engagement + 0.1 * years + 2.5 * academic
        + _SPECIALTY_OUTCOME[specialty] + _REGION_OUTCOME[region]
        + 3.0 * formulary - 4.0 * competitor
    )
    outcome = baseline + tau * treatment + rng.normal(0.0, 6.0, n)

    frame = pd.DataFrame({
        "hcp_id": np.arange(1, n + 1, dtype=np.int64),
        "region": pd.Categorical.from_codes(region, REGIONS),
        "specialty": pd.Categorical.from_codes(specialty, SPECIALTIES),
        "years_experience": years,
        "patient_volume": volume,
        "prior_rx": prior_rx,
        "engagement_score": engagement,
        "academic_affiliation": academic,
        "digital_engagement": digital,
        "payer_mix_commercial": payer,
        "formulary_access": formulary,
        "competitor_share": competitor,
        "rep_contacts_last_q": contacts,
        "treatment": treatment,
        "rx_volume": outcome,
    })
    truth = {
        "ate": float(tau.mean()),
        "att": float(tau[treatment == 1].mean()),
        "treated_share": float(treatment.mean()),
        "naive_difference": float(outcome[treatment == 1].mean() - outcome[treatment == 0].mean()),
        "confounders": COMMON_CAUSES,
        "effect_modifiers": EFFECT_MODIFIERS,
        "prognostic_covariates": PROGNOSTIC_COVARIATES,
        "noise_covariates": NOISE_COVARIATES,
        "base_effect": BASE_EFFECT,
        "seed": seed,
        "n_rows": n,
    }
    return frame, truth
