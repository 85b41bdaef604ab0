-- Issued user certificates: what a renewal looks up. A connection opened
-- with one certificate may run on past its expiry when the same identity
-- holds a newer, unrevoked certificate for the same key (postern agent).

CREATE TABLE issued_certs (
    serial       BIGINT PRIMARY KEY,
    key_fp       TEXT NOT NULL,
    issuer       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    principals   TEXT NOT NULL DEFAULT '',
    valid_before TEXT NOT NULL
);

CREATE INDEX issued_certs_key ON issued_certs (key_fp, valid_before);
