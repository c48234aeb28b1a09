"""The statuses SageMaker jobs end in, shared by handlers and controllers."""

from __future__ import annotations

from sagestack.tuning.trials import TERMINAL_STATUSES

#: A training, tuning or transform job in one of these never changes again. Defined once, in
#: the tuning library (which sits below this room and reasons about trials' statuses).
TERMINAL = TERMINAL_STATUSES
#: A tuning job still reconciled by the tuning controller.
ACTIVE = ("InProgress", "Stopping")
