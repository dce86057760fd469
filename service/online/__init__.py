"""Online learning in the service: decisions joined with feedback into transitions for the same
learner code the offline trainer runs, made durable by a write-ahead log and snapshots."""
