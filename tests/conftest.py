from db_servers import mariadb_server, pg_server  # noqa: F401  (session fixtures: private database servers)
from support import daemons  # noqa: F401  (fixture)
