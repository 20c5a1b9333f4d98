-- Every loop with a given chord symbol in a given bar (e.g. Dm7 in bar 3)
-- Drum loops carry their template's chords too, but a chord search wants the loops that play it.
-- :symbol = Dm7
-- :bar = 3
-- :limit = 100
SELECT l.id, l.name, c.bar, c.symbol, c.roman, l.key, l.bpm, l.part, l.status, l.path
FROM chords c
JOIN loops l ON l.id = c.loop_id
WHERE c.symbol = :symbol AND c.bar = :bar AND l.role != 'drums'
ORDER BY c.loop_id
LIMIT :limit;
