"""Evaluation: the model interface (`model`), likelihood scoring of labelled references
(`likelihood`) and benchmark decontamination of training data (`decontamination`)."""
