"""Using embedding artifacts: neighbours, recommendations, clusters, pictures.

`retrieval.index` holds the search core (exact blocked top-k and an
approximate index); the other modules are the `embeddings` subcommands built
on it: neighbors, recommend, cluster, projector, and the digits demo.
"""
