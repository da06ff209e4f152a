-- Login throttling by source, and short-lived WebSocket tickets (docs/security.md).

-- Each failed (or still running) login attempt has a row per key it counts against; the id
-- lets a successful attempt take its own rows back.
ALTER TABLE login_failures ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
CREATE INDEX login_failures_at_idx ON login_failures (at);

-- Where an account signed in successfully from: an address (IPv6 by its /64) or a browser's
-- device cookie (its SHA-256). Failures from unknown sources cannot lock it out of these.
CREATE TABLE login_known (
    account  text NOT NULL,
    source   text NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, source)
);
CREATE INDEX login_known_seen_idx ON login_known (seen_at);

-- A ticket opens WebSockets to one notebook, as the credential that asked for it, until it
-- expires (minutes): for clients that cannot send a header, instead of ?token=.
CREATE TABLE socket_tickets (
    token_hash     bytea PRIMARY KEY,
    credential_id  uuid NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    notebook_id    uuid NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX socket_tickets_expires_idx ON socket_tickets (expires_at);
