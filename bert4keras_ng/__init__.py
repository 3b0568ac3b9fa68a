"""bert4keras_ng: the bert4keras toolbox rebuilt on Keras 3.

Importing this package has no global side effects: it does not change the Keras backend,
the dtype policy or any environment variable.
"""

__version__ = "0.1.0"
