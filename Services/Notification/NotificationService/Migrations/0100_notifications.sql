-- One notification per event that caused it (the unique event id), per customer.
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    order_id        uuid NOT NULL,
    customer_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('order_confirmed', 'order_cancelled', 'payment_refunded')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_by_order ON notifications (order_id, created_at);
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at);
