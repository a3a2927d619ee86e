-- A login role that can read an MLflow tracking database and nothing else.
-- Render with: python -m migrations_readonly postgres --role R --password P --database DB | psql ...
-- Run it as the role that owns MLflow's tables (the one `mlflow server`/`mlflow db upgrade` uses),
-- so that tables added by later MLflow migrations are readable too (ALTER DEFAULT PRIVILEGES).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE "{role}" LOGIN PASSWORD '{password}';
  END IF;
END
$$;
-- Every transaction of this role is read-only, even if a client asked for read-write.
ALTER ROLE "{role}" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE "{database}" TO "{role}";
GRANT USAGE ON SCHEMA public TO "{role}";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}";
