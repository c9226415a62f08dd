-- The scaffold's pipeline-check counter is gone from the overview: its table goes too.
DROP TABLE IF EXISTS counters;
