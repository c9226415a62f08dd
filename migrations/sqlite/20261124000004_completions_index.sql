-- Throughput and latency charts read recent completions by time; only finished instances have a
-- completion time, so the index is partial and costs nothing while an instance runs.
CREATE INDEX instances_by_completed ON instances (completed_at) WHERE completed_at IS NOT NULL;
