"""headrace relay."""

__all__: list[str] = []
