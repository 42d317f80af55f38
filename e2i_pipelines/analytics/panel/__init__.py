"""Panel designs (issue 28): DiD/TWFE, Callaway-Sant'Anna, and part B's synthetic control,
synthetic DiD and dose-response, on a validated long panel (:mod:`.data`)."""
