"""The distiller: teacher + student + KD losses (see docs/ARCHITECTURE.md)."""
