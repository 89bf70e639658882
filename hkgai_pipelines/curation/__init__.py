"""Corpus curation for Cantonese, Mandarin and English text.

A pipeline of small steps in the datatrove style: each step scores a document, then keeps
it or drops it with `(step, reason)`; dropped documents are kept with their reason and every
step counts what it kept and dropped. No Dagster imports here: the `cleaned_corpus` asset,
the `hkgai curate` CLI and the DVC `curate` stage all run `engine.curate` (the steps of
`pipeline.py` in batch-sized tasks, in this process or as Ray tasks, with corpus-wide
deduplication); `pipeline.run_curation` runs the same steps and decisions in memory.
"""
