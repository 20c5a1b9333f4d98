-- Tasks that failed for good, with their last error and the end of their worker log
SELECT batch_id, stage, output_id, attempts, error, substr(log, -400) AS log_tail, finished_at
FROM tasks
WHERE status = 'failed'
ORDER BY finished_at DESC, id;
