#!/bin/bash
# Creates one login role and one schema per service, each role owning only its own schema.
# Run by the postgres image on its first start (/docker-entrypoint-initdb.d), with the passwords
# from the environment; safe to run again (it creates what is missing and resets the passwords).
#
#   role                 schema          password variable
#   bazaar_order         orders          ORDER_DB_PASSWORD
#   bazaar_inventory     inventory       INVENTORY_DB_PASSWORD
#   bazaar_payment       payments        PAYMENT_DB_PASSWORD
#   bazaar_notification  notifications   NOTIFICATION_DB_PASSWORD
#
# A service's role can't read or write another service's schema: no USAGE on it is granted, and
# nobody may create objects in `public`. Migrations run as the service's own role.
set -euo pipefail

for variable in ORDER_DB_PASSWORD INVENTORY_DB_PASSWORD PAYMENT_DB_PASSWORD NOTIFICATION_DB_PASSWORD; do
  [ -n "${!variable:-}" ] || { echo "init.sh: $variable is not set (see .env.example)" >&2; exit 1; }
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v dbname="$POSTGRES_DB" \
  -v order_password="$ORDER_DB_PASSWORD" -v inventory_password="$INVENTORY_DB_PASSWORD" \
  -v payment_password="$PAYMENT_DB_PASSWORD" -v notification_password="$NOTIFICATION_DB_PASSWORD" <<'SQL'
-- Nobody but the roles below connects; nobody creates anything in public.
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

SELECT format('CREATE ROLE %I LOGIN', role) FROM (VALUES ('bazaar_order'), ('bazaar_inventory'), ('bazaar_payment'), ('bazaar_notification')) AS roles(role)
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) \gexec

ALTER ROLE bazaar_order PASSWORD :'order_password';
ALTER ROLE bazaar_inventory PASSWORD :'inventory_password';
ALTER ROLE bazaar_payment PASSWORD :'payment_password';
ALTER ROLE bazaar_notification PASSWORD :'notification_password';

CREATE SCHEMA IF NOT EXISTS orders AUTHORIZATION bazaar_order;
CREATE SCHEMA IF NOT EXISTS inventory AUTHORIZATION bazaar_inventory;
CREATE SCHEMA IF NOT EXISTS payments AUTHORIZATION bazaar_payment;
CREATE SCHEMA IF NOT EXISTS notifications AUTHORIZATION bazaar_notification;

GRANT CONNECT ON DATABASE :"dbname" TO bazaar_order, bazaar_inventory, bazaar_payment, bazaar_notification;
-- Each role finds its own tables first.
ALTER ROLE bazaar_order SET search_path = orders;
ALTER ROLE bazaar_inventory SET search_path = inventory;
ALTER ROLE bazaar_payment SET search_path = payments;
ALTER ROLE bazaar_notification SET search_path = notifications;
SQL
echo "init.sh: roles and schemas ready in $POSTGRES_DB"
