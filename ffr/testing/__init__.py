"""Test tools that ship with ffr because benchmarks and rehearsals use them too (no Ray, no test framework)."""
