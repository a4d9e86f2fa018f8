from airflow_support import airflow_env  # noqa: F401  (session fixture: a migrated Airflow home)
from db_servers import mariadb_server, pg_server  # noqa: F401  (session fixtures: private database servers)
from hypothesis import HealthCheck, settings
from support import daemons  # noqa: F401  (fixture)

# Property tests check values, not speed: on a shared 2-core machine wall-clock deadlines and the
# "input generation is slow" health check fail for reasons that have nothing to do with the code.
settings.register_profile("headrace", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("headrace")
