"""Endpoints' desired state, as CreateEndpoint records it and the endpoint controller deploys it."""

from __future__ import annotations

from typing import Any

from sagestack.db.models.hosting import EndpointConfig


def desired_variants(config: EndpointConfig) -> list[dict[str, Any]]:
    """The variant records of a freshly requested configuration (nothing running yet)."""
    return [{"VariantName": v["VariantName"], "ModelName": v["ModelName"],
             "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)), "CurrentWeight": 0.0,
             "DesiredInstanceCount": int(v.get("InitialInstanceCount", 1)), "CurrentInstanceCount": 0}
            for v in config.request["ProductionVariants"]]
