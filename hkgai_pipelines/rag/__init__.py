"""Retrieval-augmented generation: chunking, embedders, vector stores (embedded LanceDB and
Weaviate behind one interface), the incremental blue-green index refresh, retrieval quality,
and the `hkgai ask` answer pipeline. No Dagster imports."""
