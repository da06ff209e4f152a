-- People, their credentials, workspace roles and share links.

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    email          text CHECK (email IS NULL OR length(email) BETWEEN 3 AND 320),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- argon2id, in the PHC string format; NULL for guests (they cannot log in).
    password_hash  text,
    guest          boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (guest OR (email IS NOT NULL AND password_hash IS NOT NULL))
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email)) WHERE email IS NOT NULL;

-- A share link: a role on a workspace, or on one notebook of it. Only the token's hash is kept.
CREATE TABLE share_links (
    id            uuid PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    notebook_id   uuid REFERENCES notebooks (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('viewer', 'editor')),
    created_by    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    max_uses      integer CHECK (max_uses IS NULL OR max_uses > 0),
    uses          integer NOT NULL DEFAULT 0,
    revoked_at    timestamptz
);
CREATE INDEX share_links_workspace_idx ON share_links (workspace_id, created_at);

-- Bearer credentials: browser sessions, API tokens and guest sessions. Only hashes are kept.
CREATE TABLE credentials (
    id            uuid PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('session', 'api', 'guest')),
    label         text,
    -- A guest session is confined to the scope of the link that made it.
    link_id       uuid REFERENCES share_links (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    CHECK ((kind = 'guest') = (link_id IS NOT NULL))
);
CREATE INDEX credentials_user_idx ON credentials (user_id, kind);

-- Workspace roles. via_link: the share link that made this membership (revoking it ends it).
CREATE TABLE workspace_members (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('viewer', 'editor', 'owner')),
    via_link      uuid REFERENCES share_links (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_idx ON workspace_members (user_id);

-- A role on one notebook only (from a notebook share link).
CREATE TABLE notebook_grants (
    notebook_id   uuid NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('viewer', 'editor')),
    via_link      uuid REFERENCES share_links (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notebook_id, user_id)
);
CREATE INDEX notebook_grants_user_idx ON notebook_grants (user_id);

-- Failed logins, for rate limiting across every node (by account and by address).
CREATE TABLE login_failures (
    key     text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_idx ON login_failures (key, at);

-- An owner's invitation of someone who has no account yet: it becomes a membership when
-- they sign up with that address (and lets them sign up on an invite-only server).
CREATE TABLE invitations (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    email         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'editor', 'owner')),
    invited_by    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, email)
);
CREATE INDEX invitations_email_idx ON invitations (lower(email));
