"""CloudWatch's state: metrics and their datapoints, alarms and their evaluation."""

from sagestack.logic.cloudwatch.alarms import AlarmTransition, evaluate_alarms
from sagestack.logic.cloudwatch.metrics import from_ms, put_datapoints, to_ms

__all__ = ["AlarmTransition", "evaluate_alarms", "from_ms", "put_datapoints", "to_ms"]
