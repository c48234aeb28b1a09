"""Business logic that handlers (``services/``) and controllers (``control/``) both need.

Handlers and controllers are siblings that never import each other; both call down
into this room. It may import ``db``, ``storage``, ``aws.errors``, ``identity``,
``algorithms``, ``tuning``, ``compute`` and ``serving``, but never ``services`` or
``control``. Handlers keep the wire concerns (parameter checks, response shapes,
paging tokens); this room keeps the state.
"""
