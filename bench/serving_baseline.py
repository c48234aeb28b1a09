"""The reference stack of shared/reference/serving-anchors.md, rebuilt to run in the same bench run.

"Starlette + uvicorn, ``inplace_predict``", 2 workers: the anchors measured it at
5,646 single-row req/s (2 workers busy) on a 2-core machine where SageMaker's
own XGBoost container did 1,558. Running it here beside sagestack turns the
absolute targets into ratios this machine cannot bias: issue 5's 4,000 req/s is
0.71 of that stack on the anchors' machine.

    python bench/serving_baseline.py MODEL_FILE PORT   # serves until killed
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import xgboost as xgb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

booster = xgb.Booster()
if "BASELINE_MODEL" in os.environ:  # set by __main__ for the workers uvicorn starts
    booster.load_model(os.environ["BASELINE_MODEL"])
    booster.set_param({"nthread": 1})


async def invocations(request: Request) -> Response:
    rows = np.array((await request.body()).decode().split(","), dtype=np.float32).reshape(1, -1)
    scores = booster.inplace_predict(rows)
    return Response("\n".join(repr(float(v)) for v in scores) + "\n", media_type="text/csv")


async def ping(_request: Request) -> Response:
    return Response(b"")


app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])


if __name__ == "__main__":
    import uvicorn

    model, port = sys.argv[1], int(sys.argv[2])
    os.environ["BASELINE_MODEL"] = model
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run("serving_baseline:app", host="127.0.0.1", port=port, workers=2, log_level="warning",
                access_log=False)
