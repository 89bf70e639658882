"""Safety: the guardrail that checks prompts and answers against the policy taxonomy
(`data/safety/taxonomy.yaml`). No Dagster imports."""
