"""headrace collectors."""

__all__: list[str] = []
