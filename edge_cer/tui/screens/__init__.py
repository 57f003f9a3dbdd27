"""Screens: setup (experimenter), the session (participant), the experimenter overlay and help."""
