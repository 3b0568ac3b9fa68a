"""Installation script for bert4keras_ng."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "bert4keras_ng" / "__init__.py").read_text(encoding="utf-8"),
    re.M,
).group(1)

setup(
    name="bert4keras_ng",
    version=VERSION,
    description="Chinese BERT-family Transformers (BERT, RoBERTa, ALBERT, NEZHA, ELECTRA, "
    "RoFormer, RoFormerV2, GAU-alpha) on Keras 3: bert4keras-compatible builders, layers, "
    "optimizers, tokenizers and a CLUE runner.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["bert4keras_ng", "bert4keras_ng.*"]),
    include_package_data=True,
    package_data={"bert4keras_ng": ["clue/sample_data/**/*", "clue/sample_data/*"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.5",
        "numpy",
        "h5py",
        "sentencepiece",
        "safetensors>=0.4",
    ],
    extras_require={
        # tokenizers: reference for the tokenizer tests only (not used at run time)
        "test": ["pytest>=7", "pytest-xdist", "hypothesis", "tokenizers>=0.15", "jax[cpu]"],
        # reading Hugging Face folders that only have pytorch_model.bin
        "torch": ["torch"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
