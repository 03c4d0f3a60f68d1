-- Customers' balances in cents; a charge never takes one below zero.
CREATE TABLE accounts (
    customer_id text   PRIMARY KEY,
    balance     bigint NOT NULL CHECK (balance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- At most one payment per order: the unique order id makes a double charge impossible.
CREATE TABLE payments (
    payment_id  uuid   PRIMARY KEY,
    order_id    uuid   NOT NULL UNIQUE,
    customer_id text   NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    status      text   NOT NULL CHECK (status IN ('captured', 'refunded', 'declined')),
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Orders cancelled before payment saw them reserved: a late StockReserved must not charge.
CREATE TABLE cancelled_orders (
    order_id     uuid PRIMARY KEY,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
