-- Products, owned here. `available` never goes below zero: the constraint is the last line of
-- defence behind the reservation rules.
CREATE TABLE products (
    sku        text PRIMARY KEY,
    name       text NOT NULL,
    price      int  NOT NULL CHECK (price >= 0),
    available  int  NOT NULL CHECK (available >= 0),
    reserved   int  NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Increases with every change; ProductUpdated carries it so copies keep the newest.
    revision   int  NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One reservation per order, and what it held.
CREATE TABLE reservations (
    order_id   uuid PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('reserved', 'sold', 'released', 'rejected', 'cancelled_before_placed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE reservation_lines (
    order_id uuid NOT NULL REFERENCES reservations ON DELETE CASCADE,
    sku      text NOT NULL,
    quantity int  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
