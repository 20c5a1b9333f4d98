-- The next loops waiting for a person, oldest first, optionally of one style
-- :style = %
-- :limit = 50
SELECT id, name, style, part, patch, key, bpm, progression, lufs, path
FROM pending_review
WHERE style LIKE :style
LIMIT :limit;
