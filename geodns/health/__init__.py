"""Active health checks: a pure state machine, probes, and their scheduler."""
