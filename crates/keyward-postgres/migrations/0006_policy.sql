-- What a key may carry beyond Medusa's fields, NULL when unset (every key before this
-- migration): metadata (an object), permissions (a restricted secret key's list) and
-- allowed_ips (the CIDR blocks it works from).
ALTER TABLE api_key ADD COLUMN metadata jsonb;
ALTER TABLE api_key ADD COLUMN permissions jsonb;
ALTER TABLE api_key ADD COLUMN allowed_ips jsonb;
