"""Process-wide services: progress reporting, log redaction, the orphan watchdog."""
