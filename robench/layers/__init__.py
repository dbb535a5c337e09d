"""Factorized layers shared by defenses and (later) `robench decompose`."""
