"""Installable package; also the `--setup_file` Beam stages to Dataflow workers."""

import setuptools

# The stack verified to install and work together on Python 3.11.
REQUIRED = [
    "tensorflow==2.21.*",
    "tensorflow-transform==1.21.*",
    "tfx-bsl==1.21.*",
    "apache-beam[gcp]==2.77.*",
    "tf-keras==2.21.*",
    "pyyaml>=6",
    "pyarrow",
    "numpy",
    "faiss-cpu>=1.8",
    "scikit-learn>=1.4",
    "scipy",
    "matplotlib>=3.8",
    # The projector's checkpoint config (`embeddings projector`, `digits`).
    "tensorboard",
    "optuna>=3.6",
]

setuptools.setup(
    name="categorical-embeddings",
    version="0.1.0",
    description=("Batch system that turns high-cardinality categorical data "
                 "into learned, reusable embeddings (Beam + tf.Transform + "
                 "Keras)."),
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(
        include=["core", "core.*", "transforms", "transforms.*",
                 "pipelines", "pipelines.*", "trainer", "trainer.*",
                 "retrieval", "retrieval.*", "workflows", "workflows.*",
                 "deploy", "deploy.*", "embeddings", "embeddings.*"]),
    py_modules=["embeddings_cli"],
    package_data={"": ["*.yaml"]},
    install_requires=REQUIRED,
    # Only what tests and benchmarks use: install_requires is staged onto
    # every Dataflow worker.
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "gensim>=4.3"],
                    "bench": ["psutil>=5.9", "hnswlib>=0.8"]},
    entry_points={"console_scripts": ["embeddings = embeddings_cli:main"]},
)
