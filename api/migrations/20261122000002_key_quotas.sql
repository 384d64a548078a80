-- A key may carry its own ingest quota; NULL means the configured default.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS quota_per_sec INTEGER;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS quota_burst INTEGER;
