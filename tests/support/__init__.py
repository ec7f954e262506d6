"""Test helpers (stand-ins of servers that cannot run here, recorded Training Hub calls): not part of the wheel."""
