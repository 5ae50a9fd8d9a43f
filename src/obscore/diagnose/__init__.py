"""Diagnosis: candidate causes of an incident, ranked with a confidence."""

from __future__ import annotations

from obscore.diagnose.rca import Candidate, Diagnosis, diagnose

__all__ = ["Candidate", "Diagnosis", "diagnose"]
