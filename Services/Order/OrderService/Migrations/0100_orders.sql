-- The order service's copy of the catalogue, kept from inventory's ProductUpdated events.
CREATE TABLE catalogue (
    sku        text PRIMARY KEY,
    name       text NOT NULL,
    price      int  NOT NULL CHECK (price >= 0),
    revision   int  NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id        uuid PRIMARY KEY,
    customer_id     text   NOT NULL,
    status          text   NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    reason          text   CHECK (reason IN ('out_of_stock', 'payment_declined', 'customer_cancelled', 'timed_out')),
    total           bigint NOT NULL CHECK (total >= 0),
    -- A retried POST with the same Idempotency-Key returns the same order.
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A pending order still pending then is cancelled as timed_out.
    deadline_at     timestamptz NOT NULL,
    UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC);
CREATE INDEX orders_pending_by_deadline ON orders (deadline_at) WHERE status = 'pending';

CREATE TABLE order_lines (
    order_id   uuid NOT NULL REFERENCES orders ON DELETE CASCADE,
    line       int  NOT NULL,
    sku        text NOT NULL,
    quantity   int  NOT NULL CHECK (quantity > 0),
    unit_price int  NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line)
);
