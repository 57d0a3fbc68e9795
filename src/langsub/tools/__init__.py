"""The profiler beside the main job (`python profile.py`): step time and memory per method
against the frozen-model floor, the statistics hooks' overhead, scaling with width and ρ."""
