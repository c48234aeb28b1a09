"""CloudWatch (botocore service "cloudwatch"): metrics, statistics and metric alarms.

Handlers are protocol-agnostic (the service speaks query, JSON 1.0 and CBOR);
error codes are the model's query codes (InvalidParameterValue, ...). The state
(datapoints, aggregation, alarms and their evaluation) is in
:mod:`sagestack.logic.cloudwatch`, which the platform's controllers call too.
"""

from sagestack.services.cloudwatch import alarms, metrics  # noqa: F401  (registers the handlers)

SERVICE = "cloudwatch"
