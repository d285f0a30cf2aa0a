"""The data package's error."""

from ..errors import VgglabError


class DataError(VgglabError):
    """A dataset that cannot be found or read; the message says where and what to do."""
