-- Rebuilds of the catalogue copy from a snapshot inventory sends (`bazaar replay catalogue`).
-- The snapshot is staged here, beside the live copy, and swapped in once complete: orders keep
-- reading `catalogue` meanwhile and never see half of a snapshot.
CREATE TABLE catalogue_rebuilds (
    rebuild_id   uuid PRIMARY KEY,
    status       text NOT NULL DEFAULT 'building' CHECK (status IN ('building', 'completed')),
    -- How many products the snapshot holds: unknown until its first product arrives.
    expected     int,
    -- What the swap did: products taken from the snapshot, live rows kept because they were
    -- newer than the snapshot's, live rows removed because inventory has no such product.
    replaced     int,
    kept_newer   int,
    removed      int,
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

CREATE TABLE catalogue_staging (
    rebuild_id uuid NOT NULL REFERENCES catalogue_rebuilds ON DELETE CASCADE,
    sku        text NOT NULL,
    name       text NOT NULL,
    price      int  NOT NULL CHECK (price >= 0),
    revision   int  NOT NULL,
    PRIMARY KEY (rebuild_id, sku)
);
