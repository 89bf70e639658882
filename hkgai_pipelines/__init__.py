"""hkgai-pipelines: curate, train, align, evaluate, register and serve a Hong Kong LLM.

The domain library lives in the subpackages (`sources`, `curation`, ...) and never imports
Dagster; `hkgai_pipelines.assets` and `hkgai_pipelines.resources` are the thin Dagster layer
and `hkgai_pipelines.definitions` is the code location.
"""

__version__ = "0.1.0"
