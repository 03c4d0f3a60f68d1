"""The two things the harness does on the broker as a client: publish a poison message, and read
what the dead-letter queues hold, headers included. Both with pika (from PyPI, in .run/venv),
imported where it is used so that `chaos.py --help` works without it.
"""

import urllib.parse


class PublishFailed(Exception):
    pass


def publish(url, exchange, routing_key, body, headers, as_user=False):
    """Publishes one persistent message and waits for the broker's confirm; raises PublishFailed
    if the broker is away, blocks publishers (memory alarm) for more than 10 s, or routes the
    message nowhere. `as_user`: stamp the connection's user as the message's user-id, as the
    services' relays do (the broker checks it; consumers check it is their producer's)."""
    import pika
    import pika.exceptions

    parameters = pika.URLParameters(url)
    parameters.blocked_connection_timeout = 10
    parameters.socket_timeout = 5
    parameters.connection_attempts = 1
    user = urllib.parse.unquote(urllib.parse.urlsplit(url).username or "")
    properties = pika.BasicProperties(headers=headers, delivery_mode=2, content_type="application/json",
                                      user_id=user if as_user else None)
    try:
        connection = pika.BlockingConnection(parameters)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(exchange, routing_key, body.encode(), properties, mandatory=True)
        finally:
            if connection.is_open:
                connection.close()
    except (pika.exceptions.AMQPError, OSError) as error:
        raise PublishFailed(f"{type(error).__name__}: {error}") from error


def read_dead_letters(url, queues):
    """Every message in `queues`, as {queue: [headers]}. Read without acking: the messages go back
    to their queues when the connection closes."""
    import pika

    parked = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            parked[queue] = []
            while True:
                method, properties, _ = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                parked[queue].append({k: (v.decode(errors="replace") if isinstance(v, bytes) else v)
                                      for k, v in (properties.headers or {}).items()})
    finally:
        connection.close()
    return parked
