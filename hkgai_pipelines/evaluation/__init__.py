"""Evaluation: the model interface (`model`), likelihood labels of an item's references
(`likelihood`), instruction-attack transforms (`attacks`) and benchmark decontamination of
training data (`decontamination`)."""
