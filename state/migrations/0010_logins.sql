-- Browser logins at identity providers that answer through the browser
-- (SAML), shared by every replica: the requests in progress, the ids of
-- assertions already accepted (the replay cache), and the one-time codes a
-- finished login is redeemed with.

CREATE TABLE login_requests (
    relay        TEXT PRIMARY KEY,
    provider     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT '',
    challenge    TEXT NOT NULL,
    expires      TEXT NOT NULL
);

CREATE INDEX login_requests_expires ON login_requests (expires);

CREATE TABLE consumed_assertions (
    id      TEXT PRIMARY KEY,
    expires TEXT NOT NULL
);

CREATE INDEX consumed_assertions_expires ON consumed_assertions (expires);

CREATE TABLE login_codes (
    hash         TEXT PRIMARY KEY,
    identity     TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    expires      TEXT NOT NULL
);

CREATE INDEX login_codes_expires ON login_codes (expires);
