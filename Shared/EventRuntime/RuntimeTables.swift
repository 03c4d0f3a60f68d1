import Postgres

/// The outbox and inbox tables every service keeps in its own schema.
///
/// They are migrations like the service's own, applied by the same runner in the same schema.
/// The runtime's versions are 1–99; a service numbers its migrations from 100, so the two lists
/// never collide and the runtime's tables exist before any service table refers to them.
public enum RuntimeTables {
    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "event_runtime_outbox_and_inbox",
            sql: """
                -- Events waiting to be published, written in the same transaction as the change
                -- that caused them. `position` orders them; the relay publishes in that order.
                CREATE TABLE outbox (
                    position       bigserial PRIMARY KEY,
                    event_id       uuid        NOT NULL UNIQUE,
                    event_type     text        NOT NULL,
                    event_version  int         NOT NULL,
                    exchange       text        NOT NULL,
                    routing_key    text        NOT NULL,
                    correlation_id uuid        NOT NULL,
                    causation_id   uuid,
                    -- json, not jsonb: the envelope is published byte for byte as it was written.
                    payload        json        NOT NULL,
                    headers        jsonb       NOT NULL DEFAULT '{}',
                    created_at     timestamptz NOT NULL DEFAULT now(),
                    published_at   timestamptz,
                    -- Publishing attempts that failed, and when to try again: a row the broker
                    -- refuses waits with growing delays instead of blocking the rows behind it.
                    attempts       int         NOT NULL DEFAULT 0,
                    last_error     text,
                    retry_at       timestamptz
                );
                CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
                CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
                CREATE INDEX outbox_correlation ON outbox (correlation_id);

                -- Every message whose effect this service applied, keyed by event id: inserting
                -- here in the handler's transaction is what makes a redelivery a no-op.
                CREATE TABLE inbox (
                    event_id       uuid        PRIMARY KEY,
                    event_type     text        NOT NULL,
                    event_version  int         NOT NULL,
                    source         text        NOT NULL,
                    correlation_id uuid        NOT NULL,
                    causation_id   uuid,
                    occurred_at    timestamptz NOT NULL,
                    received_at    timestamptz NOT NULL DEFAULT now()
                );
                CREATE INDEX inbox_correlation ON inbox (correlation_id);
                """)
    ]
}
