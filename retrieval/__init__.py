"""Using embedding artifacts: neighbours, recommendations, clusters, pictures.

`retrieval.index` holds the search core (exact blocked top-k and an
approximate index) and `retrieval.catalog` reads id -> name files. The
`embeddings` subcommands built on them (neighbors, recommend, cluster,
projector) share their flags, table loading and output lines through
`retrieval.commands`; `retrieval.digits` is the projector demo. Tables are
read through core.artifacts only.
"""
