"""The ground floor: what every other folder may use; it uses none of them.

* `files`: path joining and JSON/text I/O on any TensorFlow filesystem.
* `layout`: every file and folder name of every run, defined once.
* `commit`: the staging + `_SUCCESS` protocol that makes outputs atomic.
* `artifacts`: the embedding artifact format (checkpoint, vocab, metadata,
  word2vec, TSVs), readable without Keras.
* `flags`: command-line flags generated from an options dataclass's fields.
"""
