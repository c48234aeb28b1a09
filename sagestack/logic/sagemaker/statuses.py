"""The statuses SageMaker jobs end in, shared by handlers and controllers."""

from __future__ import annotations

#: A training, tuning or transform job in one of these never changes again.
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
#: A tuning job still reconciled by the tuning controller.
ACTIVE = ("InProgress", "Stopping")
