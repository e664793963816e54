"""Errors in the OpenAI shape: {"error": {"message", "type", "param", "code"}} with the right status."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ..types import InputError, SmoaError


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


def error_response(err: ApiError) -> JSONResponse:
    """The JSON response for an error: its body, status and headers."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def shutting_down() -> ApiError:
    """What a query cancelled by the server's shutdown (past its grace period) answers."""
    return ApiError(
        503, "the server is shutting down: the query was cancelled; retry it", "server_shutting_down",
        "server_shutting_down", headers={"Retry-After": "1"},
    )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


# What a client sees for an error's HTTP status (the status comes from the error's type:
# SmoaError.http_status): the OpenAI error type, and what the message starts with.
_SHAPES = {
    400: ("invalid_request_error", ""),
    500: ("server_error", "the server's configuration cannot run this request: "),
    502: ("upstream_error", "an upstream model failed: "),
    504: ("upstream_error", "an upstream model timed out: "),
}


def from_exception(e: BaseException) -> ApiError:
    """Map an engine failure to the status a client should see: by the error's type
    (`http_status`, `error_code`), never by its message."""
    if isinstance(e, ApiError):
        return e
    msg = str(e) or type(e).__name__
    if isinstance(e, SmoaError):
        type_, prefix = _SHAPES.get(e.http_status, ("server_error", ""))
        return ApiError(e.http_status, prefix + msg, type_, e.error_code, "messages" if isinstance(e, InputError) else None)
    return ApiError(500, f"internal error: {type(e).__name__}: {msg}", "server_error", "internal_error")
