"""The ground floor: what every other folder may use; it uses none of them.

* `layout`: every file and folder name of every run, defined once, and how
  paths are joined on local disks and object stores.
* `files`: JSON and text I/O on any TensorFlow filesystem.
* `outputs`: the staging + `_SUCCESS` protocol that makes outputs atomic.
* `artifacts`: the embedding artifact format (checkpoint, vocab, metadata,
  word2vec, TSVs), readable without Keras.
* `flags`: command-line flags generated from an options dataclass's fields.
* `console`: quiet command-line output (library chatter filtered from fd 2).
"""
