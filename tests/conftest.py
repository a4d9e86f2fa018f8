from support import daemons  # noqa: F401  (fixture)
