#!/bin/sh
# Starts RabbitMQ with Bazaar's topology and one user per service, loaded from definitions.
# The definitions are a template: the passwords come from the environment (the compose file's
# .env), so no secret is committed. Every ${NAME} must be set, or the broker doesn't start.
set -eu
template=/etc/bazaar/definitions.template.json
rendered=/tmp/bazaar-definitions.json
for name in $(grep -o '\${[A-Z_]*}' "$template" | sort -u | tr -d '${}'); do
  eval "value=\${$name:-}"
  [ -n "$value" ] || { echo "start.sh: $name is not set (see .env.example)" >&2; exit 1; }
done
# Only ${NAME} placeholders are replaced; values must not contain the characters \ " / &.
cp "$template" "$rendered"
for name in $(grep -o '\${[A-Z_]*}' "$template" | sort -u | tr -d '${}'); do
  eval "value=\${$name}"
  sed -i "s/\${$name}/$value/g" "$rendered"
done
# The image's entrypoint drops to the rabbitmq user, which must be able to read it.
chown rabbitmq:rabbitmq "$rendered"
chmod 600 "$rendered"
exec docker-entrypoint.sh rabbitmq-server
