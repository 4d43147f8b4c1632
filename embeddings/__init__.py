"""The embeddings system as a Python API, for notebooks.

    import embeddings

    movies = embeddings.table_frame("out/embeddings", "movie")
    embeddings.neighbors("out/embeddings", "movie", "Star Wars (1977)", k=5)
    embeddings.recommend("out/embeddings", ["1", "7"], k=10, seen="u1.base")

    model = embeddings.load_model("out/model")
    test = embeddings.read_table(model.spec, "ratings", split="eval").frame
    test["prediction"] = model.score(test)

Tables come from `embeddings export` (embeddings/tables.py), models from
`embeddings train` (embeddings/scoring.py), raw input tables from the
spec (pipelines/frames.py). The functions are the ones the commands run,
so a DataFrame here holds what the command prints. This package sits on
top of every layer; nothing in the project imports it.
"""

from core.artifacts import EmbeddingTable
from embeddings.scoring import load_model
from embeddings.scoring import TrainedModel
from embeddings.tables import load_table
from embeddings.tables import neighbors
from embeddings.tables import recommend
from embeddings.tables import table_frame
from pipelines.frames import FrameError
from pipelines.frames import joined_rows
from pipelines.frames import read_table
from pipelines.frames import TableFrame
from retrieval.neighbors import neighbors_frame
from retrieval.recommend import recommendations_frame

__all__ = [
    "EmbeddingTable", "FrameError", "TableFrame", "TrainedModel",
    "joined_rows", "load_model", "load_table", "neighbors", "neighbors_frame",
    "read_table", "recommend", "recommendations_frame", "table_frame",
]
