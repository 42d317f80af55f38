-- Roles of the e2i stack, none superuser; run by the entrypoint as the bootstrap superuser over the
-- local socket at every start (first start and upgrades alike: idempotent). psql variables:
-- dagster_db, mlflow_db, dagster_role, api_role, mlflow_role, exporter_role and *_password.
--   dagster_role   the Dagster instance (webserver, daemon, code server, runs): owns dagster_db
--                  (Dagster migrations need DDL there), nothing else
--   api_role       the API: reads the run tables of dagster_db (advisory locks need no grant),
--                  reads and writes its rate-limit rows (e2i_api.rate_limits)
--   mlflow_role    MLflow's tracking server: owns mlflow_db
--   exporter_role  the metrics exporter: reads dagster_db
-- Passwords arrive as psql variables (from Docker secret files) and are quoted by psql (:'x').
\set ON_ERROR_STOP on
SET client_min_messages = warning;

SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'dagster_role', :'api_role', :'mlflow_role', :'exporter_role']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE :"dagster_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'dagster_password';
ALTER ROLE :"api_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'api_password';
ALTER ROLE :"mlflow_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'mlflow_password';
ALTER ROLE :"exporter_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'exporter_password';
ALTER ROLE :"api_role" CONNECTION LIMIT 64;

SELECT format('CREATE DATABASE %I OWNER %I', :'dagster_db', :'dagster_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dagster_db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'mlflow_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'mlflow_db') \gexec
ALTER DATABASE :"dagster_db" OWNER TO :"dagster_role";
ALTER DATABASE :"mlflow_db" OWNER TO :"mlflow_role";
REVOKE ALL ON DATABASE :"dagster_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dagster_db" TO :"api_role", :"exporter_role";

-- Upgrade from one superuser: objects it created in a database go to that database's owner role.
\connect :"dagster_db"
SET client_min_messages = warning;
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, :'dagster_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND pg_get_userbyid(c.relowner) <> :'dagster_role' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', n.nspname, c.relname, :'dagster_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> :'dagster_role'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"api_role", :"exporter_role";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"api_role", :"exporter_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"dagster_role" IN SCHEMA public GRANT SELECT ON TABLES TO :"api_role", :"exporter_role";
-- The API's rate-limit counters (e2i_api/core/rate_limit.py), shared by its workers: a schema and
-- table owned by the bootstrap superuser; the API role reads and writes rows, no DDL.
CREATE SCHEMA IF NOT EXISTS e2i_api;
CREATE TABLE IF NOT EXISTS e2i_api.rate_limits (bucket text NOT NULL, window_start bigint NOT NULL,
  hits integer NOT NULL, PRIMARY KEY (bucket, window_start));
REVOKE ALL ON SCHEMA e2i_api FROM PUBLIC;
GRANT USAGE ON SCHEMA e2i_api TO :"api_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON e2i_api.rate_limits TO :"api_role";

\connect :"mlflow_db"
SET client_min_messages = warning;
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, :'mlflow_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND pg_get_userbyid(c.relowner) <> :'mlflow_role' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', n.nspname, c.relname, :'mlflow_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> :'mlflow_role'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
