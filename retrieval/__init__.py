"""Using embedding artifacts: neighbours, recommendations, clusters, pictures.

`retrieval.index` holds the search core (exact blocked top-k and an
approximate index) and `retrieval.catalog` reads id -> name files. The
`embeddings` subcommands built on them (neighbors, recommend, cluster,
projector) share their flags, table loading, names and output lines through
`retrieval.commands`; `retrieval.digits` is the projector demo. Tables are
read through core.artifacts only, so none of these commands imports
TensorFlow; each module's `flag_parser()` builds its command's flags, and
`neighbors.neighbors_frame` / `recommend.recommendations_frame` return what
the commands print as pandas DataFrames.
"""
