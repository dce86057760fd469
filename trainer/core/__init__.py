"""Parts shared by the algorithms: masking, networks, replay, schedules, configs."""
