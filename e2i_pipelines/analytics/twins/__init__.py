"""Digital twins: copula population model, fidelity, interventions."""
