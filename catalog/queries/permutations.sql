-- The permutations made from one loop (its children), with the operation and its parameters
-- :parent_id = 0000000000000000
SELECT id, name, operation, params, key, bpm, progression, status, path
FROM loops
WHERE parent_id = :parent_id
ORDER BY operation, id;
