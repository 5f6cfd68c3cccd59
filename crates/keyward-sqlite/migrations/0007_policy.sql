-- What a key may carry beyond Medusa's fields, each JSON text and NULL when unset (every key
-- before this migration): metadata (an object), permissions (a restricted secret key's list)
-- and allowed_ips (the CIDR blocks it works from).
ALTER TABLE api_key ADD COLUMN metadata TEXT;
ALTER TABLE api_key ADD COLUMN permissions TEXT;
ALTER TABLE api_key ADD COLUMN allowed_ips TEXT;
