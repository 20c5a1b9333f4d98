-- Why loops were rejected, by machine check or by people, most common first
SELECT substr(reject_reason, 1, instr(reject_reason || ':', ':') - 1) AS reason,
       count(*) AS loops,
       min(reject_reason) AS example
FROM loops
WHERE status = 'rejected'
GROUP BY reason
ORDER BY loops DESC;
