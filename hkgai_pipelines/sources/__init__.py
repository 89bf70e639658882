"""Raw sources: the catalog in configs/sources.yaml and one reader per source kind.

Every reader yields `RawRecord`s (stable id, text, source, licence, locator) or
`QuarantineRecord`s for input it could not read, so nothing is dropped silently.
"""

from hkgai_pipelines.sources.catalog import SOURCE_KINDS, SourceCatalog, SourceSpec, load_catalog
from hkgai_pipelines.sources.records import QuarantineRecord, RawRecord, stable_record_id

__all__ = [
    "SOURCE_KINDS",
    "QuarantineRecord",
    "RawRecord",
    "SourceCatalog",
    "SourceSpec",
    "load_catalog",
    "stable_record_id",
]
