"""Every table of the metadata store, one module per concern.

Importing this package registers all of them on ``Base.metadata``.
"""

from sagestack.db.models import hosting, identity, logs, metrics, objects, tags, training, transform, tuning  # noqa: F401
