-- Applied twice, this would fail on the unique sku: the tests count the row as well.
INSERT INTO widgets (sku) VALUES ('seed-1');
