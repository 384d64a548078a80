-- Webhook sources: where a provider's signed deliveries land, and the secrets that sign them.
-- A secret must be readable to check an HMAC (unlike an API key, it cannot be kept as a hash);
-- it is shown once to the account and never listed again. After a rotation the previous secret
-- stays valid until previous_valid_until.
CREATE TABLE IF NOT EXISTS webhook_sources (
    id                   UUID PRIMARY KEY,
    account_id           UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    scheme               TEXT NOT NULL,
    event_type           TEXT NOT NULL,
    event_id_from        TEXT NOT NULL,
    user_id_from         TEXT,
    secret               TEXT NOT NULL,
    previous_secret      TEXT,
    previous_valid_until TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    rotated_at           TIMESTAMPTZ,
    deleted_at           TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS webhook_sources_account_idx
    ON webhook_sources (account_id) WHERE deleted_at IS NULL;
