"""Model registry: promotion gates (`gates`) and the reviewer-approved promotion workflow in the
MLflow model registry (`promotion`)."""
