"""A small Jupyter client that goes through sagestack's notebook proxy: presigned URL, REST, kernel websocket.

Used by ``make demo`` (to run the tutorial notebook inside a notebook instance) and by the tests.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.sync.client import ClientConnection, connect

from sagestack.logic.notebook_tokens import COOKIE_NAME


@dataclass
class CellResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)


class JupyterSession:
    """Opens a presigned URL like a browser would, then talks to Jupyter's API with the session cookie."""

    def __init__(self, presigned_url: str) -> None:
        parts = urlsplit(presigned_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base = f"{self.origin}{parts.path}/"
        opened = httpx.get(presigned_url, follow_redirects=False)
        if opened.status_code != 302:
            raise PermissionError(f"presigned URL refused: {opened.status_code}")
        self.cookie = opened.cookies[COOKIE_NAME]
        self.http = httpx.Client(base_url=self.base, cookies={COOKIE_NAME: self.cookie}, timeout=60)

    def close(self) -> None:
        self.http.close()

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"api/{path}", **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def put_text(self, path: str, text: str) -> None:
        self.api("PUT", f"contents/{path}", json={"type": "file", "format": "text", "content": text})

    def get_text(self, path: str) -> str:
        return self.api("GET", f"contents/{path}", params={"content": "1", "format": "text"})["content"]

    def put_bytes(self, path: str, data: bytes) -> None:
        self.api("PUT", f"contents/{path}",
                 json={"type": "file", "format": "base64", "content": base64.b64encode(data).decode()})

    def get_bytes(self, path: str) -> bytes:
        return base64.b64decode(self.api("GET", f"contents/{path}", params={"content": "1", "format": "base64"})[
            "content"])

    def put_notebook_document(self, path: str, notebook: dict[str, Any]) -> None:
        self.api("PUT", f"contents/{path}", json={"type": "notebook", "content": notebook})

    def put_notebook(self, path: str, cells: list[str]) -> None:
        notebook = {
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "conda_python3", "display_name": "conda_python3",
                                        "language": "python"}},
            "cells": [{"cell_type": "code", "id": uuid.uuid4().hex[:8], "metadata": {}, "execution_count": None,
                       "outputs": [], "source": source} for source in cells],
        }
        self.api("PUT", f"contents/{path}", json={"type": "notebook", "content": notebook})

    def start_kernel(self, notebook_path: str, kernel: str = "conda_python3") -> Kernel:
        session = self.api("POST", "sessions", json={"path": notebook_path, "name": notebook_path,
                                                     "type": "notebook", "kernel": {"name": kernel}})
        return Kernel(self, session["kernel"]["id"], session["kernel"]["name"])


class Kernel:
    def __init__(self, jupyter: JupyterSession, kernel_id: str, name: str) -> None:
        self.name = name
        self.session_id = uuid.uuid4().hex
        ws_base = jupyter.base.replace("http", "ws", 1)
        self.ws: ClientConnection = connect(
            f"{ws_base}api/kernels/{kernel_id}/channels?session_id={self.session_id}",
            additional_headers={"Cookie": f"{COOKIE_NAME}={jupyter.cookie}", "Origin": jupyter.origin},
            max_size=None, open_timeout=30,
        ).__enter__()  # kept open across calls; close() ends it

    def close(self) -> None:
        self.ws.close()

    def execute(self, code: str, timeout: float = 300) -> CellResult:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session_id,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        result, replied, idle = CellResult(status="timeout"), False, False
        deadline = time.monotonic() + timeout
        while not (replied and idle):
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            self._collect(message, result)
            kind = message["header"]["msg_type"]
            replied = replied or kind == "execute_reply"
            idle = idle or (kind == "status" and message["content"]["execution_state"] == "idle")
        return result

    @staticmethod
    def _collect(message: dict[str, Any], result: CellResult) -> None:
        kind, content = message["header"]["msg_type"], message["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                result.stdout += content["text"]
            else:
                result.stderr += content["text"]
        elif kind in ("execute_result", "display_data"):
            result.results.append(content["data"])
        elif kind == "error":
            result.error = "\n".join(content["traceback"])
        elif kind == "execute_reply":
            result.status = content["status"]
