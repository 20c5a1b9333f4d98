-- Every loop with a given roman numeral in a given bar, in any key (e.g. V in bar 4)
-- Drum loops carry their template's chords too, but a chord search wants the loops that play it.
-- :roman = V
-- :bar = 4
-- :limit = 100
SELECT l.id, l.name, c.bar, c.roman, c.symbol, l.key, l.bpm, l.part, l.status, l.path
FROM chords c
JOIN loops l ON l.id = c.loop_id
WHERE c.roman = :roman AND c.bar = :bar AND l.role != 'drums'
ORDER BY c.loop_id
LIMIT :limit;
