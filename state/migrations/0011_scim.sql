-- SCIM provisioning: the users and groups identity providers push, per
-- SCIM directory (configured client). A deleted user stays as a tombstone
-- (deleted = 1): postern keeps refusing it. scim_locks remembers the
-- identity locks deprovisioning made, so that reactivating the user removes
-- them again.

CREATE TABLE scim_users (
    directory   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    user_key    TEXT    NOT NULL,
    user_name   TEXT    NOT NULL,
    external_id TEXT    NOT NULL DEFAULT '',
    active      INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    attributes  TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    modified    TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    PRIMARY KEY (directory, id)
);

CREATE INDEX scim_users_key ON scim_users (directory, user_key);

CREATE TABLE scim_groups (
    directory    TEXT   NOT NULL,
    id           TEXT   NOT NULL,
    display_name TEXT   NOT NULL,
    external_id  TEXT   NOT NULL DEFAULT '',
    members      TEXT   NOT NULL,
    attributes   TEXT   NOT NULL,
    created      TEXT   NOT NULL,
    modified     TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    PRIMARY KEY (directory, id)
);

CREATE TABLE scim_locks (
    directory TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    lock_id   TEXT NOT NULL,
    PRIMARY KEY (directory, user_id, lock_id)
);
