-- pgbench script: one step of the order saga as the inventory service takes it on order.placed,
-- statement for statement what `bazaar bench raw` times through the project's Postgres pool
-- (Services/CLI/bazaar/BenchCommand.swift, sagaStep): the inbox row that makes the handler
-- idempotent, the stock row locked and moved, the reservation, the outbox row of the answer
-- (an envelope of about 400 bytes) and the NOTIFY that wakes the relay.
--
-- The tables are the event runtime's own outbox and inbox (its migrations) and products and
-- reservations shaped like the inventory service's: `bazaar bench raw --keep-schema` creates them.
-- Run with the schema on the search path and the number of products defined, as bench.py does:
--   PGOPTIONS='-c search_path=bench_raw' pgbench -n -M extended -D products=100 \
--       -f Tests/Bench/saga-step.sql -c 16 -j 2 -T 10 "$DATABASE_URL"
\set sku random(1, :products)
BEGIN;
INSERT INTO inbox (event_id, event_type, event_version, source, correlation_id, causation_id, occurred_at)
    VALUES (gen_random_uuid(), 'order.placed', 1, 'order', gen_random_uuid(), NULL, now())
    ON CONFLICT (event_id) DO NOTHING;
SELECT available FROM products WHERE sku = 'BENCH-' || :sku FOR UPDATE;
INSERT INTO reservations (order_id, status) VALUES (gen_random_uuid(), 'reserved');
UPDATE products SET available = available - 1, reserved = reserved + 1, updated_at = now()
    WHERE sku = 'BENCH-' || :sku;
INSERT INTO outbox (event_id, event_type, event_version, exchange, routing_key, correlation_id, causation_id,
                    payload, headers)
    VALUES (gen_random_uuid(), 'stock.reserved', 1, 'inventory', 'stock.reserved.v1', gen_random_uuid(), NULL,
            ('{"data":"' || repeat('x', 380) || '"}')::json, '{}'::jsonb);
SELECT pg_notify('bench_outbox', '');
END;
