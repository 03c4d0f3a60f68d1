-- Webhooks: one per customer, and a delivery outbox (one row per notification and webhook).
CREATE TABLE webhooks (
    webhook_id  uuid PRIMARY KEY,
    customer_id text NOT NULL UNIQUE,
    url         text NOT NULL,
    -- The breaker's key, kept beside the URL so deliveries can show it.
    host        text NOT NULL,
    -- Stored as given out: signing needs the secret itself, not a hash of it.
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Written in the transaction that records the notification, sent later by the delivery worker:
-- a receiver that is down or slow never holds up the consumer.
CREATE TABLE webhook_deliveries (
    delivery_id     uuid PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications (notification_id),
    -- Null once the webhook is removed (the delivery is failed then); the history stays.
    webhook_id      uuid REFERENCES webhooks (webhook_id) ON DELETE SET NULL,
    host            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- For a pending row: when it is due. A worker that claims it pushes this past its timeout
    -- (a lease), so a crashed worker's claims come due again by themselves.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_notification ON webhook_deliveries (notification_id);
