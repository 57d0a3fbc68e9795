"""Tools beside the main job: the dry run (memory plan, no weights) and the profiler."""
