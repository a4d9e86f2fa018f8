"""headrace bootstrap."""

__all__: list[str] = []
