from .base import Backend

__all__ = ["Backend"]
