"""bert4keras 0.11.5 compatibility surface — the one place where legacy habits live.

Nothing in the core imports this package; the core modules only re-export its names where
bert4keras had them (``backend.K``, ``backend.search_layer``, ``layers.Loss``,
``snippets.uniout``, ``snippets.WebServing``), so a ported script keeps its imports:

- ``keras2_backend``: the legacy ``K`` namespace (Keras 2 backend functions on keras.ops).
- ``graph``: ``search_layer``, ``batch_gather`` and ``set_gelu``.
- ``loss_layer``: the ``Loss`` layer (``compute_loss(inputs, mask)``, ``output_axis``).
- ``uniout``: a no-op module (Python 3 prints Chinese already).
- ``web_serving``: ``WebServing`` on the standard library's WSGI server.
"""
