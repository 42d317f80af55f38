"""Digital twins: population model, sampled twins and intervention simulation assets."""
