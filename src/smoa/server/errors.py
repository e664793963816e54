"""Errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

from typing import Any

from ..types import BackendError, ConfigError, InputError, SmoaError


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def from_exception(e: BaseException) -> ApiError:
    """Map an engine failure to the status a client should see."""
    if isinstance(e, ApiError):
        return e
    msg = str(e) or type(e).__name__
    if isinstance(e, InputError):
        code = "context_length_exceeded" if "over the context window" in msg else "input_rejected"
        return ApiError(400, msg, "invalid_request_error", code, "messages")
    if isinstance(e, BackendError):
        if e.timeout:
            return ApiError(504, f"an upstream model timed out: {msg}", "upstream_error", "upstream_timeout")
        return ApiError(502, f"an upstream model failed: {msg}", "upstream_error", "upstream_error")
    if isinstance(e, ConfigError):
        return ApiError(500, f"the server's configuration cannot run this request: {msg}", "server_error", "config_error")
    if isinstance(e, SmoaError):
        return bad_request(msg)
    return ApiError(500, f"internal error: {type(e).__name__}: {msg}", "server_error", "internal_error")
