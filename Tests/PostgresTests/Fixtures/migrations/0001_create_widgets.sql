-- Several statements in one file: the runner sends the file with PQexec.
CREATE TABLE widgets (
    id bigserial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX widgets_created_at_idx ON widgets (created_at);
