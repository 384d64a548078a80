-- Tracking plans: versioned JSON Schemas of `properties` per event type, never changed once
-- published (a new POST is the next version), and how strictly each type is held to them.
CREATE TABLE IF NOT EXISTS event_schemas (
    account_id  UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    -- As published, byte for byte (JSONB would reorder it).
    schema      TEXT NOT NULL,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event_type, version)
);

CREATE TABLE IF NOT EXISTS event_type_modes (
    account_id UUID NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    mode       TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event_type)
);

-- The account's default mode for types without their own (NULL: allow).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS schema_mode TEXT;
