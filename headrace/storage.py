"""Where batch jobs keep files: a local folder or a URI (``s3://…``, ``gs://…``) through ``pyarrow.fs``.

``resolve("s3://bucket/logs")`` gives the :class:`Store` the batch jobs use for that location (the
shipped DAGs use it to list what demux will find); a bad URI is a :class:`~headrace.errors.UsageError`.
"""

from __future__ import annotations

from ._storage import Store, resolve

__all__ = ["Store", "resolve"]
