"""Every table of the metadata store, one module per concern.

Importing this package registers all of them on ``Base.metadata``.
"""

from sagestack.db.models import (  # noqa: F401
    hosting,
    identity,
    logs,
    metrics,
    notebooks,
    objects,
    tags,
    training,
    transform,
    tuning,
)
