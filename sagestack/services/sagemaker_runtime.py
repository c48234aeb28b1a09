"""sagemaker-runtime InvokeEndpoint: the router in front of the model servers."""

from __future__ import annotations

from typing import Any

from sagestack.aws.errors import AwsError
from sagestack.logic.logs import group_arn
from sagestack.services import RequestContext, operation


def _model_error(ctx: RequestContext, endpoint: str, status: int, message: str) -> AwsError:
    kind = "client" if status < 500 else "server"
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    return AwsError(
        "ModelError",
        f"Received {kind} error ({status}) from primary with message \"{message}\". See the log group {group} "
        f"in account {ctx.account_id} for more information.",
        424,
        extra={"OriginalStatusCode": status, "OriginalMessage": message,
               "LogStreamArn": group_arn(ctx.region, ctx.account_id, group)},
    )


@operation("sagemaker-runtime")
async def invoke_endpoint(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["EndpointName"]
    body: bytes = params.get("Body") or b""
    # Bodies over 6 MB never get here: the model's length bound on Body is checked by validation, with
    # AWS's own wording ("... Member must have length less than or equal to 6291456").
    headers = {"Content-Type": params.get("ContentType") or "application/octet-stream",
               "Accept": params.get("Accept") or "*/*"}
    for member, header in (("CustomAttributes", "X-Amzn-SageMaker-Custom-Attributes"),
                           ("InferenceId", "X-Amzn-SageMaker-Inference-Id")):
        if params.get(member):
            headers[header] = params[member]
    variant, response = await ctx.platform.router.invoke(name, body, headers, params.get("TargetVariant"),
                                                                     received=ctx.received)
    if response.status >= 400:
        message = response.body.decode("utf-8", "replace").strip()
        raise _model_error(ctx, name, response.status, message)
    result: dict[str, Any] = {
        "Body": response.body,
        "ContentType": response.headers.get("content-type", "application/octet-stream"),
        "InvokedProductionVariant": variant,
    }
    if "x-amzn-sagemaker-custom-attributes" in response.headers:
        result["CustomAttributes"] = response.headers["x-amzn-sagemaker-custom-attributes"]
    return result
