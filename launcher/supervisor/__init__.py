"""Start, watch, restart and stop one server process tree."""
