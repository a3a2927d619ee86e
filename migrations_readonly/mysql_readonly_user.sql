-- A MySQL/MariaDB user that can read an MLflow tracking database and nothing else.
-- Render with: python -m migrations_readonly mysql --role R --password P --database DB | mysql ...
-- SELECT on the database covers tables added by later MLflow migrations too.
CREATE USER IF NOT EXISTS '{role}'@'%' IDENTIFIED BY '{password}';
GRANT SELECT ON `{database}`.* TO '{role}'@'%';
