"""Factorized layers shared by defenses, `robench decompose` and checkpoint loading."""
