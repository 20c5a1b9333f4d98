-- The latest approved loops, with who approved them and when
-- :limit = 50
SELECT id, name, key, bpm, part, patch, approved_by, approved_at, path
FROM approved
ORDER BY approved_at DESC, id
LIMIT :limit;
