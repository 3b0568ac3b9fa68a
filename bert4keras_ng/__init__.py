"""bert4keras_ng: the bert4keras toolbox rebuilt on Keras 3.

Importing this package has no global side effects beyond registering its serialisable classes
with Keras (layers, model helpers, activations, losses, optimizers), so that
``keras.saving.load_model`` finds them after ``import bert4keras_ng`` alone: it does not change
the Keras backend, the dtype policy or any environment variable.
"""

__version__ = "0.1.0"

# imported for their registration with keras.saving only
from bert4keras_ng import backend as _backend  # noqa: E402,F401
from bert4keras_ng import layers as _layers  # noqa: E402,F401
from bert4keras_ng import losses as _losses  # noqa: E402,F401
from bert4keras_ng import optimizers as _optimizers  # noqa: E402,F401
from bert4keras_ng.models import auxiliary as _auxiliary  # noqa: E402,F401
